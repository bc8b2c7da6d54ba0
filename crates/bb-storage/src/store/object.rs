//! Blobs as objects of an S3-compatible bucket (AWS S3, SeaweedFS, MinIO,
//! Ceph's RGW, ...), through the `object_store` crate.
//!
//! A bucket answers "which of these 10,000 blobs do you hold?" only one
//! HEAD request at a time, so this store keeps an index of what the bucket
//! holds: rebuilt from one listing when the store starts, added to by every
//! write, trimmed by every read that finds an object gone. FindMissing is
//! answered from it alone. Writers that share the bucket and are not this
//! process make the index stale only towards "missing": a client then
//! uploads a blob again, which costs a write, never a build.
//!
//! Objects are named `<prefix>/<first two hex digits>/<function>-<hash>-<size>`,
//! as the disk store names its files. In a checked store (the CAS) reads
//! are checked against their digest as they arrive, and an object that does
//! not match is deleted; an unchecked one (Action Cache entries, whose keys
//! are not digests of their contents) holds small entries, read whole.

use super::{Blob, BlobStore, BlobWriter, Quarantine, StoreError};
use bb_util::Digest;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

/// Blobs up to this size are written with one request; larger ones in parts
/// of this size (S3 wants parts of at least 5 MiB).
const PART_SIZE: usize = 8 << 20;

/// Parts of one blob uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;

pub struct ObjectStorageStore {
    bucket: Arc<dyn ObjectStore>,
    prefix: Path,
    checked: bool,
    index: Arc<Index>,
}

/// What the bucket holds, as far as this process knows.
#[derive(Default)]
struct Index {
    present: Mutex<HashSet<Digest>>,
    /// Set once the bucket's listing is in `present`.
    listed: tokio::sync::OnceCell<()>,
}

impl ObjectStorageStore {
    /// Blobs under `prefix` of `bucket`, `checked` against their digests.
    /// The listing that fills the index starts at once when a runtime is
    /// running, else on the first FindMissing.
    pub fn new(bucket: Arc<dyn ObjectStore>, prefix: &str, checked: bool) -> Arc<Self> {
        let prefix = Path::from(prefix);
        let store = Arc::new(ObjectStorageStore { bucket, prefix, checked, index: Arc::default() });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let listing = store.clone();
            runtime.spawn(async move {
                if let Err(error) = listing.listed().await {
                    tracing::warn!("{error}; FindMissing will list the bucket again");
                }
            });
        }
        store
    }

    fn location(&self, digest: &Digest) -> Path {
        location(&self.prefix, digest)
    }

    /// Waits for the index to hold the bucket's listing, listing it if no
    /// one has yet (or the last attempt failed).
    async fn listed(&self) -> Result<(), StoreError> {
        self.index.listed.get_or_try_init(|| self.list_bucket()).await.map(|_| ())
    }

    async fn list_bucket(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut listing = self.bucket.list(Some(&self.prefix));
        let (mut blobs, mut strays) = (0u64, 0u64);
        while let Some(object) = listing.try_next().await.map_err(|e| failed("list the bucket", e))? {
            match object.location.filename().and_then(Digest::from_storage_name) {
                Some(digest) if !self.checked || digest.size() == object.size => {
                    self.index.present.lock().insert(digest);
                    blobs += 1;
                }
                _ => strays += 1,
            }
        }
        tracing::info!(
            "object storage: {blobs} blobs under {:?} listed in {:.1?} ({strays} other objects ignored)",
            self.prefix.as_ref(),
            started.elapsed()
        );
        Ok(())
    }

    /// Drops a corrupted object from the bucket and the index.
    fn quarantine(&self) -> Quarantine {
        let (bucket, index, prefix) = (self.bucket.clone(), self.index.clone(), self.prefix.clone());
        Arc::new(move |digest: &Digest| {
            tracing::warn!("object storage: blob {digest} does not match its digest; deleting it");
            index.present.lock().remove(digest);
            let location = location(&prefix, digest);
            let bucket = bucket.clone();
            tokio::spawn(async move {
                if let Err(error) = bucket.delete(&location).await {
                    tracing::warn!("object storage: cannot delete {location}: {error}");
                }
            });
        })
    }
}

fn location(prefix: &Path, digest: &Digest) -> Path {
    prefix.clone().join(&digest.hash_hex()[..2]).join(digest.storage_name())
}

/// A failed request to the bucket: the store is unavailable, not the request wrong.
fn failed(what: &str, error: object_store::Error) -> StoreError {
    StoreError::remote(
        format!("object storage: cannot {what}"),
        tonic::Status::unavailable(error.to_string()),
    )
}

#[tonic::async_trait]
impl BlobStore for ObjectStorageStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        let result = match self.bucket.get(&self.location(digest)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                self.index.present.lock().remove(digest);
                return Ok(None);
            }
            Err(error) => return Err(failed(&format!("read blob {digest}"), error)),
        };
        let context = format!("read blob {digest}");
        if !self.checked {
            return Ok(Some(Blob::from_bytes(result.bytes().await.map_err(|e| failed(&context, e))?)));
        }
        let stream = result.into_stream().map_err(move |error| failed(&context, error));
        Ok(Some(Blob::from_byte_stream(stream.boxed(), *digest, Some(self.quarantine()))))
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        if data.len() > PART_SIZE {
            let mut writer = self.begin_write(digest).await?;
            writer.write(data).await?;
            return writer.commit().await;
        }
        let location = self.location(digest);
        self.bucket
            .put(&location, PutPayload::from_bytes(data))
            .await
            .map_err(|e| failed(&format!("write blob {digest}"), e))?;
        self.index.present.lock().insert(*digest);
        Ok(())
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(ObjectWriter {
            digest: *digest,
            location: self.location(digest),
            bucket: self.bucket.clone(),
            index: self.index.clone(),
            buffered: Vec::new(),
            buffered_len: 0,
            upload: None,
        }))
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        self.listed().await?;
        let present = self.index.present.lock();
        Ok(digests.iter().filter(|d| !present.contains(d)).copied().collect())
    }
}

