//! The client side of the fault suite (checks/faults.sh): what Bazel would
//! see while parts of a farm are killed under it.
//!
//!     faults batch --endpoint E --actions 100     # distinct actions, each checked
//!     faults uploads --endpoint E --blobs 40      # large uploads, each read back
//!     faults sentinels put|check --endpoint E     # blobs stored before the faults
//!
//! A retryable status (UNAVAILABLE, ABORTED, RESOURCE_EXHAUSTED,
//! DEADLINE_EXCEEDED, or FAILED_PRECONDITION for missing blobs, which a
//! client answers by uploading them again) is retried, as Bazel does, until
//! `--deadline`; any other status, or a wrong result, is a failure. Exits
//! non-zero unless every action or blob ends right.

use bb_client::{Source, StorageClient};
use bb_proto::longrunning::operation;
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tonic::Code;

#[derive(Parser)]
struct Flags {
    #[arg(long, default_value = "grpc://127.0.0.1:8980")]
    endpoint: String,
    /// Give up retrying after this long.
    #[arg(long, default_value = "240")]
    deadline_seconds: u64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Distinct actions at once, each result checked.
    Batch {
        #[arg(long, default_value_t = 100)]
        actions: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Large blobs uploaded at once, each read back.
    Uploads {
        #[arg(long, default_value_t = 40)]
        blobs: usize,
        #[arg(long, default_value_t = 4 << 20)]
        size: usize,
    },
    /// Blobs stored before the faults: `put` stores them, `check` reads them.
    Sentinels { action: String },
}

fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::FailedPrecondition
    ) || connection_broke(status)
}

/// A connection that broke under a call is reported by tonic, on the client
/// side, as UNKNOWN "h2 protocol error"; grpc-java (Bazel) reports the same
/// event as UNAVAILABLE. No server sent it, so it is retried like one.
fn connection_broke(status: &tonic::Status) -> bool {
    status.code() == Code::Unknown
        && ["h2 protocol error", "transport error", "connection"].iter().any(|m| status.message().contains(m))
}

/// What the client saw: statuses retried, and how each item ended.
#[derive(Default)]
struct Tally {
    retried: BTreeMap<String, usize>,
    right: usize,
    failures: Vec<String>,
}

struct Client {
    storage: StorageClient,
    execution: reapi::execution_client::ExecutionClient<bb_util::grpc::Channel>,
    deadline: Instant,
    tally: Mutex<Tally>,
}

impl Client {
    /// Runs `attempt` until it succeeds, fails for good, or the deadline.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut pause = Duration::from_millis(100);
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(status) if retryable(&status) && Instant::now() < self.deadline => {
                    let code = if connection_broke(&status) {
                        "connection lost".into()
                    } else {
                        format!("{:?}", status.code())
                    };
                    *self.tally.lock().await.retried.entry(code).or_default() += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(status) => return Err(format!("{what}: {:?}: {}", status.code(), status.message())),
            }
        }
    }

    /// Uploads the action's blobs and executes it: its stdout.
    async fn run(&self, command: &reapi::Command) -> Result<Bytes, tonic::Status> {
        let command = Bytes::from(command.encode_to_vec());
        let command_digest = Digest::of(DigestFunction::Sha256, &command);
        let root = Bytes::from(reapi::Directory::default().encode_to_vec());
        let root_digest = Digest::of(DigestFunction::Sha256, &root);
        let action = Bytes::from(
            reapi::Action {
                command_digest: Some(command_digest.to_proto()),
                input_root_digest: Some(root_digest.to_proto()),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let action_digest = Digest::of(DigestFunction::Sha256, &action);
        let blobs = vec![
            (command_digest, Source::Bytes(command)),
            (root_digest, Source::Bytes(root)),
            (action_digest, Source::Bytes(action)),
        ];
        self.storage.upload("", blobs).await?;
        let request =
            reapi::ExecuteRequest { action_digest: Some(action_digest.to_proto()), ..Default::default() };
        let mut stream = self.execution.clone().execute(request).await?.into_inner();
        let mut last = None;
        while let Some(operation) = stream.message().await? {
            last = Some(operation);
        }
        let Some(operation::Result::Response(any)) = last.and_then(|o| o.result) else {
            return Err(tonic::Status::unavailable("the operation stream ended without a result"));
        };
        let response = reapi::ExecuteResponse::decode(any.value.as_slice())
            .map_err(|e| tonic::Status::internal(format!("undecodable ExecuteResponse: {e}")))?;
        let status = bb_util::status::from_rpc(&response.status.unwrap_or_default());
        if status.code() != Code::Ok {
            return Err(status);
        }
        let result = response.result.unwrap_or_default();
        let digest = Digest::from_proto(DigestFunction::Sha256, &result.stdout_digest.unwrap_or_default())
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut read = self.storage.read_blobs("", &[digest], "stdout").await?;
        Ok(read.remove(&digest).unwrap_or_default())
    }

    async fn record(&self, outcome: Result<(), String>) {
        let mut tally = self.tally.lock().await;
        match outcome {
            Ok(()) => tally.right += 1,
            Err(failure) => tally.failures.push(failure),
        }
    }
}

async fn batch(client: Arc<Client>, actions: usize, concurrency: usize) {
    let salt = uuid::Uuid::new_v4().simple().to_string();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..actions {
        let (client, permits, salt) = (client.clone(), permits.clone(), salt.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire().await.expect("never closed");
            let want = format!("{salt}-{i}\n");
            let command = reapi::Command {
                arguments: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("sleep 0.3; printf '%s\\n' {salt}-{i}"),
                ],
                platform: Some(reapi::Platform {
                    properties: vec![reapi::platform::Property {
                        name: "OSFamily".into(),
                        value: "linux".into(),
                    }],
                }),
                ..Default::default()
            };
            let outcome = match client.retrying(&format!("action {i}"), || client.run(&command)).await {
                Ok(stdout) if stdout == want.as_bytes() => Ok(()),
                Ok(stdout) => Err(format!("action {i}: wrong stdout {:?}", String::from_utf8_lossy(&stdout))),
                Err(failure) => Err(failure),
            };
            client.record(outcome).await;
        }));
    }
    futures::future::join_all(tasks).await;
}

