//! A whole farm in one test process: scheduler with embedded memory
//! storage, a runner on a UNIX socket, a worker; plus client helpers that
//! upload input trees and execute actions.
#![allow(dead_code)]

use bb_client::{Source, StorageClient};
use bb_proto::longrunning::operation;
use bb_proto::reapi;
use bb_proto::reapi::execution_client::ExecutionClient;
use bb_util::grpc::Channel;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Client-side helpers: upload trees, execute, read results.
pub struct Client {
    pub channel: Channel,
}

pub struct Farm {
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub file_cache: Arc<bb_worker::file_cache::FileCache>,
    /// The worker's SIGTERM.
    pub worker_drain: CancellationToken,
    pub worker: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A scheduler with embedded memory storage on loopback ports of its own,
/// serving until `shutdown`; returns its client and worker addresses.
pub async fn start_scheduler(shutdown: &CancellationToken) -> (String, String) {
    let scheduler_config: bb_scheduler::config::Config = bb_util::config::parse(
        r#"
client_listen = ["127.0.0.1:0"]
worker_listen = ["127.0.0.1:0"]
[scheduler]
default_action_timeout = "60s"
maximum_action_timeout = "1h"
keepalive_interval = "10s"
client_disconnect_grace = "1s"
completed_retention = "60s"
worker_timeout = "30s"
executing_sync_interval = "500ms"
idle_sync_wait = "5s"
max_attempts = 2
unmatched_platform_timeout = "30s"
[storage.cas]
backend = "memory"
max_size = "512MiB"
[storage.action_cache]
[storage.action_cache.store]
backend = "memory"
max_size = "16MiB"
"#,
        "test",
    )
    .unwrap();
    let scheduler = bb_scheduler::server::SchedulerServer::bind(&scheduler_config).await.unwrap();
    let addresses =
        (scheduler.client_addresses()[0].to_string(), scheduler.worker_addresses()[0].to_string());
    tokio::spawn(scheduler.run(shutdown.clone()));
    addresses
}

impl Farm {
    pub async fn start(slots: usize) -> Farm {
        Self::start_with_grace(slots, "5s").await
    }

    pub async fn start_with_grace(slots: usize, shutdown_grace: &str) -> Farm {
        Self::start_with(slots, shutdown_grace, "").await
    }

    /// A farm whose runner gives actions no namespaces: what the worker
    /// itself must withstand (behind a runner that cannot isolate, or one
    /// of Buildbarn's).
    pub async fn start_unsandboxed(slots: usize) -> Farm {
        Self::start_with(slots, "5s", "[sandbox]\nnamespaces = false\n").await
    }

    /// `runner_extra` is appended to the runner's config.
    pub async fn start_with(slots: usize, shutdown_grace: &str, runner_extra: &str) -> Farm {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let (client_address, worker_address) = start_scheduler(&shutdown).await;

        let build = dir.path().join("build");
        let socket = dir.path().join("runner.sock");
        let runner_config: bb_runner::config::Config = bb_util::config::parse(
            &format!(
                "listen = \"unix:{}\"\nbuild_directory = \"{}\"\n{runner_extra}",
                socket.display(),
                build.display()
            ),
            "runner",
        )
        .unwrap();
        tokio::spawn(bb_runner::serve(runner_config, shutdown.clone()));

        let worker_config: bb_worker::config::Config = bb_util::config::parse(
            &format!(
                r#"
scheduler = "{worker_address}"
storage = "{client_address}"
runner = "unix:{}"
build_directory = "{}"
cache_directory = "{}"
cache_max_size = "1GiB"
cache_max_files = 100000
concurrency = {slots}
name = "test-worker"
platform = [{{ name = "OSFamily", value = "linux" }}]
shutdown_grace = "{shutdown_grace}"
"#,
                socket.display(),
                build.display(),
                dir.path().join("cache").display()
            ),
            "worker",
        )
        .unwrap();
        let worker = bb_worker::Worker::new(worker_config).unwrap();
        let file_cache = worker.file_cache();
        let worker_drain = shutdown.child_token();
        let worker = tokio::spawn(worker.run(worker_drain.clone()));
        let client = Client { channel: bb_util::grpc::channel(&client_address).unwrap() };
        Farm { client, dir, file_cache, worker_drain, worker, shutdown }
    }

    pub fn build_directory(&self) -> PathBuf {
        self.dir.path().join("build")
    }
}

impl std::ops::Deref for Farm {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Client {
    pub async fn upload(&self, blobs: Vec<Bytes>) {
        let blobs =
            blobs.into_iter().map(|data| (Digest::of(DigestFunction::Sha256, &data), Source::Bytes(data)));
        StorageClient::new(self.channel.clone()).upload("", blobs.collect()).await.unwrap();
    }

    pub async fn read(&self, digest: &reapi::Digest) -> Bytes {
        let digest = Digest::from_proto(DigestFunction::Sha256, digest).unwrap();
        let mut blobs =
            StorageClient::new(self.channel.clone()).read_blobs("", &[digest], "blob").await.unwrap();
        blobs.remove(&digest).unwrap()
    }

    /// Uploads the input tree, Command and Action; executes; returns the
    /// ExecuteResponse.
    pub async fn run(&self, action: TestAction) -> reapi::ExecuteResponse {
        let (digest, blobs) = action.build();
        self.upload(blobs).await;
        self.execute(&digest, false).await
    }

