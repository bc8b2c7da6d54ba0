//! bb-scheduler: the farm's build queue.

use bb_scheduler::config::{Config, DEFAULT_CONFIG};
use bb_scheduler::server::SchedulerServer;
use clap::Parser;
use std::path::PathBuf;

/// Serves REv2 Execution to clients and Buildbarn's OperationQueue to
/// workers, with a status page.
///
/// Without --config it runs the embedded default: clients on port 8980
/// (with embedded storage under ./bb-scheduler-data), workers on 8983, the
/// status page and metrics on 7982.
#[derive(Parser)]
#[command(version)]
struct Flags {
    /// TOML configuration file (see --print-default-config).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the embedded default configuration, with every key explained, and exit.
    #[arg(long)]
    print_default_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    if flags.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    let config: Config = bb_util::config::load_or_default(flags.config.as_deref(), DEFAULT_CONFIG)?;
    bb_util::logging::init(&config.log);
    let shutdown = bb_util::shutdown::on_signals()?;
    let server = SchedulerServer::bind(&config).await?;
    for address in server.client_addresses() {
        tracing::info!("client API (REv2) on {address}");
    }
    for address in server.worker_addresses() {
        tracing::info!("worker API on {address}");
    }
    if let Some(address) = server.http_address() {
        tracing::info!("status page on http://{address}/");
    }
    server.run(shutdown).await
}