fn blob(seed: u64, index: usize, size: usize) -> (Digest, Bytes) {
    let mut state = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    (Digest::of(DigestFunction::Sha256, &data), Bytes::from(data))
}

async fn uploads(client: Arc<Client>, count: usize, size: usize) {
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut tasks = Vec::new();
    for i in 0..count {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (digest, data) = blob(seed, i, size);
            let name = format!("upload {i}");
            let upload = client
                .retrying(&name, || client.storage.upload("", vec![(digest, Source::Bytes(data.clone()))]));
            let outcome = match upload.await {
                Ok(()) => check_blobs(&client, &[(digest, data)]).await,
                Err(failure) => Err(failure),
            };
            client.record(outcome).await;
        }));
    }
    futures::future::join_all(tasks).await;
}

async fn check_blobs(client: &Client, blobs: &[(Digest, Bytes)]) -> Result<(), String> {
    let digests: Vec<Digest> = blobs.iter().map(|(d, _)| *d).collect();
    let read = client.retrying("reading back", || client.storage.read_blobs("", &digests, "blob")).await?;
    match blobs.iter().find(|(d, data)| read.get(d) != Some(data)) {
        None => Ok(()),
        Some((digest, _)) => Err(format!("blob {digest} came back different")),
    }
}

/// Fixed sentinels (the same every run), of a few sizes.
fn sentinels() -> Vec<(Digest, Bytes)> {
    [100, 300 << 10, 6 << 20].iter().enumerate().map(|(i, size)| blob(0x5EED, i, *size)).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let channel = bb_util::grpc::channel(&flags.endpoint)?;
    let client = Arc::new(Client {
        storage: StorageClient::new(channel.clone()),
        execution: reapi::execution_client::ExecutionClient::new(channel),
        deadline: Instant::now() + Duration::from_secs(flags.deadline_seconds),
        tally: Mutex::new(Tally::default()),
    });
    let started = Instant::now();
    let what = match flags.mode {
        Mode::Batch { actions, concurrency } => {
            batch(client.clone(), actions, concurrency).await;
            format!("{actions} actions")
        }
        Mode::Uploads { blobs, size } => {
            uploads(client.clone(), blobs, size).await;
            format!("{blobs} uploads of {size} bytes")
        }
        Mode::Sentinels { action } => {
            let blobs = sentinels();
            let outcome = match action.as_str() {
                "put" => {
                    let uploads =
                        blobs.iter().map(|(d, b)| (*d, Source::Bytes(b.clone()))).collect::<Vec<_>>();
                    client.retrying("storing sentinels", || client.storage.upload("", uploads.clone())).await
                }
                "check" => check_blobs(&client, &blobs).await,
                other => anyhow::bail!("sentinels {other}: say put or check"),
            };
            client.record(outcome).await;
            format!("sentinels {action}")
        }
    };
    let tally = client.tally.lock().await;
    let retried: Vec<String> = tally.retried.iter().map(|(code, n)| format!("{code} x{n}")).collect();
    println!(
        "{what}: {} right, {} failed in {:.1?}; retried: {}",
        tally.right,
        tally.failures.len(),
        started.elapsed(),
        if retried.is_empty() { "nothing".to_string() } else { retried.join(", ") }
    );
    for failure in tally.failures.iter().take(10) {
        println!("  {failure}");
    }
    if !tally.failures.is_empty() {
        anyhow::bail!("{} failed", tally.failures.len());
    }
    Ok(())
}
