//! The file cache: input files downloaded once and hardlinked into every
//! action that needs them.
//!
//! Files are keyed by digest and executable bit (a hardlink shares its mode,
//! so the two variants are separate files), read-only (0444, or 0555) and
//! owned by the worker's user, in a directory only that user can enter. The
//! cache is bounded by size and by count, least recently used first out, and
//! emptied at start (nothing from an earlier run is trusted). A blob wanted
//! by several actions at once is downloaded once. Large files are fetched
//! as their chunks where storage splits them, the chunks kept in the cache
//! like any file.

use bb_client::remote::BATCH_BLOB_LIMIT;
use bb_client::{SizeLru, StorageClient};
use bb_util::Digest;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Notify, Semaphore};
use tonic::Status;

/// Inputs at least this large are fetched as chunks (SplitBlob) where the
/// storage splits them, so only the chunks not cached already cross the
/// network: a large file changed in one place costs a chunk or two.
const CHUNKED_FETCH_MIN: u64 = 8 << 20;

/// A cached file: which blob, and whether it is executable.
pub type Key = (Digest, bool);

pub struct FileCache {
    directory: PathBuf,
    max_size: u64,
    state: Mutex<State>,
    downloads: Semaphore,
    /// Blobs downloaded since start (for metrics and tests).
    downloaded: AtomicU64,
}

struct State {
    files: SizeLru<(), Key>,
    /// Downloads in progress; waiters are woken when they end.
    in_flight: HashMap<Key, Arc<Notify>>,
}

fn file_name(key: &Key) -> String {
    let (digest, executable) = key;
    format!(
        "{}-{}-{}{}",
        digest.function(),
        digest.hash_hex(),
        digest.size(),
        if *executable { "-x" } else { "" }
    )
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Status + '_ {
    move |e| Status::internal(format!("file cache {}: {e}", path.display()))
}

