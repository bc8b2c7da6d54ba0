//! Blobs as files on a local disk.
//!
//! Layout under the store's directory:
//!
//! ```text
//! blobs/<first two hex digits>/<function>-<hash>-<size>
//! tmp/<random>                   writes in progress
//! ```
//!
//! A write goes to a file in `tmp/`, is fsynced (unless configured off) and
//! renamed into `blobs/`, so a blob is either absent or whole, also after a
//! crash; `tmp/` is emptied at startup. An in-memory index of every blob,
//! rebuilt from the directory at startup (oldest modification time first
//! out), answers FindMissing without touching the disk and picks what to
//! evict when the store outgrows its size limit. Blobs of a checked store
//! (the CAS) are verified as they are read; a corrupted one is deleted.

use super::{Blob, BlobStore, BlobWriter, StoreError};
use super::{Quarantine, SizeLru};
use bb_util::Digest;
use bytes::Bytes;
use parking_lot::Mutex;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Files at most this large are read whole (and checked) in one go.
const WHOLE_READ_LIMIT: u64 = 1 << 20;

/// A read refreshes a blob's modification time (its age after a restart)
/// when it is older than this.
const MTIME_REFRESH: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

struct Inner {
    blobs_dir: PathBuf,
    tmp_dir: PathBuf,
    /// Whether contents must hash to their name (true for the CAS).
    checked: bool,
    /// Whether writes are fsynced before they become visible.
    sync_writes: bool,
    /// Also serializes renames into and deletions from `blobs/`, so the
    /// index and the directory always agree.
    index: Mutex<SizeLru<()>>,
}

impl DiskStore {
    /// Opens (creating if needed) the store in `root`, removing leftovers of
    /// interrupted writes and loading the index.
    pub fn open(root: &Path, capacity: u64, checked: bool, sync_writes: bool) -> Result<Self, StoreError> {
        let blobs_dir = root.join("blobs");
        let tmp_dir = root.join("tmp");
        let io = |what: &str, path: &Path| {
            let context = format!("{what} {}", path.display());
            move |e| StoreError::io(context, e)
        };
        // Private to the user serving it: blobs are other people's inputs,
        // and actions run as other users on the same host.
        fs::create_dir_all(root).map_err(io("cannot create", root))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io("cannot chmod", root))?;
        if tmp_dir.exists() {
            fs::remove_dir_all(&tmp_dir).map_err(io("cannot clear", &tmp_dir))?;
        }
        fs::create_dir_all(&tmp_dir).map_err(io("cannot create", &tmp_dir))?;
        for shard in 0..=255u8 {
            let dir = blobs_dir.join(hex::encode([shard]));
            fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
        }

