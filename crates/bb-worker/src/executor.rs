//! One action, start to end: its build directory, inputs, the run, outputs,
//! the ActionResult and, when it succeeded, the Action Cache entry.

use crate::file_cache::FileCache;
use crate::inputs::{DirectoryCache, InputLimits, InputTree};
use crate::outputs;
use bb_client::tree::hash_entry;
use bb_client::{ActionCache, Source, StorageClient};
use bb_proto::buildbarn::remoteworker::desired_state;
use bb_proto::buildbarn::runner::runner_client::RunnerClient;
use bb_proto::buildbarn::runner::{CheckReadinessRequest, RunRequest};
use bb_proto::reapi;
use bb_util::dir::Directory;
use bb_util::grpc::Channel;
use bb_util::path::RelativePath;
use bb_util::trace_context::TraceContext;
use bb_util::{Digest, DigestFunction};
use prost::Message;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tonic::Status;
use tracing::Instrument;

/// What a running action is doing, as reported to the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Started,
    FetchingInputs,
    Running,
    UploadingOutputs,
}

/// How an action ended on this worker.
pub enum Outcome {
    /// Report this result (or failure) to the scheduler.
    Done(Box<reapi::ExecuteResponse>),
    /// The runner went away while the action ran (it crashed or restarted):
    /// the action is handed back to the scheduler to run again, up to its
    /// `max_attempts`, rather than failing a client with a transport error.
    RunnerLost(String),
}

/// Why `run` stopped early.
enum Failure {
    Status(Status),
    RunnerLost(String),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::Status(status)
    }
}

/// How much longer than the action's timeout the worker waits for the
/// runner's answer before giving up on it.
const RUNNER_GRACE: Duration = Duration::from_secs(60);

pub struct Executor {
    /// Reported as ExecutedActionMetadata.worker.
    pub name: String,
    pub build_directory: PathBuf,
    pub build_directory_handle: Directory,
    pub instance_name_prefix: String,
    pub storage: StorageClient,
    pub runner: RunnerClient<Channel>,
    pub file_cache: Arc<FileCache>,
    pub directory_cache: DirectoryCache,
    pub input_limits: InputLimits,
}

/// Removes an action's build directory however the action ends.
struct BuildDirectory {
    path: PathBuf,
}

