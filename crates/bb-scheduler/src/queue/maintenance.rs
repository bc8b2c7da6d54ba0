//! The periodic pass that keeps the queue honest: lost workers give their
//! action back, operations nobody watches any more are cancelled, actions
//! no worker can take fail, and finished operations are forgotten.

use super::BuildQueue;
use super::task::TaskId;
use crate::platform::Platform;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

impl BuildQueue {
    /// Runs `maintain` every `interval` until `shutdown`.
    pub fn spawn_maintenance(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let Some(queue) = queue.upgrade() else { return };
                queue.maintain();
                queue.sample_history();
            }
        });
    }

    pub fn maintain(&self) {
        let now = Instant::now();
        let config = &self.config;
        let mut state = self.state.lock();

        // Workers that stopped reporting (a waiting call counts as reporting).
        let lost: Vec<(String, Option<TaskId>)> = state
            .workers
            .iter()
            .filter(|(_, w)| !w.waiting && now.duration_since(w.last_seen) > config.worker_timeout.get())
            .map(|(key, w)| (key.clone(), w.task))
            .collect();
        for (key, task) in lost {
            if let Some(id) = task {
                tracing::warn!("worker {key} stopped reporting while running an action");
                state.requeue_lost(id, &format!("worker {key} stopped reporting"));
            } else {
                tracing::info!("worker {key} stopped reporting");
            }
            state.workers.remove(&key);
        }

        // Operations whose clients all went away.
        let grace = config.client_disconnect_grace.get();
        let orphaned: Vec<TaskId> = state
            .tasks
            .values()
            .filter(|t| {
                !t.is_completed() && t.orphaned_since.is_some_and(|since| now.duration_since(since) > grace)
            })
            .map(|t| t.id)
            .collect();
        for id in orphaned {
            state.abort(id, Status::cancelled("every client of the operation went away"));
        }

        // Actions that no registered worker can take.
        let timeout = config.unmatched_platform_timeout.get();
        let mode = config.platform_matching;
        let mut unmatched = Vec::new();
        for ((instance, platform), queue) in &state.queues {
            if queue.is_empty() {
                continue;
            }
            let served = state.workers.values().any(|w| {
                w.instance_suffix(instance).is_some() && platform.is_satisfied_by(&w.platform, mode)
            });
            if served {
                continue;
            }
            for id in queue.tasks() {
                if state.tasks.get(&id).is_some_and(|t| now.duration_since(t.queued_instant) > timeout) {
                    unmatched.push((id, platform.clone()));
                }
            }
        }
        if !unmatched.is_empty() {
            let offered = offered_platforms(state.workers.values().map(|w| &w.platform));
            for (id, platform) in unmatched {
                let status = Status::failed_precondition(format!(
                    "no worker can run an action with platform {platform}; workers offer {offered}"
                ));
                state.abort(id, status);
            }
        }

        // Finished operations past their retention, unless a stream is still
        // delivering them or a worker still has to hear of the cancellation.
        let retention = config.completed_retention.get();
        let held: std::collections::HashSet<TaskId> = state.workers.values().filter_map(|w| w.task).collect();
        let expired: Vec<TaskId> = state
            .tasks
            .values()
            .filter(|t| t.watchers == 0 && !held.contains(&t.id))
            .filter(|t| matches!(t.state, super::task::TaskState::Completed { at, .. } if now.duration_since(at) > retention))
            .map(|t| t.id)
            .collect();
        for id in expired {
            if let Some(task) = state.tasks.remove(&id) {
                state.by_name.remove(&task.name);
            }
        }
        state.queues.retain(|_, q| !q.is_empty());
        metrics::gauge!(crate::metrics::WORKERS).set(state.workers.len() as f64);
    }
}

fn offered_platforms<'a>(platforms: impl Iterator<Item = &'a Platform>) -> String {
    let mut distinct: Vec<String> = platforms.map(|p| p.to_string()).collect();
    distinct.sort();
    distinct.dedup();
    if distinct.is_empty() { "nothing: no worker is registered".to_string() } else { distinct.join(", ") }
}
