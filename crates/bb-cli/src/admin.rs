//! `bb status`, `bb drain`, `bb undrain`: through the scheduler's status
//! page API.

use crate::http;
use crate::remote::DEFAULT_STATUS;
use bb_scheduler::queue::QueueStatus;
use clap::Args;

#[derive(Args)]
pub struct StatusArgs {
    /// The scheduler's status page.
    #[arg(long, default_value = DEFAULT_STATUS, env = "BB_STATUS")]
    pub status: String,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// A worker ID as `bb status` shows it, or a host name (all its slots).
    pub worker: String,
    /// The scheduler's status page.
    #[arg(long, default_value = DEFAULT_STATUS, env = "BB_STATUS")]
    pub status: String,
}

async fn fetch(base: &str) -> anyhow::Result<(QueueStatus, String)> {
    let body = http::request(base, "GET", "/api/status").await?;
    let status = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("{base}/api/status: unexpected answer: {e}"))?;
    Ok((status, body))
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (status, body) = fetch(&args.status).await?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    println!("QUEUES");
    if status.platforms.is_empty() {
        println!("  nothing queued or running");
    }
    for p in &status.platforms {
        let instance = if p.instance_name.is_empty() { "(default)" } else { &p.instance_name };
        println!(
            "  {instance:<12} {:<40} queued {:>5}  executing {:>4}  workers {:>3}",
            p.platform, p.queued, p.executing, p.workers
        );
    }
    println!("WORKERS");
    if status.workers.is_empty() {
        println!("  no worker is registered");
    }
    for w in &status.workers {
        let doing = match (&w.action_digest, &w.phase) {
            (Some(action), Some(phase)) => format!("{phase}: {action}"),
            _ => String::new(),
        };
        println!(
            "  {:<32} {:<10} done {:>6}  seen {:>5.1}s ago  {doing}",
            w.id, w.state, w.completed_actions, w.last_seen_seconds_ago
        );
    }
    let running = status.operations.iter().filter(|o| o.stage != "completed").count();
    println!("OPERATIONS: {running} unfinished, {} finished recently", status.operations.len() - running);
    Ok(())
}

pub async fn set_drained(args: WorkerArgs, drained: bool) -> anyhow::Result<()> {
    let (status, _) = fetch(&args.status).await?;
    let matching: Vec<&str> = status
        .workers
        .iter()
        .filter(|w| w.id == args.worker || w.labels.get("host") == Some(&args.worker))
        .map(|w| w.id.as_str())
        .collect();
    if matching.is_empty() {
        let known: Vec<&str> = status.workers.iter().map(|w| w.id.as_str()).collect();
        anyhow::bail!("no worker {:?}; the workers are: {}", args.worker, known.join(" "));
    }
    let action = if drained { "drain" } else { "undrain" };
    for id in matching {
        http::request(&args.status, "POST", &format!("/api/{action}?worker={}", http::encode(id))).await?;
        println!("{id}: {}", if drained { "drained" } else { "taking work" });
    }
    Ok(())
}
