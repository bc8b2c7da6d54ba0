//! The build queue: tasks waiting per platform, workers taking them, and the
//! operations through which clients watch them. All state sits behind one
//! lock; nothing inside it awaits.
//!
//! - Clients (the Execution service) submit tasks and watch operations.
//! - Workers synchronize (see `synchronize.rs`).
//! - A maintenance pass (see `maintenance.rs`) finds lost workers, orphaned
//!   operations and actions no worker can take.

mod history;
mod maintenance;
mod platform_queue;
mod snapshot;
mod state;
mod synchronize;
mod task;
mod worker;

pub use bb_client::status::{
    HistorySample, OperationDetail, OperationSummary, PlatformStatus, QueueHistory, QueueStatus, WorkerStatus,
};
pub use task::{NewTask, OperationHeader, Phase, Progress, error_response};

use crate::config::QueueConfig;
use bb_proto::longrunning::Operation;
use bb_proto::reapi;
use parking_lot::Mutex;
use state::State;
use std::sync::Arc;
use task::TaskId;
use tokio::sync::watch;
use tokio::time::Instant;

pub struct BuildQueue {
    state: Mutex<State>,
    config: QueueConfig,
    history: Mutex<history::History>,
}

/// A client's view of one operation. While it exists the operation counts
/// as watched; dropping it (the client went away) may orphan it.
pub struct OperationWatch {
    pub name: String,
    pub header: OperationHeader,
    pub updates: watch::Receiver<Progress>,
    _guard: WatchGuard,
}

impl OperationWatch {
    /// The Operation message for the latest progress, marking it seen.
    pub fn latest(&mut self) -> Operation {
        let progress = self.updates.borrow_and_update().clone();
        self.header.operation(&progress)
    }
}

struct WatchGuard {
    queue: Arc<BuildQueue>,
    task: TaskId,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut state = self.queue.state.lock();
        if let Some(task) = state.tasks.get_mut(&self.task) {
            task.watchers = task.watchers.saturating_sub(1);
            if task.watchers == 0 && !task.is_completed() {
                task.orphaned_since = Some(Instant::now());
            }
        }
    }
}

impl BuildQueue {
    pub fn new(config: QueueConfig) -> Arc<Self> {
        Arc::new(BuildQueue {
            state: Mutex::new(State::new(config.clone())),
            config,
            history: Mutex::default(),
        })
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Joins the unfinished operation running the same action, or queues a
    /// new one (always new for `do_not_cache` actions).
    pub fn execute(self: &Arc<Self>, request: NewTask) -> OperationWatch {
        let mut state = self.state.lock();
        if !request.action.do_not_cache
            && let Some(id) = state.shareable_task(&request.instance_name, &request.action_digest)
        {
            metrics::counter!(crate::metrics::DEDUPLICATED).increment(1);
            return self.watch(&mut state, id);
        }
        let id = state.add_task(request);
        state.enqueue(id, false);
        self.watch(&mut state, id)
    }

    /// Records an Action Cache hit as an operation that is already done.
    pub fn cached(self: &Arc<Self>, request: NewTask, response: reapi::ExecuteResponse) -> OperationWatch {
        let mut state = self.state.lock();
        let id = state.add_task(request);
        state.finish(id, response);
        self.watch(&mut state, id)
    }

    /// Re-attaches to an operation by name (WaitExecution).
    pub fn attach(self: &Arc<Self>, name: &str) -> Option<OperationWatch> {
        let mut state = self.state.lock();
        let id = *state.by_name.get(name)?;
        Some(self.watch(&mut state, id))
    }

    fn watch(self: &Arc<Self>, state: &mut State, id: TaskId) -> OperationWatch {
        let task = state.tasks.get_mut(&id).expect("task ids in the maps are live");
        task.watchers += 1;
        task.orphaned_since = None;
        OperationWatch {
            name: task.name.clone(),
            header: task.header(),
            updates: task.updates.subscribe(),
            _guard: WatchGuard { queue: self.clone(), task: id },
        }
    }

    /// The operation's current state (GetOperation).
    pub fn operation(&self, name: &str) -> Option<Operation> {
        let state = self.state.lock();
        let id = state.by_name.get(name)?;
        state.tasks.get(id).map(|t| t.operation())
    }

    /// Cancels the operation for all of its clients; false if unknown.
    pub fn cancel(&self, name: &str) -> bool {
        let mut state = self.state.lock();
        let Some(&id) = state.by_name.get(name) else { return false };
        state.abort(id, tonic::Status::cancelled("the operation was cancelled by a client"));
        true
    }

    /// Drains (or undrains) a worker; false if no such worker.
    pub fn set_drained(&self, worker: &str, drained: bool) -> bool {
        let mut state = self.state.lock();
        let Some(w) = state.workers.get_mut(worker) else { return false };
        w.drained = drained;
        if !drained {
            state.serve_waiters();
        }
        true
    }
}

#[cfg(test)]
mod tests;
