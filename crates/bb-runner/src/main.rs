//! bb-runner: runs actions for bb-worker, over a UNIX socket.

use bb_runner::config::{Config, DEFAULT_CONFIG};
use clap::Parser;
use std::path::PathBuf;

/// Runs the commands of actions for bb-worker (buildbarn.runner.Runner on a
/// UNIX socket), with every Linux capability dropped but those configured.
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

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    if flags.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    let config: Config = bb_util::config::load_or_default(flags.config.as_deref(), DEFAULT_CONFIG)?;
    bb_util::logging::init(&config.log);
    // Before any other thread exists: capabilities are per thread.
    let keep = config.capabilities().map_err(anyhow::Error::msg)?;
    let held = bb_runner::capabilities::drop_all_but(&keep)?;
    tracing::info!(
        "capabilities kept: {} (bounding set: {}); actions start with no_new_privs",
        bb_runner::capabilities::names(&held.effective),
        bb_runner::capabilities::names(&held.bounding)
    );
    if held.bounding_kept {
        tracing::warn!(
            "the bounding set could not be emptied (no CAP_SETPCAP): start bb-runner as root or with an empty \
             CapabilityBoundingSet so actions cannot regain capabilities"
        );
    }
    if !keep.is_subset(&held.effective) {
        anyhow::bail!(
            "keep_capabilities asks for {} but the runner only has {}",
            bb_runner::capabilities::names(&keep),
            bb_runner::capabilities::names(&held.effective)
        );
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let shutdown = bb_util::shutdown::on_signals()?;
        tracing::info!(
            "runner API on {}, build directory {}",
            config.listen,
            config.build_directory.display()
        );
        bb_runner::serve(config, shutdown).await
    })
}
