//! The hostile-input suite: what an attacker sends a running farm, each
//! case with the status it must get, in groups; after each group, blobs
//! stored before the suite must still read back intact and a plain action
//! must still run. For the deep tree and the DAG bomb it also reports the
//! worker's peak memory while rejecting them, and how long that took.
//!
//!     cargo run --release -p bb-cli --example hostile -- --endpoint grpc://127.0.0.1:8980 \
//!         --state-dir STATE --worker-pid PID
//!
//! checks/hostile.sh starts the release `bb farm` as root, with workers and
//! runners as users bb-worker and bb-runner, and runs this against it.

use bb_client::{Source, StorageClient};
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use clap::Parser;
use prost::Message;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::Code;

mod sandbox;

#[derive(Parser)]
struct Flags {
    #[arg(long, default_value = "grpc://127.0.0.1:8980")]
    endpoint: String,
    /// The farm's --state-dir, whose storage and caches actions must not read.
    #[arg(long)]
    state_dir: PathBuf,
    /// A worker process, for its peak memory (needs root to reset the peak).
    #[arg(long)]
    worker_pid: Option<u32>,
}

fn blob(message: &impl Message) -> (Digest, Bytes) {
    let bytes = Bytes::from(message.encode_to_vec());
    (Digest::of(DigestFunction::Sha256, &bytes), bytes)
}

fn subdirectory(name: &str, digest: &Digest) -> reapi::DirectoryNode {
    reapi::DirectoryNode { name: name.into(), digest: Some(digest.to_proto()) }
}

fn file_node(name: &str, digest: &Digest) -> reapi::FileNode {
    reapi::FileNode { name: name.into(), digest: Some(digest.to_proto()), ..Default::default() }
}

fn symlink_node(name: &str, target: &str) -> reapi::SymlinkNode {
    reapi::SymlinkNode { name: name.into(), target: target.into(), node_properties: None }
}

/// What one case sends: a shell script (or a raw Command) in an input root.
struct Case {
    name: &'static str,
    command: reapi::Command,
    root: Digest,
    blobs: Vec<(Digest, Bytes)>,
    /// Upload the Command (false: it is missing on purpose).
    upload_command: bool,
    want: Code,
    /// For a successful case, the exact stdout.
    stdout: Option<String>,
    timeout: Duration,
    /// Checks of what came back, beyond the code and stdout.
    check: Option<Box<Check>>,
}

/// A check of an outcome: what is wrong with it, if anything.
type Check = dyn Fn(&Outcome) -> Result<(), String>;

/// What a case got back.
pub struct Outcome {
    code: Code,
    message: String,
    stdout: Option<Bytes>,
    elapsed: Duration,
    response: Option<reapi::ExecuteResponse>,
}

impl Case {
    fn shell(name: &'static str, script: &str, want: Code) -> Case {
        let (root, bytes) = blob(&reapi::Directory::default());
        Case {
            name,
            command: reapi::Command {
                arguments: vec!["/bin/sh".into(), "-c".into(), script.into()],
                ..Default::default()
            },
            root,
            blobs: vec![(root, bytes)],
            upload_command: true,
            want,
            stdout: None,
            timeout: Duration::from_secs(60),
            check: None,
        }
    }

    fn checked(mut self, check: impl Fn(&Outcome) -> Result<(), String> + 'static) -> Case {
        self.check = Some(Box::new(check));
        self
    }

    fn prints(mut self, stdout: &str) -> Case {
        self.stdout = Some(stdout.to_string());
        self
    }

    fn in_root(mut self, root: Digest, blobs: Vec<(Digest, Bytes)>) -> Case {
        self.root = root;
        self.blobs = blobs;
        self
    }

    fn with(mut self, change: impl FnOnce(&mut reapi::Command)) -> Case {
        change(&mut self.command);
        self
    }
}

struct Suite {
    storage: StorageClient,
    execution: reapi::execution_client::ExecutionClient<bb_util::grpc::Channel>,
    salt: String,
    worker_pid: Option<u32>,
    sentinels: Vec<(Digest, Bytes)>,
    passed: usize,
    failed: usize,
}

