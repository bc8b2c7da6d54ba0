//! The worker side: `buildbarn.remoteworker.OperationQueue/Synchronize`.
//!
//! A worker says who it is, what it offers and what it is doing. Executing
//! workers get an answer at once, with the time to report again (and are
//! told to stop when their operation was cancelled). A worker with nothing
//! to do, including one reporting a completed action, is given the next
//! task in the same round trip, or its call is held until work arrives or
//! `idle_sync_wait` passes.

use super::BuildQueue;
use super::state::{State, Waiter};
use super::task::{Phase, TaskId, TaskState};
use super::worker::Worker;
use crate::platform::Platform;
use bb_proto::buildbarn::remoteworker::{
    DesiredState, SynchronizeRequest, SynchronizeResponse, current_state, desired_state,
};
use bb_proto::reapi;
use bb_util::Digest;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::Status;

/// Removes a waiting call's entry when the call goes away early.
struct WaiterGuard<'a> {
    queue: &'a BuildQueue,
    id: u64,
    worker: String,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.state.lock();
        state.waiters.retain(|w| w.id != self.id);
        if let Some(worker) = state.workers.get_mut(&self.worker) {
            worker.waiting = false;
            worker.last_seen = Instant::now();
        }
    }
}

fn at(after: Duration) -> Option<prost_types::Timestamp> {
    Some((SystemTime::now() + after).into())
}

/// What a Synchronize call does after its first pass under the lock.
enum Step {
    Respond(Box<SynchronizeResponse>),
    /// Nothing to do yet: wait for a task to be sent.
    Wait {
        key: String,
        was_idle: bool,
        waiter: u64,
        receiver: oneshot::Receiver<TaskId>,
    },
}

impl BuildQueue {
    pub async fn synchronize(
        self: &Arc<Self>,
        request: SynchronizeRequest,
    ) -> Result<SynchronizeResponse, Status> {
        let (key, was_idle, waiter, mut receiver) = match self.synchronize_now(request)? {
            Step::Respond(response) => return Ok(*response),
            Step::Wait { key, was_idle, waiter, receiver } => (key, was_idle, waiter, receiver),
        };
        let guard = WaiterGuard { queue: self, id: waiter, worker: key.clone() };
        let received = tokio::time::timeout(self.config.idle_sync_wait.get(), &mut receiver).await;
        // Once the guard has removed the waiter (under the lock), no task can
        // be sent any more: whatever arrived, arrived.
        drop(guard);
        let received = match received {
            Ok(Ok(id)) => Ok(id),
            _ => receiver.try_recv(),
        };
        let state = self.state.lock();
        match received {
            Ok(id) => Ok(self.assignment(&state, &key, id)),
            Err(_) if was_idle => {
                Ok(SynchronizeResponse { next_synchronization_at: at(Duration::ZERO), desired_state: None })
            }
            Err(_) => Ok(idle(Duration::ZERO)),
        }
    }

