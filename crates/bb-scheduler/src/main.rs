//! bb-scheduler: the farm's build queue.

use bb_scheduler::config::{Config, DEFAULT_CONFIG};
use bb_util::cli::ConfigFlags;
use clap::Parser;

/// Serves REv2 Execution to clients and Buildbarn's OperationQueue to
/// workers, with a status page.
///
/// Without --config it runs the embedded default: clients on port 8980
/// (with embedded storage under ./bb-scheduler-data), workers on 8983, the
/// status page and metrics on 7982.
#[derive(Parser)]
#[command(version)]
struct Flags {
    #[command(flatten)]
    config: ConfigFlags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(config) = Flags::parse().config.load::<Config>(DEFAULT_CONFIG)? else { return Ok(()) };
    bb_scheduler::server::run(config).await
}
