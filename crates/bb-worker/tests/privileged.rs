//! Privilege separation, as deployed: the worker runs as user `bb-worker`,
//! the runner as `bb-runner` with an empty bounding set, both the real
//! binaries. Needs root (to create the users and switch to them), so these
//! tests are ignored by a plain `cargo test`; checks/privileged.sh runs them
//! as root and reports them as skipped otherwise.

mod common;

use bb_proto::reapi;
use common::{TestAction, Tree, code};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::Code;

const WORKER_USER: &str = "bb-worker";
const RUNNER_USER: &str = "bb-runner";

fn binary(name: &str) -> PathBuf {
    let dir = std::env::var("BB_BIN_DIR").unwrap_or_else(|_| {
        Path::new(env!("CARGO_BIN_EXE_bb-worker")).parent().unwrap().display().to_string()
    });
    let path = Path::new(&dir).join(name);
    assert!(path.exists(), "{} is missing: cargo build -p bb-runner -p bb-worker", path.display());
    path
}

fn sh(command: &str) {
    let status = Command::new("sh").arg("-c").arg(command).status().unwrap();
    assert!(status.success(), "{command} failed");
}

/// Creates the users, once: bb-runner, and bb-worker in bb-runner's group
/// (for the runner's socket).
fn ensure_users() {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    assert!(nix::unistd::geteuid().is_root(), "privileged tests need root");
    if Command::new("getent").args(["passwd", RUNNER_USER]).output().unwrap().stdout.is_empty() {
        sh(&format!("useradd --system --no-create-home --shell /usr/sbin/nologin {RUNNER_USER}"));
    }
    if Command::new("getent").args(["passwd", WORKER_USER]).output().unwrap().stdout.is_empty() {
        sh(&format!(
            "useradd --system --no-create-home --shell /usr/sbin/nologin -G {RUNNER_USER} {WORKER_USER}"
        ));
    }
    // Users someone made by hand may lack the membership.
    sh(&format!("id -nG {WORKER_USER} | grep -qw {RUNNER_USER} || usermod -aG {RUNNER_USER} {WORKER_USER}"));
}

/// Starts a binary as `user`, with no capabilities at all, as systemd's
/// `User=` with an empty `CapabilityBoundingSet=` would.
fn spawn_as(user: &str, binary: &Path, config: &Path, log: &Path) -> Child {
    Command::new("setpriv")
        .args([
            "--reuid",
            user,
            "--regid",
            user,
            "--init-groups",
            "--bounding-set",
            "-all",
            "--inh-caps",
            "-all",
            "--",
        ])
        .arg(binary)
        .arg("--config")
        .arg(config)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// One privileged farm at a time: each runner kills every process of the
/// bb-runner user after its actions (kill_user_processes), which would
/// include another test's actions.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct PrivilegedFarm {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    client: common::Client,
    base: tempfile::TempDir,
    metrics: String,
    children: Vec<Child>,
    shutdown: CancellationToken,
}

impl Drop for PrivilegedFarm {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.shutdown.cancel();
    }
}

impl PrivilegedFarm {
    async fn start() -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        ensure_users();
        let base = tempfile::Builder::new().prefix("bb-privileged").tempdir().unwrap();
        sh(&format!("chmod 755 {}", base.path().display()));
        let shutdown = CancellationToken::new();
        let (client_address, worker_address) = common::start_scheduler(&shutdown).await;

