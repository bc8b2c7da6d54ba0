//! End-to-end latency of a no-op action through a running farm, as a client
//! sees it: FindMissingBlobs, upload of the Command and Action, Execute, the
//! operation read to its end. Every action is `/bin/true` with a unique
//! argument, so neither the Action Cache nor deduplication answers.
//!
//!     cargo run --release -p bb-cli --example noop_bench -- --endpoint grpc://127.0.0.1:8980
//!
//! checks/bench/noop.sh starts a `bb farm` and runs this against it. The
//! floor is spawning the process itself, measured here the same way.

use bb_client::{Source, StorageClient};
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use clap::Parser;
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[derive(Parser)]
struct Flags {
    #[arg(long, default_value = "grpc://127.0.0.1:8980")]
    endpoint: String,
    /// For a grpcs:// endpoint: the CA to trust.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// A file holding the bearer token to present.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Sequential actions for the latency figures.
    #[arg(long, default_value_t = 500)]
    actions: usize,
    /// Concurrent clients for the throughput figure.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Actions for the throughput figure.
    #[arg(long, default_value_t = 2000)]
    throughput_actions: usize,
}

struct Client {
    storage: StorageClient,
    execution: reapi::execution_client::ExecutionClient<bb_util::grpc::Channel>,
    salt: u64,
}

impl Client {
    fn new(flags: &Flags) -> anyhow::Result<Self> {
        let tls = flags.tls_ca.clone().map(|ca| bb_util::tls::ClientTls {
            ca,
            certificate: None,
            private_key: None,
        });
        let token = flags.token_file.as_deref().map(bb_util::grpc::BearerToken::from_file).transpose()?;
        let channel = bb_util::grpc::channel_with(&flags.endpoint, tls.as_ref(), token.as_ref())?;
        Ok(Client {
            storage: StorageClient::new(channel.clone()),
            execution: reapi::execution_client::ExecutionClient::new(channel),
            salt: uuid::Uuid::new_v4().as_u64_pair().0,
        })
    }

    /// One unique no-op action, end to end: how long it took, and where
    /// that time went.
    async fn run(&mut self, i: usize) -> anyhow::Result<(Duration, Phases)> {
        let start = Instant::now();
        let started_at = SystemTime::now();
        let platform = reapi::Platform {
            properties: vec![reapi::platform::Property { name: "OSFamily".into(), value: "linux".into() }],
        };
        let command = reapi::Command {
            arguments: vec!["/bin/true".into(), format!("{}-{i}", self.salt)],
            platform: Some(platform.clone()),
            ..Default::default()
        };
        let command = Bytes::from(command.encode_to_vec());
        let command_digest = Digest::of(DigestFunction::Sha256, &command);
        let empty = Digest::empty(DigestFunction::Sha256);
        let action = reapi::Action {
            command_digest: Some(command_digest.to_proto()),
            input_root_digest: Some(empty.to_proto()),
            platform: Some(platform),
            ..Default::default()
        };
        let action = Bytes::from(action.encode_to_vec());
        let action_digest = Digest::of(DigestFunction::Sha256, &action);
        self.storage
            .upload(
                "",
                vec![(command_digest, Source::Bytes(command)), (action_digest, Source::Bytes(action))],
            )
            .await?;
        let request =
            reapi::ExecuteRequest { action_digest: Some(action_digest.to_proto()), ..Default::default() };
        let executed_at = SystemTime::now();
        let mut stream = self.execution.execute(request).await?.into_inner();
        let mut metadata = None;
        while let Some(operation) = stream.message().await? {
            if let Some(bb_proto::longrunning::operation::Result::Response(any)) = &operation.result {
                let response = reapi::ExecuteResponse::decode(any.value.as_slice())?;
                anyhow::ensure!(!response.cached_result, "a cache hit: the action was not unique");
                let exit = response.result.as_ref().map(|r| r.exit_code);
                anyhow::ensure!(
                    exit == Some(0),
                    "the no-op failed: exit {exit:?}, status {:?}",
                    response.status
                );
                metadata = Some(response.result.and_then(|r| r.execution_metadata).unwrap_or_default());
            }
        }
        let notified_at = SystemTime::now();
        let metadata = metadata.ok_or_else(|| anyhow::anyhow!("the operation ended without a result"))?;
        Ok((start.elapsed(), Phases::of(started_at, executed_at, &metadata, notified_at)))
    }
}

