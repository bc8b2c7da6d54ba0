//! buildbarn.runner.Runner: CheckReadiness and Run.

use crate::cleanup;
use crate::config::Config;
use crate::process;
use crate::sandbox::{self, Sandbox};
use bb_proto::buildbarn::resourceusage::PosixResourceUsage;
use bb_proto::buildbarn::runner::runner_server::Runner;
use bb_proto::buildbarn::runner::{CheckReadinessRequest, RunRequest, RunResponse};
use bb_util::dir::Directory;
use bb_util::path::RelativePath;
use bb_util::trace_context::TraceContext;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::Instrument;

#[derive(Clone)]
pub struct RunnerService {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    sandbox: Sandbox,
    /// `kill_user_processes`, where actions have no PID namespace (with
    /// one, nothing of an action outlives it; and the user's processes
    /// include the sandboxes prepared ahead).
    kill_user_processes: bool,
    /// The user actions run as.
    action_uid: u32,
    /// Actions starting or running, counted from before their sandbox
    /// exists: all of the user's processes are killed (under the lock) only
    /// when none is.
    active: Mutex<usize>,
}

/// Cleans up after an action: awaited before the answer normally, and run
/// in the background when the Run call is abandoned (dropped).
struct AfterAction {
    work: Option<Work>,
}

type Work = (Arc<Inner>, Directory, Option<Directory>);

impl AfterAction {
    fn work(work: Work) -> impl FnOnce() + Send + 'static {
        move || {
            let (inner, root, tmp) = work;
            inner.clean_up(&root, tmp.as_ref());
        }
    }

    async fn finish(mut self) {
        if let Some(work) = self.work.take() {
            let _ = tokio::task::spawn_blocking(Self::work(work)).await;
        }
    }
}

impl Drop for AfterAction {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(Self::work(work))),
                Err(_) => Self::work(work)(),
            }
        }
    }
}

/// An action counted in `active` from before its sandbox exists, until its
/// cleanup takes the count over (or, dropped before, the count is undone).
struct Counted<'a>(&'a Inner);

impl<'a> Counted<'a> {
    fn new(inner: &'a Inner) -> Self {
        *inner.active.lock() += 1;
        Counted(inner)
    }

    /// The action runs: [`Inner::clean_up`] uncounts it.
    fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        *self.0.active.lock() -= 1;
    }
}

impl Inner {
    /// Through the handles opened before the action ran: whatever the
    /// action renamed or replaced, nothing outside is touched.
    fn clean_up(&self, input_root: &Directory, temporary_directory: Option<&Directory>) {
        {
            let mut active = self.active.lock();
            *active -= 1;
            if *active == 0 && self.kill_user_processes {
                let killed = cleanup::kill_user_processes(self.action_uid);
                if killed > 0 {
                    tracing::info!("killed {killed} leftover processes of uid {}", self.action_uid);
                }
            }
        }
        if let Some(tmp) = temporary_directory
            && let Err(e) = tmp.remove_contents()
        {
            tracing::warn!("cannot empty the action's temporary directory: {e}");
        }
        // The worker owns the input root; what the action made there is ours.
        if input_root.own_metadata().is_ok_and(|m| m.uid != self.action_uid) {
            cleanup::hand_over(input_root, self.action_uid);
        }
    }

    /// Ends an action that ran out of time: SIGTERM to all of it, SIGKILL
    /// after the grace period; returns once it is gone.
    async fn stop(&self, running: &mut sandbox::Running) {
        running.terminate();
        let grace = self.config.sandbox.termination_grace.get();
        if tokio::time::timeout(grace, running.wait()).await.is_err() {
            running.kill();
            let _ = running.wait().await;
        }
    }

    fn build_directory(&self) -> Result<Directory, Status> {
        Directory::open(&self.config.build_directory).map_err(|e| {
            Status::unavailable(format!(
                "build directory {} is not visible to the runner: {e}",
                self.config.build_directory.display()
            ))
        })
    }

    /// A directory of a request, beneath the build directory, reached
    /// without following symlinks; and its path as the runner names it.
    fn open_beneath(
        &self,
        build: &Directory,
        path: &str,
        what: &'static str,
    ) -> Result<(Directory, PathBuf), Status> {
        let relative = RelativePath::parse(what, path)?;
        let handle = build
            .open_dir(&relative)
            .map_err(|e| Status::invalid_argument(format!("{what} {path:?}: {e}")))?;
        Ok((handle, relative.under(&self.config.build_directory)))
    }

