//! Snapshots of the queue for the status page, `/api/status` and `bb status`
//! (the JSON types are bb-client's, shared with `bb`).

use super::BuildQueue;
use super::state::State;
use super::task::{Task, TaskState};
use bb_client::status::{OperationDetail, OperationSummary, PlatformStatus, QueueStatus, WorkerStatus};
use std::collections::BTreeMap;
use std::time::SystemTime;
use tokio::time::Instant;

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
        digest_function: task.request.action_digest.function().name().to_string(),
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
        outcome: response.filter(|_| task.is_completed()).map(|r| super::state::outcome(r).to_string()),
        uncached_result: task.kept_result.map(|d| d.to_string()),
    }
}

impl BuildQueue {
    pub fn status(&self) -> QueueStatus {
        let state = self.state.lock();
        let now = Instant::now();
        let platforms = self.platform_counts(&state);
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

    /// Operations queued and executing, and the workers able to take
    /// them, per instance and platform.
    pub(super) fn platform_counts(&self, state: &State) -> Vec<PlatformStatus> {
        let mode = self.config.platform_matching;
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
        platforms
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
