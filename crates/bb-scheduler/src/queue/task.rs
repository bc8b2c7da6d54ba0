//! A task: one action to run, shared by every client that asked for it, and
//! the long-running operation that reports on it.

use crate::platform::Platform;
use bb_proto::longrunning::{Operation, operation};
use bb_proto::reapi;
use bb_proto::reapi::execution_stage::Value as Stage;
use bb_util::Digest;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) type TaskId = u64;

/// What the worker running a task says it is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Started,
    FetchingInputs,
    Running,
    UploadingOutputs,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::FetchingInputs => "fetching inputs",
            Phase::Running => "running",
            Phase::UploadingOutputs => "uploading outputs",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum TaskState {
    Queued,
    Executing { worker: String, since: Instant, started_at: SystemTime, phase: Phase },
    Completed { at: Instant, completed_at: SystemTime, worker: Option<String> },
}

/// The request for a new task, after validation.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub instance_name: String,
    pub action_digest: Digest,
    /// With its timeout filled in.
    pub action: reapi::Action,
    /// The Action's Command, checked: handed to the worker with the Action.
    pub command: reapi::Command,
    pub platform: Platform,
    pub priority: i32,
    /// `tool_invocation_id` of the client, for fairness.
    pub invocation: String,
    pub skip_cache_lookup: bool,
    /// Handed to the worker for ExecutedActionMetadata.auxiliary_metadata.
    pub auxiliary_metadata: Vec<prost_types::Any>,
    /// Who submitted it: the identity's name ("anonymous" without
    /// authentication), never a credential.
    pub submitter: String,
}

/// What clients are told of a task as it changes: small, cheap to send.
/// The Operation message is built from it for each client message.
#[derive(Clone, Debug)]
pub struct Progress {
    pub stage: Stage,
    pub worker: Option<String>,
    pub started_at: Option<SystemTime>,
    pub response: Option<Arc<reapi::ExecuteResponse>>,
}

/// The fixed facts of an operation.
#[derive(Clone, Debug)]
pub struct OperationHeader {
    pub name: String,
    pub action_digest: Digest,
    pub queued_at: SystemTime,
}

impl OperationHeader {
    /// The longrunning Operation clients see for `progress`.
    pub fn operation(&self, progress: &Progress) -> Operation {
        let partial = reapi::ExecutedActionMetadata {
            worker: progress.worker.clone().unwrap_or_default(),
            queued_timestamp: Some(self.queued_at.into()),
            worker_start_timestamp: progress.started_at.map(Into::into),
            ..Default::default()
        };
        let metadata = reapi::ExecuteOperationMetadata {
            stage: progress.stage as i32,
            action_digest: Some(self.action_digest.to_proto()),
            stdout_stream_name: String::new(),
            stderr_stream_name: String::new(),
            partial_execution_metadata: Some(partial),
            digest_function: self.action_digest.function().to_proto(),
        };
        let result = progress.response.as_ref().map(|response| {
            operation::Result::Response(
                prost_types::Any::from_msg(response.as_ref()).expect("encoding to a Vec cannot fail"),
            )
        });
        Operation {
            name: self.name.clone(),
            metadata: Some(prost_types::Any::from_msg(&metadata).expect("encoding to a Vec cannot fail")),
            done: result.is_some(),
            result,
        }
    }
}

pub(crate) struct Task {
    pub id: TaskId,
    pub name: String,
    pub request: NewTask,
    pub queued_at: SystemTime,
    pub queued_instant: Instant,
    pub state: TaskState,
    /// Times handed to a worker.
    pub attempts: u32,
    /// The operation was cancelled while a worker runs it: tell the worker.
    pub cancelled: bool,
    /// Open client streams (Execute, WaitExecution) on the operation.
    pub watchers: usize,
    /// Since when no client has watched the unfinished operation.
    pub orphaned_since: Option<Instant>,
    pub response: Option<Arc<reapi::ExecuteResponse>>,
    /// Where the worker kept the response's result in the CAS, if not in
    /// the Action Cache (see [`Task::uncached_result`]); set on completion.
    pub kept_result: Option<Digest>,
    pub updates: watch::Sender<Progress>,
    /// The span of the whole operation, from the Execute that created it
    /// to completion: the worker's spans are its children.
    pub span: tracing::Span,
    /// The span of the operation's current wait in a queue, if it waits.
    pub queued_span: tracing::Span,
}

