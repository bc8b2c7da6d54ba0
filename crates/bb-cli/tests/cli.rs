//! The `bb` binary end to end: a `bb farm` on spare ports, driven with
//! `bb exec`, `bb status`, `bb drain`, `bb cas` and `bb ac`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

mod common;
use common::{BB, start_farm, start_farm_with};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn exec_with_inputs_outputs_and_the_cache() {
    let farm = start_farm();
    let work = farm.dir.path().join("work");
    std::fs::create_dir_all(work.join("input/sub")).unwrap();
    std::fs::write(work.join("input/sub/data.txt"), "some input\n").unwrap();
    let script = "cat sub/data.txt; echo to-stderr >&2; mkdir -p out/d; tr a-z A-Z < sub/data.txt > out/d/upper.txt; exit 7";
    let args = ["exec", "-v", "--input", "input", "--output", "out", "--", "sh", "-c", script];
    let output = farm.bb(&args, &work);
    assert_eq!(output.status.code(), Some(7), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "some input\n");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("to-stderr") && stderr.contains("cached=false"), "{stderr}");
    assert_eq!(std::fs::read_to_string(work.join("out/d/upper.txt")).unwrap(), "SOME INPUT\n");

    // A success is cached; the second run says so.
    let ok = ["exec", "--", "sh", "-c", "echo cached output"];
    assert_eq!(farm.bb(&ok, &work).status.code(), Some(0));
    let again = farm.bb(&ok, &work);
    assert_eq!(text(&again.stdout), "cached output\n");
    assert!(text(&again.stderr).contains("served from the cache"), "{}", text(&again.stderr));

    // Errors are one line.
    let unreachable =
        Command::new(BB).args(["exec", "--endpoint", "grpc://127.0.0.1:1", "--", "true"]).output().unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    let message = text(&unreachable.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
}

#[test]
fn status_drain_cas_and_ac() {
    let farm = start_farm();
    let dir = farm.dir.path();
    let status = farm.bb(&["status"], dir);
    let shown = text(&status.stdout);
    assert!(status.status.success() && shown.contains("slot=0") && shown.contains("slot=1"), "{shown}");

    let host = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("host="))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let drained = farm.bb(&["drain", &host], dir);
    assert!(drained.status.success(), "{}", text(&drained.stderr));
    assert!(text(&farm.bb(&["status", "--json"], dir).stdout).contains("\"drained\":true"));
    assert!(farm.bb(&["undrain", &host], dir).status.success());
    let unknown = farm.bb(&["drain", "no-such-worker"], dir);
    assert!(!unknown.status.success() && text(&unknown.stderr).contains("no worker"));

    std::fs::write(dir.join("blob.txt"), "a blob\n").unwrap();
    let put = farm.bb(&["cas", "put", "blob.txt"], dir);
    let digest = text(&put.stdout).trim().to_string();
    assert!(digest.ends_with("/7"), "{digest}");
    let got = farm.bb(&["cas", "get", &digest], dir);
    assert_eq!(text(&got.stdout), "a blob\n", "{}", text(&got.stderr));
    let missing = farm.bb(&["cas", "get", &format!("{}/7", "0".repeat(64))], dir);
    assert!(
        !missing.status.success() && text(&missing.stderr).contains("not found")
            || text(&missing.stderr).contains("missing")
    );
    let bad = farm.bb(&["cas", "get", "not-a-digest"], dir);
    assert!(text(&bad.stderr).contains("not a digest"), "{}", text(&bad.stderr));

    let run = farm.bb(&["exec", "-v", "--", "sh", "-c", "echo for the cache"], dir);
    let action =
        text(&run.stderr).split("action=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let result = farm.bb(&["ac", "get", &action], dir);
    assert!(text(&result.stdout).contains("exit code: 0"), "{}", text(&result.stdout));
}

