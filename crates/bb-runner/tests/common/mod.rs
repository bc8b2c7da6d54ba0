//! The runner under test: served in-process on a UNIX socket in a fresh
//! build directory. Each test binary uses some of it.
#![allow(dead_code)]

use bb_proto::buildbarn::runner::runner_client::RunnerClient;
use bb_proto::buildbarn::runner::{RunRequest, RunResponse};
use bb_util::grpc::Channel;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Runner {
    pub client: RunnerClient<Channel>,
    pub build: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn runner() -> Runner {
    runner_with("").await
}

/// A runner with `extra` appended to its config.
pub async fn runner_with(extra: &str) -> Runner {
    let build = tempfile::tempdir().unwrap();
    let socket = build.path().join("runner.sock");
    let text = format!(
        "listen = \"unix:{}\"\nbuild_directory = \"{}\"\n{extra}",
        socket.display(),
        build.path().display()
    );
    let config: bb_runner::config::Config = bb_util::config::parse(&text, "test").unwrap();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(bb_runner::serve(config, shutdown.clone()));
    while !socket.exists() {
        assert!(!serving.is_finished(), "the runner did not start: {:?}", serving.await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let channel = bb_util::grpc::channel(&format!("unix:{}", socket.display())).unwrap();
    Runner { client: RunnerClient::new(channel), build, shutdown }
}

impl Runner {
    /// Creates `<build>/<id>/{root,tmp}` and returns a request running `args`.
    pub fn action(&self, id: &str, args: &[&str]) -> RunRequest {
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
            platform_properties: HashMap::new(),
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.build.path().join(relative)
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap()
    }

    pub async fn run(&self, request: RunRequest) -> Result<RunResponse, tonic::Status> {
        self.client.clone().run(request).await.map(|r| r.into_inner())
    }

    pub async fn run_with_timeout(
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
