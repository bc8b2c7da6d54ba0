//! bb-storage: the farm's storage as a program of its own.

use bb_storage::config::{Config, DEFAULT_CONFIG};
use bb_util::cli::ConfigFlags;
use clap::Parser;

/// Serves the REv2 CAS, Action Cache, ByteStream and Capabilities APIs.
///
/// Without --config it runs the embedded default: a disk store under
/// ./bb-storage-data, gRPC on port 8981 and metrics on port 7981.
#[derive(Parser)]
#[command(version)]
struct Flags {
    #[command(flatten)]
    config: ConfigFlags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(config) = Flags::parse().config.load::<Config>(DEFAULT_CONFIG)? else { return Ok(()) };
    bb_storage::server::run(config).await
}
