//! Copies of every blob on several stores (replication).
//!
//! A write goes to every copy at once and succeeds once `write_quorum` of
//! them stored it, so with one copy down builds go on. A read is answered by
//! the first copy that has the blob, and so is FindMissing: a blob is missing
//! only where no copy that answered has it. A copy found lacking a blob
//! another copy has (it was down when the blob was written, or lost it) is
//! repaired in the background, from the copy that has it: so the copies
//! catch up as blobs are used after a node comes back.

use super::{Blob, BlobStore, BlobWriter, StoreError};
use bb_util::Digest;
use bytes::Bytes;
use futures::future::join_all;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes per write while repairing a copy.
const REPAIR_CHUNK: usize = 1 << 20;

#[derive(Clone)]
pub struct MirroredStore {
    copies: Vec<Arc<dyn BlobStore>>,
    write_quorum: usize,
    repairs: Arc<Repairs>,
}

/// Blobs copied to a copy that lacked them, shared by every view of one
/// configured store.
#[derive(Default)]
pub struct Repairs {
    done: AtomicU64,
    /// Digests being repaired: found lacking again meanwhile, they are not
    /// copied twice.
    in_flight: Mutex<HashSet<Digest>>,
}

impl Repairs {
    pub fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

impl MirroredStore {
    /// `write_quorum` is clamped to 1..=copies.
    pub fn new(copies: Vec<Arc<dyn BlobStore>>, write_quorum: usize, repairs: Arc<Repairs>) -> Self {
        let write_quorum = write_quorum.clamp(1, copies.len().max(1));
        MirroredStore { copies, write_quorum, repairs }
    }

    /// Copies `digest` from `from` to each of `to`, in the background.
    fn repair(&self, digest: Digest, from: usize, to: Vec<usize>) {
        if !self.repairs.in_flight.lock().insert(digest) {
            return;
        }
        let source = self.copies[from].clone();
        let targets: Vec<Arc<dyn BlobStore>> = to.into_iter().map(|i| self.copies[i].clone()).collect();
        let repairs = self.repairs.clone();
        tokio::spawn(async move {
            for target in targets {
                match copy_blob(&*source, &*target, &digest).await {
                    Ok(true) => {
                        repairs.done.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(super::COPIES_REPAIRED, "store" => "cas").increment(1);
                        tracing::info!("repaired a missing copy of {digest}");
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("cannot repair a missing copy of {digest}: {e}"),
                }
            }
            repairs.in_flight.lock().remove(&digest);
        });
    }
}

/// Streams one blob from `source` into `target`; `false` if the source no
/// longer has it.
async fn copy_blob(
    source: &dyn BlobStore,
    target: &dyn BlobStore,
    digest: &Digest,
) -> Result<bool, StoreError> {
    let Some(blob) = source.get(digest).await? else { return Ok(false) };
    let mut reader = blob.reader(0);
    let mut writer = target.begin_write(digest).await?;
    while let Some(chunk) = reader.next_chunk(REPAIR_CHUNK).await? {
        writer.write(chunk).await?;
    }
    writer.commit().await?;
    Ok(true)
}

/// The first error of a call every copy failed, or `Ok` of what answered.
fn answered<T>(results: Vec<Result<T, StoreError>>) -> Result<Vec<(usize, T)>, StoreError> {
    let mut answers = Vec::new();
    let mut first_error = None;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(value) => answers.push((i, value)),
            Err(e) => {
                super::copy_failed(format_args!("a copy of a mirrored store failed: {e}"));
                first_error.get_or_insert(e);
            }
        }
    }
    match (answers.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        _ => Ok(answers),
    }
}

