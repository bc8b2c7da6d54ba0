//! Blobs in RAM, bounded by total size, least recently used evicted first.

use super::SizeLru;
use super::{Blob, BlobStore, BlobWriter, StoreError};
use bb_util::Digest;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::sync::Arc;

#[derive(Clone)]
pub struct MemoryStore {
    blobs: Arc<Mutex<SizeLru<Bytes>>>,
}

impl MemoryStore {
    pub fn new(capacity: u64) -> Self {
        MemoryStore { blobs: Arc::new(Mutex::new(SizeLru::new(capacity))) }
    }

    fn insert(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        let mut blobs = self.blobs.lock();
        if data.len() as u64 > blobs.capacity() {
            return Err(StoreError::TooLarge { digest: *digest, capacity: blobs.capacity() });
        }
        let (_, evicted) = blobs.insert(*digest, data.len() as u64, data);
        drop(blobs);
        if !evicted.is_empty() {
            metrics::counter!(crate::metrics::EVICTIONS, "store" => "memory").increment(evicted.len() as u64);
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl BlobStore for MemoryStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        Ok(self.blobs.lock().get(digest).cloned().map(Blob::from_bytes))
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        self.insert(digest, data)
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        // Capacity for the whole blob up front: growing by doubling would
        // copy it over and over. Pages are only committed as data arrives.
        let capacity = usize::try_from(digest.size()).unwrap_or(0).min(self.blobs.lock().capacity() as usize);
        let buffer = BytesMut::with_capacity(capacity);
        Ok(Box::new(MemoryWriter { store: self.clone(), digest: *digest, buffer }))
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let mut blobs = self.blobs.lock();
        Ok(digests.iter().filter(|d| !blobs.touch(d)).copied().collect())
    }
}

struct MemoryWriter {
    store: MemoryStore,
    digest: Digest,
    buffer: BytesMut,
}

#[tonic::async_trait]
impl BlobWriter for MemoryWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(&data);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.store.insert(&self.digest, self.buffer.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_client::store::conformance as tests;

    #[tokio::test]
    async fn behaves_like_a_store() {
        tests::round_trips(&MemoryStore::new(1 << 20)).await;
        tests::evicts_least_recently_used(&MemoryStore::new(100)).await;
    }
}