/// Without a status URL, `bb status` looks on the endpoint's host, and a
/// failure names the URL it tried.
#[test]
fn the_status_page_follows_the_endpoint() {
    let output = Command::new(BB)
        .args(["status"])
        .env("BB_ENDPOINT", "grpc://127.0.0.2:8980")
        .env_remove("BB_STATUS_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("http://127.0.0.2:7982"), "{stderr}");
    let output = Command::new(BB)
        .args(["drain", "w", "--status-url", "http://127.0.0.3:1"])
        .env("BB_ENDPOINT", "grpc://127.0.0.2:8980")
        .output()
        .unwrap();
    assert!(text(&output.stderr).contains("http://127.0.0.3:1"), "{}", text(&output.stderr));
}

/// Workers offer OSFamily=linux and the host's ISA by default, so Bazel's
/// and BuildStream's platforms both match; `--platform` adds properties.
#[test]
fn workers_offer_the_os_the_isa_and_what_they_are_given() {
    let farm = start_farm_with(&["--platform", "container-image=test-image"]);
    let output = farm.bb(&["status", "--json"], farm.dir.path());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let platform =
        status["workers"][0]["platform"].as_str().unwrap_or_else(|| panic!("{status}")).to_string();
    for property in ["OSFamily=linux", "ISA=", "container-image=test-image"] {
        assert!(platform.contains(property), "{property} in {platform}");
    }
    let isa = platform.split(['{', '}', ',', ' ']).find_map(|p| p.strip_prefix("ISA=")).unwrap();
    let ok = farm.bb(&["exec", "--platform", &format!("ISA={isa}"), "--", "true"], farm.dir.path());
    assert!(ok.status.success(), "{}", text(&ok.stderr));
}

/// An action's inputs come back as they were sent, and the printed line
/// runs the action again from them.
#[test]
fn action_download_fetches_the_inputs_and_the_line_reruns_it() {
    let farm = start_farm();
    let work = farm.dir.path().join("work");
    std::fs::create_dir_all(work.join("input/sub/deeper")).unwrap();
    std::fs::write(work.join("input/sub/data.txt"), "some input\n").unwrap();
    std::fs::write(work.join("input/run.sh"), "#!/bin/sh\ncat sub/data.txt; exit 3\n").unwrap();
    std::fs::set_permissions(work.join("input/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("sub/data.txt", work.join("input/link")).unwrap();
    std::fs::write(work.join("input/sub/deeper/big.bin"), vec![7u8; 3 << 20]).unwrap();
    let run = farm.bb(&["exec", "-v", "--input", "input", "--env", "GREETING=a b", "--", "./run.sh"], &work);
    assert_eq!(run.status.code(), Some(3), "{}", text(&run.stderr));
    let action =
        text(&run.stderr).split("action=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();

    let download = farm.bb(&["action", "download", &action, "fetched"], &work);
    assert!(download.status.success(), "{}", text(&download.stderr));
    let fetched = work.join("fetched");
    assert_eq!(std::fs::read_to_string(fetched.join("sub/data.txt")).unwrap(), "some input\n");
    assert_eq!(std::fs::read(fetched.join("sub/deeper/big.bin")).unwrap(), vec![7u8; 3 << 20]);
    assert_eq!(std::fs::read_link(fetched.join("link")).unwrap(), Path::new("sub/data.txt"));
    let mode = std::fs::metadata(fetched.join("run.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "the executable bit came back");

    // The printed line runs it again, uncached, with the same environment.
    let printed = text(&download.stdout);
    let line = printed.lines().find_map(|l| l.trim().strip_prefix("bb exec ")).unwrap();
    assert!(line.contains("--env 'GREETING=a b'") && line.contains("--no-cache"), "{line}");
    let rerun = Command::new("sh")
        .args(["-c", &format!("{BB} exec {line}")])
        .env("BB_ENDPOINT", &farm.endpoint)
        .current_dir(&work)
        .output()
        .unwrap();
    assert_eq!(rerun.status.code(), Some(3), "{}", text(&rerun.stderr));
    assert_eq!(text(&rerun.stdout), "some input\n");

    let again = farm.bb(&["action", "download", &action, "fetched"], &work);
    assert!(
        !again.status.success() && text(&again.stderr).contains("is not empty"),
        "{}",
        text(&again.stderr)
    );
}

/// A farm's Directory whose symlink and subdirectory share a name cannot
/// make the download write through the symlink.
#[test]
fn action_download_never_writes_outside_its_directory() {
    use bb_proto::reapi;
    use prost::Message;
    let farm = start_farm();
    let work = farm.dir.path().join("work");
    let outside = farm.dir.path().join("outside");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let put = |name: &str, data: &[u8]| -> reapi::Digest {
        std::fs::write(work.join(name), data).unwrap();
        let output = farm.bb(&["cas", "put", name], &work);
        let digest = text(&output.stdout).trim().to_string();
        let (hash, size) = digest.split_once('/').unwrap();
        reapi::Digest { hash: hash.into(), size_bytes: size.parse().unwrap() }
    };
    let payload = put("payload", b"planted\n");
    let sub = reapi::Directory {
        files: vec![reapi::FileNode { name: "planted".into(), digest: Some(payload), ..Default::default() }],
        ..Default::default()
    };
    let sub = put("sub", &sub.encode_to_vec());
    let root = reapi::Directory {
        directories: vec![reapi::DirectoryNode { name: "x".into(), digest: Some(sub) }],
        symlinks: vec![reapi::SymlinkNode {
            name: "x".into(),
            target: outside.to_str().unwrap().into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let root = put("root", &root.encode_to_vec());
    let command = put(
        "command",
        &reapi::Command { arguments: vec!["true".into()], ..Default::default() }.encode_to_vec(),
    );
    let action =
        reapi::Action { command_digest: Some(command), input_root_digest: Some(root), ..Default::default() };
    let action = put("action", &action.encode_to_vec());

    let digest = format!("{}/{}", action.hash, action.size_bytes);
    let download = farm.bb(&["action", "download", &digest, "fetched"], &work);
    assert!(!download.status.success(), "{}", text(&download.stdout));
    assert!(text(&download.stderr).contains("directory \"x\""), "{}", text(&download.stderr));
    assert!(!outside.join("planted").exists(), "written through the symlink");
}

#[test]
fn token_new_writes_a_private_token_and_prints_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ci-token");
    let made = Command::new(BB).args(["token", "new", "ci", "--output"]).arg(&file).output().unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let token = std::fs::read_to_string(&file).unwrap();
    let token = token.trim_end();
    assert_eq!(token.len(), 64, "{token}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // The line lets exactly this token in, and does not show it.
    let line = text(&made.stdout);
    assert_eq!(line, format!("ci = \"{}\"\n", bb_util::auth::tokens::hash(token)));
    assert!(!line.contains(token));

    // An existing file is kept, a name a policy cannot hold is refused.
    let again = Command::new(BB).args(["token", "new", "ci", "--output"]).arg(&file).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("exists"), "{}", text(&again.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim_end(), token);
    let bad =
        Command::new(BB).args(["token", "new", "a b", "-o"]).arg(dir.path().join("other")).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(!dir.path().join("other").exists());
}
