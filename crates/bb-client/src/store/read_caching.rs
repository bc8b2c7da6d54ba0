//! A fast store in front of a slow one: a local disk in front of another
//! node (a worker host's inputs then cross the network once) or in front of
//! a bucket (the object storage tier).
//!
//! Reads try the fast store first; a blob only the slow one has is copied
//! into the fast one as it is read. Writes go to both and succeed when the
//! slow one has the blob: the slow store is the one that answers for what
//! is stored, so FindMissing asks it alone. The fast store failing or
//! lacking space never fails a request; it only makes it slower.

use super::{Blob, BlobStore, BlobWriter, StoreError};
use bb_util::Digest;
use bytes::Bytes;
use std::sync::Arc;

pub struct ReadCachingStore {
    fast: Arc<dyn BlobStore>,
    slow: Arc<dyn BlobStore>,
}

/// Why copying a blob into the fast store stopped.
enum CopyFailed {
    /// Reading the slow store failed: the caller gets that error.
    Slow(StoreError),
    /// The fast store could not take it: the caller reads the slow store.
    Fast(StoreError),
}

/// Chunks read from the slow store at a time while copying.
const COPY_CHUNK: usize = 1 << 20;

impl ReadCachingStore {
    pub fn new(fast: Arc<dyn BlobStore>, slow: Arc<dyn BlobStore>) -> Self {
        ReadCachingStore { fast, slow }
    }

    /// Streams `blob` (from the slow store) into the fast store, then opens
    /// the fast store's copy.
    async fn copy_to_fast(&self, digest: &Digest, blob: Blob) -> Result<Option<Blob>, CopyFailed> {
        let mut writer = self.fast.begin_write(digest).await.map_err(CopyFailed::Fast)?;
        let mut reader = blob.reader(0);
        while let Some(chunk) = reader.next_chunk(COPY_CHUNK).await.map_err(CopyFailed::Slow)? {
            writer.write(chunk).await.map_err(CopyFailed::Fast)?;
        }
        writer.commit().await.map_err(CopyFailed::Fast)?;
        self.fast.get(digest).await.map_err(CopyFailed::Fast)
    }

    async fn read_fast(&self, digest: &Digest) -> Option<Blob> {
        match self.fast.get(digest).await {
            Ok(blob) => blob,
            Err(error) => {
                tracing::debug!("fast store: read of {digest}: {error}");
                None
            }
        }
    }
}

#[tonic::async_trait]
impl BlobStore for ReadCachingStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        if let Some(blob) = self.read_fast(digest).await {
            return Ok(Some(blob));
        }
        let Some(blob) = self.slow.get(digest).await? else { return Ok(None) };
        match self.copy_to_fast(digest, blob).await {
            Ok(Some(blob)) => Ok(Some(blob)),
            Err(CopyFailed::Slow(error)) => Err(error),
            // Evicted at once, or the fast store failed: read the slow one.
            Ok(None) => self.slow.get(digest).await,
            Err(CopyFailed::Fast(error)) => {
                tracing::debug!("fast store: copy of {digest}: {error}");
                self.slow.get(digest).await
            }
        }
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        // The slow store first: the fast one never holds what it lacks.
        self.slow.put(digest, data.clone()).await?;
        if let Err(error) = self.fast.put(digest, data).await {
            tracing::debug!("fast store: write of {digest}: {error}");
        }
        Ok(())
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        let slow = self.slow.begin_write(digest).await?;
        let fast = self.fast.begin_write(digest).await.ok();
        Ok(Box::new(BothWriter { digest: *digest, slow, fast }))
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        self.slow.find_missing(digests).await
    }
}

/// A write to both stores; the fast one is dropped from it when it fails.
struct BothWriter {
    digest: Digest,
    slow: Box<dyn BlobWriter>,
    fast: Option<Box<dyn BlobWriter>>,
}

#[tonic::async_trait]
impl BlobWriter for BothWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        if let Some(fast) = &mut self.fast
            && let Err(error) = fast.write(data.clone()).await
        {
            tracing::debug!("fast store: write of {}: {error}", self.digest);
            self.fast = None;
        }
        self.slow.write(data).await
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        // The slow store first: the fast one never holds what it lacks.
        self.slow.commit().await?;
        if let Some(fast) = self.fast
            && let Err(error) = fast.commit().await
        {
            tracing::debug!("fast store: write of {}: {error}", self.digest);
        }
        Ok(())
    }
}
