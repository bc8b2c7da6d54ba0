//! The build queue's state and the transitions every path shares: adding,
//! queueing, assigning, finishing and cancelling tasks. Callers hold the
//! queue's lock.

use super::platform_queue::PlatformQueue;
use super::task::{NewTask, Phase, Task, TaskId, TaskState, error_response};
use super::worker::Worker;
use crate::config::QueueConfig;
use crate::metrics as names;
use crate::platform::Platform;
use bb_proto::reapi;
use bb_util::Digest;
use std::collections::{BTreeMap, HashMap, VecDeque};
use tokio::sync::oneshot;

/// Tasks wait in one queue per (instance name, platform).
pub(crate) type QueueKey = (String, Platform);

/// An idle worker's Synchronize call, waiting for a task.
pub(crate) struct Waiter {
    pub id: u64,
    pub worker: String,
    pub sender: oneshot::Sender<TaskId>,
}

pub(crate) struct State {
    pub config: QueueConfig,
    pub tasks: HashMap<TaskId, Task>,
    pub by_name: HashMap<String, TaskId>,
    /// Unfinished tasks that later Executes of the same action may join.
    pub by_action: HashMap<(String, Digest), TaskId>,
    pub queues: HashMap<QueueKey, PlatformQueue>,
    pub workers: BTreeMap<String, Worker>,
    pub waiters: VecDeque<Waiter>,
    /// Actions completed since the start, by outcome.
    pub completed: BTreeMap<&'static str, u64>,
    next_task: TaskId,
    next_waiter: u64,
}

impl State {
    pub fn new(config: QueueConfig) -> Self {
        State {
            config,
            tasks: HashMap::new(),
            by_name: HashMap::new(),
            by_action: HashMap::new(),
            queues: HashMap::new(),
            workers: BTreeMap::new(),
            waiters: VecDeque::new(),
            completed: BTreeMap::new(),
            next_task: 1,
            next_waiter: 1,
        }
    }

    pub fn next_waiter_id(&mut self) -> u64 {
        self.next_waiter += 1;
        self.next_waiter
    }

    /// Registers a task; it is neither queued nor done yet.
    pub fn add_task(&mut self, request: NewTask) -> TaskId {
        let id = self.next_task;
        self.next_task += 1;
        let task = Task::new(id, request);
        self.by_name.insert(task.name.clone(), id);
        if task.is_shareable() {
            self.by_action.insert((task.request.instance_name.clone(), task.request.action_digest), id);
        }
        self.tasks.insert(id, task);
        id
    }

    /// The unfinished task an Execute of `action` may join.
    pub fn shareable_task(&self, instance_name: &str, action: &Digest) -> Option<TaskId> {
        let id = *self.by_action.get(&(instance_name.to_string(), *action))?;
        self.tasks.get(&id).filter(|t| t.is_shareable()).map(|t| t.id)
    }

