//! Actions through a whole in-process farm: inputs, outputs, caching,
//! timeouts, failures and hostile input roots.

mod common;

use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use common::{Farm, TestAction, Tree, code};
use prost::Message;
use std::time::Duration;
use tonic::Code;
use tonic_types::RpcStatusExt;

#[tokio::test]
async fn runs_an_action_with_inputs_and_outputs() {
    let farm = Farm::start(2).await;
    let mut action = TestAction::shell(
        "cat in/data.txt > out/copy.txt && mkdir -p gen/tree/sub && ./tools/run.sh > gen/tree/sub/made.txt && \
         ln -s copy.txt out/link && cat via-link && echo to-stderr >&2",
    );
    action.inputs = Tree::default()
        .file("in/data.txt", "input data\n")
        .executable("tools/run.sh", "#!/bin/sh\necho tool output\n")
        .symlink("via-link", "in/data.txt");
    action.output_files = vec!["out/copy.txt".into(), "out/link".into()];
    action.output_directories = vec!["gen/tree".into()];
    let response = farm.run(action.clone()).await;
    assert_eq!(code(&response), Code::Ok, "{:?}", response.status);
    let result = response.result.unwrap();
    assert_eq!(result.exit_code, 0);
    assert_eq!(farm.read(result.stdout_digest.as_ref().unwrap()).await, "input data\n");
    assert_eq!(farm.read(result.stderr_digest.as_ref().unwrap()).await, "to-stderr\n");
    assert_eq!(result.output_files[0].path, "out/copy.txt");
    assert_eq!(farm.read(result.output_files[0].digest.as_ref().unwrap()).await, "input data\n");
    #[allow(deprecated)]
    let link = &result.output_file_symlinks[0];
    assert_eq!((link.path.as_str(), link.target.as_str()), ("out/link", "copy.txt"));
    let tree =
        reapi::Tree::decode(farm.read(result.output_directories[0].tree_digest.as_ref().unwrap()).await)
            .unwrap();
    assert_eq!(tree.root.unwrap().directories[0].name, "sub");
    assert_eq!(tree.children[0].files[0].name, "made.txt");

    let metadata = result.execution_metadata.unwrap();
    assert_eq!(metadata.worker, "test-worker");
    for timestamp in [
        &metadata.queued_timestamp,
        &metadata.worker_start_timestamp,
        &metadata.input_fetch_start_timestamp,
        &metadata.input_fetch_completed_timestamp,
        &metadata.execution_start_timestamp,
        &metadata.execution_completed_timestamp,
        &metadata.output_upload_start_timestamp,
        &metadata.output_upload_completed_timestamp,
        &metadata.worker_completed_timestamp,
    ] {
        assert!(timestamp.is_some());
    }
    assert!(metadata.auxiliary_metadata.iter().any(|a| a.type_url.ends_with("POSIXResourceUsage")));

    // The result was cached: the same action is a cache hit now.
    let (digest, _) = action.build();
    let again = farm.execute(&digest, false).await;
    assert!(again.cached_result);
    // Build directories are removed (in the background, after the result).
    let mut empty = false;
    for _ in 0..100 {
        empty = std::fs::read_dir(farm.build_directory()).unwrap().next().is_none();
        if empty {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(empty, "build directories are removed");
}

#[tokio::test]
async fn output_paths_and_working_directories() {
    let farm = Farm::start(1).await;
    // ".." may leave the working directory, as far as the input root.
    let mut action = TestAction::shell("pwd > ../result/where && mkdir -p d && echo x > d/f && ln -s d l");
    action.inputs = Tree { directories: vec!["work".into()], ..Default::default() };
    action.working_directory = "work".into();
    action.output_paths = vec!["../result/where".into(), "d".into(), "l".into()];
    let response = farm.run(action.clone()).await;
    assert_eq!(code(&response), Code::Ok, "{:?}", response.status);
    assert_eq!(response.result.unwrap().output_files[0].path, "../result/where");
    // Above it: refused.
    action.output_paths = vec!["../../where".into()];
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::InvalidArgument);

    let mut action = TestAction::shell("pwd > result && mkdir -p d && echo x > d/f && ln -s d l");
    action.inputs = Tree { directories: vec!["work".into()], ..Default::default() };
    action.working_directory = "work".into();
    action.output_paths = vec!["result".into(), "d".into(), "l".into()];
    let result = farm.run(action).await.result.unwrap();
    assert!(
        String::from_utf8(farm.read(result.output_files[0].digest.as_ref().unwrap()).await.to_vec())
            .unwrap()
            .ends_with("/root/work\n")
    );
    assert_eq!(result.output_directories[0].path, "d");
    assert_eq!(result.output_symlinks[0].path, "l");
}

#[tokio::test]
async fn failures_are_not_cached_and_keep_their_logs() {
    let farm = Farm::start(1).await;
    let action = TestAction::shell("echo failing >&2; exit 3");
    let response = farm.run(action.clone()).await;
    assert_eq!(code(&response), Code::Ok, "a non-zero exit is not an error");
    let result = response.result.unwrap();
    assert_eq!(result.exit_code, 3);
    assert_eq!(farm.read(result.stderr_digest.as_ref().unwrap()).await, "failing\n");
    // The result itself is kept in the CAS, where the status page finds it
    // by the digest of the message the scheduler was sent.
    let kept = Digest::of_message(DigestFunction::Sha256, &result);
    assert_eq!(farm.read(&kept.to_proto()).await, result.encode_to_vec());
    let (digest, _) = action.build();
    assert!(!farm.execute(&digest, false).await.cached_result, "failed results are not cached");

    let mut uncached = TestAction::shell("echo fine");
    uncached.do_not_cache = true;
    farm.run(uncached.clone()).await;
    let (digest, _) = uncached.build();
    assert!(!farm.execute(&digest, false).await.cached_result, "do_not_cache results are not cached");
}

#[tokio::test]
async fn timeouts_report_deadline_exceeded_with_partial_output() {
    let farm = Farm::start(1).await;
    let mut action = TestAction::shell("echo started; sleep 1000 & wait; echo never");
    action.timeout = Some(Duration::from_millis(700));
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::DeadlineExceeded, "{:?}", response.status);
    let result = response.result.expect("partial results");
    assert_eq!(farm.read(result.stdout_digest.as_ref().unwrap()).await, "started\n");
}

