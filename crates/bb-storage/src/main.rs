//! bb-storage: the farm's storage as a program of its own.

use bb_storage::StorageServer;
use bb_storage::config::{Config, DEFAULT_CONFIG};
use clap::Parser;
use std::path::PathBuf;

/// Serves the REv2 CAS, Action Cache, ByteStream and Capabilities APIs.
///
/// Without --config it runs the embedded default: a disk store under
/// ./bb-storage-data, gRPC on port 8981 and metrics on port 7981.
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
    let server = StorageServer::bind(&config).await?;
    for address in server.grpc_addresses() {
        tracing::info!("storage API (gRPC) on {address}");
    }
    if let Some(address) = server.http_address() {
        tracing::info!("metrics on http://{address}/metrics");
    }
    server.run(shutdown).await
}