/// The steps of one action in order, each named by what happens in it, from
/// the client's clock and the timestamps of ExecutedActionMetadata (every
/// program on this host reads the same clock).
const PHASES: [&str; 11] = [
    "client: FindMissing and upload of Action and Command",
    "Execute sent -> queued by the scheduler",
    "queued -> taken by a worker (queue, dispatch)",
    "worker: build directory made",
    "worker: Command read, input root laid out",
    "worker: input root -> runner called",
    "runner: sandbox, spawn, wait",
    "worker: run -> outputs collected",
    "worker: outputs, stdout, stderr uploaded",
    "worker: done -> Action Cache written, reported, client told",
    "in all",
];

/// How long one action spent in each of PHASES, in microseconds (0 where
/// a timestamp is missing or the clock stepped back).
struct Phases([u64; PHASES.len()]);

impl Phases {
    fn of(
        started: SystemTime,
        executed: SystemTime,
        m: &reapi::ExecutedActionMetadata,
        notified: SystemTime,
    ) -> Phases {
        let at = |t: &Option<prost_types::Timestamp>| t.and_then(|t| SystemTime::try_from(t).ok());
        let points = [
            Some(started),
            Some(executed),
            at(&m.queued_timestamp),
            at(&m.worker_start_timestamp),
            at(&m.input_fetch_start_timestamp),
            at(&m.input_fetch_completed_timestamp),
            at(&m.execution_start_timestamp),
            at(&m.execution_completed_timestamp),
            at(&m.output_upload_start_timestamp),
            at(&m.output_upload_completed_timestamp),
            Some(notified),
        ];
        let micros = |from: Option<SystemTime>, to: Option<SystemTime>| {
            from.zip(to)
                .and_then(|(from, to)| to.duration_since(from).ok())
                .map_or(0, |d| d.as_micros() as u64)
        };
        let mut phases = [0; PHASES.len()];
        for (phase, pair) in phases.iter_mut().zip(points.windows(2)) {
            *phase = micros(pair[0], pair[1]);
        }
        phases[PHASES.len() - 1] = micros(Some(started), Some(notified));
        Phases(phases)
    }

    /// A table of each phase's median and 99th percentile over `runs`.
    fn table(runs: &[Phases]) -> String {
        let mut table = String::from("| phase | p50 µs | p99 µs |\n| --- | ---: | ---: |\n");
        for (i, name) in PHASES.iter().enumerate() {
            let mut values: Vec<u64> = runs.iter().map(|p| p.0[i]).collect();
            values.sort_unstable();
            let at = |p: f64| values[((values.len() as f64 * p) as usize).min(values.len() - 1)];
            table.push_str(&format!("| {name} | {} | {} |\n", at(0.5), at(0.99)));
        }
        table
    }
}

/// CPU time the whole host has been busy (every process and the kernel),
/// from /proc/stat.
fn host_busy() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    anyhow::ensure!(ticks.len() >= 7, "/proc/stat: unexpected first line {line:?}");
    // user, nice, system, then idle and iowait left out, irq, softirq.
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as u64;
    Ok(Duration::from_micros(busy * 1_000_000 / hz))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();

    // The floor: spawning /bin/true and waiting for it, from here.
    let mut spawns: Vec<Duration> = (0..200)
        .map(|_| {
            let start = Instant::now();
            std::process::Command::new("/bin/true").status().expect("spawn /bin/true");
            start.elapsed()
        })
        .collect();
    spawns.sort();
    let spawn = percentile(&spawns, 0.5);

    let mut client = Client::new(&flags)?;
    for i in 0..20 {
        client.run(usize::MAX - i).await?; // warm up connections and caches
    }
    let mut latencies = Vec::with_capacity(flags.actions);
    let mut phases = Vec::with_capacity(flags.actions);
    for i in 0..flags.actions {
        let (latency, phase) = client.run(i).await?;
        latencies.push(latency);
        phases.push(phase);
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!("spawning /bin/true locally (the floor): p50 {spawn:.2} ms");
    println!(
        "{} sequential no-op actions through the farm: p50 {p50:.2} ms ({:.1}x the spawn), \
         p99 {p99:.2} ms ({:.1}x)",
        flags.actions,
        p50 / spawn,
        p99 / spawn
    );
    println!("where the sequential actions' time went:\n{}", Phases::table(&phases));

    let next = Arc::new(AtomicUsize::new(0));
    let busy_before = host_busy()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..flags.clients {
        let (next, total) = (next.clone(), flags.throughput_actions);
        let mut client = Client::new(&flags)?;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                client.run(1_000_000 + i).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    let busy = host_busy()?.saturating_sub(busy_before);
    println!(
        "{} no-op actions from {} concurrent clients: {:.0} actions/s, {:.2} ms of host CPU each \
         (farm, clients and kernel)",
        flags.throughput_actions,
        flags.clients,
        flags.throughput_actions as f64 / elapsed.as_secs_f64(),
        busy.as_secs_f64() * 1e3 / flags.throughput_actions.max(1) as f64
    );
    Ok(())
}