impl Task {
    /// The CAS digest of a result the worker kept there instead of in the
    /// Action Cache: it stores every result but those of successful,
    /// cacheable actions, as the message, so the digest is the message's.
    pub fn uncached_result(&self, response: &reapi::ExecuteResponse) -> Option<Digest> {
        let result = response.result.as_ref()?;
        let failed = result.exit_code != 0 || response.status.as_ref().is_some_and(|s| s.code != 0);
        if response.cached_result || !(failed || self.request.action.do_not_cache) {
            return None;
        }
        Some(Digest::of_message(self.request.action_digest.function(), result))
    }

    pub fn new(id: TaskId, request: NewTask) -> Self {
        let name = uuid::Uuid::new_v4().to_string();
        let (updates, _) =
            watch::channel(Progress { stage: Stage::Queued, worker: None, started_at: None, response: None });
        let span = tracing::info_span!(
            "operation",
            operation = %name,
            action_digest = %request.action_digest,
            instance_name = %request.instance_name,
            worker = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let task = Task {
            id,
            name,
            request,
            queued_at: SystemTime::now(),
            queued_instant: Instant::now(),
            state: TaskState::Queued,
            attempts: 0,
            cancelled: false,
            watchers: 0,
            orphaned_since: None,
            response: None,
            kept_result: None,
            updates,
            queued_span: tracing::Span::none(),
            span,
        };
        task.publish();
        task
    }

    pub fn is_completed(&self) -> bool {
        matches!(self.state, TaskState::Completed { .. })
    }

    /// Whether an Execute for the same action may share this task.
    pub fn is_shareable(&self) -> bool {
        !self.request.action.do_not_cache && !self.is_completed() && !self.cancelled
    }

    pub fn worker(&self) -> Option<&str> {
        match &self.state {
            TaskState::Executing { worker, .. } => Some(worker),
            TaskState::Completed { worker, .. } => worker.as_deref(),
            TaskState::Queued => None,
        }
    }

    pub fn stage(&self) -> Stage {
        match self.state {
            TaskState::Queued => Stage::Queued,
            TaskState::Executing { .. } => Stage::Executing,
            TaskState::Completed { .. } => Stage::Completed,
        }
    }

    pub fn header(&self) -> OperationHeader {
        OperationHeader {
            name: self.name.clone(),
            action_digest: self.request.action_digest,
            queued_at: self.queued_at,
        }
    }

    pub fn progress(&self) -> Progress {
        Progress {
            stage: self.stage(),
            worker: self.worker().map(str::to_string),
            started_at: match &self.state {
                TaskState::Executing { started_at, .. } => Some(*started_at),
                _ => None,
            },
            response: self.response.clone(),
        }
    }

    /// The operation as clients see it now.
    pub fn operation(&self) -> Operation {
        self.header().operation(&self.progress())
    }

    /// Sends the current state to every client stream.
    pub fn publish(&self) {
        self.updates.send_replace(self.progress());
    }

    /// Marks the task as waiting in a queue.
    pub fn queue(&mut self) {
        self.state = TaskState::Queued;
        if self.queued_span.is_none() {
            self.queued_span = tracing::info_span!(parent: &self.span, "queued");
        }
    }

    /// Marks the task as running on `worker`.
    pub fn run_on(&mut self, worker: &str) {
        self.state = TaskState::Executing {
            worker: worker.to_string(),
            since: Instant::now(),
            started_at: SystemTime::now(),
            phase: Phase::Started,
        };
        self.queued_span = tracing::Span::none();
        self.span.record("worker", worker);
    }

    /// Ends the task with `response`, which had `outcome`.
    pub fn complete(&mut self, response: reapi::ExecuteResponse, outcome: &str) {
        self.span.record("outcome", outcome);
        self.span = tracing::Span::none();
        self.queued_span = tracing::Span::none();
        let worker = self.worker().map(str::to_string);
        self.state = TaskState::Completed { at: Instant::now(), completed_at: SystemTime::now(), worker };
        self.response = Some(Arc::new(response));
        self.publish();
    }
}

/// An ExecuteResponse for an action that did not run to completion.
pub fn error_response(status: &tonic::Status) -> reapi::ExecuteResponse {
    reapi::ExecuteResponse {
        status: Some(bb_util::status::to_rpc(status)),
        message: status.message().to_string(),
        ..Default::default()
    }
}
