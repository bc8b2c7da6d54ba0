//! The flags every program of the farm takes: `--config FILE` and
//! `--print-default-config`.

use clap::Args;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ConfigFlags {
    /// TOML configuration file (see --print-default-config). Without it, the
    /// embedded default runs.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the embedded default configuration, with every key explained, and exit.
    #[arg(long)]
    pub print_default_config: bool,
}

impl ConfigFlags {
    /// The configuration to run with, or `None` when the default was
    /// printed and the program should exit.
    pub fn load<T: DeserializeOwned>(&self, default: &str) -> anyhow::Result<Option<T>> {
        if self.print_default_config {
            print!("{default}");
            return Ok(None);
        }
        Ok(Some(crate::config::load_or_default(self.config.as_deref(), default)?))
    }
}
