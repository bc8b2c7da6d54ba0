//! Benchmarks of the scheduler.
//!
//! `throughput`: against a running bb-scheduler, simulated no-op workers
//! (Synchronize over gRPC, completing each action at once) and concurrent
//! clients (Execute over gRPC, reading each operation to the end). Reports
//! actions completed per second and the latency of each Execute.
//!
//!     cargo run --release -p bb-scheduler --example scheduler_bench -- throughput \
//!         --client grpc://127.0.0.1:8980 --worker grpc://127.0.0.1:8983
//!
//! `memory`: queues actions in an in-process build queue and reports the
//! growth of resident memory.
//!
//!     cargo run --release -p bb-scheduler --example scheduler_bench -- memory --actions 100000
//!
//! checks/bench/scheduler.sh runs both.

use bb_proto::buildbarn::remoteworker::operation_queue_client::OperationQueueClient;
use bb_proto::buildbarn::remoteworker::{CurrentState, SynchronizeRequest, current_state, desired_state};
use bb_proto::reapi;
use bb_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use bb_proto::reapi::execution_client::ExecutionClient;
use bb_scheduler::config::QueueConfig;
use bb_scheduler::platform::{MatchMode, Platform};
use bb_scheduler::queue::{BuildQueue, NewTask};
use bb_util::config::HumanDuration;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Flags {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Throughput {
        #[arg(long, default_value = "grpc://127.0.0.1:8980")]
        client: String,
        #[arg(long, default_value = "grpc://127.0.0.1:8983")]
        worker: String,
        /// Actions to run.
        #[arg(long, default_value_t = 20_000)]
        actions: usize,
        /// Concurrent Execute calls.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Simulated worker slots.
        #[arg(long, default_value_t = 32)]
        workers: usize,
    },
    Memory {
        #[arg(long, default_value_t = 100_000)]
        actions: usize,
    },
}

const PLATFORM: &[(&str, &str)] = &[("OSFamily", "linux")];

fn platform() -> reapi::Platform {
    Platform::from_pairs(PLATFORM).to_proto()
}

/// An Action, its Command, and their encodings.
fn action(i: usize, salt: u64) -> (reapi::Action, Vec<(Digest, Bytes)>) {
    let command = reapi::Command {
        arguments: vec!["/bin/true".into(), format!("{salt}-{i}")],
        platform: Some(platform()),
        ..Default::default()
    };
    let command_bytes = Bytes::from(command.encode_to_vec());
    let command_digest = Digest::of(DigestFunction::Sha256, &command_bytes);
    let action = reapi::Action {
        command_digest: Some(command_digest.to_proto()),
        input_root_digest: Some(Digest::empty(DigestFunction::Sha256).to_proto()),
        platform: Some(platform()),
        ..Default::default()
    };
    let action_bytes = Bytes::from(action.encode_to_vec());
    let action_digest = Digest::of(DigestFunction::Sha256, &action_bytes);
    (action, vec![(action_digest, action_bytes), (command_digest, command_bytes)])
}

async fn worker_loop(endpoint: String, slot: usize, stop: Arc<AtomicUsize>) -> anyhow::Result<()> {
    let mut client = OperationQueueClient::new(bb_util::grpc::channel(&endpoint)?);
    let mut state = current_state::WorkerState::Idle(());
    while stop.load(Ordering::Relaxed) == 0 {
        let request = SynchronizeRequest {
            worker_id: [("bench".to_string(), slot.to_string())].into(),
            platform: Some(platform()),
            current_state: Some(CurrentState { worker_state: Some(state.clone()) }),
            ..Default::default()
        };
        let response = client.synchronize(request).await?.into_inner();
        state = match response.desired_state.and_then(|d| d.worker_state) {
            Some(desired_state::WorkerState::Executing(executing)) => {
                current_state::WorkerState::Executing(current_state::Executing {
                    action_digest: executing.action_digest,
                    execution_state: Some(current_state::executing::ExecutionState::Completed(
                        reapi::ExecuteResponse {
                            result: Some(reapi::ActionResult::default()),
                            status: Some(bb_util::status::rpc_ok()),
                            ..Default::default()
                        },
                    )),
                })
            }
            _ => current_state::WorkerState::Idle(()),
        };
    }
    Ok(())
}