impl FileCache {
    /// Opens the cache directory, emptied and private to this user (0700).
    pub fn open(
        directory: &Path,
        max_size: u64,
        max_files: u64,
        parallel_downloads: usize,
    ) -> std::io::Result<Self> {
        // The directory itself is kept: the system may provide it, owned
        // by the worker's user. What is inside is not trusted.
        if directory.exists() {
            for entry in std::fs::read_dir(directory)? {
                std::fs::remove_file(entry?.path())?;
            }
        } else {
            std::fs::create_dir_all(directory)?;
        }
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))?;
        Ok(FileCache {
            directory: directory.to_path_buf(),
            max_size,
            state: Mutex::new(State {
                files: SizeLru::new(max_size)
                    .with_max_entries(usize::try_from(max_files).unwrap_or(usize::MAX)),
                in_flight: HashMap::new(),
            }),
            downloads: Semaphore::new(parallel_downloads.max(1)),
            downloaded: AtomicU64::new(0),
        })
    }

    pub fn path(&self, key: &Key) -> PathBuf {
        self.directory.join(file_name(key))
    }

    /// The most bytes the cache holds.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Blobs downloaded since start.
    pub fn downloads(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Makes sure every key is in the cache, downloading what is missing:
    /// small blobs in batches, large ones streamed, each at most once even
    /// when several actions want it. A key another action was downloading
    /// when it was cancelled is downloaded again here.
    pub async fn ensure(&self, keys: &[Key], storage: &StorageClient, instance: &str) -> Result<(), Status> {
        let mut pending = keys.to_vec();
        for _ in 0..3 {
            pending = self.ensure_once(&pending, storage, instance).await?;
            if pending.is_empty() {
                return Ok(());
            }
        }
        Err(Status::unavailable(format!(
            "input {} could not be downloaded: every concurrent download of it was abandoned",
            pending[0].0
        )))
    }

    /// Downloads the keys nobody is downloading, waits for the others, and
    /// returns those still missing (their download was abandoned).
    async fn ensure_once(
        &self,
        keys: &[Key],
        storage: &StorageClient,
        instance: &str,
    ) -> Result<Vec<Key>, Status> {
        let mut fetch = Vec::new();
        let mut wait = Vec::new();
        {
            let mut state = self.state.lock();
            for key in keys {
                if state.files.touch(key) {
                    continue;
                }
                match state.in_flight.get(key) {
                    Some(notify) => wait.push((*key, notify.clone())),
                    None => {
                        state.in_flight.insert(*key, Arc::new(Notify::new()));
                        fetch.push(*key);
                    }
                }
            }
        }
        // Clears the marks however this call ends, cancellation included.
        let mut downloads = Downloads { cache: self, keys: fetch, done: false };
        let mut waiting = Vec::with_capacity(wait.len());
        for (key, notify) in wait {
            waiting.push((key, Box::pin(notify.notified_owned())));
        }
        // Register interest before anything can finish.
        for (_, notified) in &mut waiting {
            notified.as_mut().enable();
        }
        let fetched = self.fetch(&downloads.keys, storage, instance).await;
        downloads.done = fetched.is_ok();
        drop(downloads);
        fetched?;
        let mut abandoned = Vec::new();
        for (key, notified) in waiting {
            // The download may have ended between our check and `enable`.
            if !self.contains(&key) {
                notified.await;
            }
            if !self.contains(&key) {
                abandoned.push(key);
            }
        }
        Ok(abandoned)
    }

    /// Whether a download is under way for `key` (for tests).
    pub fn is_downloading(&self, key: &Key) -> bool {
        self.state.lock().in_flight.contains_key(key)
    }

    fn contains(&self, key: &Key) -> bool {
        self.state.lock().files.contains(key)
    }

    /// Records downloaded files (when `done`), evicts beyond the bounds, and
    /// wakes whoever waited for these keys.
    fn finish(&self, keys: &[Key], done: bool) {
        let mut evicted = Vec::new();
        {
            let mut state = self.state.lock();
            for key in keys {
                if done {
                    let (_, gone) = state.files.insert(*key, key.0.size(), ());
                    evicted.extend(gone.into_iter().map(|(key, ())| key));
                }
                if let Some(notify) = state.in_flight.remove(key) {
                    notify.notify_waiters();
                }
            }
        }
        for key in evicted {
            let _ = std::fs::remove_file(self.path(&key));
        }
    }

    async fn fetch(&self, keys: &[Key], storage: &StorageClient, instance: &str) -> Result<(), Status> {
        if keys.is_empty() {
            return Ok(());
        }
        let (small, large): (Vec<Key>, Vec<Key>) =
            keys.iter().partition(|(d, _)| d.size() <= BATCH_BLOB_LIMIT);
        let large_downloads =
            futures::future::try_join_all(large.iter().map(|key| self.fetch_large(key, storage, instance)));
        let small_downloads = async {
            if small.is_empty() {
                return Ok(());
            }
            let digests: Vec<Digest> = small.iter().map(|(d, _)| *d).collect();
            let blobs = storage.read_blobs(instance, &digests, "input file").await?;
            let mut files: Vec<(PathBuf, bool, bytes::Bytes)> = Vec::with_capacity(small.len());
            for key in &small {
                let data = blobs.get(&key.0).ok_or_else(|| {
                    Status::internal(format!("storage client returned no input file {}", key.0))
                })?;
                files.push((self.path(key), key.1, data.clone()));
            }
            let directory = self.directory.clone();
            tokio::task::spawn_blocking(move || -> Result<(), Status> {
                for (path, executable, data) in files {
                    write_atomically(&directory, &path, &data, executable)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        };
        tokio::try_join!(large_downloads, small_downloads)?;
        self.downloaded.fetch_add(keys.len() as u64, Ordering::Relaxed);
        metrics::counter!(crate::metrics::DOWNLOADS).increment(keys.len() as u64);
        Ok(())
    }

    async fn fetch_large(&self, key: &Key, storage: &StorageClient, instance: &str) -> Result<(), Status> {
        if key.0.size() >= CHUNKED_FETCH_MIN
            && let Some(chunks) = storage.split_blob(instance, &key.0).await
            && chunks.len() > 1
            && chunks.iter().all(|c| c.size() < CHUNKED_FETCH_MIN)
        {
            // Chunks in the cache already (say, from an earlier version of
            // this file) are not downloaded again.
            let chunk_keys: Vec<Key> = chunks.iter().map(|c| (*c, false)).collect();
            Box::pin(self.ensure(&chunk_keys, storage, instance)).await?;
            if self.assemble(key, &chunks).await? {
                return Ok(());
            }
            // A chunk was evicted in the meantime: download it whole.
        }
        let _permit = self.downloads.acquire().await.map_err(|e| Status::internal(e.to_string()))?;
        let temporary = self.directory.join(format!(".download-{}", uuid::Uuid::new_v4().simple()));
        let result = storage.read_to_file(instance, &key.0, &temporary, "input file").await;
        if result.is_ok() {
            let target = self.path(key);
            let mode = if key.1 { 0o555 } else { 0o444 };
            std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
                .map_err(io_error(&temporary))?;
            std::fs::rename(&temporary, &target).map_err(io_error(&target))?;
        } else {
            let _ = std::fs::remove_file(&temporary);
        }
        result
    }
}

impl FileCache {
    /// Writes `key`'s file from its cached chunks, checking the digest.
    /// `false` when a chunk is no longer in the cache.
    async fn assemble(&self, key: &Key, chunks: &[Digest]) -> Result<bool, Status> {
        let sources: Vec<PathBuf> = chunks.iter().map(|c| self.path(&(*c, false))).collect();
        let temporary = self.directory.join(format!(".assemble-{}", uuid::Uuid::new_v4().simple()));
        let (target, key) = (self.path(key), *key);
        tokio::task::spawn_blocking(move || {
            let assembled = concatenate(&sources, &temporary, key);
            match assembled {
                Ok(true) => {
                    let mode = if key.1 { 0o555 } else { 0o444 };
                    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
                        .map_err(io_error(&temporary))?;
                    std::fs::rename(&temporary, &target).map_err(io_error(&target))?;
                    Ok(true)
                }
                other => {
                    let _ = std::fs::remove_file(&temporary);
                    other
                }
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

/// Copies `sources` in order into a new file at `path`, hashing what it
/// copies: `false` if a source is gone, an error if the result is not the
/// blob `key` names.
fn concatenate(sources: &[PathBuf], path: &Path, key: Key) -> Result<bool, Status> {
    let mut out = std::fs::File::create_new(path).map_err(io_error(path))?;
    let mut hasher = key.0.function().hasher();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    for source in sources {
        let mut input = match std::fs::File::open(source) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(source)(e)),
        };
        loop {
            let n = std::io::Read::read(&mut input, &mut buffer).map_err(io_error(source))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            size += n as u64;
            std::io::Write::write_all(&mut out, &buffer[..n]).map_err(io_error(path))?;
        }
    }
    let actual = hasher.finish(size);
    if actual != key.0 {
        return Err(Status::data_loss(format!(
            "input file {}: its chunks from storage concatenate to {actual}",
            key.0
        )));
    }
    Ok(true)
}

/// Downloads one `ensure` call started: when it is dropped (finished, or
/// cancelled half-way) their in-flight marks are cleared and waiters woken;
/// the files are recorded only if `done`.
struct Downloads<'a> {
    cache: &'a FileCache,
    keys: Vec<Key>,
    done: bool,
}

impl Drop for Downloads<'_> {
    fn drop(&mut self) {
        self.cache.finish(&self.keys, self.done);
    }
}

/// Writes a cache file under a temporary name, sets its mode, renames it in.
fn write_atomically(directory: &Path, path: &Path, data: &[u8], executable: bool) -> Result<(), Status> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = directory.join(format!(".write-{}", uuid::Uuid::new_v4().simple()));
    let mode = if executable { 0o555 } else { 0o444 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io_error(&temporary))?;
    std::io::Write::write_all(&mut file, data).map_err(io_error(&temporary))?;
    // The umask may have cut the mode.
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error(path))
}