        let dir = base.path();
        let (build, cache, run) = (dir.join("build"), dir.join("cache"), dir.join("run"));
        // The worker owns the build directory; the socket lives in a
        // directory of the runner's group.
        sh(&format!("install -d -o {WORKER_USER} -g {WORKER_USER} -m 0755 {}", build.display()));
        sh(&format!("install -d -o {WORKER_USER} -g {WORKER_USER} -m 0700 {}", cache.display()));
        sh(&format!("install -d -o {RUNNER_USER} -g {RUNNER_USER} -m 0750 {}", run.display()));
        let socket = run.join("runner.sock");
        std::fs::write(
            dir.join("runner.toml"),
            format!(
                "listen = \"unix:{}\"\nbuild_directory = \"{}\"\nkill_user_processes = true\n",
                socket.display(),
                build.display()
            ),
        )
        .unwrap();
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(
            dir.join("worker.toml"),
            format!(
                r#"
scheduler = "{worker_address}"
storage = "{client_address}"
runner = "unix:{}"
build_directory = "{}"
cache_directory = "{}"
cache_max_size = "1GiB"
cache_max_files = 100000
concurrency = 1
name = "privileged-worker"
platform = [{{ name = "OSFamily", value = "linux" }}]
shutdown_grace = "5s"
http_listen = "127.0.0.1:{metrics_port}"
"#,
                socket.display(),
                build.display(),
                cache.display()
            ),
        )
        .unwrap();
        let runner =
            spawn_as(RUNNER_USER, &binary("bb-runner"), &dir.join("runner.toml"), &dir.join("runner.log"));
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let worker =
            spawn_as(WORKER_USER, &binary("bb-worker"), &dir.join("worker.toml"), &dir.join("worker.log"));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", metrics_port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        PrivilegedFarm {
            _turn: turn,
            client: common::Client { channel: bb_util::grpc::channel(&client_address).unwrap() },
            base,
            metrics: format!("127.0.0.1:{metrics_port}"),
            children: vec![runner, worker],
            shutdown,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.base.path().join(name)
    }

    async fn run(&self, action: TestAction) -> reapi::ExecuteResponse {
        self.client.run(action).await
    }

    async fn stdout(&self, result: &reapi::ActionResult) -> String {
        String::from_utf8_lossy(&self.client.read(result.stdout_digest.as_ref().unwrap()).await).into_owned()
    }

    async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.metrics).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text
    }

    async fn downloads(&self) -> u64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix("bb_worker_file_cache_downloads_total "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    fn logs(&self) -> String {
        let read = |name| std::fs::read_to_string(self.path(name)).unwrap_or_default();
        format!("runner log:\n{}\nworker log:\n{}", read("runner.log"), read("worker.log"))
    }
}

/// How many processes run exactly `command_line` on this host (the
/// action's own pids mean nothing here: it has a PID namespace).
fn running(command_line: &str) -> usize {
    let output = std::process::Command::new("pgrep").args(["-c", "-x", "-f", command_line]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs root; run by checks/privileged.sh"]
async fn inputs_are_protected_and_actions_hold_no_capabilities() {
    let farm = PrivilegedFarm::start().await;
    let cache = farm.path("cache");
    let script = format!(
        "id -un; grep -E '^Cap(Eff|Prm|Bnd|Amb|Inh)' /proc/self/status; \
         if echo tampered >> input.txt; then echo APPEND-OK; else echo APPEND-DENIED; fi; \
         if chmod 0666 input.txt; then echo CHMOD-OK; else echo CHMOD-DENIED; fi; \
         if ls {} >/dev/null 2>&1; then echo LIST-OK; else echo LIST-DENIED; fi; \
         mkdir -p out/private && echo secret > out/private/f && chmod 0600 out/private/f && chmod 0700 out/private; \
         sleep 1001 &",
        cache.display()
    );
    let mut action = TestAction::shell(&script);
    action.inputs = Tree::default().file("input.txt", "original contents\n");
    action.output_directories = vec!["out".into()];
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::Ok, "{:?}\n{}", response.status, farm.logs());
    let result = response.result.unwrap();
    let stdout = farm.stdout(&result).await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], RUNNER_USER, "the action runs as the runner's user");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = lines.iter().find(|l| l.starts_with(cap)).unwrap_or_else(|| panic!("{cap} in {stdout}"));
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(stdout.contains("APPEND-DENIED") && !stdout.contains("APPEND-OK"), "{stdout}");
    assert!(stdout.contains("CHMOD-DENIED"), "{stdout}");
    assert!(stdout.contains("LIST-DENIED"), "{stdout}");

    // The cached copy is intact, byte for byte.
    let digest = bb_util::Digest::of(bb_util::DigestFunction::Sha256, b"original contents\n");
    let cached = cache.join(format!("sha256-{}-{}", digest.hash_hex(), digest.size()));
    assert_eq!(std::fs::read(&cached).unwrap(), b"original contents\n");

    // An output the action made private was still collected.
    assert_eq!(result.output_directories.len(), 1);

    // The background sleep did not outlive the action.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(running("sleep 1001"), 0, "the background sleep survived");
    // And the build directory is gone.
    let left: Vec<_> = std::fs::read_dir(farm.path("build")).unwrap().collect();
    assert!(left.is_empty(), "build directory left behind: {left:?}");
}