    /// Creates (or truncates) a file of a request for the action to write.
    fn create_beneath(&self, build: &Directory, path: &str, what: &'static str) -> Result<File, Status> {
        let relative = RelativePath::parse(what, path)?;
        let name =
            relative.file_name().ok_or_else(|| Status::invalid_argument(format!("{what} is empty")))?;
        let cannot =
            |e: std::io::Error| Status::invalid_argument(format!("cannot create {what} {path:?}: {e}"));
        build.open_dir(&relative.parent()).map_err(cannot)?.create_regular(name, 0o644).map_err(cannot)
    }
}

impl RunnerService {
    /// The service, with its sandbox checked against the host.
    pub fn new(config: Config) -> std::io::Result<Self> {
        let action_uid = config.action_uid(nix::unistd::geteuid().as_raw());
        let sandbox = Sandbox::new(&config)?;
        let may_chroot = sandbox.isolation().namespaces
            || caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_CHROOT)
                .unwrap_or(false);
        if config.chroot_into_input_root && !may_chroot {
            return Err(std::io::Error::other(
                "chroot_into_input_root: this host gives actions no namespaces, and without them the runner \
                 needs CAP_SYS_CHROOT in keep_capabilities",
            ));
        }
        let kill_user_processes = config.kill_user_processes && !sandbox.isolation().namespaces;
        if config.kill_user_processes && !kill_user_processes {
            tracing::info!("kill_user_processes is not needed: every action has a PID namespace of its own");
        }
        let inner = Inner { config, sandbox, kill_user_processes, action_uid, active: Mutex::new(0) };
        Ok(RunnerService { inner: Arc::new(inner) })
    }

    /// The isolation actions run without on this host.
    pub fn missing_isolation(&self) -> Vec<String> {
        self.inner.sandbox.missing()
    }

    /// The isolation actions get.
    pub fn describe_isolation(&self) -> String {
        self.inner.sandbox.describe()
    }
}

fn posix_resource_usage(exit: &sandbox::Exit) -> PosixResourceUsage {
    let r = &exit.rusage;
    PosixResourceUsage {
        user_time: Some(sandbox::duration(r.ru_utime)),
        system_time: Some(sandbox::duration(r.ru_stime)),
        // Linux reports kilobytes.
        maximum_resident_set_size: r.ru_maxrss * 1024,
        page_reclaims: r.ru_minflt,
        page_faults: r.ru_majflt,
        swaps: r.ru_nswap,
        block_input_operations: r.ru_inblock,
        block_output_operations: r.ru_oublock,
        messages_sent: r.ru_msgsnd,
        messages_received: r.ru_msgrcv,
        signals_received: r.ru_nsignals,
        voluntary_context_switches: r.ru_nvcsw,
        involuntary_context_switches: r.ru_nivcsw,
        termination_signal: exit
            .signal
            .map(|s| s.as_str().trim_start_matches("SIG").to_string())
            .unwrap_or_default(),
    }
}

/// A command that could not be started ends like it would in a shell: a
/// message on its stderr and exit code 127 (not found) or 126 (not runnable).
fn shell_like_failure(stderr: &mut File, exit_code: i64, message: &str) -> Response<RunResponse> {
    let _ = writeln!(stderr, "bb-runner: {message}");
    Response::new(RunResponse { exit_code, resource_usage: vec![] })
}

#[tonic::async_trait]
impl Runner for RunnerService {
    async fn check_readiness(&self, request: Request<CheckReadinessRequest>) -> Result<Response<()>, Status> {
        let build = self.inner.build_directory()?;
        let path = &request.get_ref().path;
        let relative = RelativePath::parse("path", path)?;
        let visible = match relative.file_name() {
            None => true,
            Some(name) => build.open_dir(&relative.parent()).and_then(|d| d.metadata(name)).is_ok(),
        };
        if !visible {
            return Err(Status::unavailable(format!("{path:?} is not visible to the runner")));
        }
        for required in &self.inner.config.readiness_paths {
            if !required.exists() {
                return Err(Status::unavailable(format!("required path {} is missing", required.display())));
            }
        }
        Ok(Response::new(()))
    }

    /// In a span of its own, the child of the worker's (its trace context
    /// comes as request metadata).
    async fn run(&self, request: Request<RunRequest>) -> Result<Response<RunResponse>, Status> {
        let span = tracing::info_span!("Run", otel.kind = "server", exit_code = tracing::field::Empty);
        TraceContext::from_metadata(request.metadata()).adopt(&span);
        let response = self.run_request(request).instrument(span.clone()).await;
        if let Ok(response) = &response {
            span.record("exit_code", response.get_ref().exit_code);
        }
        response
    }
}

