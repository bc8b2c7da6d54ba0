//! A real scheduler (embedded memory storage, short timings) and simulated
//! workers that speak Synchronize over gRPC.
#![allow(dead_code)]

use bb_client::{Source, StorageClient};
use bb_proto::buildbarn::remoteworker::operation_queue_client::OperationQueueClient;
use bb_proto::buildbarn::remoteworker::{
    CurrentState, SynchronizeRequest, SynchronizeResponse, current_state, desired_state,
};
use bb_proto::longrunning::{Operation, operation};
use bb_proto::reapi;
use bb_proto::reapi::execution_client::ExecutionClient;
use bb_scheduler::config::Config;
use bb_scheduler::server::SchedulerServer;
use bb_util::grpc::Channel;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use prost::Message;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub struct TestFarm {
    pub client: Channel,
    pub worker: Channel,
    pub http: SocketAddr,
    pub client_address: String,
    pub worker_address: String,
    shutdown: CancellationToken,
}

impl Drop for TestFarm {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn config(extra_scheduler: &str) -> Config {
    let text = format!(
        r#"
client_listen = ["127.0.0.1:0"]
worker_listen = ["127.0.0.1:0"]
http_listen = "127.0.0.1:0"
[scheduler]
default_action_timeout = "60s"
maximum_action_timeout = "1h"
keepalive_interval = "300ms"
client_disconnect_grace = "1s"
completed_retention = "30s"
worker_timeout = "2s"
executing_sync_interval = "500ms"
idle_sync_wait = "1s"
max_attempts = 2
unmatched_platform_timeout = "2s"
{extra_scheduler}
[storage.cas]
backend = "memory"
max_size = "64MiB"
[storage.action_cache]
[storage.action_cache.store]
backend = "memory"
max_size = "8MiB"
"#
    );
    bb_util::config::parse(&text, "test").expect("test config")
}

impl TestFarm {
    pub async fn start(config: Config) -> Self {
        let server = SchedulerServer::bind(&config).await.expect("bind");
        let client_address = server.client_addresses()[0].to_string();
        let worker_address = server.worker_addresses()[0].to_string();
        let client = bb_util::grpc::channel(&client_address).unwrap();
        let worker = bb_util::grpc::channel(&worker_address).unwrap();
        let http = server.http_address().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(server.run(shutdown.clone()));
        TestFarm { client, worker, http, client_address, worker_address, shutdown }
    }

    pub fn execution(&self) -> ExecutionClient<Channel> {
        ExecutionClient::new(self.client.clone())
    }

    pub async fn upload(&self, data: &[u8]) -> Digest {
        let digest = Digest::of(DigestFunction::Sha256, data);
        let blob = Source::Bytes(Bytes::copy_from_slice(data));
        StorageClient::new(self.client.clone()).upload("", vec![(digest, blob)]).await.unwrap();
        digest
    }

    /// Uploads a Command (REv2.0 style: platform in the Command), an empty
    /// input root and the Action; returns the action digest.
    pub async fn action(&self, arguments: &[&str], platform: &[(&str, &str)], do_not_cache: bool) -> Digest {
        let command = reapi::Command {
            arguments: arguments.iter().map(|s| s.to_string()).collect(),
            platform: Some(reapi::Platform {
                properties: platform
                    .iter()
                    .map(|(n, v)| reapi::platform::Property { name: n.to_string(), value: v.to_string() })
                    .collect(),
            }),
            ..Default::default()
        };
        let command_digest = self.upload(&command.encode_to_vec()).await;
        let root = self.upload(&reapi::Directory::default().encode_to_vec()).await;
        let action = reapi::Action {
            command_digest: Some(command_digest.to_proto()),
            input_root_digest: Some(root.to_proto()),
            do_not_cache,
            ..Default::default()
        };
        self.upload(&action.encode_to_vec()).await
    }

    pub fn execute_request(&self, action: &Digest) -> reapi::ExecuteRequest {
        reapi::ExecuteRequest { action_digest: Some(action.to_proto()), ..Default::default() }
    }