#[tokio::test]
#[ignore = "needs root; run by checks/privileged.sh"]
async fn timeouts_kill_the_process_group() {
    let farm = PrivilegedFarm::start().await;
    let mut action = TestAction::shell("echo partial; sleep 1002 & wait");
    action.timeout = Some(Duration::from_secs(1));
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::DeadlineExceeded, "{:?}\n{}", response.status, farm.logs());
    let stdout = farm.stdout(response.result.as_ref().unwrap()).await;
    assert!(stdout.starts_with("partial\n"), "{stdout}");
    assert_eq!(running("sleep 1002"), 0, "the action's sleep survived the timeout");
}

#[tokio::test]
#[ignore = "needs root; run by checks/privileged.sh"]
async fn many_inputs_come_from_the_cache_the_second_time() {
    let farm = PrivilegedFarm::start().await;
    let mut tree = Tree::default();
    for i in 0..5000 {
        tree = tree.file(&format!("a{}/b{}/f{i}", i % 13, i % 5), &format!("{i}\n"));
    }
    let mut action = TestAction::shell("find . -type f | wc -l");
    action.inputs = tree;
    let before = farm.downloads().await;
    let response = farm.run(action.clone()).await;
    assert_eq!(farm.stdout(response.result.as_ref().unwrap()).await.trim(), "5000", "{}", farm.logs());
    let first = farm.downloads().await - before;
    assert_eq!(first, 5000);
    action.arguments[2] = "cat a7/b2/f7".into();
    let response = farm.run(action).await;
    assert_eq!(farm.stdout(response.result.as_ref().unwrap()).await, "7\n");
    assert_eq!(farm.downloads().await - before, first, "no downloads the second time");
}

#[tokio::test]
#[ignore = "needs root; run by checks/privileged.sh"]
async fn hostile_input_roots_change_nothing_outside() {
    let farm = PrivilegedFarm::start().await;
    std::fs::write(farm.path("sentinel"), "untouched").unwrap();
    let listing = |farm: &PrivilegedFarm| {
        let mut names: Vec<String> = std::fs::read_dir(farm.base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(&farm);
    // Names that climb are refused; symlinks that point out are laid out
    // as given (ALLOWED) and never followed by the worker: what the action
    // writes through them is its own business, as the runner's user.
    for (tree, want) in [
        (Tree::default().file("../escape", "x"), Code::InvalidArgument),
        (Tree::default().file("a/../../escape", "x"), Code::InvalidArgument),
        (Tree::default().symlink("out", "/tmp"), Code::Ok),
        (Tree::default().symlink("out", "../../../sentinel"), Code::Ok),
    ] {
        let mut action = TestAction::shell("echo pwned > out/x; echo pwned > ../../../sentinel");
        action.inputs = tree;
        let response = farm.run(action).await;
        assert_eq!(code(&response), want, "{:?}", response.status);
    }
    assert_eq!(std::fs::read_to_string(farm.path("sentinel")).unwrap(), "untouched");
    assert_eq!(listing(&farm), before);
}

/// What an action can reach of its build directory, as the runner's user:
/// it cannot replace stdout, stderr or its input root (the worker owns the
/// action's directory), and what it leaves inside the input root (links to
/// the runner's socket directory, a replaced output parent) is never
/// followed by the worker or the runner's cleanup.
#[tokio::test]
#[ignore = "needs root; run by checks/privileged.sh"]
async fn what_an_action_leaves_is_never_followed() {
    let farm = PrivilegedFarm::start().await;
    let secret = farm.path("cache").join("worker-secret");
    std::fs::write(&secret, "WORKER-SECRET").unwrap();
    sh(&format!("chown {WORKER_USER} {0} && chmod 0400 {0}", secret.display()));
    let mode = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    };
    let run_mode = mode(&farm.path("run"));
    let script = format!(
        "rm -f ../stdout ../stderr; ln -sf {secret} ../stdout; ln -sf /proc/self/environ ../stderr; \
         mv ../root ../moved 2>/dev/null && echo MOVED-ROOT; \
         ln -s ../../../run escape; ln -s ../../../run \"$TMPDIR/escape\"; mkdir locked && chmod 0 locked; \
         rm -rf out; ln -s ../../../run out; echo done",
        secret = secret.display()
    );
    let mut action = TestAction::shell(&script);
    action.output_files = vec!["out/runner.sock".into()];
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::FailedPrecondition, "{:?}\n{}", response.status, farm.logs());
    assert!(response.message.contains("symlink"), "{}", response.message);
    assert_eq!(mode(&farm.path("run")), run_mode, "the runner's directory was not chmodded");
    assert!(farm.path("run").join("runner.sock").exists(), "the runner's socket is still there");

    // Without the hostile output, the same replacements leak nothing.
    let mut action = TestAction::shell(&script);
    action.output_paths = vec!["escape".into()];
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::Ok, "{:?}\n{}", response.status, farm.logs());
    let result = response.result.unwrap();
    let stdout = farm.stdout(&result).await;
    assert!(!stdout.contains("WORKER-SECRET") && !stdout.contains("MOVED-ROOT"), "{stdout}");
    assert!(stdout.contains("done"), "{stdout}");
    let stderr =
        String::from_utf8_lossy(&farm.client.read(result.stderr_digest.as_ref().unwrap()).await).into_owned();
    assert!(!stderr.contains("PATH="), "{stderr}");
    assert_eq!(result.output_symlinks[0].target, "../../../run");
    assert_eq!(mode(&farm.path("run")), run_mode);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "WORKER-SECRET");
    // The build directory is gone, locked directory included.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left: Vec<_> = std::fs::read_dir(farm.path("build")).unwrap().collect();
    assert!(left.is_empty(), "build directory left behind: {left:?}\n{}", farm.logs());
}

