//! Blob stores: where bytes live, behind one narrow interface.
//!
//! A store maps a `Digest` to bytes. It knows nothing about REv2: the CAS
//! layer above it verifies contents before writing, and the Action Cache keys
//! it by a digest of its own key material. Local stores (bb-storage's memory
//! and disk) are bounded and evict the least recently used blobs; a remote
//! store is another program's.
//!
//! A range of a blob is read with `get(..)?.reader(offset)`: stores that can
//! seek (memory, disk) start there without reading what comes before.

mod blob;
mod chunked;
mod existence_caching;
mod lru;
pub(crate) mod mirrored;
mod read_caching;
pub(crate) mod sharding;
#[cfg(test)]
mod tests;

pub use blob::{Blob, BlobReader, ByteStream, Quarantine};
pub use chunked::Chunks;
pub use existence_caching::ExistenceCachingStore;
pub use lru::SizeLru;
pub use mirrored::{MirroredStore, Repairs};
pub use read_caching::ReadCachingStore;
pub use sharding::{Shard, ShardingStore};

/// A copy of a mirrored store (or of a sharded Action Cache) failed: warned
/// about at most once per 10 seconds, since a node that is down fails every
/// call; the rest goes to the debug log.
pub(crate) fn copy_failed(message: std::fmt::Arguments) {
    static LAST_WARNING: parking_lot::Mutex<Option<std::time::Instant>> = parking_lot::Mutex::new(None);
    let mut last = LAST_WARNING.lock();
    if last.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(10)) {
        *last = Some(std::time::Instant::now());
        drop(last);
        tracing::warn!("{message} (further failures of copies for 10s are logged at debug level)");
    } else {
        tracing::debug!("{message}");
    }
}

/// Copies repaired by the mirroring decorators (label `store`: `cas` or
/// `action_cache`); programs that serve metrics register the family.
pub const COPIES_REPAIRED: &str = "bb_storage_copies_repaired_total";

use bb_util::Digest;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("blob {digest} was corrupted in storage and has been removed")]
    Corrupt { digest: Digest },
    #[error("blob {digest} is larger than the whole store ({capacity} bytes)")]
    TooLarge { digest: Digest, capacity: u64 },
    #[error("write of blob {digest}: {reason}")]
    BadWrite { digest: Digest, reason: String },
    #[error("chunk {digest} of a spliced blob is no longer stored")]
    ChunkGone { digest: Digest },
    #[error("{context}: {status}")]
    Remote { context: String, status: Box<tonic::Status> },
    /// A store with rules of its own (the CAS checks digests and limits)
    /// refused the request.
    #[error("{0}")]
    Refused(Box<tonic::Status>),
}

impl From<tonic::Status> for StoreError {
    fn from(status: tonic::Status) -> Self {
        StoreError::Refused(Box::new(status))
    }
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io { context: context.into(), source }
    }

    /// A remote store's call failed.
    pub fn remote(context: impl Into<String>, status: tonic::Status) -> Self {
        StoreError::Remote { context: context.into(), status: Box::new(status) }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(error: StoreError) -> Self {
        match &error {
            // The blob is gone now: to the client that is "missing".
            StoreError::Corrupt { .. } | StoreError::ChunkGone { .. } => {
                tonic::Status::not_found(error.to_string())
            }
            StoreError::TooLarge { .. } => tonic::Status::resource_exhausted(error.to_string()),
            StoreError::BadWrite { .. } => tonic::Status::invalid_argument(error.to_string()),
            StoreError::Io { .. } => tonic::Status::internal(error.to_string()),
            StoreError::Remote { context, status } => {
                tonic::Status::new(status.code(), format!("{context}: {}", status.message()))
            }
            StoreError::Refused(status) => (**status).clone(),
        }
    }
}

/// Blob storage. Implementations are safe to share between tasks.
#[tonic::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Opens a blob for reading, or `None` when it is not stored.
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError>;

    /// Stores a blob held in memory. Storing a blob that is already present
    /// succeeds and keeps one copy.
    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError>;

    /// Starts a streamed write; nothing is visible until `commit`, and a
    /// writer dropped without commit leaves nothing behind.
    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError>;

    /// The digests, out of `digests`, that are not stored. Present ones
    /// count as recently used.
    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError>;
}

/// A streamed write in progress.
#[tonic::async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError>;
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

#[cfg(any(test, feature = "conformance"))]
pub mod conformance {
    //! Behaviour every store must have, run against each implementation
    //! (the tests of bb-storage's stores and of the decorators here).
    use super::*;
    use bb_util::DigestFunction;

    pub fn blob(text: &str) -> (Digest, Bytes) {
        let data = Bytes::from(text.as_bytes().to_vec());
        (Digest::of(DigestFunction::Sha256, &data), data)
    }

    pub async fn read(store: &dyn BlobStore, digest: &Digest) -> Option<Bytes> {
        match store.get(digest).await.unwrap() {
            Some(blob) => Some(blob.into_bytes().await.unwrap()),
            None => None,
        }
    }

    pub async fn round_trips(store: &dyn BlobStore) {
        let (d, data) = blob("hello");
        assert_eq!(read(store, &d).await, None);
        assert_eq!(store.find_missing(&[d]).await.unwrap(), vec![d]);
        store.put(&d, data.clone()).await.unwrap();
        store.put(&d, data.clone()).await.unwrap();
        assert_eq!(read(store, &d).await, Some(data.clone()));
        assert!(store.find_missing(&[d]).await.unwrap().is_empty());

        let (d2, data2) = blob("streamed in two parts");
        let mut w = store.begin_write(&d2).await.unwrap();
        w.write(data2.slice(..8)).await.unwrap();
        w.write(data2.slice(8..)).await.unwrap();
        assert_eq!(read(store, &d2).await, None, "visible before commit");
        w.commit().await.unwrap();
        assert_eq!(read(store, &d2).await, Some(data2));

        let (d3, data3) = blob("abandoned");
        let mut w = store.begin_write(&d3).await.unwrap();
        w.write(data3).await.unwrap();
        drop(w);
        assert_eq!(read(store, &d3).await, None);
    }

    /// Capacity 100 bytes; blobs of 40 bytes: the third evicts the least
    /// recently used.
    pub async fn evicts_least_recently_used(store: &dyn BlobStore) {
        let blobs: Vec<_> = (0..3).map(|i| blob(&format!("{i}").repeat(40))).collect();
        store.put(&blobs[0].0, blobs[0].1.clone()).await.unwrap();
        store.put(&blobs[1].0, blobs[1].1.clone()).await.unwrap();
        // Touch 0, so 1 is the oldest.
        assert!(read(store, &blobs[0].0).await.is_some());
        store.put(&blobs[2].0, blobs[2].1.clone()).await.unwrap();
        let missing = store.find_missing(&blobs.iter().map(|b| b.0).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(missing, vec![blobs[1].0]);

        let (big, data) = blob(&"x".repeat(101));
        assert!(matches!(store.put(&big, data).await, Err(StoreError::TooLarge { .. })));
    }
}