impl Drop for BuildDirectory {
    fn drop(&mut self) {
        let path = self.path.clone();
        let remove = move || {
            // The runner may still be handing over what an abandoned action left.
            for attempt in 0..20 {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => return,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                    Err(e) if attempt == 19 => {
                        tracing::warn!("cannot remove build directory {}: {e}", path.display())
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

fn now() -> Option<prost_types::Timestamp> {
    Some(SystemTime::now().into())
}

/// Seconds between two timestamps of ExecutedActionMetadata.
fn seconds(from: &Option<prost_types::Timestamp>, to: &Option<prost_types::Timestamp>) -> Option<f64> {
    let (from, to) = (SystemTime::try_from((*from)?).ok()?, SystemTime::try_from((*to)?).ok()?);
    to.duration_since(from).ok().map(|d| d.as_secs_f64())
}

fn record_metrics(
    metadata: &reapi::ExecutedActionMetadata,
    status: &Status,
    result: Option<&reapi::ActionResult>,
) {
    let outcome = match (status.code(), result.map(|r| r.exit_code)) {
        (tonic::Code::Ok, Some(0)) => "success",
        (tonic::Code::Ok, _) => "nonzero_exit",
        (tonic::Code::DeadlineExceeded, _) => "timeout",
        _ => "error",
    };
    metrics::counter!(crate::metrics::ACTIONS, "outcome" => outcome).increment(1);
    let m = metadata;
    for (phase, from, to) in [
        ("fetch_inputs", &m.input_fetch_start_timestamp, &m.input_fetch_completed_timestamp),
        ("execute", &m.execution_start_timestamp, &m.execution_completed_timestamp),
        ("upload_outputs", &m.output_upload_start_timestamp, &m.output_upload_completed_timestamp),
    ] {
        if let Some(seconds) = seconds(from, to) {
            metrics::histogram!(crate::metrics::PHASE_DURATION, "phase" => phase).record(seconds);
        }
    }
}

fn join_instance(prefix: &str, suffix: &str) -> String {
    match (prefix.is_empty(), suffix.is_empty()) {
        (true, _) => suffix.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}/{suffix}"),
    }
}

/// An action's directory in the build directory, made by the worker and
/// not writable by the action: `root` (the input root) and `tmp`, writable
/// by the runner's user, and `stdout` and `stderr`, which the runner opens
/// for the action. Everything in it is reached through this handle.
struct ActionDirectory {
    handle: Arc<Directory>,
    root: Arc<Directory>,
}

impl ActionDirectory {
    fn create(build_directory: &Directory, id: &str) -> Result<ActionDirectory, Status> {
        let error = |e: std::io::Error| Status::internal(format!("creating the build directory {id}: {e}"));
        let handle = build_directory.create_dir(id, 0o755).map_err(error)?;
        let root = handle.create_dir("root", 0o777).map_err(error)?;
        handle.create_dir("tmp", 0o777).map_err(error)?;
        for name in ["stdout", "stderr"] {
            // Exactly 0666, whatever the umask: the runner's user writes them.
            let file = handle.create_regular(name, 0o666).map_err(error)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o666)).map_err(error)?;
        }
        Ok(ActionDirectory { handle: Arc::new(handle), root: Arc::new(root) })
    }

    /// The input root after the run: still the directory the worker made.
    fn input_root_after_run(&self) -> Result<Arc<Directory>, Status> {
        let root = self
            .handle
            .open_child("root")
            .map_err(|e| Status::failed_precondition(format!("the action replaced its input root: {e}")))?;
        Ok(Arc::new(root))
    }

    /// The digest of the action's stdout or stderr, and where to upload it
    /// from; the action must have left a regular file there.
    fn output_stream(&self, name: &str, function: DigestFunction) -> Result<(Digest, Source), Status> {
        let (digest, _) = hash_entry(&self.handle, name, function)
            .map_err(|e| Status::failed_precondition(format!("the action's {name}: {e}")))?;
        let path = RelativePath::parse("name", name).map_err(Status::from)?;
        Ok((digest, Source::Beneath { root: self.handle.clone(), path }))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(e.to_string()))?
}

impl Executor {
    /// Runs the action and says how it went; never fails (failures are in
    /// the response's status), but the runner may be lost.
    pub async fn execute(&self, task: desired_state::Executing, phase: &watch::Sender<Phase>) -> Outcome {
        let mut metadata = reapi::ExecutedActionMetadata {
            worker: self.name.clone(),
            queued_timestamp: task.queued_timestamp,
            worker_start_timestamp: now(),
            ..Default::default()
        };
        let span = tracing::info_span!(
            "execute",
            otel.kind = "consumer",
            action_digest = task.action_digest.as_ref().map_or("", |d| d.hash.as_str()),
            worker = %self.name,
        );
        TraceContext::from_map(task.w3c_trace_context.clone()).adopt(&span);
        let (result, status) = match self.run(&task, phase, &mut metadata).instrument(span).await {
            Ok((result, status)) => (Some(result), status),
            Err(Failure::Status(status)) => (None, status),
            Err(Failure::RunnerLost(why)) => {
                metrics::counter!(crate::metrics::ACTIONS, "outcome" => "runner_lost").increment(1);
                return Outcome::RunnerLost(why);
            }
        };
        record_metrics(&metadata, &status, result.as_ref());
        if !status.message().is_empty() {
            tracing::info!(
                "action {:?} ended with {:?}: {}",
                task.action_digest.as_ref().map(|d| &d.hash),
                status.code(),
                status.message()
            );
        }
        let message = if status.code() == tonic::Code::Ok {
            let metadata = result.as_ref().and_then(|r| r.execution_metadata.as_ref());
            metadata.and_then(crate::sandbox_report::limits_message).unwrap_or_default()
        } else {
            status.message().to_string()
        };
        Outcome::Done(Box::new(reapi::ExecuteResponse {
            result,
            cached_result: false,
            status: Some(bb_util::status::to_rpc(&status)),
            server_logs: Default::default(),
            message,
        }))
    }

    /// Waits until the runner answers CheckReadiness; false if `cancel`
    /// fired first.
    pub async fn wait_for_runner(&self, cancel: &tokio_util::sync::CancellationToken) -> bool {
        let mut warned = false;
        loop {
            match self.runner.clone().check_readiness(CheckReadinessRequest { path: String::new() }).await {
                Ok(_) => return true,
                Err(status) => {
                    if !warned {
                        tracing::warn!("waiting for the runner: {}", status.message());
                        warned = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = cancel.cancelled() => return false,
                    }
                }
            }
        }
    }

    async fn run(
        &self,
        task: &desired_state::Executing,
        phase: &watch::Sender<Phase>,
        metadata: &mut reapi::ExecutedActionMetadata,
    ) -> Result<(reapi::ActionResult, Status), Failure> {
        let instance = join_instance(&self.instance_name_prefix, &task.instance_name_suffix);
        let action =
            task.action.as_ref().ok_or_else(|| Status::invalid_argument("the scheduler sent no Action"))?;
        let hash = task.action_digest.as_ref().map_or("", |d| d.hash.as_str());
        let function = DigestFunction::resolve(task.digest_function, hash).map_err(Status::from)?;
        let action_digest =
            Digest::from_required(function, task.action_digest.as_ref()).map_err(Status::from)?;
        let command_digest = Digest::from_required(function, action.command_digest.as_ref())
            .map_err(|e| Status::invalid_argument(format!("action {action_digest}: command_digest: {e}")))?;
        let root_digest =
            Digest::from_required(function, action.input_root_digest.as_ref()).map_err(|e| {
                Status::invalid_argument(format!("action {action_digest}: input_root_digest: {e}"))
            })?;

        // Fetching inputs.
        phase.send_replace(Phase::FetchingInputs);
        metadata.input_fetch_start_timestamp = now();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let _removal = BuildDirectory { path: self.build_directory.join(&id) };
        let directory = ActionDirectory::create(&self.build_directory_handle, &id)?;
        let command = self
            .fetch_inputs(&instance, task.command.as_ref(), &command_digest, &root_digest, &directory)
            .instrument(tracing::info_span!("fetch inputs"))
            .await?;
        metadata.input_fetch_completed_timestamp = now();

        // Running.
        phase.send_replace(Phase::Running);
        metadata.execution_start_timestamp = now();
        let (exit_code, status) = self
            .run_command(action, &command, &id, &mut metadata.auxiliary_metadata)
            .instrument(tracing::info_span!("run", exit_code = tracing::field::Empty))
            .await?;
        metadata.execution_completed_timestamp = now();

        // Uploading outputs, also after a timeout: what exists is kept.
        phase.send_replace(Phase::UploadingOutputs);
        metadata.output_upload_start_timestamp = now();
        let mut result = self
            .upload_outputs(&instance, function, &command, &directory)
            .instrument(tracing::info_span!("upload outputs"))
            .await?;
        metadata.output_upload_completed_timestamp = now();
        metadata.worker_completed_timestamp = now();
        result.exit_code = exit_code;
        result.execution_metadata = Some(metadata.clone());

        if exit_code == 0 && status.code() == tonic::Code::Ok && !action.do_not_cache {
            // The scheduler caches it when it hears of it, if it says so.
            if !task.scheduler_caches_result {
                self.storage.update_action_result(&instance, &action_digest, &result).await?;
            }
        } else {
            self.keep_uncached_result(&instance, function, &result).await;
        }
        Ok((result, status))
    }

    /// Checks the Command (the scheduler's, or read from the CAS when it
    /// sent none), and lays out the input root with the output directories
    /// in place.
    async fn fetch_inputs(
        &self,
        instance: &str,
        sent: Option<&reapi::Command>,
        command_digest: &Digest,
        root_digest: &Digest,
        directory: &ActionDirectory,
    ) -> Result<reapi::Command, Failure> {
        let command = match sent {
            Some(command) => command.clone(),
            None => self.read_command(instance, command_digest).await?,
        };
        bb_util::command::check(&command)
            .map_err(|e| Status::invalid_argument(format!("Command {command_digest}: {}", e.message())))?;
        let tree = InputTree::fetch(
            &self.storage,
            instance,
            root_digest,
            &self.directory_cache,
            &self.input_limits,
            self.file_cache.max_size(),
        )
        .await?;
        let command = Arc::new(command);
        self.materialize(Arc::new(tree), &directory.root, instance, &command).await?;
        Ok(Arc::unwrap_or_clone(command))
    }

    async fn read_command(&self, instance: &str, digest: &Digest) -> Result<reapi::Command, Status> {
        let mut bytes = self.storage.read_blobs(instance, &[*digest], "Command").await?;
        let bytes = bytes
            .remove(digest)
            .ok_or_else(|| Status::internal(format!("storage client returned no Command {digest}")))?;
        reapi::Command::decode(bytes)
            .map_err(|e| Status::invalid_argument(format!("Command {digest} does not decode: {e}")))
    }

    /// Has the runner run the command in build directory `id`: its exit
    /// code and the status (DEADLINE_EXCEEDED after the timeout). The
    /// runner's span is the child of the current one.
    async fn run_command(
        &self,
        action: &reapi::Action,
        command: &reapi::Command,
        id: &str,
        resource_usage: &mut Vec<prost_types::Any>,
    ) -> Result<(i32, Status), Failure> {
        let timeout =
            action.timeout.and_then(|t| Duration::try_from(t).ok()).unwrap_or(Duration::from_secs(3600));
        let mut request = tonic::Request::new(RunRequest {
            arguments: command.arguments.clone(),
            environment_variables: command
                .environment_variables
                .iter()
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect(),
            working_directory: command.working_directory.clone(),
            stdout_path: format!("{id}/stdout"),
            stderr_path: format!("{id}/stderr"),
            input_root_directory: format!("{id}/root"),
            temporary_directory: format!("{id}/tmp"),
            server_logs_directory: String::new(),
            platform_properties: bb_util::platform::of_action(action, command)
                .map(|p| p.properties.iter().map(|p| (p.name.clone(), p.value.clone())).collect())
                .unwrap_or_default(),
        });
        request.metadata_mut().insert(
            bb_util::RUNNER_TIMEOUT_HEADER,
            timeout.as_millis().to_string().parse().expect("digits are a valid header value"),
        );
        TraceContext::of_span(&tracing::Span::current()).insert_into(request.metadata_mut());
        request.set_timeout(timeout + RUNNER_GRACE);
        match self.runner.clone().run(request).await {
            Ok(response) => {
                let response = response.into_inner();
                resource_usage.extend(response.resource_usage);
                tracing::Span::current().record("exit_code", response.exit_code);
                Ok((response.exit_code as i32, Status::ok("")))
            }
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => Ok((0, status)),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) =>
            {
                Err(Failure::RunnerLost(format!("the runner went away: {}", status.message())))
            }
            Err(status) => Err(Status::new(
                status.code(),
                format!("the runner failed to run the action: {}", status.message()),
            )
            .into()),
        }
    }

    /// Collects the outputs and stdout and stderr, and uploads them: the
    /// result, without exit code and metadata yet.
    async fn upload_outputs(
        &self,
        instance: &str,
        function: DigestFunction,
        command: &reapi::Command,
        directory: &ActionDirectory,
    ) -> Result<reapi::ActionResult, Failure> {
        let collected = {
            let command = command.clone();
            let root = directory.input_root_after_run()?;
            blocking(move || outputs::collect(&command, &root, function)).await?
        };
        let mut result = collected.result;
        let mut uploads = collected.uploads;
        for (name, field) in [("stdout", &mut result.stdout_digest), ("stderr", &mut result.stderr_digest)] {
            let (digest, source) = directory.output_stream(name, function)?;
            *field = Some(digest.to_proto());
            uploads.push((digest, source));
        }
        self.storage.upload(instance, uploads).await?;
        Ok(result)
    }

    /// Stores a result the Action Cache does not get (a failure, a timeout,
    /// an action not to be cached) in the CAS, as the message itself, so
    /// the status page can show it after the scheduler forgets the
    /// operation (it finds it by the same digest). Best effort: the action's
    /// outcome does not depend on it.
    async fn keep_uncached_result(
        &self,
        instance: &str,
        function: DigestFunction,
        result: &reapi::ActionResult,
    ) {
        let digest = Digest::of_message(function, result);
        let blob = Source::Bytes(result.encode_to_vec().into());
        if let Err(e) = self.storage.upload(instance, vec![(digest, blob)]).await {
            tracing::warn!("cannot keep the result of a failed action in the CAS: {e}");
        }
    }

    /// Makes sure the cache holds every input file, then lays the tree out
    /// and makes the parents of the command's outputs, in one blocking call.
    /// A file evicted between the two (a cache too small for the tree) is
    /// fetched again once.
    async fn materialize(
        &self,
        tree: Arc<InputTree>,
        root: &Arc<Directory>,
        instance: &str,
        command: &Arc<reapi::Command>,
    ) -> Result<(), Status> {
        let keys = tree.keys();
        for attempt in 0..2 {
            self.file_cache.ensure(&keys, &self.storage, instance).await?;
            let (tree, root, cache) = (tree.clone(), root.clone(), self.file_cache.clone());
            let command = command.clone();
            let laid_out = blocking(move || {
                let result = tree.materialize(&root, &cache);
                if result.is_err() {
                    // Start the next attempt from an empty root.
                    let _ = root.remove_contents();
                }
                Ok(result.map(|()| outputs::prepare(&command, &root)))
            })
            .await?;
            match laid_out {
                Ok(prepared) => return prepared,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt == 0 => continue,
                Err(e) => return Err(Status::internal(format!("laying out the input root: {e}"))),
            }
        }
        Ok(())
    }
}