/// The real worker exports every metric family from its first scrape.
#[tokio::test]
#[ignore = "needs root; run by checks/privileged.sh"]
async fn worker_metrics_exist_before_any_action() {
    let farm = PrivilegedFarm::start().await;
    let text = farm.metrics_text().await;
    for family in bb_worker::metrics::FAMILIES {
        assert!(text.contains(&format!("# TYPE {} ", family.name)), "{} missing from:\n{text}", family.name);
    }
    assert!(text.contains("bb_worker_actions_total{outcome=\"timeout\"} 0"), "{text}");
}

/// A runner killed mid-action: the worker hands the action back, waits for
/// the runner to return, and the scheduler runs the action again; the
/// client sees success, never a transport error.
#[tokio::test]
#[ignore = "needs root; run by checks/privileged.sh"]
async fn a_runner_lost_mid_action_is_retried() {
    let mut farm = PrivilegedFarm::start().await;
    let action = TestAction::shell("sleep 1; echo done");
    let client = common::Client { channel: farm.client.channel.clone() };
    let run = tokio::spawn(async move { client.run(action).await });
    tokio::time::sleep(Duration::from_millis(600)).await;
    let runner = &mut farm.children[0];
    runner.kill().unwrap();
    runner.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    farm.children[0] =
        spawn_as(RUNNER_USER, &binary("bb-runner"), &farm.path("runner.toml"), &farm.path("runner-2.log"));
    let response = tokio::time::timeout(Duration::from_secs(60), run).await.unwrap().unwrap();
    assert_eq!(code(&response), Code::Ok, "{:?}\n{}", response.status, farm.logs());
    assert_eq!(farm.stdout(response.result.as_ref().unwrap()).await, "done\n");
    assert!(farm.logs().contains("handing action"), "{}", farm.logs());
}

/// SIGTERM after work: the worker stops and logs no warning (a report cut
/// short by draining is not re-sent as a refused one).
#[tokio::test]
#[ignore = "needs root; run by checks/privileged.sh"]
async fn a_clean_shutdown_logs_no_warning() {
    let mut farm = PrivilegedFarm::start().await;
    for i in 0..3 {
        let response = farm.run(TestAction::shell(&format!("echo {i}"))).await;
        assert_eq!(code(&response), Code::Ok, "{:?}\n{}", response.status, farm.logs());
    }
    let worker = &mut farm.children[1];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    // Waited for without blocking: the scheduler runs on this thread.
    let mut status = None;
    for _ in 0..300 {
        status = farm.children[1].try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.expect("the worker stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", farm.logs());
    let log = std::fs::read_to_string(farm.path("worker.log")).unwrap();
    assert!(!log.contains(" WARN "), "{log}");
    assert!(!log.contains('\u{1b}'), "a log file gets no colour codes: {log:?}");
}
