//! REv2 Execution: Execute and WaitExecution.
//!
//! Execute validates the request, answers from the Action Cache when it can,
//! and otherwise joins or creates an operation in the build queue. Both calls
//! then stream the operation: its state at once, every change, a keep-alive
//! at `keepalive_interval`, and the end.

use crate::platform::Platform;
use crate::queue::{BuildQueue, NewTask, OperationWatch};
use bb_client::{Inline, StorageBackend, read_message};
use bb_proto::longrunning::Operation;
use bb_proto::reapi;
use bb_proto::reapi::execution_server::Execution;
use bb_storage::service::Instances;
use bb_storage::service::request::required_digest;
use bb_util::Digest;
use bb_util::auth::Permission;
use bb_util::trace_context::TraceContext;
use futures::stream::BoxStream;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The gRPC header in which clients send `RequestMetadata`.
const REQUEST_METADATA_HEADER: &str = "build.bazel.remote.execution.v2.requestmetadata-bin";

#[derive(Clone)]
pub struct ExecutionService {
    queue: Arc<BuildQueue>,
    storage: Arc<dyn StorageBackend>,
    instances: Instances,
}

impl ExecutionService {
    pub fn new(queue: Arc<BuildQueue>, storage: Arc<dyn StorageBackend>, instances: Instances) -> Self {
        ExecutionService { queue, storage, instances }
    }

    fn stream(&self, watch: OperationWatch) -> BoxStream<'static, Result<Operation, Status>> {
        operation_stream(watch, self.queue.config().keepalive_interval.get())
    }

    /// The action's timeout: the default when unset; above the maximum is
    /// INVALID_ARGUMENT, as REv2 requires.
    fn timeout(&self, action: &reapi::Action, digest: &Digest) -> Result<prost_types::Duration, Status> {
        let config = self.queue.config();
        let Some(timeout) = &action.timeout else {
            return prost_types::Duration::try_from(config.default_action_timeout.get())
                .map_err(|e| Status::internal(e.to_string()));
        };
        let requested = Duration::try_from(*timeout).map_err(|_| {
            Status::invalid_argument(format!("action {digest}: timeout {timeout:?} is negative or malformed"))
        })?;
        if requested.is_zero() {
            return Err(Status::invalid_argument(format!("action {digest}: timeout is zero")));
        }
        if requested > config.maximum_action_timeout.get() {
            return Err(Status::invalid_argument(format!(
                "action {digest}: timeout {} exceeds this farm's maximum of {}",
                humantime::format_duration(requested),
                config.maximum_action_timeout
            )));
        }
        Ok(*timeout)
    }
}

/// RequestMetadata from the client's header, if it sent a valid one.
fn request_metadata(metadata: &MetadataMap) -> Option<reapi::RequestMetadata> {
    let value = metadata.get_bin(REQUEST_METADATA_HEADER)?.to_bytes().ok()?;
    reapi::RequestMetadata::decode(value).ok()
}

/// Streams an operation until it is done.
pub fn operation_stream(
    watch: OperationWatch,
    keepalive: Duration,
) -> BoxStream<'static, Result<Operation, Status>> {
    Box::pin(futures::stream::unfold(Some((watch, true)), move |state| async move {
        let (mut watch, first) = state?;
        if !first {
            tokio::select! {
                changed = watch.updates.changed() => changed.ok()?,
                _ = tokio::time::sleep(keepalive) => {}
            }
        }
        let operation = watch.latest();
        let next = if operation.done { None } else { Some((watch, false)) };
        Some((Ok(operation), next))
    }))
}

#[tonic::async_trait]
impl Execution for ExecutionService {
    type ExecuteStream = BoxStream<'static, Result<Operation, Status>>;
    type WaitExecutionStream = BoxStream<'static, Result<Operation, Status>>;

