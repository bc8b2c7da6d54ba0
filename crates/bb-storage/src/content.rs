//! The content-addressable storage rules, on top of a `BlobStore`:
//! every write is checked against its digest before anything is stored, and
//! the empty blob is always present, as REv2 requires. A blob may also be
//! stored as chunks (see `spliced`): it is then present while every chunk
//! is, and read as their concatenation.

use crate::spliced::{Splice, SplicedBlobs};
use crate::store::{Blob, BlobStore, BlobWriter, Chunks, StoreError};
use bb_util::digest::Hasher;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use std::sync::Arc;
use tonic::Status;

#[derive(Clone)]
pub struct ContentStore {
    store: Arc<dyn BlobStore>,
    /// Largest blob accepted; 0: no limit.
    max_blob_size: u64,
    /// Records of blobs stored as chunks; none: every blob is stored whole.
    spliced: Option<SplicedBlobs>,
}

impl ContentStore {
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        ContentStore { store, max_blob_size: 0, spliced: None }
    }

    /// Keeps records of spliced blobs in `records`, so they are stored once,
    /// as their chunks.
    pub fn with_spliced(self, records: Arc<dyn BlobStore>) -> Self {
        ContentStore { spliced: Some(SplicedBlobs::new(records)), ..self }
    }

    /// Refuses blobs over `limit` bytes (0: no limit).
    pub fn with_max_blob_size(self, limit: u64) -> Self {
        ContentStore { max_blob_size: limit, ..self }
    }

    /// INVALID_ARGUMENT naming the limit when `digest` is over it.
    pub fn admit(&self, digest: &Digest) -> Result<(), Status> {
        if self.max_blob_size == 0 || digest.size() <= self.max_blob_size {
            return Ok(());
        }
        Err(Status::invalid_argument(format!(
            "blob {digest}: {} bytes is over this server's max_cas_blob_size_bytes of {}",
            digest.size(),
            self.max_blob_size
        )))
    }

    pub async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        if digest.is_empty() {
            return Ok(Some(Blob::from_bytes(Bytes::new())));
        }
        if let Some(blob) = self.store.get(digest).await? {
            return Ok(Some(blob));
        }
        Ok(self
            .whole_splice(digest)
            .await?
            .map(|splice| Blob::from_chunks(Chunks::new(self.store.clone(), splice.chunks))))
    }

    /// The recorded chunks of `digest`, if every one of them is stored.
    pub async fn whole_splice(&self, digest: &Digest) -> Result<Option<Splice>, StoreError> {
        let Some(spliced) = &self.spliced else { return Ok(None) };
        let Some(splice) = spliced.get(digest).await? else { return Ok(None) };
        Ok(self.store.find_missing(&splice.chunks).await?.is_empty().then_some(splice))
    }

    /// Records that `digest` is the concatenation of `splice`'s chunks,
    /// which the caller has checked (or cut itself from the stored blob).
    pub async fn record_splice(&self, digest: &Digest, splice: &Splice) -> Result<(), Status> {
        let spliced = self
            .spliced
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this CAS keeps no records of spliced blobs"))?;
        Ok(spliced.put(digest, splice).await?)
    }

    /// Which of `digests` are not stored whole (chunks must be).
    pub async fn find_missing_whole(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let present: Vec<Digest> = digests.iter().filter(|d| !d.is_empty()).copied().collect();
        if present.is_empty() {
            return Ok(Vec::new());
        }
        self.store.find_missing(&present).await
    }

    /// The whole blob, or NOT_FOUND naming it.
    pub async fn get_bytes(&self, digest: &Digest) -> Result<Bytes, Status> {
        match self.get(digest).await? {
            Some(blob) => Ok(blob.into_bytes().await?),
            None => Err(Status::not_found(format!("blob {digest} not found"))),
        }
    }

    /// Stores `data` under the digest it hashes to (with `function`),
    /// unless it is stored already; returns that digest. Data is hashed
    /// once, where `put` hashes it again to check a digest given.
    pub async fn put_data(&self, function: DigestFunction, data: Bytes) -> Result<Digest, Status> {
        let digest = Digest::of(function, &data);
        self.admit(&digest)?;
        if !self.find_missing_whole(&[digest]).await?.is_empty() {
            self.store.put(&digest, data).await?;
            metrics::counter!(crate::metrics::WRITTEN_BYTES).increment(digest.size());
        }
        Ok(digest)
    }

    /// Stores `data` once it is proven to be the blob `digest` names.
    pub async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), Status> {
        self.admit(digest)?;
        if data.len() as u64 != digest.size() {
            return Err(Status::invalid_argument(format!(
                "blob {digest}: {} bytes of data for a declared size of {}",
                data.len(),
                digest.size()
            )));
        }
        digest.verify(&data)?;
        if digest.is_empty() {
            return Ok(());
        }
        self.store.put(digest, data).await?;
        metrics::counter!(crate::metrics::WRITTEN_BYTES).increment(digest.size());
        Ok(())
    }

    pub async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let not_whole = self.find_missing_whole(digests).await?;
        let Some(spliced) = &self.spliced else { return Ok(not_whole) };
        // One call for which of them have records at all; only those are
        // read, so a FindMissingBlobs of new blobs costs one more call.
        let recorded = spliced.recorded(&not_whole).await?;
        let mut missing = Vec::new();
        for digest in not_whole {
            if !recorded.contains(&digest) || self.whole_splice(&digest).await?.is_none() {
                missing.push(digest);
            }
        }
        Ok(missing)
    }

    /// Starts a streamed, verified write of `digest`.
    pub async fn begin_upload(&self, digest: &Digest) -> Result<Upload, Status> {
        self.admit(digest)?;
        let writer = if digest.is_empty() { None } else { Some(self.store.begin_write(digest).await?) };
        Ok(Upload { digest: *digest, hasher: digest.function().hasher(), writer, received: 0 })
    }
}

