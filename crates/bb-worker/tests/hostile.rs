//! What an attacker tries against a worker: replacing what the worker reads
//! after the run, input trees built to cost time and memory, a storage that
//! answers wrong, an action cancelled mid-download. Each fails only the
//! action it belongs to (or nothing at all), and the next action runs.
//!
//! The farm here runs worker, runner and actions as one user, so an action
//! can replace anything in its build directory: the worker's directory
//! handles are all that stands between it and the worker's files.

mod common;

use bb_client::{Source, StorageClient};
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bb_worker::file_cache::FileCache;
use bb_worker::inputs::{DirectoryCache, InputLimits, InputTree};
use bytes::Bytes;
use common::{Farm, TestAction, Tree, code};
use prost::Message;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tonic::Code;

fn directory_blob(directory: &reapi::Directory) -> (Digest, Bytes) {
    let bytes = Bytes::from(directory.encode_to_vec());
    (Digest::of(DigestFunction::Sha256, &bytes), bytes)
}

fn node(name: &str, digest: &Digest) -> reapi::DirectoryNode {
    reapi::DirectoryNode { name: name.into(), digest: Some(digest.to_proto()) }
}

async fn storage(farm: &Farm) -> StorageClient {
    StorageClient::new(farm.client.channel.clone())
}

/// The next action still runs, and prints what it should.
async fn farm_still_works(farm: &Farm) {
    let response = farm.run(TestAction::shell("echo still-up")).await;
    assert_eq!(code(&response), Code::Ok, "{:?}", response.status);
    let stdout = farm.read(response.result.unwrap().stdout_digest.as_ref().unwrap()).await;
    assert_eq!(stdout, "still-up\n");
}

#[tokio::test]
async fn replaced_stdout_stderr_and_input_root_leak_nothing() {
    let farm = Farm::start_unsandboxed(1).await;
    let secret = farm.dir.path().join("worker-secret");
    std::fs::write(&secret, "WORKER-SECRET").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
    let modes_before = std::fs::metadata(farm.dir.path()).unwrap().permissions().mode();
    let secret = secret.display();
    // Device nodes are refused as FIFOs are (bb_util::dir's tests): no
    // action can make one, the runner drops CAP_MKNOD.
    let cases = vec![
        (format!("rm -f ../stdout && ln -s {secret} ../stdout"), "stdout"),
        ("rm -f ../stderr && ln -s /proc/self/environ ../stderr".to_string(), "stderr"),
        ("rm -f ../stdout && mkfifo ../stdout".to_string(), "stdout"),
        ("rm -f ../stderr && mkfifo ../stderr".to_string(), "stderr"),
        ("rm -f ../stderr && mkdir ../stderr".to_string(), "stderr"),
        ("cd .. && mv root moved && ln -s ../.. root".to_string(), "input root"),
        ("cd .. && mv root moved && mkfifo root".to_string(), "input root"),
    ];
    for (script, says) in cases {
        let mut action = TestAction::shell(&script);
        action.output_directories = vec!["out".into()];
        let response = farm.run(action).await;
        assert_eq!(code(&response), Code::FailedPrecondition, "{script}: {:?}", response.status);
        assert!(response.message.contains(says), "{script}: {}", response.message);
        assert!(response.result.is_none(), "{script}: nothing read is returned");
    }
    // An output directory replaced by a link to the secret: returned as the
    // link it is, the secret never read.
    let mut action = TestAction::shell(&format!("rm -rf out && ln -s {secret} out"));
    action.output_directories = vec!["out".into()];
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::Ok, "{:?}", response.status);
    #[allow(deprecated)]
    let links = response.result.unwrap().output_directory_symlinks;
    assert_eq!(
        links.iter().map(|l| (l.path.as_str(), l.target.clone())).collect::<Vec<_>>(),
        [("out", secret.to_string())]
    );
    assert_eq!(std::fs::metadata(farm.dir.path()).unwrap().permissions().mode(), modes_before);
    farm_still_works(&farm).await;
}

/// In its sandbox, an action does not even see the worker's files beside
/// its input root: what it replaces there is its own copy.
#[tokio::test]
async fn sandboxed_actions_cannot_reach_stdout_or_the_input_root() {
    let farm = Farm::start(1).await;
    for script in
        ["rm -f ../stdout; ln -s /etc/shadow ../stdout; echo printed", "cd .. && mv root moved; echo printed"]
    {
        let response = farm.run(TestAction::shell(script)).await;
        assert_eq!(code(&response), Code::Ok, "{script}: {:?}", response.status);
        let stdout = farm.read(response.result.unwrap().stdout_digest.as_ref().unwrap()).await;
        assert_eq!(stdout, "printed\n", "{script}");
    }
    farm_still_works(&farm).await;
}