    /// The Action Cache entry the scheduler writes for a Synchronize that
    /// reports a completed action (workers leave it to the scheduler, see
    /// `Executing.scheduler_caches_result`): the instance, the action and
    /// its result, when the action succeeded, may be cached, and is the
    /// worker's current one and still wanted.
    pub fn result_to_cache<'r>(
        &self,
        request: &'r SynchronizeRequest,
    ) -> Option<(String, Digest, &'r reapi::ActionResult)> {
        let current_state::WorkerState::Executing(executing) =
            request.current_state.as_ref()?.worker_state.as_ref()?
        else {
            return None;
        };
        let Some(current_state::executing::ExecutionState::Completed(response)) = &executing.execution_state
        else {
            return None;
        };
        let result = response.result.as_ref()?;
        let succeeded = result.exit_code == 0 && response.status.as_ref().is_none_or(|s| s.code == 0);
        if !succeeded || response.cached_result {
            return None;
        }
        let labels: BTreeMap<String, String> =
            request.worker_id.iter().map(|(name, value)| (name.clone(), value.clone())).collect();
        let state = self.state.lock();
        let task = state.tasks.get(&state.workers.get(&Worker::key(&labels))?.task?)?;
        let wanted = !(task.cancelled || task.is_completed() || task.request.action.do_not_cache);
        let same = executing.action_digest.as_ref() == Some(&task.request.action_digest.to_proto());
        (wanted && same).then(|| (task.request.instance_name.clone(), task.request.action_digest, result))
    }

    /// Everything a Synchronize call does under the lock.
    fn synchronize_now(&self, request: SynchronizeRequest) -> Result<Step, Status> {
        if request.worker_id.is_empty() {
            return Err(Status::invalid_argument("worker_id is empty: a worker must identify itself"));
        }
        bb_util::resource_name::validate_instance_name(&request.instance_name_prefix)?;
        let labels: BTreeMap<String, String> = request.worker_id.into_iter().collect();
        let key = Worker::key(&labels);
        let current = request
            .current_state
            .and_then(|c| c.worker_state)
            .ok_or_else(|| Status::invalid_argument(format!("worker {key}: current_state is missing")))?;

        let mut state = self.state.lock();
        let worker = state.workers.entry(key.clone()).or_insert_with(|| Worker::new(labels));
        worker.last_seen = Instant::now();
        worker.platform = Platform::from_worker(request.platform.as_ref());
        worker.size_class = request.size_class;
        worker.instance_name_prefix = request.instance_name_prefix;
        worker.prefers_idle = request.prefer_being_idle;
        let held = worker.task;

        let was_idle = match current {
            current_state::WorkerState::Idle(()) => {
                if let Some(id) = held {
                    state.requeue_lost(id, &format!("worker {key} reported idle while it had the action"));
                }
                true
            }
            current_state::WorkerState::Executing(executing) => {
                let id = check_assignment(&state, &key, held, executing.action_digest.as_ref())?;
                let stopped = state.tasks.get(&id).is_none_or(|task| task.cancelled || task.is_completed());
                let phase = match executing.execution_state {
                    Some(current_state::executing::ExecutionState::Completed(response)) => {
                        if stopped {
                            state.release(id);
                        } else {
                            state.finish(id, response);
                        }
                        if let Some(worker) = state.workers.get_mut(&key) {
                            worker.completed += 1;
                        }
                        None
                    }
                    Some(current_state::executing::ExecutionState::FetchingInputs(())) => {
                        Some(Phase::FetchingInputs)
                    }
                    Some(current_state::executing::ExecutionState::Running(())) => Some(Phase::Running),
                    Some(current_state::executing::ExecutionState::UploadingOutputs(())) => {
                        Some(Phase::UploadingOutputs)
                    }
                    Some(current_state::executing::ExecutionState::Started(())) | None => {
                        Some(Phase::Started)
                    }
                };
                if let Some(phase) = phase {
                    if stopped {
                        state.release(id);
                        return Ok(Step::Respond(Box::new(idle(Duration::ZERO))));
                    }
                    return Ok(Step::Respond(Box::new(self.still_executing(&mut state, &key, id, phase))));
                }
                false
            }
        };

        // A worker on its way out (or handing an action back) gets no new
        // work, and its answer at once.
        let prefers_idle = state.workers.get(&key).is_some_and(|w| w.prefers_idle);
        // Otherwise the next task, now or when one arrives.
        if !prefers_idle && let Some(id) = state.take_task_for(&key) {
            return Ok(Step::Respond(Box::new(self.assignment(&state, &key, id))));
        }
        if prefers_idle {
            return Ok(Step::Respond(Box::new(if was_idle {
                SynchronizeResponse {
                    next_synchronization_at: at(self.config.idle_sync_wait.get()),
                    desired_state: None,
                }
            } else {
                idle(self.config.idle_sync_wait.get())
            })));
        }
        let (sender, receiver) = oneshot::channel();
        let waiter = state.next_waiter_id();
        state.waiters.push_back(Waiter { id: waiter, worker: key.clone(), sender });
        if let Some(worker) = state.workers.get_mut(&key) {
            worker.waiting = true;
        }
        Ok(Step::Wait { key, was_idle, waiter, receiver })
    }

    fn still_executing(&self, state: &mut State, key: &str, id: TaskId, phase: Phase) -> SynchronizeResponse {
        if let Some(task) = state.tasks.get_mut(&id)
            && let TaskState::Executing { phase: current, .. } = &mut task.state
        {
            *current = phase;
        }
        if let Some(worker) = state.workers.get_mut(key) {
            worker.phase = Some(phase);
        }
        SynchronizeResponse {
            next_synchronization_at: at(self.config.executing_sync_interval.get()),
            desired_state: None,
        }
    }

    /// The response handing task `id` to worker `key`.
    fn assignment(&self, state: &State, key: &str, id: TaskId) -> SynchronizeResponse {
        let Some(task) = state.tasks.get(&id) else { return idle(Duration::ZERO) };
        let suffix = state
            .workers
            .get(key)
            .and_then(|w| w.instance_suffix(&task.request.instance_name))
            .unwrap_or_default()
            .to_string();
        let executing = desired_state::Executing {
            action_digest: Some(task.request.action_digest.to_proto()),
            action: Some(task.request.action.clone()),
            queued_timestamp: Some(task.queued_at.into()),
            auxiliary_metadata: task.request.auxiliary_metadata.clone(),
            instance_name_suffix: suffix,
            w3c_trace_context: bb_util::trace_context::TraceContext::of_span(&task.span).into_map(),
            digest_function: task.request.action_digest.function().to_proto(),
            command: Some(task.request.command.clone()),
            scheduler_caches_result: true,
        };
        SynchronizeResponse {
            next_synchronization_at: at(self.config.executing_sync_interval.get()),
            desired_state: Some(DesiredState {
                worker_state: Some(desired_state::WorkerState::Executing(executing)),
            }),
        }
    }
}

/// Tells the worker to stop what it is doing and come back after `after`.
fn idle(after: Duration) -> SynchronizeResponse {
    SynchronizeResponse {
        next_synchronization_at: at(after),
        desired_state: Some(DesiredState { worker_state: Some(desired_state::WorkerState::Idle(())) }),
    }
}

/// The task the worker reports on must be the one it was given.
fn check_assignment(
    state: &State,
    key: &str,
    held: Option<TaskId>,
    reported: Option<&bb_proto::reapi::Digest>,
) -> Result<TaskId, Status> {
    let reported_text = reported.map_or("(none)".to_string(), |d| format!("{}/{}", d.hash, d.size_bytes));
    let Some(id) = held else {
        return Err(Status::failed_precondition(format!(
            "worker {key} reports on action {reported_text}, but it was given no action"
        )));
    };
    let Some(task) = state.tasks.get(&id) else {
        return Err(Status::failed_precondition(format!(
            "worker {key} reports on action {reported_text}, whose operation no longer exists"
        )));
    };
    let given = task.request.action_digest.to_proto();
    if reported != Some(&given) {
        return Err(Status::failed_precondition(format!(
            "worker {key} reports on action {reported_text}, but it was given action {}",
            task.request.action_digest
        )));
    }
    Ok(id)
}