/// A write in progress: data is hashed as it arrives and the blob becomes
/// visible only if the whole of it matches the digest.
pub struct Upload {
    digest: Digest,
    hasher: Hasher,
    /// `None` for the empty blob, which is never stored.
    writer: Option<Box<dyn BlobWriter>>,
    received: u64,
}

impl Upload {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub async fn write(&mut self, data: Bytes) -> Result<(), Status> {
        let total = self.received + data.len() as u64;
        if total > self.digest.size() {
            return Err(Status::invalid_argument(format!(
                "blob {}: write of {total} bytes exceeds the declared size {}",
                self.digest,
                self.digest.size()
            )));
        }
        self.hasher.update(&data);
        self.received = total;
        if let Some(writer) = &mut self.writer {
            writer.write(data).await?;
        }
        Ok(())
    }

    /// Checks size and hash, then makes the blob visible.
    pub async fn finish(self) -> Result<(), Status> {
        if self.received != self.digest.size() {
            return Err(Status::invalid_argument(format!(
                "blob {}: write ended after {} bytes, short of the declared size {}",
                self.digest,
                self.received,
                self.digest.size()
            )));
        }
        let actual = self.hasher.finish(self.received);
        if actual != self.digest {
            return Err(Status::invalid_argument(format!(
                "blob {}: uploaded data has digest {actual}; nothing was stored",
                self.digest
            )));
        }
        if let Some(writer) = self.writer {
            writer.commit().await?;
        }
        metrics::counter!(crate::metrics::WRITTEN_BYTES).increment(self.received);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use bb_util::DigestFunction;

    fn content() -> ContentStore {
        ContentStore::new(Arc::new(MemoryStore::new(1 << 20)))
    }

    #[tokio::test]
    async fn verifies_before_storing() {
        let cas = content();
        let d = Digest::of(DigestFunction::Sha256, b"right");
        let err = cas.put(&d, Bytes::from_static(b"wrong")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(&d.hash_hex()));
        assert_eq!(cas.find_missing(&[d]).await.unwrap(), vec![d]);
        cas.put(&d, Bytes::from_static(b"right")).await.unwrap();
        assert!(cas.find_missing(&[d]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn uploads_check_length_and_hash() {
        let cas = content();
        let d = Digest::of(DigestFunction::Blake3, b"0123456789");

        let mut long = cas.begin_upload(&d).await.unwrap();
        long.write(Bytes::from_static(b"0123456789")).await.unwrap();
        assert!(long.write(Bytes::from_static(b"x")).await.is_err());

        let mut short = cas.begin_upload(&d).await.unwrap();
        short.write(Bytes::from_static(b"01234")).await.unwrap();
        assert!(short.finish().await.unwrap_err().message().contains("short"));

        let mut wrong = cas.begin_upload(&d).await.unwrap();
        wrong.write(Bytes::from_static(b"0123456788")).await.unwrap();
        assert!(wrong.finish().await.is_err());
        assert_eq!(cas.find_missing(&[d]).await.unwrap(), vec![d]);

        let mut right = cas.begin_upload(&d).await.unwrap();
        right.write(Bytes::from_static(b"01234")).await.unwrap();
        right.write(Bytes::from_static(b"56789")).await.unwrap();
        right.finish().await.unwrap();
        assert_eq!(cas.get_bytes(&d).await.unwrap(), Bytes::from_static(b"0123456789"));
    }

    #[tokio::test]
    async fn empty_blob_is_always_present() {
        let cas = content();
        let empty = Digest::empty(DigestFunction::Sha256);
        assert!(cas.find_missing(&[empty]).await.unwrap().is_empty());
        assert_eq!(cas.get_bytes(&empty).await.unwrap(), Bytes::new());
    }
}