async fn throughput(
    client: String,
    worker: String,
    actions: usize,
    clients: usize,
    workers: usize,
) -> anyhow::Result<()> {
    let channel = bb_util::grpc::channel(&client)?;
    let salt = uuid::Uuid::new_v4().as_u64_pair().0;
    // Upload every Action and Command first; that is not what is measured.
    let mut digests = Vec::with_capacity(actions);
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut batch = Vec::new();
    for i in 0..actions {
        let (_, blobs) = action(i, salt);
        digests.push(blobs[0].0);
        for (digest, data) in blobs {
            batch.push(reapi::batch_update_blobs_request::Request {
                digest: Some(digest.to_proto()),
                data,
                compressor: 0,
            });
        }
        if batch.len() >= 2000 || i + 1 == actions {
            cas.batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                requests: std::mem::take(&mut batch),
                ..Default::default()
            })
            .await?;
        }
    }

    let stop = Arc::new(AtomicUsize::new(0));
    let worker_tasks: Vec<_> =
        (0..workers).map(|slot| tokio::spawn(worker_loop(worker.clone(), slot, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let next = Arc::new(AtomicUsize::new(0));
    let digests = Arc::new(digests);
    let start = Instant::now();
    let client_tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (next, digests, channel) = (next.clone(), digests.clone(), channel.clone());
            tokio::spawn(async move {
                let mut execution = ExecutionClient::new(channel);
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(digest) = digests.get(i) else { break };
                    let begin = Instant::now();
                    let request = reapi::ExecuteRequest {
                        action_digest: Some(digest.to_proto()),
                        ..Default::default()
                    };
                    let mut stream = execution.execute(request).await?.into_inner();
                    let mut done = false;
                    while let Some(operation) = stream.message().await? {
                        done |= operation.done;
                    }
                    anyhow::ensure!(done, "operation ended without completing");
                    latencies.push(begin.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in client_tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    stop.store(1, Ordering::Relaxed);
    for task in worker_tasks {
        task.abort();
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3
    };
    println!(
        "{actions} actions, {clients} concurrent clients, {workers} simulated workers: {:.0} actions/s; \
         Execute latency p50 {:.2} ms, p99 {:.2} ms",
        actions as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn memory(actions: usize) -> anyhow::Result<()> {
    let config = QueueConfig {
        instance_names: vec![],
        platform_matching: MatchMode::Subset,
        execution_properties: vec![],
        default_action_timeout: HumanDuration::from_secs(1800),
        maximum_action_timeout: HumanDuration::from_secs(3600),
        keepalive_interval: HumanDuration::from_secs(30),
        client_disconnect_grace: HumanDuration::from_secs(60),
        completed_retention: HumanDuration::from_secs(60),
        worker_timeout: HumanDuration::from_secs(60),
        executing_sync_interval: HumanDuration::from_secs(10),
        idle_sync_wait: HumanDuration::from_secs(30),
        max_attempts: 3,
        unmatched_platform_timeout: HumanDuration::from_secs(3600),
        status_page_url: None,
    };
    let queue = BuildQueue::new(config);
    let salt = 7;
    let prepared: Vec<NewTask> = (0..actions)
        .map(|i| {
            let (mut action, blobs) = action(i, salt);
            action.timeout = Some(prost_types::Duration { seconds: 1800, nanos: 0 });
            let command = reapi::Command::decode(blobs[1].1.clone()).expect("the bench's own Command");
            NewTask {
                instance_name: String::new(),
                action_digest: blobs[0].0,
                action,
                command,
                platform: Platform::from_pairs(PLATFORM),
                priority: 0,
                invocation: format!("invocation-{}", i % 16),
                skip_cache_lookup: false,
                auxiliary_metadata: vec![],
                submitter: "bench".to_string(),
            }
        })
        .collect();
    let before = rss_kib();
    let start = Instant::now();
    let watches: Vec<_> = prepared.into_iter().map(|task| queue.execute(task)).collect();
    let elapsed = start.elapsed();
    let after = rss_kib();
    let queued: usize = queue.status().platforms.iter().map(|p| p.queued).sum();
    anyhow::ensure!(queued == actions, "{queued} queued");
    println!(
        "{actions} queued actions: resident memory +{:.1} MiB ({:.0} bytes per action, client streams' watchers \
         included); queued in {:.0} ms ({:.0} ns per Execute in the queue)",
        (after.saturating_sub(before)) as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 * 1024.0 / actions as f64,
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / actions as f64
    );
    drop(watches);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Flags::parse().mode {
        Mode::Throughput { client, worker, actions, clients, workers } => {
            throughput(client, worker, actions, clients, workers).await
        }
        Mode::Memory { actions } => memory(actions).await,
    }
}
