//! The runner service over its UNIX socket: arguments, environment, exit
//! codes, resource usage, process groups, timeouts and path checks.

use bb_proto::buildbarn::resourceusage::PosixResourceUsage;
use bb_proto::buildbarn::runner::runner_client::RunnerClient;
use bb_proto::buildbarn::runner::{CheckReadinessRequest, RunRequest, RunResponse};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

struct Runner {
    client: RunnerClient<Channel>,
    build: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn runner() -> Runner {
    let build = tempfile::tempdir().unwrap();
    let socket = build.path().join("runner.sock");
    let text =
        format!("listen = \"unix:{}\"\nbuild_directory = \"{}\"\n", socket.display(), build.path().display());
    let config: bb_runner::config::Config = bb_util::config::parse(&text, "test").unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(bb_runner::serve(config, shutdown.clone()));
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let channel = bb_util::grpc::channel(&format!("unix:{}", socket.display())).unwrap();
    Runner { client: RunnerClient::new(channel), build, shutdown }
}

impl Runner {
    /// Creates `<build>/<id>/{root,tmp}` and returns a request running `args`.
    fn action(&self, id: &str, args: &[&str]) -> RunRequest {
        let dir = self.build.path().join(id);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        RunRequest {
            arguments: args.iter().map(|s| s.to_string()).collect(),
            environment_variables: HashMap::from([("PATH".to_string(), "/bin:/usr/bin".to_string())]),
            working_directory: String::new(),
            stdout_path: format!("{id}/stdout"),
            stderr_path: format!("{id}/stderr"),
            input_root_directory: format!("{id}/root"),
            temporary_directory: format!("{id}/tmp"),
            server_logs_directory: String::new(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.build.path().join(relative)
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap()
    }

    async fn run(&self, request: RunRequest) -> Result<RunResponse, tonic::Status> {
        self.client.clone().run(request).await.map(|r| r.into_inner())
    }

    async fn run_with_timeout(
        &self,
        request: RunRequest,
        timeout: Duration,
    ) -> Result<RunResponse, tonic::Status> {
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert(bb_util::RUNNER_TIMEOUT_HEADER, timeout.as_millis().to_string().parse().unwrap());
        self.client.clone().run(request).await.map(|r| r.into_inner())
    }
}

fn usage(response: &RunResponse) -> PosixResourceUsage {
    PosixResourceUsage::decode(response.resource_usage[0].value.as_slice()).unwrap()
}

fn alive(pid: i32) -> bool {
    // Not a zombie, and still there.
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| !s.contains("State:\tZ"))
}

#[tokio::test]
async fn runs_with_exact_arguments_environment_and_files() {
    let r = runner().await;
    let mut request =
        r.action("a1", &["sh", "-c", "echo \"$0|$1\"; echo oops >&2; env | sort; pwd; exit 3", "two words"]);
    request.environment_variables.insert("FOO".into(), "bar baz".into());
    std::fs::create_dir_all(r.path("a1/root/sub")).unwrap();
    request.working_directory = "sub".into();
    let response = r.run(request).await.unwrap();
    assert_eq!(response.exit_code, 3);
    let stdout = r.read("a1/stdout");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "two words|", "argv passed exactly");
    let tmp = r.path("a1/tmp");
    let env: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .copied()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .collect();
    assert_eq!(
        env,
        vec!["FOO=bar baz".to_string(), "PATH=/bin:/usr/bin".into(), format!("TMPDIR={}", tmp.display())]
    );
    assert_eq!(Path::new(lines.last().unwrap()), r.path("a1/root/sub"));
    assert_eq!(r.read("a1/stderr"), "oops\n");
    let usage = usage(&response);
    assert!(usage.user_time.is_some() && usage.maximum_resident_set_size > 0);
    assert!(usage.termination_signal.is_empty());
}

#[tokio::test]
async fn argv0_is_looked_up_in_the_actions_path() {
    let r = runner().await;
    let mut request = r.action("a2", &["tool", "x"]);
    std::fs::create_dir_all(r.path("a2/root/bin")).unwrap();
    std::fs::write(r.path("a2/root/bin/tool"), "#!/bin/sh\necho \"tool got $1\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(r.path("a2/root/bin/tool"), std::fs::Permissions::from_mode(0o555)).unwrap();
    request.environment_variables.insert("PATH".into(), "bin:/bin".into());
    assert_eq!(r.run(request).await.unwrap().exit_code, 0);
    assert_eq!(r.read("a2/stdout"), "tool got x\n");

    let response = r.run(r.action("a3", &["no-such-tool-anywhere"])).await.unwrap();
    assert_eq!(response.exit_code, 127);
    assert!(r.read("a3/stderr").contains("no-such-tool-anywhere: command not found"));
}

#[tokio::test]
async fn signals_and_leftover_processes() {
    let r = runner().await;
    let response = r.run(r.action("s1", &["sh", "-c", "kill -9 $$"])).await.unwrap();
    assert_eq!(response.exit_code, 128 + 9);
    assert_eq!(usage(&response).termination_signal, "KILL");

    // A background process outlives its shell, but not the action.
    let response =
        r.run(r.action("s2", &["sh", "-c", "sleep 1000 & echo $! > $TMPDIR/../pid"])).await.unwrap();
    assert_eq!(response.exit_code, 0);
    let pid: i32 = r.read("s2/pid").trim().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!alive(pid), "background sleep {pid} survived the action");
    // The temporary directory was emptied.
    let response = r
        .run(r.action("s3", &["sh", "-c", "touch $TMPDIR/leftover; mkdir $TMPDIR/d; chmod 0 $TMPDIR/d"]))
        .await
        .unwrap();
    assert_eq!(response.exit_code, 0);
    assert_eq!(std::fs::read_dir(r.path("s3/tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn timeouts_kill_the_whole_group_and_keep_partial_output() {
    let r = runner().await;
    let request = r.action(
        "t1",
        &["sh", "-c", "echo before; (sleep 1000 & echo $! > $TMPDIR/../pid; wait) ; echo after"],
    );
    let start = std::time::Instant::now();
    let err = r.run_with_timeout(request, Duration::from_millis(500)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(r.read("t1/stdout"), "before\n");
    let pid: i32 = r.read("t1/pid").trim().parse().unwrap();
    assert!(!alive(pid), "the grandchild was killed with the group");
}

#[tokio::test]
async fn abandoned_calls_kill_the_action() {
    let r = runner().await;
    let request = r.action("c1", &["sh", "-c", "echo $$ > $TMPDIR/../pid; sleep 1000"]);
    let call = tokio::spawn({
        let mut client = r.client.clone();
        async move { client.run(request).await }
    });
    while !r.path("c1/pid").exists() || r.read("c1/pid").is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid: i32 = r.read("c1/pid").trim().parse().unwrap();
    call.abort();
    for _ in 0..100 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the action {pid} outlived its abandoned Run call");
}

#[tokio::test]
async fn paths_must_stay_in_the_build_directory() {
    let r = runner().await;
    for (field, value) in [
        ("input_root_directory", "../elsewhere"),
        ("input_root_directory", "/etc"),
        ("stdout_path", "p1/../../escape"),
        ("working_directory", "../.."),
    ] {
        let mut request = r.action("p1", &["true"]);
        match field {
            "input_root_directory" => request.input_root_directory = value.into(),
            "stdout_path" => request.stdout_path = value.into(),
            _ => request.working_directory = value.into(),
        }
        let err = r.run(request).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}={value}");
    }
    // A working directory that is a symlink out of the input root.
    let mut request = r.action("p2", &["true"]);
    std::os::unix::fs::symlink("/etc", r.path("p2/root/link")).unwrap();
    request.working_directory = "link".into();
    assert_eq!(r.run(request).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(r.run(r.action("p3", &[])).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn readiness() {
    let r = runner().await;
    let mut client = r.client.clone();
    client.check_readiness(CheckReadinessRequest { path: String::new() }).await.unwrap();
    std::fs::create_dir(r.path("visible")).unwrap();
    client.check_readiness(CheckReadinessRequest { path: "visible".into() }).await.unwrap();
    let err = client.check_readiness(CheckReadinessRequest { path: "invisible".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let err = client.check_readiness(CheckReadinessRequest { path: "../..".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// A runner whose kill_user_processes would reach root's processes (as
/// root) or the worker's (actions of the build directory's owner) refuses
/// to start, and says why.
#[test]
fn refuses_to_kill_processes_that_are_not_the_actions() {
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("build");
    std::fs::create_dir(&build).unwrap();
    let config = dir.path().join("runner.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"unix:{}\"\nbuild_directory = \"{}\"\nkill_user_processes = true\n",
            dir.path().join("runner.sock").display(),
            build.display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bb-runner"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the runner started: {stderr}");
    let reason = if nix::unistd::geteuid().is_root() { "root (uid 0)" } else { "would kill the worker" };
    assert!(stderr.contains("kill_user_processes") && stderr.contains(reason), "{stderr}");
    assert!(!dir.path().join("runner.sock").exists(), "nothing was served");
}