#[tonic::async_trait]
impl BlobStore for MirroredStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        let mut lacking = Vec::new();
        let mut first_error = None;
        for (i, copy) in self.copies.iter().enumerate() {
            match copy.get(digest).await {
                Ok(Some(blob)) => {
                    if !lacking.is_empty() {
                        self.repair(*digest, i, lacking);
                    }
                    return Ok(Some(blob));
                }
                Ok(None) => lacking.push(i),
                Err(e) => {
                    super::copy_failed(format_args!(
                        "a copy of a mirrored store failed reading {digest}: {e}"
                    ));
                    first_error.get_or_insert(e);
                }
            }
        }
        match (lacking.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(None),
        }
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        let results = join_all(self.copies.iter().map(|copy| copy.put(digest, data.clone()))).await;
        require_quorum(digest, self.write_quorum, results)
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        let started = join_all(self.copies.iter().map(|copy| copy.begin_write(digest))).await;
        let writers = answered(started)?.into_iter().map(|(_, writer)| Some(writer)).collect();
        Ok(Box::new(MirroredWriter { digest: *digest, writers, quorum: self.write_quorum }))
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let asked = join_all(self.copies.iter().map(|copy| copy.find_missing(digests))).await;
        let answers = answered(asked)?;
        let missing_on: Vec<(usize, HashSet<Digest>)> =
            answers.into_iter().map(|(i, missing)| (i, missing.into_iter().collect())).collect();
        let mut missing = Vec::new();
        for digest in digests {
            let lacking: Vec<usize> =
                missing_on.iter().filter(|(_, m)| m.contains(digest)).map(|(i, _)| *i).collect();
            if lacking.len() == missing_on.len() {
                missing.push(*digest);
            } else if !lacking.is_empty() {
                let holder = missing_on.iter().find(|(_, m)| !m.contains(digest)).map(|(i, _)| *i);
                if let Some(holder) = holder {
                    self.repair(*digest, holder, lacking);
                }
            }
        }
        Ok(missing)
    }
}

/// `Ok` when at least `quorum` of the copies stored the blob.
fn require_quorum(
    digest: &Digest,
    quorum: usize,
    results: Vec<Result<(), StoreError>>,
) -> Result<(), StoreError> {
    enough_copies(results, quorum, |stored| StoreError::BadWrite {
        digest: *digest,
        reason: format!("stored on {stored} copies, short of the {quorum} required"),
    })
}

/// `Ok` when at least `quorum` of the writes to copies succeeded; else the
/// first error, or `short(stored)` when too few copies were even tried.
pub(crate) fn enough_copies<E>(
    results: Vec<Result<(), E>>,
    quorum: usize,
    short: impl FnOnce(usize) -> E,
) -> Result<(), E> {
    let stored = results.iter().filter(|r| r.is_ok()).count();
    if stored >= quorum {
        return Ok(());
    }
    Err(results.into_iter().find_map(Result::err).unwrap_or_else(|| short(stored)))
}

/// A write to every copy that accepted it; a copy that fails midway is
/// dropped, and the commit needs the quorum.
struct MirroredWriter {
    digest: Digest,
    writers: Vec<Option<Box<dyn BlobWriter>>>,
    quorum: usize,
}

#[tonic::async_trait]
impl BlobWriter for MirroredWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        let live = self.writers.iter_mut().filter_map(|w| w.as_mut());
        let results = join_all(live.map(|writer| writer.write(data.clone()))).await;
        let mut results = results.into_iter();
        let mut first_error = None;
        for slot in self.writers.iter_mut().filter(|w| w.is_some()) {
            if let Some(Err(e)) = results.next() {
                super::copy_failed(format_args!(
                    "a copy of a mirrored store failed writing {}: {e}",
                    self.digest
                ));
                first_error.get_or_insert(e);
                *slot = None;
            }
        }
        match (self.writers.iter().filter(|w| w.is_some()).count() < self.quorum, first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let MirroredWriter { digest, writers, quorum } = *self;
        let results = join_all(writers.into_iter().flatten().map(|writer| writer.commit())).await;
        require_quorum(&digest, quorum, results)
    }
}