    /// Puts a task in line (first in line when `front`) and offers work to
    /// waiting workers.
    pub fn enqueue(&mut self, id: TaskId, front: bool) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        task.queue();
        task.publish();
        let key = (task.request.instance_name.clone(), task.request.platform.clone());
        let (priority, invocation) = (task.request.priority, task.request.invocation.clone());
        let queue = self.queues.entry(key).or_default();
        if front {
            queue.push_front(id, priority, &invocation);
        } else {
            queue.push_back(id, priority, &invocation);
        }
        metrics::gauge!(names::QUEUED).increment(1.0);
        self.serve_waiters();
    }

    /// Hands queued tasks to waiting workers while any of them can take one.
    pub fn serve_waiters(&mut self) {
        let mut index = 0;
        while index < self.waiters.len() {
            if self.queues.values().all(PlatformQueue::is_empty) {
                return;
            }
            let worker = self.waiters[index].worker.clone();
            let Some(id) = self.take_task_for(&worker) else {
                index += 1;
                continue;
            };
            let waiter = self.waiters.remove(index).expect("index is in range");
            if waiter.sender.send(id).is_err() {
                // The call went away: the task goes back, and so does the worker's claim.
                self.unassign(id);
                self.enqueue_front_quietly(id);
                if let Some(w) = self.workers.get_mut(&waiter.worker) {
                    w.waiting = false;
                }
            }
        }
    }

    /// Re-queues at the front without serving waiters (used while serving them).
    fn enqueue_front_quietly(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        task.queue();
        task.attempts = task.attempts.saturating_sub(1);
        task.publish();
        let key = (task.request.instance_name.clone(), task.request.platform.clone());
        let (priority, invocation) = (task.request.priority, task.request.invocation.clone());
        let queue = self.queues.entry(key).or_default();
        queue.push_front(id, priority, &invocation);
        metrics::gauge!(names::QUEUED).increment(1.0);
    }

    /// Removes and assigns the best queued task `worker` can run.
    pub fn take_task_for(&mut self, worker_key: &str) -> Option<TaskId> {
        let worker = self.workers.get(worker_key)?;
        if !worker.accepts_work() || worker.task.is_some() {
            return None;
        }
        let mode = self.config.platform_matching;
        let mut best: Option<(i32, TaskId, &QueueKey)> = None;
        for (key, queue) in &self.queues {
            let Some((priority, id)) = queue.peek() else { continue };
            if worker.instance_suffix(&key.0).is_none() || !key.1.is_satisfied_by(&worker.platform, mode) {
                continue;
            }
            // Lower priority value first; then the older task.
            if best.is_none_or(|(p, i, _)| (priority, id) < (p, i)) {
                best = Some((priority, id, key));
            }
        }
        let key = best?.2.clone();
        let id = self.queues.get_mut(&key)?.pop()?;
        metrics::gauge!(names::QUEUED).decrement(1.0);
        self.assign(id, worker_key);
        Some(id)
    }

    fn assign(&mut self, id: TaskId, worker_key: &str) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        task.attempts += 1;
        task.run_on(worker_key);
        metrics::histogram!(names::QUEUE_WAIT).record(task.queued_instant.elapsed().as_secs_f64());
        metrics::gauge!(names::EXECUTING).increment(1.0);
        task.publish();
        if let Some(worker) = self.workers.get_mut(worker_key) {
            worker.task = Some(id);
            worker.phase = Some(Phase::Started);
        }
    }

    /// Frees the worker holding `id`; the task's own state is the caller's.
    fn unassign(&mut self, id: TaskId) {
        let Some(worker) = self.tasks.get(&id).and_then(|t| t.worker()).map(str::to_string) else { return };
        if let Some(w) = self.workers.get_mut(&worker)
            && w.task == Some(id)
        {
            w.task = None;
            w.phase = None;
            metrics::gauge!(names::EXECUTING).decrement(1.0);
        }
    }

    /// The worker running `id` is gone or dropped it: the task goes back to
    /// the front of its queue, unless it has used up its attempts.
    pub fn requeue_lost(&mut self, id: TaskId, why: &str) {
        self.unassign(id);
        let Some(task) = self.tasks.get_mut(&id) else { return };
        if task.is_completed() {
            return;
        }
        if task.attempts >= self.config.max_attempts {
            let status = tonic::Status::internal(format!(
                "action {} was given to {} workers and every one of them was lost while running it \
                 (last: {why}); it may be crashing or exhausting the machines it runs on",
                task.request.action_digest, task.attempts
            ));
            self.finish(id, error_response(&status));
            metrics::counter!(names::ATTEMPTS_EXHAUSTED).increment(1);
            return;
        }
        tracing::warn!(
            "re-queueing action {} (attempt {}): {why}",
            task.request.action_digest,
            task.attempts
        );
        metrics::counter!(names::REQUEUED).increment(1);
        self.enqueue(id, true);
    }

    /// Ends a task with `response` (from a worker, or an error of ours) and
    /// frees its worker.
    pub fn finish(&mut self, id: TaskId, response: reapi::ExecuteResponse) {
        self.unassign(id);
        self.complete(id, response);
    }

    /// Ends a task for its clients; a worker running it keeps its claim.
    fn complete(&mut self, id: TaskId, mut response: reapi::ExecuteResponse) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        if task.is_completed() {
            return;
        }
        task.kept_result = task.uncached_result(&response);
        if let (Some(base), Some(kept)) = (&self.config.status_page_url, &task.kept_result) {
            let request = &task.request;
            let page = crate::status::action_page(&request.action_digest, &request.instance_name, kept);
            let link = format!("Details of this action: {}{page}", base.trim_end_matches('/'));
            response.message =
                if response.message.is_empty() { link } else { format!("{}\n{link}", response.message) };
        }
        let outcome = outcome(&response);
        if let TaskState::Executing { since, .. } = &task.state {
            metrics::histogram!(names::EXECUTION_DURATION).record(since.elapsed().as_secs_f64());
        }
        task.complete(response, outcome);
        metrics::counter!(names::COMPLETED, "outcome" => outcome).increment(1);
        *self.completed.entry(outcome).or_default() += 1;
        let key = (task.request.instance_name.clone(), task.request.action_digest);
        if self.by_action.get(&key) == Some(&id) {
            self.by_action.remove(&key);
        }
    }

    /// Ends a task early for every client (cancelled, or impossible to run):
    /// out of the queue, or (when running)
    /// the worker is told to stop at its next report.
    pub fn abort(&mut self, id: TaskId, status: tonic::Status) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        match &task.state {
            TaskState::Completed { .. } => return,
            TaskState::Queued => {
                let key = (task.request.instance_name.clone(), task.request.platform.clone());
                if let Some(queue) = self.queues.get_mut(&key)
                    && queue.remove(id, task.request.priority, &task.request.invocation)
                {
                    metrics::gauge!(names::QUEUED).decrement(1.0);
                }
            }
            TaskState::Executing { .. } => task.cancelled = true,
        }
        tracing::info!("cancelling action {}: {}", task.request.action_digest, status.message());
        self.complete(id, error_response(&status));
    }

    /// A worker learned that its task was cancelled, or reported on it after
    /// the fact: it lets go of the task.
    pub fn release(&mut self, id: TaskId) {
        self.unassign(id);
    }
}

/// The label for the completed-operations counter.
pub(crate) fn outcome(response: &reapi::ExecuteResponse) -> &'static str {
    match response.status.as_ref().map(|s| s.code).unwrap_or(0) {
        0 if response.cached_result => "cache_hit",
        0 if response.result.as_ref().is_some_and(|r| r.exit_code == 0) => "success",
        0 => "nonzero_exit",
        1 => "cancelled",
        4 => "timeout",
        _ => "error",
    }
}