#[tokio::test]
async fn replaced_output_parents_and_special_files_are_not_followed() {
    let farm = Farm::start_unsandboxed(1).await;
    let private = farm.dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::write(private.join("f"), "PRIVATE").unwrap();
    let cases = vec![
        (format!("rm -rf out && ln -s {} out", private.display()), "out/f", "symlink"),
        ("rm -rf out && mkfifo out".to_string(), "out/f", "FIFO"),
        ("mkfifo f".to_string(), "f", "FIFO"),
    ];
    for (script, output, says) in cases {
        let mut action = TestAction::shell(&script);
        action.output_files = vec![output.into()];
        let response = farm.run(action).await;
        assert_eq!(code(&response), Code::FailedPrecondition, "{script}: {:?}", response.status);
        assert!(response.message.contains(says), "{script}: {}", response.message);
    }
    farm_still_works(&farm).await;
}

#[tokio::test]
async fn symlink_chains_leaving_the_root_are_laid_out_and_never_followed() {
    let farm = Farm::start(1).await;
    let links = Tree::default().symlink("a/b/c/d/up", "../../../..").symlink("out", "a/b/c/d/up/..");
    let mut action = TestAction::shell("readlink out");
    action.inputs = links.clone();
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::Ok, "{:?}", response.status);
    let stdout = farm.read(response.result.unwrap().stdout_digest.as_ref().unwrap()).await;
    assert_eq!(stdout, "a/b/c/d/up/..\n", "laid out exactly as given");
    // An output through them is refused before the run: the worker makes
    // output parents as directories only, never through a link.
    let mut action = TestAction::shell("true");
    action.inputs = links;
    action.output_files = vec!["out/etc/passwd".into()];
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::InvalidArgument, "{:?}", response.status);
    assert!(response.message.contains("\"out\""), "{}", response.message);
}

/// Nested `depth` levels deep; returns the root and every blob.
fn deep_tree(depth: usize) -> (Digest, Vec<Bytes>) {
    let (mut digest, bytes) = directory_blob(&reapi::Directory::default());
    let mut blobs = vec![bytes];
    for _ in 0..depth {
        let (d, bytes) =
            directory_blob(&reapi::Directory { directories: vec![node("d", &digest)], ..Default::default() });
        digest = d;
        blobs.push(bytes);
    }
    (digest, blobs)
}

