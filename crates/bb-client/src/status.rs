//! The scheduler's status as JSON (`/api/status`, `/api/operations/<name>`):
//! what the status page renders and what `bb status` reads.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueStatus {
    pub platforms: Vec<PlatformStatus>,
    pub workers: Vec<WorkerStatus>,
    /// Unfinished operations, and finished ones still retained.
    pub operations: Vec<OperationSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlatformStatus {
    pub instance_name: String,
    pub platform: String,
    pub queued: usize,
    pub executing: usize,
    /// Workers that can take this platform's actions.
    pub workers: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub platform: String,
    /// "idle", "executing" or "drained" (a drained worker may still be executing).
    pub state: String,
    pub drained: bool,
    pub operation: Option<String>,
    pub action_digest: Option<String>,
    pub phase: Option<String>,
    pub last_seen_seconds_ago: f64,
    pub completed_actions: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperationSummary {
    pub name: String,
    pub instance_name: String,
    /// The digest function of the action's digests ("sha256", ...).
    #[serde(default)]
    pub digest_function: String,
    /// The action's digest, as HASH/SIZE.
    pub action_digest: String,
    pub stage: String,
    pub worker: Option<String>,
    pub queued_at: String,
    pub attempts: u32,
    pub priority: i32,
    pub invocation: String,
    /// The identity that submitted it.
    pub submitter: String,
    pub watchers: usize,
    pub exit_code: Option<i32>,
    /// The error, if the operation ended with one.
    pub status: Option<String>,
    /// How it ended, once it has (the outcomes of [`HistorySample::completed`]).
    #[serde(default)]
    pub outcome: Option<String>,
    /// Where a result the Action Cache did not get (a failure, a timeout)
    /// is kept in the CAS, as HASH/SIZE: the worker stores it there.
    #[serde(default)]
    pub uncached_result: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperationDetail {
    #[serde(flatten)]
    pub summary: OperationSummary,
    pub platform: String,
    pub timeout_seconds: Option<i64>,
    pub do_not_cache: bool,
    pub cached_result: bool,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub stdout_digest: Option<String>,
    pub stderr_digest: Option<String>,
    pub output_files: Vec<String>,
    pub message: String,
}

/// The last hour of the queue (`/api/history`), oldest sample first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueHistory {
    /// Seconds between samples.
    pub sample_seconds: u64,
    pub samples: Vec<HistorySample>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistorySample {
    pub at_unix_seconds: u64,
    /// Per queue ("instance platform"): operations queued and executing.
    pub queues: BTreeMap<String, (usize, usize)>,
    /// Actions completed since the sample before, by outcome ("success",
    /// "nonzero_exit", "cache_hit", "timeout", "cancelled", "error").
    pub completed: BTreeMap<String, u64>,
    pub workers: usize,
    pub busy_workers: usize,
}