#[tokio::test]
async fn missing_inputs_are_failed_precondition_naming_the_blob() {
    let farm = Farm::start(1).await;
    let mut action = TestAction::shell("cat f");
    action.inputs = Tree::default().file("f", "never uploaded");
    let (digest, blobs) = action.build();
    let missing = bb_util::Digest::of(bb_util::DigestFunction::Sha256, b"never uploaded");
    farm.upload(blobs.into_iter().filter(|b| b.as_ref() != b"never uploaded").collect()).await;
    let response = farm.execute(&digest, false).await;
    assert_eq!(code(&response), Code::FailedPrecondition);
    let failure = response.status.unwrap().get_details_precondition_failure().expect("violations");
    assert_eq!(failure.violations[0].subject, missing.blob_subject());
}

#[tokio::test]
async fn hostile_input_roots_change_nothing() {
    let farm = Farm::start(1).await;
    let outside = farm.dir.path().join("outside-sentinel");
    std::fs::write(&outside, "untouched").unwrap();
    let escape = format!("../../../{}", outside.file_name().unwrap().to_str().unwrap());
    // Symlinks are laid out as given (absolute ones are ALLOWED) and the
    // worker never writes through them; the action's own writes through
    // them meet the read-only host of its sandbox.
    let cases: Vec<(&str, Tree, Code)> = vec![
        ("dot-dot name", Tree::default().file("a/../../escape", "x"), Code::InvalidArgument),
        ("absolute symlink", Tree::default().symlink("evil", "/etc"), Code::Ok),
        ("escaping symlink", Tree::default().symlink("evil", &escape), Code::Ok),
    ];
    for (what, tree, want) in cases {
        let mut action = TestAction::shell(&format!("echo pwned > evil; echo pwned > {escape}"));
        action.inputs = tree;
        let response = farm.run(action).await;
        assert_eq!(code(&response), want, "{what}: {:?}", response.status);
    }
    // Duplicate names, which no path-based builder can make: craft the Directory.
    let file = bytes::Bytes::from_static(b"dup");
    let node = reapi::FileNode {
        name: "same".into(),
        digest: Some(bb_util::Digest::of(bb_util::DigestFunction::Sha256, &file).to_proto()),
        ..Default::default()
    };
    let directory = reapi::Directory { files: vec![node.clone(), node], ..Default::default() };
    let directory_bytes = bytes::Bytes::from(directory.encode_to_vec());
    let root = bb_util::Digest::of(bb_util::DigestFunction::Sha256, &directory_bytes);
    let action = TestAction::shell("true");
    let (_, mut blobs) = action.build();
    // Swap the input root of the built action for the crafted one.
    let command = blobs[blobs.len() - 2].clone();
    let crafted = reapi::Action {
        command_digest: Some(bb_util::Digest::of(bb_util::DigestFunction::Sha256, &command).to_proto()),
        input_root_digest: Some(root.to_proto()),
        ..Default::default()
    };
    let crafted_bytes = bytes::Bytes::from(crafted.encode_to_vec());
    let crafted_digest = bb_util::Digest::of(bb_util::DigestFunction::Sha256, &crafted_bytes);
    blobs.extend([file, directory_bytes, crafted_bytes]);
    farm.upload(blobs).await;
    let response = farm.execute(&crafted_digest, false).await;
    assert_eq!(code(&response), Code::InvalidArgument);
    assert!(response.status.unwrap().message.contains("two entries"));

    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched");
    let names: Vec<_> = std::fs::read_dir(farm.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 4, "nothing new beside build, cache, socket and the sentinel: {names:?}");
}

#[tokio::test]
async fn many_files_materialize_and_come_from_the_cache_the_second_time() {
    let farm = Farm::start(1).await;
    let mut tree = Tree::default();
    for i in 0..5000 {
        tree = tree.file(&format!("d{}/e{}/f{i}.txt", i % 10, i % 7), &format!("file {i}\n"));
    }
    let mut action = TestAction::shell("find . -type f | wc -l; cat d5/e5/f5.txt");
    action.inputs = tree;
    let before = farm.file_cache.downloads();
    let result = farm.run(action.clone()).await.result.unwrap();
    assert_eq!(farm.read(result.stdout_digest.as_ref().unwrap()).await, "5000\nfile 5\n");
    let first = farm.file_cache.downloads() - before;
    assert_eq!(first, 5000, "every file downloaded once");

    // Same inputs, another command: nothing is downloaded.
    let mut second = action.clone();
    second.arguments = vec!["/bin/sh".into(), "-c".into(), "cat d9/e1/f4999.txt".into()];
    let result = farm.run(second).await.result.unwrap();
    assert_eq!(farm.read(result.stdout_digest.as_ref().unwrap()).await, "file 4999\n");
    assert_eq!(
        farm.file_cache.downloads() - before,
        first,
        "the second action took every file from the cache"
    );
}