/// A streamed write: held in memory up to one part, then uploaded in parts.
/// Dropped without commit, an upload in parts is aborted.
struct ObjectWriter {
    digest: Digest,
    location: Path,
    bucket: Arc<dyn ObjectStore>,
    index: Arc<Index>,
    buffered: Vec<Bytes>,
    buffered_len: usize,
    upload: Option<WriteMultipart>,
}

impl ObjectWriter {
    fn failed(&self, error: object_store::Error) -> StoreError {
        failed(&format!("write blob {}", self.digest), error)
    }
}

#[tonic::async_trait]
impl BlobWriter for ObjectWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        if let Some(upload) = &mut self.upload {
            let waited = upload.wait_for_capacity(PARTS_IN_FLIGHT).await;
            upload.put(data);
            return waited.map_err(|e| self.failed(e));
        }
        self.buffered_len += data.len();
        self.buffered.push(data);
        if self.buffered_len > PART_SIZE {
            let parts = self.bucket.put_multipart(&self.location).await.map_err(|e| self.failed(e))?;
            let mut upload = WriteMultipart::new_with_chunk_size(parts, PART_SIZE);
            for data in self.buffered.drain(..) {
                upload.put(data);
            }
            self.upload = Some(upload);
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        match self.upload.take() {
            Some(upload) => upload.finish().await.map_err(|e| self.failed(e))?,
            None => {
                let payload = PutPayload::from_iter(std::mem::take(&mut self.buffered));
                self.bucket.put(&self.location, payload).await.map_err(|e| self.failed(e))?
            }
        };
        self.index.present.lock().insert(self.digest);
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(error) = upload.abort().await {
                    tracing::debug!("object storage: aborting an upload: {error}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_client::store::conformance::{blob, read, round_trips};
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn behaves_like_a_store() {
        round_trips(&*ObjectStorageStore::new(Arc::new(InMemory::new()), "cas", true)).await;
    }

    #[tokio::test]
    async fn find_missing_answers_from_one_listing_kept_up_to_date() {
        let bucket = Arc::new(InMemory::new());
        let first = ObjectStorageStore::new(bucket.clone(), "cas", true);
        let (kept, data) = blob("written by an earlier process");
        first.put(&kept, data.clone()).await.unwrap();
        let (large, large_data) = blob(&"in parts ".repeat(2 * PART_SIZE / 9));
        first.put(&large, large_data.clone()).await.unwrap();
        bucket.put(&Path::from("cas/ab/not-a-blob"), PutPayload::from_static(b"x")).await.unwrap();

        // A second process lists the bucket once; what it then writes, or
        // finds gone, updates its index without another listing.
        let second = ObjectStorageStore::new(bucket.clone(), "cas", true);
        let (new, new_data) = blob("written later");
        assert_eq!(second.find_missing(&[kept, large, new]).await.unwrap(), vec![new]);
        assert_eq!(read(&*second, &large).await, Some(large_data));
        second.put(&new, new_data).await.unwrap();
        bucket.delete(&second.location(&kept)).await.unwrap();
        assert!(second.find_missing(&[kept, new]).await.unwrap().is_empty(), "the index is not asked again");
        assert_eq!(read(&*second, &kept).await, None);
        assert_eq!(second.find_missing(&[kept, new]).await.unwrap(), vec![kept]);
        // Another prefix is another store.
        let other = ObjectStorageStore::new(bucket, "ac", true);
        assert_eq!(other.find_missing(&[new]).await.unwrap(), vec![new]);
    }

    #[tokio::test]
    async fn a_corrupted_object_is_never_served_and_is_deleted() {
        let bucket = Arc::new(InMemory::new());
        let store = ObjectStorageStore::new(bucket.clone(), "cas", true);
        store.listed().await.unwrap();
        let (digest, data) = blob("the real contents");
        store.put(&digest, data.clone()).await.unwrap();
        let mut damaged = data.to_vec();
        damaged[0] ^= 1;
        bucket.put(&store.location(&digest), PutPayload::from(damaged)).await.unwrap();
        let blob = store.get(&digest).await.unwrap().unwrap();
        assert!(matches!(blob.into_bytes().await, Err(StoreError::Corrupt { .. })));
        assert_eq!(store.find_missing(&[digest]).await.unwrap(), vec![digest]);
        for _ in 0..100 {
            if bucket.head(&store.location(&digest)).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the corrupted object was not deleted");
    }

    #[tokio::test]
    async fn an_unchecked_store_holds_entries_under_keys_of_their_own() {
        let store = ObjectStorageStore::new(Arc::new(InMemory::new()), "ac", false);
        let (key, _) = blob("key material");
        let entry = Bytes::from_static(b"an entry, not the key's contents");
        store.put(&key, entry.clone()).await.unwrap();
        assert_eq!(read(&*store, &key).await, Some(entry));
        assert!(store.find_missing(&[key]).await.unwrap().is_empty());
    }
}
