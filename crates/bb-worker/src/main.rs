//! bb-worker: runs actions for bb-scheduler, through bb-runner.

use bb_worker::Worker;
use bb_worker::config::{Config, DEFAULT_CONFIG};
use clap::Parser;
use std::path::PathBuf;

/// Takes actions from bb-scheduler, prepares their inputs, has bb-runner run
/// them, and uploads their results.
///
/// Without --config it runs the embedded default: scheduler on
/// 127.0.0.1:8983, storage on 127.0.0.1:8980, the runner on ./bb-runner.sock.
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
    let draining = bb_util::shutdown::on_signals()?;
    if let Some(address) = config.http_listen {
        let listener = tokio::net::TcpListener::bind(address).await?;
        tracing::info!("metrics on http://{address}/metrics");
        tokio::spawn(bb_util::metrics::serve_http(bb_util::metrics::router(), listener, draining.clone()));
    }
    Worker::new(config)?.run(draining).await
}