impl RunnerService {
    async fn run_request(&self, request: Request<RunRequest>) -> Result<Response<RunResponse>, Status> {
        let timeout = request
            .metadata()
            .get(bb_util::RUNNER_TIMEOUT_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_millis);
        let request = request.into_inner();
        let inner = &self.inner;
        let Some(argv0) = request.arguments.first() else {
            return Err(Status::invalid_argument("arguments are empty: there is no command to run"));
        };
        let settled = sandbox::properties::settle(&request.platform_properties, &inner.config.sandbox)?;
        let build = inner.build_directory()?;
        let (input_root, input_root_path) =
            inner.open_beneath(&build, &request.input_root_directory, "input_root_directory")?;
        let working = RelativePath::parse("working_directory", &request.working_directory)?;
        let working_handle = input_root.open_dir(&working).map_err(|e| {
            Status::invalid_argument(format!(
                "working directory {:?} in the input root: {e}",
                working.to_string()
            ))
        })?;
        let working_directory = working.under(&input_root_path);
        let (temporary_directory, temporary_path) = match request.temporary_directory.as_str() {
            "" => (None, None),
            path => {
                let (handle, path) = inner.open_beneath(&build, path, "temporary_directory")?;
                (Some(handle), Some(path))
            }
        };
        let stdout = inner.create_beneath(&build, &request.stdout_path, "stdout_path")?;
        let mut stderr = inner.create_beneath(&build, &request.stderr_path, "stderr_path")?;

        let chroot = inner.config.chroot_into_input_root;
        let mut environment: HashMap<String, String> = request.environment_variables;
        for (name, value) in &inner.config.default_environment {
            environment.entry(name.clone()).or_insert_with(|| value.clone());
        }
        if let (Some(tmp), false) = (&temporary_path, chroot) {
            environment.insert("TMPDIR".into(), tmp.display().to_string());
        }
        let inside = Path::new("/").join(working.to_string());
        let program = if chroot {
            process::resolve_program(
                argv0,
                environment.get("PATH").map(String::as_str),
                &inside,
                Some(&input_root_path),
            )
        } else {
            process::resolve_program(
                argv0,
                environment.get("PATH").map(String::as_str),
                &working_directory,
                None,
            )
        };
        let Some(program) = program else {
            let path = environment.get("PATH").map_or("(unset)", String::as_str);
            return Ok(shell_like_failure(
                &mut stderr,
                127,
                &format!("{argv0}: command not found (PATH={path})"),
            ));
        };

        let action = sandbox::Action {
            program: program.clone(),
            arguments: request.arguments.clone(),
            environment,
            input_root: (input_root, input_root_path),
            working_directory: (working_handle, PathBuf::from(working.to_string())),
            temporary_directory: temporary_directory.zip(temporary_path),
            stdout,
            stderr: stderr.try_clone().map_err(|e| Status::internal(e.to_string()))?,
            network: settled.network,
            limits: settled.limits,
        };
        let counted = Counted::new(inner);
        let mut running = match inner.sandbox.start(&action).await {
            Ok(running) => {
                counted.hand_over();
                running
            }
            Err(e) => {
                let Some(errno) = e.exec_errno() else {
                    return Err(Status::internal(format!("cannot start the action: {e}")));
                };
                let exit_code = if errno == libc::ENOENT { 127 } else { 126 };
                let message = format!("{}: cannot run: {e}", program.display());
                return Ok(shell_like_failure(&mut stderr, exit_code, &message));
            }
        };
        // From here on, cleanup happens however this call ends.
        let sandbox::Action { input_root: (input_root, _), temporary_directory, .. } = action;
        let after = AfterAction { work: Some((inner.clone(), input_root, temporary_directory.map(|t| t.0))) };
        let exit = match timeout {
            Some(limit) => match tokio::time::timeout(limit, running.wait()).await {
                Ok(exit) => Some(exit),
                Err(_) => {
                    inner.stop(&mut running).await;
                    None
                }
            },
            None => Some(running.wait().await),
        };
        running.kill();
        after.finish().await;
        inner.sandbox.top_up();
        let exit = match exit {
            Some(exit) => exit.map_err(|e| Status::internal(format!("waiting for the action: {e}")))?,
            None => {
                let limit = timeout.unwrap_or_default();
                return Err(Status::deadline_exceeded(format!(
                    "the action ran longer than its timeout of {}; its processes got SIGTERM, and SIGKILL {} \
                     later if still running",
                    humantime_like(limit),
                    humantime_like(inner.config.sandbox.termination_grace.get())
                )));
            }
        };
        let pack = |e: prost::EncodeError| Status::internal(e.to_string());
        let mut resource_usage =
            vec![prost_types::Any::from_msg(&posix_resource_usage(&exit)).map_err(pack)?];
        if let Some(usage) = &exit.cgroup_usage {
            resource_usage.push(prost_types::Any::from_msg(usage).map_err(pack)?);
        }
        Ok(Response::new(RunResponse { exit_code: exit.exit_code, resource_usage }))
    }
}

fn humantime_like(duration: Duration) -> String {
    format!("{:.3}s", duration.as_secs_f64())
}
