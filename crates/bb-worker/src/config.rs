//! bb-worker's configuration; `default-config.toml` documents every key.

use crate::inputs::InputLimits;
use bb_proto::reapi;
use bb_util::config::{ByteSize, HumanDuration};
use bb_util::logging::LogConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = include_str!("../default-config.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The scheduler's worker API: `grpc://`, `grpcs://` (with `tls`) or
    /// `unix:`.
    pub scheduler: String,
    /// The storage (a scheduler's client API, or a bb-storage).
    pub storage: String,
    /// Compress blobs streamed to and from `storage` (those over 1 MiB)
    /// with zstd when it offers it: for a network slower than compression,
    /// which runs at about 300 MB/s per core.
    #[serde(default)]
    pub storage_zstd: bool,
    /// For `grpcs://` endpoints: the CA the servers' certificates must
    /// chain to, and the worker's own certificate for mutual TLS.
    #[serde(default)]
    pub tls: Option<bb_util::tls::ClientTls>,
    /// A file holding the bearer token the worker presents to the
    /// scheduler and the storage (instead of, or besides, a certificate).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// TLS on the metrics listener (`http_listen`): a certificate and key,
    /// PEM files read again when they change. Unset: plain HTTP.
    #[serde(default)]
    pub http_tls: Option<bb_util::tls::ServerTls>,
    /// Who may read the metrics (`http_listen`), as in the scheduler's
    /// `[authentication]`; the listener's name is `http`.
    #[serde(default)]
    pub authentication: bb_util::auth::AuthenticationConfig,
    pub runner: String,
    pub build_directory: PathBuf,
    pub cache_directory: PathBuf,
    pub cache_max_size: ByteSize,
    pub cache_max_files: u64,
    #[serde(default = "default_downloads")]
    pub max_parallel_downloads: usize,
    #[serde(default)]
    pub concurrency: usize,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub instance_name_prefix: String,
    #[serde(default)]
    pub platform: Vec<Property>,
    pub shutdown_grace: HumanDuration,
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// Bytes of checked Directory messages kept in memory across actions.
    #[serde(default = "default_directory_cache_size")]
    pub directory_cache_size: ByteSize,
    /// Limits on one action's input root.
    #[serde(default)]
    pub input_limits: InputLimits,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Property {
    pub name: String,
    pub value: String,
}

fn default_downloads() -> usize {
    16
}

fn default_directory_cache_size() -> ByteSize {
    ByteSize(64 << 20)
}

impl Config {
    /// A channel to `endpoint` with the worker's TLS settings and token.
    pub fn channel(&self, endpoint: &str) -> anyhow::Result<bb_util::grpc::Channel> {
        let token = self.token_file.as_deref().map(bb_util::grpc::BearerToken::from_file).transpose()?;
        bb_util::grpc::channel_with(endpoint, self.tls.as_ref(), token.as_ref())
    }

    pub fn slots(&self) -> usize {
        if self.concurrency > 0 {
            self.concurrency
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    pub fn worker_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "worker".into())
    }

    pub fn platform(&self) -> reapi::Platform {
        reapi::Platform {
            properties: self
                .platform
                .iter()
                .map(|p| reapi::platform::Property { name: p.name.clone(), value: p.value.clone() })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses() {
        let config: Config = bb_util::config::parse(DEFAULT_CONFIG, "default").unwrap();
        assert!(config.slots() >= 1);
        assert_eq!(config.platform().properties[0].name, "OSFamily");
        assert!(!config.worker_name().is_empty());
        assert_eq!(config.input_limits.max_depth, 256);
        assert_eq!(config.directory_cache_size.bytes(), 64 << 20);
    }
}