    /// In a span of its own, the child of the client's trace context when
    /// it sent one; a new operation's span is this span's child.
    async fn execute(
        &self,
        request: Request<reapi::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let span = tracing::info_span!(
            "Execute",
            otel.kind = "server",
            action_digest = tracing::field::Empty,
            cached_result = tracing::field::Empty,
        );
        TraceContext::from_metadata(request.metadata()).adopt(&span);
        self.execute_request(request).instrument(span).await
    }

    async fn wait_execution(
        &self,
        request: Request<reapi::WaitExecutionRequest>,
    ) -> Result<Response<Self::WaitExecutionStream>, Status> {
        require_execute_somewhere(&request)?;
        let name = &request.get_ref().name;
        match self.queue.attach(name) {
            Some(watch) => Ok(Response::new(self.stream(watch))),
            None => Err(Status::not_found(format!(
                "operation {name:?} does not exist (finished operations are kept for {})",
                self.queue.config().completed_retention
            ))),
        }
    }
}

impl ExecutionService {
    async fn execute_request(
        &self,
        request: Request<reapi::ExecuteRequest>,
    ) -> Result<Response<BoxStream<'static, Result<Operation, Status>>>, Status> {
        let metadata = request_metadata(request.metadata());
        let principal = bb_util::auth::principal(&request)?.clone();
        let request = request.into_inner();
        let instance = request.instance_name.clone();
        self.instances.admit(&principal, &instance, &[Permission::Execute])?;
        let action_digest =
            required_digest(request.digest_function, request.action_digest.as_ref(), "action_digest")?;
        tracing::Span::current().record("action_digest", tracing::field::display(&action_digest));

        let cas = self.storage.cas(&instance);
        let mut action: reapi::Action = read_message(&*cas, &action_digest, "Action").await?;
        let command_digest = Digest::from_required(action_digest.function(), action.command_digest.as_ref())
            .map_err(|e| Status::invalid_argument(format!("action {action_digest}: command_digest: {e}")))?;
        let command: reapi::Command = read_message(&*cas, &command_digest, "Command").await?;
        bb_util::command::check(&command)
            .map_err(|e| Status::invalid_argument(format!("Command {command_digest}: {}", e.message())))?;
        let platform = Platform::from_action(bb_util::platform::of_action(&action, &command))?
            .without(&self.queue.config().execution_properties);
        action.timeout = Some(self.timeout(&action, &action_digest)?);

        let auxiliary_metadata =
            metadata.as_ref().and_then(|m| prost_types::Any::from_msg(m).ok()).into_iter().collect();
        let task = NewTask {
            instance_name: instance.clone(),
            action_digest,
            action,
            command,
            platform,
            priority: request.execution_policy.as_ref().map_or(0, |p| p.priority),
            invocation: metadata.map(|m| m.tool_invocation_id).unwrap_or_default(),
            skip_cache_lookup: request.skip_cache_lookup,
            auxiliary_metadata,
            submitter: principal.name().to_string(),
        };

        if !request.skip_cache_lookup {
            let inline = Inline {
                stdout: request.inline_stdout,
                stderr: request.inline_stderr,
                files: request.inline_output_files.clone(),
            };
            if let Some(result) = self.storage.get_action_result(&instance, &action_digest, &inline).await? {
                metrics::counter!(crate::metrics::CACHE_HITS).increment(1);
                tracing::Span::current().record("cached_result", true);
                let response = reapi::ExecuteResponse {
                    result: Some(result),
                    cached_result: true,
                    status: Some(bb_util::status::rpc_ok()),
                    ..Default::default()
                };
                return Ok(Response::new(self.stream(self.queue.cached(task, response))));
            }
        }
        Ok(Response::new(self.stream(self.queue.execute(task))))
    }
}

/// Operations are named by unguessable ids, and seen by whoever may
/// execute: PERMISSION_DENIED for anyone else.
pub fn require_execute_somewhere<T>(request: &Request<T>) -> Result<(), Status> {
    let principal = bb_util::auth::principal(request)?;
    if principal.may_somewhere(Permission::Execute) {
        return Ok(());
    }
    Err(Status::permission_denied(format!("{} lacks the execute permission", principal.name())))
}