impl Suite {
    /// Runs a case: what it got, and how long the Execute call took
    /// (uploads not counted).
    async fn run(&self, case: &Case) -> anyhow::Result<Outcome> {
        let mut command = case.command.clone();
        command.environment_variables.push(reapi::command::EnvironmentVariable {
            name: "BB_HOSTILE_RUN".into(),
            value: self.salt.clone(),
        });
        command.environment_variables.sort_by(|a, b| a.name.cmp(&b.name));
        let mut platform = command.platform.take().unwrap_or_default();
        platform
            .properties
            .push(reapi::platform::Property { name: "OSFamily".into(), value: "linux".into() });
        platform.properties.sort_by(|a, b| (&a.name, &a.value).cmp(&(&b.name, &b.value)));
        command.platform = Some(platform);
        let (command_digest, command_bytes) = blob(&command);
        let (action_digest, action_bytes) = blob(&reapi::Action {
            command_digest: Some(command_digest.to_proto()),
            input_root_digest: Some(case.root.to_proto()),
            timeout: Some(prost_types::Duration::try_from(case.timeout)?),
            do_not_cache: true,
            ..Default::default()
        });
        let mut uploads: Vec<(Digest, Source)> =
            case.blobs.iter().map(|(d, b)| (*d, Source::Bytes(b.clone()))).collect();
        uploads.push((action_digest, Source::Bytes(action_bytes)));
        if case.upload_command {
            uploads.push((command_digest, Source::Bytes(command_bytes)));
        }
        self.storage.upload("", uploads).await?;
        self.reset_peak();
        let started = Instant::now();
        let request = reapi::ExecuteRequest {
            action_digest: Some(action_digest.to_proto()),
            skip_cache_lookup: true,
            ..Default::default()
        };
        let mut stream = match self.execution.clone().execute(request).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => return Ok(Outcome::failed(&status, started.elapsed())),
        };
        let mut last = None;
        loop {
            match stream.message().await {
                Ok(Some(operation)) => last = Some(operation),
                Ok(None) => break,
                Err(status) => return Ok(Outcome::failed(&status, started.elapsed())),
            }
        }
        let elapsed = started.elapsed();
        let Some(bb_proto::longrunning::operation::Result::Response(any)) = last.and_then(|o| o.result)
        else {
            anyhow::bail!("the operation ended without a response");
        };
        let response = reapi::ExecuteResponse::decode(any.value.as_slice())?;
        let status = response.status.clone().unwrap_or_default();
        let stdout = match response.result.as_ref().and_then(|r| r.stdout_digest.as_ref()) {
            Some(digest) => {
                let digest = Digest::from_proto(DigestFunction::Sha256, digest)?;
                let mut blobs = self.storage.read_blobs("", &[digest], "stdout").await?;
                blobs.remove(&digest)
            }
            None => None,
        };
        let message = if response.message.is_empty() { status.message } else { response.message.clone() };
        Ok(Outcome { code: Code::from_i32(status.code), message, stdout, elapsed, response: Some(response) })
    }

    async fn check(&mut self, case: Case) -> anyhow::Result<()> {
        let rss_before = self.memory("VmRSS");
        let outcome = self.run(&case).await?;
        let (code, message, stdout, elapsed) =
            (outcome.code, &outcome.message, &outcome.stdout, outcome.elapsed);
        let checked = case.check.as_ref().map_or(Ok(()), |check| check(&outcome));
        let stdout_ok = match (&case.stdout, stdout) {
            (Some(want), Some(got)) => got == want.as_bytes(),
            (Some(_), None) => false,
            (None, _) => true,
        };
        let verdict = if code == case.want && stdout_ok && checked.is_ok() { "PASS" } else { "FAIL" };
        if verdict == "PASS" {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let mut line = format!("{verdict} {}: {code:?} (want {:?}) in {elapsed:.2?}", case.name, case.want);
        if let (Some(before), Some(peak)) = (rss_before, self.memory("VmHWM")) {
            line +=
                &format!(", worker peak {:.1} MiB above idle", peak.saturating_sub(before) as f64 / 1024.0);
        }
        println!("{line}");
        if verdict == "FAIL" {
            println!("    message: {message}");
            println!("    stdout: {:?}", stdout.as_ref().map(|s| String::from_utf8_lossy(s).into_owned()));
            if let Err(why) = checked {
                println!("    {why}");
            }
        }
        Ok(())
    }

    /// After a group: what was stored before is intact, and the farm runs.
    async fn farm_is_intact(&mut self, group: &str) -> anyhow::Result<()> {
        let digests: Vec<Digest> = self.sentinels.iter().map(|(d, _)| *d).collect();
        let read = self.storage.read_blobs("", &digests, "sentinel").await;
        let intact = read.is_ok_and(|blobs| self.sentinels.iter().all(|(d, b)| blobs.get(d) == Some(b)));
        let case = Case::shell("a plain action", "echo up", Code::Ok).prints("up\n");
        let outcome = self.run(&case).await?;
        let up = outcome.code == Code::Ok && outcome.stdout.as_deref() == Some(b"up\n".as_slice());
        let elapsed = outcome.elapsed;
        let verdict = if intact && up { "PASS" } else { "FAIL" };
        if intact && up {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        println!(
            "{verdict} after {group}: stored blobs intact: {intact}, farm up: {up} (a plain action: {elapsed:.2?})"
        );
        Ok(())
    }

    fn memory(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.worker_pid?)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Resets the worker's peak RSS (VmHWM) to its current RSS.
    fn reset_peak(&self) {
        if let Some(pid) = self.worker_pid {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }
}

impl Outcome {
    fn failed(status: &tonic::Status, elapsed: Duration) -> Outcome {
        Outcome {
            code: status.code(),
            message: status.message().to_string(),
            stdout: None,
            elapsed,
            response: None,
        }
    }
}

/// Directories nested `depth` deep.
fn deep_tree(depth: usize) -> (Digest, Vec<(Digest, Bytes)>) {
    let mut top = blob(&reapi::Directory::default());
    let mut blobs = vec![top.clone()];
    for _ in 0..depth {
        top = blob(&reapi::Directory { directories: vec![subdirectory("d", &top.0)], ..Default::default() });
        blobs.push(top.clone());
    }
    (top.0, blobs)
}

/// `levels` Directories, each listing the next `fanout` times: fanout^levels
/// paths from a few KB.
fn dag_bomb(fanout: usize, levels: usize) -> (Digest, Vec<(Digest, Bytes)>) {
    let file = Bytes::from_static(b"x");
    let file_digest = Digest::of(DigestFunction::Sha256, &file);
    let mut top = blob(&reapi::Directory { files: vec![file_node("f", &file_digest)], ..Default::default() });
    let mut blobs = vec![(file_digest, file), top.clone()];
    for _ in 0..levels {
        let directories = (0..fanout).map(|i| subdirectory(&format!("d{i:03}"), &top.0)).collect();
        top = blob(&reapi::Directory { directories, ..Default::default() });
        blobs.push(top.clone());
    }
    (top.0, blobs)
}

fn one_directory(directory: reapi::Directory, extra: Vec<(Digest, Bytes)>) -> (Digest, Vec<(Digest, Bytes)>) {
    let (digest, bytes) = blob(&directory);
    let mut blobs = extra;
    blobs.push((digest, bytes));
    (digest, blobs)
}

fn build_directory_cases(state: &std::path::Path) -> Vec<Case> {
    let storage = state.join("storage");
    vec![
        Case::shell(
            "stdout replaced by a link to the worker's environment",
            "rm -f ../stdout 2>/dev/null; ln -sf /proc/self/environ ../stdout 2>/dev/null; echo nothing-leaked",
            Code::Ok,
        )
        .prints("nothing-leaked\n"),
        Case::shell(
            "stderr replaced by a FIFO",
            "rm -f ../stderr 2>/dev/null; mkfifo ../stderr 2>/dev/null; echo nothing-leaked",
            Code::Ok,
        )
        .prints("nothing-leaked\n"),
        Case::shell(
            "input root swapped for a link to the worker's directories",
            "mv ../root ../moved 2>/dev/null && ln -s ../.. ../root && echo swapped; echo nothing-leaked",
            Code::Ok,
        )
        .prints("nothing-leaked\n"),
        Case::shell("an output's parent replaced by a link out", "rm -rf out; ln -s ../../.. out", Code::FailedPrecondition)
            .with(|c| c.output_files = vec!["out/x".into()]),
        Case::shell("a FIFO as an output file", "mkfifo f", Code::FailedPrecondition)
            .with(|c| c.output_files = vec!["f".into()]),
        Case::shell("an output link to a device, returned as a link", "ln -s /dev/zero z", Code::Ok)
            .with(|c| c.output_files = vec!["z".into()]),
        Case::shell(
            "reading the farm's storage",
            &format!("ls {} >/dev/null 2>&1 && echo LISTED || echo denied", storage.join("cas").display()),
            Code::Ok,
        )
        .prints("denied\n"),
        Case::shell(
            "reading the workers' file caches",
            &format!("cat {}/*/cache/* >/dev/null 2>&1 && echo READ || echo denied", state.display()),
            Code::Ok,
        )
        .prints("denied\n"),
    ]
}

fn input_tree_cases() -> Vec<Case> {
    let shell = |name, want| Case::shell(name, "ls | wc -l", want);
    let chain = {
        let up = one_directory(
            reapi::Directory { symlinks: vec![symlink_node("up", "../../../..")], ..Default::default() },
            vec![],
        );
        let (mut digest, mut blobs) = up;
        for name in ["c", "b", "a"] {
            let (d, more) = one_directory(
                reapi::Directory {
                    directories: vec![subdirectory(if name == "c" { "d" } else { "x" }, &digest)],
                    ..Default::default()
                },
                blobs,
            );
            (digest, blobs) = (d, more);
        }
        one_directory(
            reapi::Directory {
                directories: vec![subdirectory("a", &digest)],
                symlinks: vec![symlink_node("out", "a/x/x/d/up/..")],
                ..Default::default()
            },
            blobs,
        )
    };
    let file = Bytes::from_static(b"same\n");
    let file_digest = Digest::of(DigestFunction::Sha256, &file);
    let large = one_directory(
        reapi::Directory {
            files: (0..200_000)
                .map(|i| file_node(&format!("input-file-{i:07}-with-a-long-name"), &file_digest))
                .collect(),
            ..Default::default()
        },
        vec![(file_digest, file.clone())],
    );
    let missing = Digest::of(DigestFunction::Sha256, b"never uploaded");
    let garbage = Bytes::from_static(b"\xff\xff\xff not a Directory");
    let garbage_digest = Digest::of(DigestFunction::Sha256, &garbage);
    vec![
        // Laid out as given (absolute symlinks are ALLOWED), never followed
        // by the worker.
        shell("symlinks that leave the root together", Code::Ok).prints("2\n").in_root(chain.0, chain.1),
        {
            let (d, b) = one_directory(
                reapi::Directory { symlinks: vec![symlink_node("l", "/etc/passwd")], ..Default::default() },
                vec![],
            );
            shell("an absolute input symlink", Code::Ok).prints("1\n").in_root(d, b)
        },
        {
            let (d, b) = one_directory(
                reapi::Directory { symlinks: vec![symlink_node("etc", "/etc")], ..Default::default() },
                vec![],
            );
            // Refused before the run: the worker makes output parents only
            // as directories, never through a link.
            Case::shell("an output beneath an absolute input symlink", "true", Code::InvalidArgument)
                .with(|c| c.output_files = vec!["etc/passwd".into()])
                .in_root(d, b)
        },
        {
            let (d, b) = one_directory(
                reapi::Directory { files: vec![file_node("..", &file_digest)], ..Default::default() },
                vec![(file_digest, file.clone())],
            );
            shell("a file named ..", Code::InvalidArgument).in_root(d, b)
        },
        {
            let (d, b) = one_directory(
                reapi::Directory {
                    files: vec![file_node("same", &file_digest), file_node("same", &file_digest)],
                    ..Default::default()
                },
                vec![(file_digest, file.clone())],
            );
            shell("two entries of one name", Code::InvalidArgument).in_root(d, b)
        },
        {
            let (d, b) = deep_tree(10_000);
            shell("a tree 10,000 directories deep", Code::InvalidArgument).in_root(d, b)
        },
        {
            let (d, b) = dag_bomb(12, 9);
            shell("a DAG bomb (9 Directories, 5e9 paths)", Code::InvalidArgument).in_root(d, b)
        },
        shell("a 15 MiB Directory of 200,000 files", Code::Ok).prints("200000\n").in_root(large.0, large.1),
        {
            let (d, b) = one_directory(
                reapi::Directory { files: vec![file_node("f", &missing)], ..Default::default() },
                vec![],
            );
            shell("an input file that is not in the CAS", Code::FailedPrecondition).in_root(d, b)
        },
        {
            let (d, b) = one_directory(
                reapi::Directory {
                    directories: vec![subdirectory("g", &garbage_digest)],
                    ..Default::default()
                },
                vec![(garbage_digest, garbage)],
            );
            shell("a Directory that does not decode", Code::InvalidArgument).in_root(d, b)
        },
    ]
}

fn command_cases() -> Vec<Case> {
    let variable = |name: &str, value: &str| reapi::command::EnvironmentVariable {
        name: name.into(),
        value: value.into(),
    };
    vec![
        Case::shell("an environment variable named A=INJECTED", "env", Code::InvalidArgument)
            .with(|c| c.environment_variables = vec![variable("A=INJECTED", "1")]),
        Case::shell("an environment value with NUL", "env", Code::InvalidArgument)
            .with(|c| c.environment_variables = vec![variable("A", "1\0B=2")]),
        Case::shell("an output path above the input root", "true", Code::InvalidArgument)
            .with(|c| c.output_paths = vec!["../escape".into()]),
        Case::shell("a working directory above the input root", "true", Code::InvalidArgument)
            .with(|c| c.working_directory = "../..".into()),
        Case::shell("no arguments", "true", Code::InvalidArgument).with(|c| c.arguments.clear()),
        Case {
            upload_command: false,
            ..Case::shell("a Command that is not in the CAS", "true", Code::FailedPrecondition)
        },
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let channel = bb_util::grpc::channel(&flags.endpoint)?;
    let mut suite = Suite {
        storage: StorageClient::new(channel.clone()),
        execution: reapi::execution_client::ExecutionClient::new(channel),
        salt: uuid::Uuid::new_v4().to_string(),
        worker_pid: flags.worker_pid,
        sentinels: Vec::new(),
        passed: 0,
        failed: 0,
    };
    for size in [100, 3 << 20] {
        let data = Bytes::from((0..size).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>());
        suite.sentinels.push((Digest::of(DigestFunction::Sha256, &data), data));
    }
    let uploads = suite.sentinels.iter().map(|(d, b)| (*d, Source::Bytes(b.clone()))).collect();
    suite.storage.upload("", uploads).await?;
    if let Some(rss) = suite.memory("VmRSS") {
        println!("worker idle RSS: {:.1} MiB", rss as f64 / 1024.0);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let groups = [
        ("the build directory", build_directory_cases(&flags.state_dir)),
        ("input trees", input_tree_cases()),
        ("commands", command_cases()),
        ("the sandbox", sandbox::cases(&suite.salt, port)),
    ];
    for (group, cases) in groups {
        println!("== {group}");
        for case in cases {
            let name = case.name;
            let limit = case.timeout + Duration::from_secs(60);
            if tokio::time::timeout(limit, suite.check(case)).await.is_err() {
                println!("FAIL {name}: no answer after 60 s");
                suite.failed += 1;
            }
        }
        suite.farm_is_intact(group).await?;
    }
    println!("hostile: {} passed, {} failed", suite.passed, suite.failed);
    if suite.failed > 0 {
        anyhow::bail!("{} hostile cases were not handled as they must be", suite.failed);
    }
    Ok(())
}