/// Nine small Directories describing `fanout^levels` paths to one file.
fn dag_bomb(fanout: usize, levels: usize) -> (Digest, Vec<Bytes>) {
    let file = Bytes::from_static(b"x");
    let leaf = reapi::Directory {
        files: vec![reapi::FileNode {
            name: "f".into(),
            digest: Some(Digest::of(DigestFunction::Sha256, &file).to_proto()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let (mut digest, bytes) = directory_blob(&leaf);
    let mut blobs = vec![file, bytes];
    for _ in 0..levels {
        let directories = (0..fanout).map(|i| node(&format!("d{i:02}"), &digest)).collect();
        let (d, bytes) = directory_blob(&reapi::Directory { directories, ..Default::default() });
        digest = d;
        blobs.push(bytes);
    }
    (digest, blobs)
}

#[tokio::test]
async fn deep_trees_and_dag_bombs_are_refused_fast_and_cheaply() {
    let farm = Farm::start(1).await;
    for ((root, blobs), says) in [(deep_tree(2_000), "max_depth"), (dag_bomb(16, 8), "input_limits.max_")] {
        farm.upload(blobs).await;
        let mut action = TestAction::shell("true");
        action.raw_root = Some(root);
        let started = Instant::now();
        let response = farm.run(action).await;
        assert_eq!(code(&response), Code::InvalidArgument, "{:?}", response.status);
        assert!(response.message.contains(says), "{}", response.message);
        assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    }
    // Within the limits, a DAG is laid out path by path.
    let (root, blobs) = dag_bomb(4, 3);
    farm.upload(blobs).await;
    let mut action = TestAction::shell("find . -type f | wc -l");
    action.raw_root = Some(root);
    let response = farm.run(action).await;
    let stdout = farm.read(response.result.unwrap().stdout_digest.as_ref().unwrap()).await;
    assert_eq!(stdout, "64\n");
}

/// A Directory larger than a batch call may carry is read over ByteStream.
#[tokio::test]
async fn directories_larger_than_a_batch_are_fetched() {
    let farm = Farm::start(1).await;
    let file = Bytes::from_static(b"same\n");
    let file_digest = Digest::of(DigestFunction::Sha256, &file);
    let files = (0..60_000)
        .map(|i| reapi::FileNode {
            name: format!("an-input-file-with-a-rather-long-name-{i:06}"),
            digest: Some(file_digest.to_proto()),
            ..Default::default()
        })
        .collect();
    let (root, bytes) = directory_blob(&reapi::Directory { files, ..Default::default() });
    assert!(root.size() > 4 << 20, "{root}");
    storage(&farm)
        .await
        .upload("", vec![(root, Source::Bytes(bytes)), (file_digest, Source::Bytes(file))])
        .await
        .unwrap();
    let mut action = TestAction::shell("ls | wc -l");
    action.raw_root = Some(root);
    let response = farm.run(action).await;
    assert_eq!(code(&response), Code::Ok, "{:?}", response.status);
    let stdout = farm.read(response.result.unwrap().stdout_digest.as_ref().unwrap()).await;
    assert_eq!(stdout, "60000\n");
}

/// An action cancelled while its inputs download leaves no mark behind:
/// the next action that needs the same file gets it.
#[tokio::test]
async fn cancelled_downloads_do_not_block_later_actions() {
    let farm = Farm::start(1).await;
    let storage = storage(&farm).await;
    let data = Bytes::from(vec![7u8; 1 << 20]);
    let key = (Digest::of(DigestFunction::Sha256, &data), false);
    storage.upload("", vec![(key.0, Source::Bytes(data))]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = FileCache::open(&dir.path().join("cache"), 1 << 30, 1000, 4).unwrap();
    // Polled once (the download starts), then dropped.
    let cancelled = tokio::time::timeout(Duration::ZERO, cache.ensure(&[key], &storage, "")).await;
    assert!(cancelled.is_err(), "the download was still under way");
    assert!(!cache.is_downloading(&key), "the in-flight mark was cleared");
    tokio::time::timeout(Duration::from_secs(10), cache.ensure(&[key], &storage, ""))
        .await
        .expect("a later download does not wait for the abandoned one")
        .unwrap();
    assert!(cache.path(&key).exists());
}

/// Storage that leaves requested blobs out of its BatchReadBlobs answer.
mod omitting {
    use bb_proto::reapi;
    use bb_proto::reapi::content_addressable_storage_server::ContentAddressableStorage;
    use tonic::{Request, Response, Status};

    pub struct OmittingCas;

    #[tonic::async_trait]
    impl ContentAddressableStorage for OmittingCas {
        type GetTreeStream = futures::stream::BoxStream<'static, Result<reapi::GetTreeResponse, Status>>;

        async fn find_missing_blobs(
            &self,
            _: Request<reapi::FindMissingBlobsRequest>,
        ) -> Result<Response<reapi::FindMissingBlobsResponse>, Status> {
            Err(Status::unimplemented("not needed"))
        }

        async fn batch_update_blobs(
            &self,
            _: Request<reapi::BatchUpdateBlobsRequest>,
        ) -> Result<Response<reapi::BatchUpdateBlobsResponse>, Status> {
            Err(Status::unimplemented("not needed"))
        }

        async fn batch_read_blobs(
            &self,
            _: Request<reapi::BatchReadBlobsRequest>,
        ) -> Result<Response<reapi::BatchReadBlobsResponse>, Status> {
            Ok(Response::new(reapi::BatchReadBlobsResponse { responses: vec![] }))
        }

        async fn get_tree(
            &self,
            _: Request<reapi::GetTreeRequest>,
        ) -> Result<Response<Self::GetTreeStream>, Status> {
            Err(Status::unimplemented("not needed"))
        }

        async fn split_blob(
            &self,
            _: Request<reapi::SplitBlobRequest>,
        ) -> Result<Response<reapi::SplitBlobResponse>, Status> {
            Err(Status::unimplemented("not needed"))
        }

        async fn splice_blob(
            &self,
            _: Request<reapi::SpliceBlobRequest>,
        ) -> Result<Response<reapi::SpliceBlobResponse>, Status> {
            Err(Status::unimplemented("not needed"))
        }
    }
}

#[tokio::test]
async fn omitted_blobs_are_missing_never_a_panic() {
    use bb_proto::reapi::content_addressable_storage_server::ContentAddressableStorageServer;
    use tonic_types::StatusExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ContentAddressableStorageServer::new(omitting::OmittingCas))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let storage = StorageClient::new(bb_util::grpc::channel(&format!("grpc://{address}")).unwrap());
    let (root, _) = deep_tree(3);
    let error = InputTree::fetch(
        &storage,
        "",
        &root,
        &DirectoryCache::new(1 << 20),
        &InputLimits::default(),
        1 << 30,
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    let violations = error.get_details_precondition_failure().expect("a PreconditionFailure").violations;
    assert_eq!(violations[0].r#type, "MISSING");
    assert!(violations[0].subject.contains(&root.hash_hex()), "{violations:?}");
    let dir = tempfile::tempdir().unwrap();
    let cache = FileCache::open(&dir.path().join("cache"), 1 << 30, 1000, 4).unwrap();
    let key = (Digest::of(DigestFunction::Sha256, b"small"), false);
    assert_eq!(cache.ensure(&[key], &storage, "").await.unwrap_err().code(), Code::FailedPrecondition);
}
