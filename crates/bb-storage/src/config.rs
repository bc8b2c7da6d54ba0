//! bb-storage's configuration. `default-config.toml` is the embedded default
//! and documents every key; `StorageConfig` is also the `[storage]` section
//! of a scheduler that embeds storage.

use bb_util::config::ByteSize;
use bb_util::grpc::ListenAddress;
use bb_util::logging::LogConfig;
use serde::Deserialize;
use std::net::SocketAddr;

pub use crate::store_tree::{ShardConfig, StoreConfig};

pub const DEFAULT_CONFIG: &str = include_str!("../default-config.toml");

/// Room a batch call needs on top of its blob data (digests, framing).
const BATCH_OVERHEAD: u64 = 1 << 20;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses of the gRPC storage API.
    pub grpc_listen: Vec<ListenAddress>,
    /// TLS on the gRPC TCP listeners: a certificate and key (PEM files,
    /// read again when they change). Unset: plaintext.
    #[serde(default)]
    pub tls: Option<bb_util::tls::ServerTls>,
    /// Who may call (see `bb_util::auth`): client certificates, tokens,
    /// JWTs, and the policy of what each identity may do. Listener names:
    /// `grpc`, `http`.
    #[serde(default)]
    pub authentication: bb_util::auth::AuthenticationConfig,
    /// Address of the HTTP `/metrics` endpoint (HTTPS with `tls`); none
    /// when unset.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    #[serde(default)]
    pub log: LogConfig,
    pub storage: StorageConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Instance names served; empty accepts any.
    #[serde(default)]
    pub instance_names: Vec<String>,
    /// Largest gRPC message accepted.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: ByteSize,
    /// Largest total of blob data per batch call, advertised to clients.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: ByteSize,
    /// Largest blob accepted, announced as `max_cas_blob_size_bytes`: an
    /// upload over it gets INVALID_ARGUMENT naming the limit before any of
    /// it is stored. 0 (the default): no limit but the CAS's own size.
    #[serde(default)]
    pub max_blob_size: ByteSize,
    /// The CAS: a store tree (see `StoreConfig`).
    pub cas: StoreConfig,
    pub action_cache: ActionCacheConfig,
    /// Where records of spliced blobs and of fetched assets are kept (small
    /// entries under keys of their own). Unset: in the Action Cache's store
    /// when that is local, else in memory (64MiB), lost on restart.
    #[serde(default)]
    pub records: Option<StoreConfig>,
    /// How SplitBlob cuts blobs (FastCDC 2020), announced as
    /// `fast_cdc_2020_params`.
    #[serde(default)]
    pub chunking: ChunkingConfig,
    /// The Remote Asset API (Fetch and Push); not served when unset.
    #[serde(default)]
    pub remote_asset: Option<crate::asset::RemoteAssetConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkingConfig {
    /// The average chunk; a power of two from 1KiB to 1MiB. Chunks are a
    /// quarter of it to four times it.
    #[serde(default = "default_average_chunk_size")]
    pub average_chunk_size: ByteSize,
    /// Varies the cut points; clients sharing a cache use the same one.
    #[serde(default)]
    pub seed: u32,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        ChunkingConfig { average_chunk_size: default_average_chunk_size(), seed: 0 }
    }
}

impl ChunkingConfig {
    pub fn params(&self) -> Result<bb_util::chunking::FastCdcParams, String> {
        bb_util::chunking::FastCdcParams::new(self.average_chunk_size.bytes(), self.seed)
            .map_err(|e| format!("storage.chunking: {e}"))
    }
}

fn default_average_chunk_size() -> ByteSize {
    ByteSize(bb_util::chunking::FastCdcParams::DEFAULT_AVERAGE)
}

fn default_max_message_size() -> ByteSize {
    ByteSize(16 << 20)
}

fn default_max_batch_size() -> ByteSize {
    ByteSize(4 << 20)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionCacheConfig {
    /// Whether clients may call UpdateActionResult.
    #[serde(default = "yes")]
    pub allow_updates: bool,
    /// Serve results only while everything they reference is in the CAS.
    /// Turn it off on storage nodes that hold a share of a sharded CAS: the
    /// node in front of them checks against the whole.
    #[serde(default = "yes")]
    pub completeness_check: bool,
    /// Inline budget per GetActionResult response.
    #[serde(default = "default_max_inline_size")]
    pub max_inline_size: ByteSize,
    /// Where results are kept: a store tree whose leaves are local stores or
    /// other nodes' Action Caches (`grpc`).
    pub store: StoreConfig,
}

fn yes() -> bool {
    true
}

fn default_max_inline_size() -> ByteSize {
    ByteSize(1 << 20)
}

impl StorageConfig {
    /// Checks what serde cannot: relations between values.
    pub fn validate(&self) -> Result<(), String> {
        let (message, batch) = (self.max_message_size.bytes(), self.max_batch_size.bytes());
        if batch + BATCH_OVERHEAD > message {
            return Err(format!(
                "storage.max_batch_size ({}) must be at least 1MiB below storage.max_message_size ({})",
                self.max_batch_size, self.max_message_size
            ));
        }
        self.chunking.params()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let config: Config = bb_util::config::parse(DEFAULT_CONFIG, "default").unwrap();
        config.storage.validate().unwrap();
        assert!(matches!(config.storage.cas, StoreConfig::Disk { .. }));
        assert_eq!(config.storage.max_batch_size, ByteSize(4 << 20));
    }

    #[test]
    fn rejects_unknown_backends_and_keys() {
        let text = DEFAULT_CONFIG.replacen("\nbackend = \"disk\"", "\nbackend = \"tape\"", 1);
        let err = bb_util::config::parse::<Config>(&text, "t").unwrap_err().to_string();
        assert!(err.contains("tape"), "{err}");
        let text = DEFAULT_CONFIG.replacen("sync_writes = true", "sync_writes = true\ncompression = 1", 1);
        let err = bb_util::config::parse::<Config>(&text, "t").unwrap_err().to_string();
        assert!(err.contains("compression"), "{err}");
    }

    #[test]
    fn batch_must_fit_in_a_message() {
        let text = DEFAULT_CONFIG.replace("max_batch_size = \"4MiB\"", "max_batch_size = \"16MiB\"");
        let config: Config = bb_util::config::parse(&text, "t").unwrap();
        assert!(config.storage.validate().is_err());
    }
}