        let mut found = Vec::new();
        for shard in 0..=255u8 {
            let dir = blobs_dir.join(hex::encode([shard]));
            for entry in fs::read_dir(&dir).map_err(io("cannot list", &dir))? {
                let entry = entry.map_err(io("cannot list", &dir))?;
                let path = entry.path();
                let parsed = entry.file_name().to_str().and_then(Digest::from_storage_name);
                let metadata = entry.metadata().map_err(io("cannot stat", &path))?;
                match parsed {
                    Some(digest) if !checked || metadata.len() == digest.size() => {
                        let mtime = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        found.push((mtime, digest, metadata.len()));
                    }
                    _ => {
                        tracing::warn!("removing stray or truncated file {}", path.display());
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        // Newest first, each appended as the least recently used.
        found.sort_by_key(|(mtime, _, _)| std::cmp::Reverse(*mtime));
        let mut index = SizeLru::new(capacity);
        for (_, digest, size) in found {
            index.insert_oldest(digest, size, ());
        }
        let store = DiskStore {
            inner: Arc::new(Inner { blobs_dir, tmp_dir, checked, sync_writes, index: Mutex::new(index) }),
        };
        let mut index = store.inner.index.lock();
        let evicted = index.shrink_to_capacity();
        store.inner.delete_files(&evicted);
        tracing::info!(
            "disk store {}: {} blobs, {} of {} bytes used",
            root.display(),
            index.len(),
            index.total_size(),
            index.capacity()
        );
        drop(index);
        Ok(store)
    }

    /// Number of blobs and their total size.
    pub fn usage(&self) -> (usize, u64) {
        let index = self.inner.index.lock();
        (index.len(), index.total_size())
    }

    fn quarantine(&self) -> Quarantine {
        let inner = self.inner.clone();
        Arc::new(move |digest: &Digest| {
            tracing::error!("blob {digest} is corrupted on disk; removing it");
            metrics::counter!(crate::metrics::CORRUPTED).increment(1);
            inner.remove(digest);
        })
    }
}

impl Inner {
    fn path(&self, digest: &Digest) -> PathBuf {
        let hash = digest.hash_hex();
        self.blobs_dir.join(&hash[..2]).join(digest.storage_name())
    }

    fn remove(&self, digest: &Digest) {
        let mut index = self.index.lock();
        index.remove(digest);
        let _ = fs::remove_file(self.path(digest));
    }

    /// Deletes evicted blobs' files; called with the index lock held.
    fn delete_files(&self, evicted: &[(Digest, ())]) {
        for (digest, ()) in evicted {
            if let Err(e) = fs::remove_file(self.path(digest))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("cannot delete evicted blob {digest}: {e}");
            }
        }
        if !evicted.is_empty() {
            metrics::counter!(crate::metrics::EVICTIONS, "store" => "disk").increment(evicted.len() as u64);
        }
    }

    fn check_capacity(&self, digest: &Digest, size: u64) -> Result<(), StoreError> {
        let capacity = self.index.lock().capacity();
        if size > capacity { Err(StoreError::TooLarge { digest: *digest, capacity }) } else { Ok(()) }
    }

    /// Moves a finished temporary file into place and indexes it.
    fn publish(&self, digest: &Digest, temp: &Path, size: u64) -> Result<(), StoreError> {
        self.check_capacity(digest, size)?;
        let mut index = self.index.lock();
        if index.touch(digest) {
            // Someone else stored it meanwhile: one copy is enough.
            drop(index);
            let _ = fs::remove_file(temp);
            return Ok(());
        }
        let path = self.path(digest);
        fs::rename(temp, &path).map_err(|e| StoreError::io(format!("cannot store {}", path.display()), e))?;
        let (_, evicted) = index.insert(*digest, size, ());
        self.delete_files(&evicted);
        Ok(())
    }

    fn new_temp(&self) -> Result<(File, PathBuf), StoreError> {
        let path = self.tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let file = File::create_new(&path)
            .map_err(|e| StoreError::io(format!("cannot create {}", path.display()), e))?;
        Ok((file, path))
    }

    fn finish_temp(&self, file: &File, path: &Path) -> Result<(), StoreError> {
        if self.sync_writes {
            file.sync_all().map_err(|e| StoreError::io(format!("cannot fsync {}", path.display()), e))?;
        }
        Ok(())
    }

    fn open_blob(
        self: &Arc<Self>,
        digest: &Digest,
        quarantine: Quarantine,
    ) -> Result<Option<Blob>, StoreError> {
        if !self.index.lock().touch(digest) {
            return Ok(None);
        }
        let path = self.path(digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted behind our back: forget it.
                self.index.lock().remove(digest);
                return Ok(None);
            }
            Err(e) => return Err(StoreError::io(format!("cannot open {}", path.display()), e)),
        };
        let metadata =
            file.metadata().map_err(|e| StoreError::io(format!("cannot stat {}", path.display()), e))?;
        if let Ok(modified) = metadata.modified()
            && modified.elapsed().is_ok_and(|age| age > MTIME_REFRESH)
        {
            let _ = file.set_modified(SystemTime::now());
        }
        let size = metadata.len();
        if !self.checked {
            return Ok(Some(Blob::from_file(file, size, None)));
        }
        if size != digest.size() {
            quarantine(digest);
            return Ok(None);
        }
        if size <= WHOLE_READ_LIMIT {
            let mut data = Vec::with_capacity(size as usize);
            std::io::Read::read_to_end(&mut &file, &mut data)
                .map_err(|e| StoreError::io(format!("cannot read {}", path.display()), e))?;
            if digest.verify(&data).is_err() {
                quarantine(digest);
                return Ok(None);
            }
            return Ok(Some(Blob::from_bytes(data.into())));
        }
        Ok(Some(Blob::from_file(file, size, Some((*digest, quarantine)))))
    }
}

/// Writeback is started for every window of this many bytes as soon as it
/// is written, so the final fsync finds little left to do and the kernel
/// does not throttle the writer for a pile of dirty pages.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// Starts (without waiting for) writeback of each window that the write of
/// bytes `start..end` completed.
fn start_writeback_of_finished_windows(file: &File, start: u64, end: u64) {
    use std::os::fd::AsRawFd;
    let first = start / WRITEBACK_WINDOW;
    let last = end / WRITEBACK_WINDOW;
    if last > first {
        let from = first * WRITEBACK_WINDOW;
        let len = (last - first) * WRITEBACK_WINDOW;
        // SAFETY: plain syscall on a file descriptor we own; a failure only
        // means the later fsync does all the work.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), from as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::io("disk task", std::io::Error::other(e)))?
}

#[tonic::async_trait]
impl BlobStore for DiskStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        let inner = self.inner.clone();
        let digest = *digest;
        let quarantine = self.quarantine();
        blocking(move || inner.open_blob(&digest, quarantine)).await
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        self.inner.check_capacity(digest, data.len() as u64)?;
        if self.inner.index.lock().touch(digest) {
            return Ok(());
        }
        let inner = self.inner.clone();
        let digest = *digest;
        blocking(move || {
            let (mut file, path) = inner.new_temp()?;
            let written = file
                .write_all(&data)
                .map_err(|e| StoreError::io(format!("cannot write {}", path.display()), e))
                .and_then(|()| inner.finish_temp(&file, &path))
                .and_then(|()| inner.publish(&digest, &path, data.len() as u64));
            if written.is_err() {
                let _ = fs::remove_file(&path);
            }
            written
        })
        .await
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        if self.inner.checked {
            self.inner.check_capacity(digest, digest.size())?;
        }
        let inner = self.inner.clone();
        let (file, path) = blocking(move || inner.new_temp()).await?;
        Ok(Box::new(DiskWriter {
            inner: self.inner.clone(),
            digest: *digest,
            file: Arc::new(file),
            path: Some(path),
            written: 0,
            in_flight: None,
        }))
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let mut index = self.inner.index.lock();
        Ok(digests.iter().filter(|d| !index.touch(d)).copied().collect())
    }
}