    pub async fn execute(&self, digest: &Digest, skip_cache_lookup: bool) -> reapi::ExecuteResponse {
        let request = reapi::ExecuteRequest {
            action_digest: Some(digest.to_proto()),
            skip_cache_lookup,
            ..Default::default()
        };
        // A request refused outright is reported like a failed execution.
        let mut stream = match ExecutionClient::new(self.channel.clone()).execute(request).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                return reapi::ExecuteResponse {
                    status: Some(bb_util::status::to_rpc(&status)),
                    message: status.message().to_string(),
                    ..Default::default()
                };
            }
        };
        let mut last = None;
        while let Some(op) =
            tokio::time::timeout(Duration::from_secs(60), stream.message()).await.unwrap().unwrap()
        {
            last = Some(op);
        }
        match last.unwrap().result {
            Some(operation::Result::Response(any)) => {
                reapi::ExecuteResponse::decode(any.value.as_slice()).unwrap()
            }
            other => panic!("unexpected end: {other:?}"),
        }
    }
}

/// An input tree described by paths, for building Directory messages.
#[derive(Default, Clone)]
pub struct Tree {
    /// path -> (contents, executable)
    pub files: BTreeMap<String, (Bytes, bool)>,
    pub symlinks: BTreeMap<String, String>,
    pub directories: Vec<String>,
}

impl Tree {
    pub fn file(mut self, path: &str, contents: &str) -> Self {
        self.files.insert(path.into(), (Bytes::copy_from_slice(contents.as_bytes()), false));
        self
    }

    pub fn executable(mut self, path: &str, contents: &str) -> Self {
        self.files.insert(path.into(), (Bytes::copy_from_slice(contents.as_bytes()), true));
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.symlinks.insert(path.into(), target.into());
        self
    }

    /// The root Directory's digest and every blob (files and Directories).
    pub fn build(&self) -> (Digest, Vec<Bytes>) {
        let mut blobs = Vec::new();
        let digest = self.directory("", &mut blobs);
        (digest, blobs)
    }

    fn directory(&self, prefix: &str, blobs: &mut Vec<Bytes>) -> Digest {
        let mut directory = reapi::Directory::default();
        let mut subdirs = std::collections::BTreeSet::new();
        let under = |path: &str| -> Option<String> { path.strip_prefix(prefix).map(str::to_string) };
        for (path, (data, executable)) in &self.files {
            let Some(rest) = under(path) else { continue };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    subdirs.insert(dir.to_string());
                }
                None => {
                    blobs.push(data.clone());
                    directory.files.push(reapi::FileNode {
                        name: rest,
                        digest: Some(Digest::of(DigestFunction::Sha256, data).to_proto()),
                        is_executable: *executable,
                        node_properties: None,
                    });
                }
            }
        }
        for (path, target) in &self.symlinks {
            let Some(rest) = under(path) else { continue };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    subdirs.insert(dir.to_string());
                }
                None => directory.symlinks.push(reapi::SymlinkNode {
                    name: rest,
                    target: target.clone(),
                    node_properties: None,
                }),
            }
        }
        for path in &self.directories {
            if let Some(rest) = under(path) {
                subdirs.insert(rest.split('/').next().unwrap().to_string());
            }
        }
        for name in subdirs {
            let digest = self.directory(&format!("{prefix}{name}/"), blobs);
            directory.directories.push(reapi::DirectoryNode { name, digest: Some(digest.to_proto()) });
        }
        let bytes = Bytes::from(directory.encode_to_vec());
        let digest = Digest::of(DigestFunction::Sha256, &bytes);
        blobs.push(bytes);
        digest
    }
}

/// An action: a command line run in an input tree.
#[derive(Clone)]
pub struct TestAction {
    pub arguments: Vec<String>,
    pub inputs: Tree,
    pub output_files: Vec<String>,
    pub output_directories: Vec<String>,
    pub output_paths: Vec<String>,
    pub working_directory: String,
    pub timeout: Option<Duration>,
    pub do_not_cache: bool,
    /// An input root uploaded by the test itself, instead of `inputs`.
    pub raw_root: Option<Digest>,
}

impl TestAction {
    pub fn shell(script: &str) -> Self {
        TestAction {
            arguments: vec!["/bin/sh".into(), "-c".into(), script.into()],
            inputs: Tree::default(),
            output_files: vec![],
            output_directories: vec![],
            output_paths: vec![],
            working_directory: String::new(),
            timeout: None,
            do_not_cache: false,
            raw_root: None,
        }
    }

    pub fn build(&self) -> (Digest, Vec<Bytes>) {
        let (mut root, mut blobs) = self.inputs.build();
        if let Some(raw) = self.raw_root {
            root = raw;
        }
        let command = reapi::Command {
            arguments: self.arguments.clone(),
            environment_variables: vec![reapi::command::EnvironmentVariable {
                name: "PATH".into(),
                value: "/bin:/usr/bin".into(),
            }],
            output_files: self.output_files.clone(),
            output_directories: self.output_directories.clone(),
            output_paths: self.output_paths.clone(),
            platform: Some(reapi::Platform {
                properties: vec![reapi::platform::Property {
                    name: "OSFamily".into(),
                    value: "linux".into(),
                }],
            }),
            working_directory: self.working_directory.clone(),
            ..Default::default()
        };
        let command = Bytes::from(command.encode_to_vec());
        let action = reapi::Action {
            command_digest: Some(Digest::of(DigestFunction::Sha256, &command).to_proto()),
            input_root_digest: Some(root.to_proto()),
            timeout: self.timeout.map(|t| prost_types::Duration::try_from(t).unwrap()),
            do_not_cache: self.do_not_cache,
            ..Default::default()
        };
        let action = Bytes::from(action.encode_to_vec());
        let digest = Digest::of(DigestFunction::Sha256, &action);
        blobs.push(command);
        blobs.push(action);
        (digest, blobs)
    }
}

pub fn code(response: &reapi::ExecuteResponse) -> tonic::Code {
    tonic::Code::from_i32(response.status.as_ref().map_or(0, |s| s.code))
}
