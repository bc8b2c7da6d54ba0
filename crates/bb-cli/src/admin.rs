//! `bb status`, `bb drain`, `bb undrain`: through the scheduler's status
//! page API.

use crate::http;
use bb_client::status::QueueStatus;
use clap::Args;

/// Where the status page is.
#[derive(Args)]
pub struct StatusPage {
    /// The scheduler's client endpoint (its status page is taken to be on
    /// the same host, port 7982, over HTTPS for grpcs://) and the
    /// credentials to present.
    #[command(flatten)]
    pub connection: crate::remote::Connection,
    /// The status page itself, when it is elsewhere (e.g. http://host:7982).
    #[arg(long, alias = "status", env = "BB_STATUS_URL")]
    pub status_url: Option<String>,
}

impl StatusPage {
    fn url(&self) -> String {
        self.status_url.clone().unwrap_or_else(|| http::status_url_of(&self.connection.endpoint))
    }
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub page: StatusPage,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// A worker ID as `bb status` shows it, or a host name (all its slots).
    pub worker: String,
    #[command(flatten)]
    pub page: StatusPage,
}

pub(crate) async fn fetch(page: &StatusPage) -> anyhow::Result<(QueueStatus, String)> {
    let base = page.url();
    let body = http::request(&base, "GET", "/api/status", &page.connection).await?;
    let status = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("{base}/api/status: unexpected answer: {e}"))?;
    Ok((status, body))
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (status, body) = fetch(&args.page).await?;
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
    let base = args.page.url();
    let (status, _) = fetch(&args.page).await?;
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
        let path = format!("/api/{action}?{}", http::query(&[("worker", id)]));
        http::request(&base, "POST", &path, &args.page.connection).await?;
        println!("{id}: {}", if drained { "drained" } else { "taking work" });
    }
    Ok(())
}