struct DiskWriter {
    inner: Arc<Inner>,
    digest: Digest,
    file: Arc<File>,
    /// The temporary file; `None` once published.
    path: Option<PathBuf>,
    written: u64,
    /// The chunk being written: one write stays in flight, so the caller can
    /// receive and hash the next chunk meanwhile.
    in_flight: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
}

impl DiskWriter {
    async fn wait_in_flight(&mut self) -> Result<(), StoreError> {
        match self.in_flight.take() {
            Some(write) => write.await.map_err(|e| StoreError::io("disk task", std::io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl BlobWriter for DiskWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.wait_in_flight().await?;
        let file = self.file.clone();
        let start = self.written;
        self.written += data.len() as u64;
        let end = self.written;
        let start_writeback = self.inner.sync_writes;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            (&*file).write_all(&data).map_err(|e| StoreError::io("cannot write temporary blob", e))?;
            if start_writeback {
                start_writeback_of_finished_windows(&file, start, end);
            }
            Ok(())
        }));
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.wait_in_flight().await?;
        let path =
            self.path.take().ok_or_else(|| StoreError::io("commit", std::io::ErrorKind::Other.into()))?;
        let (inner, file, digest, size) = (self.inner.clone(), self.file.clone(), self.digest, self.written);
        blocking(move || {
            let published =
                inner.finish_temp(&file, &path).and_then(|()| inner.publish(&digest, &path, size));
            if published.is_err() {
                let _ = fs::remove_file(&path);
            }
            published
        })
        .await
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_client::store::conformance as tests;
    use bb_util::DigestFunction;

    #[tokio::test]
    async fn behaves_like_a_store() {
        let dir = tempfile::tempdir().unwrap();
        tests::round_trips(&DiskStore::open(&dir.path().join("a"), 1 << 20, true, true).unwrap()).await;
        tests::evicts_least_recently_used(&DiskStore::open(&dir.path().join("b"), 100, true, false).unwrap())
            .await;
    }

    #[tokio::test]
    async fn survives_reopen_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let (d, data) = tests::blob("persistent");
        {
            let store = DiskStore::open(dir.path(), 1 << 20, true, true).unwrap();
            store.put(&d, data.clone()).await.unwrap();
            // An interrupted write leaves a temporary file behind.
            let mut w = store.begin_write(&tests::blob("interrupted").0).await.unwrap();
            w.write(Bytes::from_static(b"interr")).await.unwrap();
            std::mem::forget(w);
        }
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 1);
        let store = DiskStore::open(dir.path(), 1 << 20, true, true).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(tests::read(&store, &d).await, Some(data));
        assert_eq!(store.usage(), (1, 10));
    }

    #[tokio::test]
    async fn corrupted_blobs_are_removed_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 10 << 20, true, true).unwrap();
        let small = tests::blob("small blob");
        let large_data = Bytes::from(vec![5u8; (WHOLE_READ_LIMIT + 10) as usize]);
        let large = (Digest::of(DigestFunction::Sha256, &large_data), large_data);
        for (digest, data) in [&small, &large] {
            store.put(digest, data.clone()).await.unwrap();
            let path = store.inner.path(digest);
            let mut bytes = fs::read(&path).unwrap();
            bytes[3] ^= 1;
            fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(tests::read(&store, &small.0).await, None);
        let blob = store.get(&large.0).await.unwrap().expect("opened before the check");
        assert!(matches!(blob.into_bytes().await, Err(StoreError::Corrupt { .. })));
        assert_eq!(store.find_missing(&[small.0, large.0]).await.unwrap(), vec![small.0, large.0]);
        assert!(!store.inner.path(&large.0).exists());
    }

    #[test]
    fn file_names_round_trip() {
        let (d, _) = tests::blob("x");
        let store_dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(store_dir.path(), 1, true, false).unwrap();
        let path = store.inner.path(&d);
        assert_eq!(Digest::from_storage_name(path.file_name().unwrap().to_str().unwrap()), Some(d));
        assert_eq!(Digest::from_storage_name("sha256-zz-1"), None);
        assert_eq!(Digest::from_storage_name("garbage"), None);
    }

    #[test]
    fn the_store_is_private_to_its_user() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cas");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        DiskStore::open(&root, 1 << 20, true, false).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
        let fresh = dir.path().join("new/cas");
        DiskStore::open(&fresh, 1 << 20, true, false).unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
