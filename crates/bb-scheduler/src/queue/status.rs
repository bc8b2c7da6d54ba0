//! Snapshots of the queue for the status page, `/api/status` and `bb status`.

use super::BuildQueue;
use super::task::{Task, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;
use tokio::time::Instant;

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

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn stage_name(task: &Task) -> String {
    match &task.state {
        TaskState::Queued => "queued".into(),
        TaskState::Executing { phase, .. } => format!("executing ({})", phase.name()),
        TaskState::Completed { .. } => "completed".into(),
    }
}

fn summary(task: &Task) -> OperationSummary {
    let response = task.response.as_ref();
    let status = response.and_then(|r| r.status.as_ref()).filter(|s| s.code != 0);
    OperationSummary {
        name: task.name.clone(),
        instance_name: task.request.instance_name.clone(),
        action_digest: task.request.action_digest.to_string(),
        submitter: task.request.submitter.clone(),
        stage: stage_name(task),
        worker: task.worker().map(str::to_string),
        queued_at: rfc3339(task.queued_at),
        attempts: task.attempts,
        priority: task.request.priority,
        invocation: task.request.invocation.clone(),
        watchers: task.watchers,
        exit_code: response.and_then(|r| r.result.as_ref()).map(|r| r.exit_code),
        status: status.map(|s| format!("{:?}: {}", tonic::Code::from_i32(s.code), s.message)),
    }
}

impl BuildQueue {
    pub fn status(&self) -> QueueStatus {
        let state = self.state.lock();
        let mode = self.config.platform_matching;
        let now = Instant::now();
        let mut executing: BTreeMap<(String, String), usize> = BTreeMap::new();
        for task in state.tasks.values() {
            if matches!(task.state, TaskState::Executing { .. }) {
                let key = (task.request.instance_name.clone(), task.request.platform.to_string());
                *executing.entry(key).or_default() += 1;
            }
        }
        let mut platforms: Vec<PlatformStatus> = state
            .queues
            .iter()
            .map(|((instance, platform), queue)| PlatformStatus {
                instance_name: instance.clone(),
                platform: platform.to_string(),
                queued: queue.len(),
                executing: executing.remove(&(instance.clone(), platform.to_string())).unwrap_or(0),
                workers: state
                    .workers
                    .values()
                    .filter(|w| {
                        w.instance_suffix(instance).is_some() && platform.is_satisfied_by(&w.platform, mode)
                    })
                    .count(),
            })
            .collect();
        // Platforms with running actions but nothing queued.
        for ((instance, platform), count) in executing {
            platforms.push(PlatformStatus {
                instance_name: instance,
                platform,
                queued: 0,
                executing: count,
                workers: 0,
            });
        }
        platforms.sort_by(|a, b| (&a.instance_name, &a.platform).cmp(&(&b.instance_name, &b.platform)));

        let workers = state
            .workers
            .iter()
            .map(|(id, w)| {
                let task = w.task.and_then(|t| state.tasks.get(&t));
                WorkerStatus {
                    id: id.clone(),
                    labels: w.labels.clone(),
                    platform: w.platform.to_string(),
                    state: match (w.task.is_some(), w.drained) {
                        (true, _) => "executing".into(),
                        (false, true) => "drained".into(),
                        (false, false) => "idle".into(),
                    },
                    drained: w.drained,
                    operation: task.map(|t| t.name.clone()),
                    action_digest: task.map(|t| t.request.action_digest.to_string()),
                    phase: w.phase.map(|p| p.name().to_string()),
                    last_seen_seconds_ago: now.duration_since(w.last_seen).as_secs_f64(),
                    completed_actions: w.completed,
                }
            })
            .collect();

        let mut operations: Vec<&Task> = state.tasks.values().collect();
        operations.sort_by_key(|t| std::cmp::Reverse(t.id));
        QueueStatus { platforms, workers, operations: operations.into_iter().map(summary).collect() }
    }

    pub fn operation_detail(&self, name: &str) -> Option<OperationDetail> {
        let state = self.state.lock();
        let task = state.tasks.get(state.by_name.get(name)?)?;
        let response = task.response.as_ref();
        let result = response.and_then(|r| r.result.as_ref());
        let digest =
            |d: &Option<bb_proto::reapi::Digest>| d.as_ref().map(|d| format!("{}/{}", d.hash, d.size_bytes));
        Some(OperationDetail {
            summary: summary(task),
            platform: task.request.platform.to_string(),
            timeout_seconds: task.request.action.timeout.as_ref().map(|t| t.seconds),
            do_not_cache: task.request.action.do_not_cache,
            cached_result: response.is_some_and(|r| r.cached_result),
            started_at: match &task.state {
                TaskState::Executing { started_at, .. } => Some(rfc3339(*started_at)),
                _ => result
                    .and_then(|r| r.execution_metadata.as_ref())
                    .and_then(|m| m.worker_start_timestamp)
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .map(rfc3339),
            },
            completed_at: match &task.state {
                TaskState::Completed { completed_at, .. } => Some(rfc3339(*completed_at)),
                _ => None,
            },
            stdout_digest: result.and_then(|r| digest(&r.stdout_digest)),
            stderr_digest: result.and_then(|r| digest(&r.stderr_digest)),
            output_files: result
                .map(|r| r.output_files.iter().map(|f| f.path.clone()).collect())
                .unwrap_or_default(),
            message: response.map(|r| r.message.clone()).unwrap_or_default(),
        })
    }
}
