//! The runner service over its UNIX socket: arguments, environment, exit
//! codes, resource usage, process groups, timeouts and path checks.

use bb_proto::buildbarn::resourceusage::PosixResourceUsage;
use bb_proto::buildbarn::runner::{CheckReadinessRequest, RunResponse};
use prost::Message;
use std::path::Path;
use std::time::Duration;

mod common;

use common::{runner, runner_with};

fn usage(response: &RunResponse) -> PosixResourceUsage {
    PosixResourceUsage::decode(response.resource_usage[0].value.as_slice()).unwrap()
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
async fn the_default_environment_fills_in_what_an_action_leaves_unset() {
    let r = runner_with("[default_environment]\nPATH = \"/usr/bin:/bin\"\nTOOLCHAIN = \"host\"\n").await;
    let mut request = r.action("d1", &["sh", "-c", "echo \"$PATH $TOOLCHAIN\""]);
    request.environment_variables.clear();
    request.environment_variables.insert("TOOLCHAIN".into(), "action's own".into());
    assert_eq!(r.run(request).await.unwrap().exit_code, 0, "sh found through the default PATH");
    assert_eq!(r.read("d1/stdout"), "/usr/bin:/bin action's own\n");
}

#[tokio::test]
async fn signals_and_leftover_processes() {
    let r = runner().await;
    let response = r.run(r.action("s1", &["sh", "-c", "kill -9 $$"])).await.unwrap();
    assert_eq!(response.exit_code, 128 + 9);
    assert_eq!(usage(&response).termination_signal, "KILL");

    // A background process outlives its shell, but not the action.
    let response = r
        .run(r.action("s2", &["sh", "-c", "(sleep 0.5; echo survived > late) & echo started"]))
        .await
        .unwrap();
    assert_eq!(response.exit_code, 0);
    assert_eq!(r.read("s2/stdout"), "started\n");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!r.path("s2/root/late").exists(), "a background process survived the action");
    // The temporary directory was emptied.
    let response = r
        .run(r.action("s3", &["sh", "-c", "touch $TMPDIR/leftover; mkdir $TMPDIR/d; chmod 0 $TMPDIR/d"]))
        .await
        .unwrap();
    assert_eq!(response.exit_code, 0);
    assert_eq!(std::fs::read_dir(r.path("s3/tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn timeouts_kill_every_process_and_keep_partial_output() {
    let r = runner_with("[sandbox]\ntermination_grace = \"1s\"\n").await;
    let request = r
        .action("t1", &["sh", "-c", "echo before; (sleep 1; echo survived > late) & sleep 1000; echo after"]);
    let start = std::time::Instant::now();
    let err = r.run_with_timeout(request, Duration::from_millis(500)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(r.read("t1/stdout"), "before\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!r.path("t1/root/late").exists(), "a background process survived the timeout");
}

/// Out of time, an action gets SIGTERM (all of its processes), and those
/// that trap it SIGKILL after the grace period.
#[tokio::test]
async fn timeouts_terminate_then_kill() {
    let r = runner_with("[sandbox]\ntermination_grace = \"1500ms\"\n").await;
    let script = "trap 'echo got TERM; exit 3' TERM; echo ready; sleep 100 & wait";
    let start = std::time::Instant::now();
    let err = r.run_with_timeout(r.action("g1", &["sh", "-c", script]), Duration::from_millis(300)).await;
    assert_eq!(err.unwrap_err().code(), tonic::Code::DeadlineExceeded);
    assert_eq!(r.read("g1/stdout"), "ready\ngot TERM\n", "the action saw TERM and could flush");
    assert!(start.elapsed() < Duration::from_millis(1500), "it ended on TERM: {:?}", start.elapsed());

    let script = "trap 'echo ignoring TERM' TERM; echo ready; while :; do sleep 0.1; done";
    let start = std::time::Instant::now();
    let err = r.run_with_timeout(r.action("g2", &["sh", "-c", script]), Duration::from_millis(300)).await;
    let message = err.unwrap_err().message().to_string();
    let elapsed = start.elapsed();
    assert!(r.read("g2/stdout").starts_with("ready\nignoring TERM\n"), "{}", r.read("g2/stdout"));
    assert!(elapsed >= Duration::from_millis(1800), "KILL came after the grace period: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(message.contains("SIGTERM") && message.contains("SIGKILL"), "{message}");
}

#[tokio::test]
async fn abandoned_calls_kill_the_action() {
    let r = runner().await;
    let request = r.action("c1", &["sh", "-c", "echo started > started; sleep 1; echo survived > late"]);
    let call = tokio::spawn({
        let mut client = r.client.clone();
        async move { client.run(request).await }
    });
    while !r.path("c1/root/started").exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!r.path("c1/root/late").exists(), "the action outlived its abandoned Run call");
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
