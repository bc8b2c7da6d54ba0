//! Remembers, for a while, which blobs a store was seen to hold, so that
//! FindMissing asks it only about the others. Bazel asks about every input
//! of every action; most were present a moment ago.
//!
//! A blob remembered as present may have been evicted since: the cache only
//! ever errs towards "present" for at most `ttl`, the same bound a client
//! accepts from any CAS between FindMissing and its next read.

use super::{Blob, BlobStore, BlobWriter, SizeLru, StoreError};
use bb_util::Digest;
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct ExistenceCachingStore {
    inner: Arc<dyn BlobStore>,
    ttl: Duration,
    /// When each digest was last seen present; each counts 1 towards the
    /// LRU's bound, so the bound is a number of digests.
    seen: Arc<Mutex<SizeLru<Instant>>>,
}

impl ExistenceCachingStore {
    /// Remembers up to `max_entries` digests, each for `ttl`.
    pub fn new(inner: Arc<dyn BlobStore>, ttl: Duration, max_entries: u64) -> Self {
        let seen = Arc::new(Mutex::new(SizeLru::new(max_entries)));
        ExistenceCachingStore { inner, ttl, seen }
    }

    fn remember(&self, digests: impl IntoIterator<Item = Digest>) {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        for digest in digests {
            seen.remove(&digest);
            seen.insert(digest, 1, now);
        }
    }

    fn known_present(&self, digest: &Digest) -> bool {
        let mut seen = self.seen.lock();
        match seen.get(digest) {
            Some(at) if at.elapsed() < self.ttl => true,
            Some(_) => {
                seen.remove(digest);
                false
            }
            None => false,
        }
    }
}

#[tonic::async_trait]
impl BlobStore for ExistenceCachingStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        self.inner.get(digest).await
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        self.inner.put(digest, data).await?;
        self.remember([*digest]);
        Ok(())
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        // Remembered once the inner store has it: the next FindMissing asks.
        self.inner.begin_write(digest).await
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let unknown: Vec<Digest> = digests.iter().filter(|d| !self.known_present(d)).copied().collect();
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let missing = self.inner.find_missing(&unknown).await?;
        let absent: std::collections::HashSet<&Digest> = missing.iter().collect();
        self.remember(unknown.iter().filter(|d| !absent.contains(d)).copied());
        Ok(missing)
    }
}