    pub async fn http_get(&self, path: &str) -> String {
        http(self.http, "GET", path, "").await
    }
}

pub async fn http(address: SocketAddr, method: &str, path: &str, body: &str) -> String {
    http_with(address, method, path, "", body).await
}

/// [`http`] with extra header lines (each ending in `\r\n`).
pub async fn http_with(address: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The ExecuteResponse of a done operation.
pub fn execute_response(operation: &Operation) -> reapi::ExecuteResponse {
    match &operation.result {
        Some(operation::Result::Response(any)) => {
            reapi::ExecuteResponse::decode(any.value.as_slice()).unwrap()
        }
        other => panic!("operation not done with a response: {other:?}"),
    }
}

pub fn stage(operation: &Operation) -> i32 {
    reapi::ExecuteOperationMetadata::decode(operation.metadata.as_ref().unwrap().value.as_slice())
        .unwrap()
        .stage
}

/// Reads a stream to its end, returning every operation message.
pub async fn collect(mut stream: tonic::Streaming<Operation>) -> Vec<Operation> {
    let mut all = Vec::new();
    while let Some(operation) = stream.message().await.unwrap() {
        all.push(operation);
    }
    all
}

/// A simulated worker slot.
pub struct SimWorker {
    pub client: OperationQueueClient<Channel>,
    pub name: String,
    pub platform: Vec<(String, String)>,
}

impl SimWorker {
    pub fn new(farm: &TestFarm, name: &str, platform: &[(&str, &str)]) -> Self {
        SimWorker {
            client: OperationQueueClient::new(farm.worker.clone()),
            name: name.to_string(),
            platform: platform.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    fn request(&self, state: current_state::WorkerState) -> SynchronizeRequest {
        SynchronizeRequest {
            worker_id: [("worker".to_string(), self.name.clone())].into(),
            platform: Some(reapi::Platform {
                properties: self
                    .platform
                    .iter()
                    .map(|(n, v)| reapi::platform::Property { name: n.clone(), value: v.clone() })
                    .collect(),
            }),
            current_state: Some(CurrentState { worker_state: Some(state) }),
            ..Default::default()
        }
    }

    pub async fn sync(
        &mut self,
        state: current_state::WorkerState,
    ) -> Result<SynchronizeResponse, tonic::Status> {
        let request = self.request(state);
        self.client.synchronize(request).await.map(|r| r.into_inner())
    }

    /// One idle Synchronize: the action handed out, if any.
    pub async fn take(&mut self) -> Option<desired_state::Executing> {
        given(self.sync(current_state::WorkerState::Idle(())).await.unwrap())
    }

    pub fn executing(
        action: &reapi::Digest,
        state: current_state::executing::ExecutionState,
    ) -> current_state::WorkerState {
        current_state::WorkerState::Executing(current_state::Executing {
            action_digest: Some(action.clone()),
            execution_state: Some(state),
        })
    }

    /// Reports completion with `exit_code`; returns the next action, if any.
    pub async fn complete(
        &mut self,
        action: &reapi::Digest,
        exit_code: i32,
    ) -> Option<desired_state::Executing> {
        let response = reapi::ExecuteResponse {
            result: Some(reapi::ActionResult {
                exit_code,
                execution_metadata: Some(reapi::ExecutedActionMetadata {
                    worker: self.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(bb_util::status::rpc_ok()),
            ..Default::default()
        };
        let state = Self::executing(action, current_state::executing::ExecutionState::Completed(response));
        given(self.sync(state).await.unwrap())
    }
}

pub fn given(response: SynchronizeResponse) -> Option<desired_state::Executing> {
    match response.desired_state?.worker_state? {
        desired_state::WorkerState::Executing(executing) => Some(executing),
        desired_state::WorkerState::Idle(()) => None,
    }
}

pub fn told_idle(response: &SynchronizeResponse) -> bool {
    matches!(
        response.desired_state.as_ref().and_then(|d| d.worker_state.as_ref()),
        Some(desired_state::WorkerState::Idle(()))
    )
}
