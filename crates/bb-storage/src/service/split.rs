//! SplitBlob and SpliceBlob (REv2 2.12).
//!
//! SplitBlob cuts a stored blob with FastCDC 2020 (this server's announced
//! parameters), stores each chunk as a blob of its own and records the
//! split, so the next call answers from the record. A blob that was
//! spliced answers with the chunks it was spliced from.
//!
//! SpliceBlob never trusts the client: every chunk must be stored, their
//! sizes must add up, and their concatenation, read back, must hash to the
//! blob's digest before anything is recorded. The blob is then stored as
//! its chunks (a record of them), not as a second copy of its bytes: two
//! large blobs that differ in one place share every other chunk.

use crate::content::ContentStore;
use crate::spliced::Splice;
use crate::store::Blob;
use bb_proto::reapi;
use bb_util::chunking::{Chunker, FastCdcParams};
use bb_util::{Digest, DigestFunction};
use tonic::Status;

/// How much of a blob is read at a time while it is cut or hashed.
const READ_PIECE: usize = 1 << 20;

fn fast_cdc() -> i32 {
    reapi::chunking_function::Value::FastCdc2020 as i32
}

/// The chunks of `digest`: recorded, or cut now and stored.
pub async fn split(content: &ContentStore, params: FastCdcParams, digest: Digest) -> Result<Splice, Status> {
    if let Some(splice) = content.whole_splice(&digest).await? {
        return Ok(splice);
    }
    let blob =
        content.get(&digest).await?.ok_or_else(|| Status::not_found(format!("blob {digest} not found")))?;
    let mut reader = blob.reader(0);
    let mut chunker = Chunker::new(params);
    let mut chunks = Vec::new();
    while let Some(piece) = reader.next_chunk(READ_PIECE).await? {
        for chunk in chunker.push(&piece) {
            chunks.push(content.put_data(digest.function(), chunk).await?);
        }
    }
    for chunk in chunker.finish() {
        chunks.push(content.put_data(digest.function(), chunk).await?);
    }
    let splice = Splice { chunks, chunking_function: fast_cdc() };
    content.record_splice(&digest, &splice).await?;
    Ok(splice)
}

/// Records `digest` as the concatenation of `chunks`, after checking it.
pub async fn splice(
    content: &ContentStore,
    digest: Digest,
    chunks: Vec<Digest>,
    chunking_function: i32,
) -> Result<(), Status> {
    if let Some(other) = chunks.iter().find(|c| c.function() != digest.function()) {
        return Err(Status::invalid_argument(format!(
            "chunk {other} does not use the blob's digest function {}",
            digest.function().name()
        )));
    }
    let total: u64 = chunks.iter().map(Digest::size).sum();
    if total != digest.size() {
        return Err(Status::invalid_argument(format!(
            "blob {digest}: its {} chunks add up to {total} bytes, not {}",
            chunks.len(),
            digest.size()
        )));
    }
    content.admit(&digest)?;
    let missing = content.find_missing_whole(&chunks).await?;
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(Digest::to_string).collect();
        return Err(Status::not_found(format!("chunks missing from the CAS: {}", names.join(", "))));
    }
    if content.find_missing(&[digest]).await?.is_empty() {
        return Ok(());
    }
    let splice = Splice { chunks, chunking_function };
    let actual = hash_of(content, &splice).await?;
    if actual != digest {
        return Err(Status::invalid_argument(format!(
            "the chunks concatenate to {actual}, not to blob {digest}; nothing was stored"
        )));
    }
    content.record_splice(&digest, &splice).await
}

/// The digest of the chunks' concatenation, read from the store.
async fn hash_of(content: &ContentStore, splice: &Splice) -> Result<Digest, Status> {
    let function = splice.chunks.first().map_or(DigestFunction::Sha256, Digest::function);
    let mut hasher = function.hasher();
    let mut size = 0;
    for chunk in &splice.chunks {
        let blob: Blob = content
            .get(chunk)
            .await?
            .ok_or_else(|| Status::not_found(format!("chunk {chunk} missing from the CAS")))?;
        let mut reader = blob.reader(0);
        while let Some(piece) = reader.next_chunk(READ_PIECE).await? {
            size += piece.len() as u64;
            hasher.update(&piece);
        }
    }
    Ok(hasher.finish(size))
}
