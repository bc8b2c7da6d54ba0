//! bb-runner: runs actions for bb-worker, over a UNIX socket.

use bb_runner::config::{Config, DEFAULT_CONFIG};
use bb_util::cli::ConfigFlags;
use clap::Parser;

/// Runs the commands of actions for bb-worker (buildbarn.runner.Runner on a
/// UNIX socket), with every Linux capability dropped but those configured.
#[derive(Parser)]
#[command(version)]
struct Flags {
    #[command(flatten)]
    config: ConfigFlags,
}

fn main() -> anyhow::Result<()> {
    let Some(config) = Flags::parse().config.load::<Config>(DEFAULT_CONFIG)? else { return Ok(()) };
    bb_runner::run(config)
}
