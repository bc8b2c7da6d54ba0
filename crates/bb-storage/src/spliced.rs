//! Records of blobs stored as chunks: for each, the ordered chunk digests,
//! kept in the Action Cache's store (whose values are not content-addressed)
//! under a key derived from the blob's digest. A record is written only
//! after the chunks were read and their concatenation hashed to the blob's
//! digest, so serving the chunks in order serves the blob.

use crate::store::{BlobStore, StoreError};
use bb_proto::bbrs::storage::SplicedBlob;
use bb_util::{Digest, DigestFunction};
use prost::Message;
use std::collections::HashSet;
use std::sync::Arc;

/// Tells a record's key apart from every CAS digest and Action Cache key.
const KEY_DOMAIN: &[u8] = b"bb-rs spliced blob\0";

#[derive(Clone)]
pub struct SplicedBlobs {
    store: Arc<dyn BlobStore>,
}

/// A blob's chunks, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splice {
    pub chunks: Vec<Digest>,
    /// `ChunkingFunction.Value`, as the splicer said.
    pub chunking_function: i32,
}

impl SplicedBlobs {
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        SplicedBlobs { store }
    }

    fn key(digest: &Digest) -> Digest {
        let mut material = KEY_DOMAIN.to_vec();
        material.extend_from_slice(digest.function().name().as_bytes());
        material.push(0);
        material.extend_from_slice(digest.hash());
        material.extend_from_slice(&digest.size().to_le_bytes());
        Digest::of(DigestFunction::Sha256, &material)
    }

    /// Which of `digests` have a record (not yet read or checked).
    pub async fn recorded(&self, digests: &[Digest]) -> Result<HashSet<Digest>, StoreError> {
        if digests.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<Digest> = digests.iter().map(Self::key).collect();
        let absent: HashSet<Digest> = self.store.find_missing(&keys).await?.into_iter().collect();
        Ok(digests.iter().zip(&keys).filter(|(_, key)| !absent.contains(key)).map(|(d, _)| *d).collect())
    }

    /// The chunks of `digest`, if a record of them exists (and decodes).
    pub async fn get(&self, digest: &Digest) -> Result<Option<Splice>, StoreError> {
        let Some(blob) = self.store.get(&Self::key(digest)).await? else { return Ok(None) };
        let Ok(record) = SplicedBlob::decode(blob.into_bytes().await?) else { return Ok(None) };
        let chunks: Result<Vec<Digest>, _> =
            record.chunk_digests.iter().map(|d| Digest::from_proto(digest.function(), d)).collect();
        let Ok(chunks) = chunks else { return Ok(None) };
        // A record must describe this very blob.
        let recorded = record.blob_digest.as_ref().map(|d| Digest::from_proto(digest.function(), d));
        if recorded != Some(Ok(*digest)) || chunks.iter().map(Digest::size).sum::<u64>() != digest.size() {
            return Ok(None);
        }
        Ok(Some(Splice { chunks, chunking_function: record.chunking_function }))
    }

    pub async fn put(&self, digest: &Digest, splice: &Splice) -> Result<(), StoreError> {
        let record = SplicedBlob {
            blob_digest: Some(digest.to_proto()),
            digest_function: digest.function().to_proto(),
            chunk_digests: splice.chunks.iter().map(Digest::to_proto).collect(),
            chunking_function: splice.chunking_function,
        };
        self.store.put(&Self::key(digest), record.encode_to_vec().into()).await
    }
}
