//! bb-worker: runs actions for bb-scheduler, through bb-runner.

use bb_util::cli::ConfigFlags;
use bb_worker::config::{Config, DEFAULT_CONFIG};
use clap::Parser;

/// Takes actions from bb-scheduler, prepares their inputs, has bb-runner run
/// them, and uploads their results.
///
/// Without --config it runs the embedded default: scheduler on
/// 127.0.0.1:8983, storage on 127.0.0.1:8980, the runner on ./bb-runner.sock.
#[derive(Parser)]
#[command(version)]
struct Flags {
    #[command(flatten)]
    config: ConfigFlags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(config) = Flags::parse().config.load::<Config>(DEFAULT_CONFIG)? else { return Ok(()) };
    bb_worker::run(config).await
}
