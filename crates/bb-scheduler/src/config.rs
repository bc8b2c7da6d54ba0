//! bb-scheduler's configuration. `default-config.toml` is the embedded
//! default and documents every key.

use crate::platform::MatchMode;
use bb_storage::StorageConfig;
use bb_util::config::HumanDuration;
use bb_util::grpc::ListenAddress;
use bb_util::logging::LogConfig;
use serde::Deserialize;
use std::net::SocketAddr;

pub const DEFAULT_CONFIG: &str = include_str!("../default-config.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client API addresses.
    pub client_listen: Vec<ListenAddress>,
    /// Worker API addresses.
    pub worker_listen: Vec<ListenAddress>,
    /// Status page and metrics; none when unset.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// TLS on the client and worker TCP listeners and the status page: a
    /// certificate and key (PEM files, read again when they change).
    /// Unset: plaintext.
    #[serde(default)]
    pub tls: Option<bb_util::tls::ServerTls>,
    /// Who may call, on every listener (see `bb_util::auth`): client
    /// certificates, tokens, JWTs, and the policy of what each identity
    /// may do. Listener names: `client`, `worker`, `http`.
    #[serde(default)]
    pub authentication: bb_util::auth::AuthenticationConfig,
    #[serde(default)]
    pub log: LogConfig,
    pub scheduler: QueueConfig,
    /// Embedded storage.
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// A standalone bb-storage instead.
    #[serde(default)]
    pub remote_storage: Option<RemoteStorageConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteStorageConfig {
    /// `grpc://host:port`, `grpcs://host:port` or `unix:/path` of a
    /// bb-storage.
    pub endpoint: String,
    /// For a `grpcs://` endpoint: the CA its certificate must chain to,
    /// and the scheduler's own certificate for mutual TLS.
    #[serde(default)]
    pub tls: Option<bb_util::tls::ClientTls>,
    /// A file holding the bearer token the scheduler presents.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
}

/// The `[scheduler]` section: how the build queue behaves.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Instance names served; empty accepts any.
    #[serde(default)]
    pub instance_names: Vec<String>,
    #[serde(default)]
    pub platform_matching: MatchMode,
    /// Platform properties that say how an action is run, not where: left
    /// out of matching, passed on to the worker's runner.
    #[serde(default = "default_execution_properties")]
    pub execution_properties: Vec<String>,
    pub default_action_timeout: HumanDuration,
    pub maximum_action_timeout: HumanDuration,
    pub keepalive_interval: HumanDuration,
    pub client_disconnect_grace: HumanDuration,
    pub completed_retention: HumanDuration,
    pub worker_timeout: HumanDuration,
    pub executing_sync_interval: HumanDuration,
    pub idle_sync_wait: HumanDuration,
    pub max_attempts: u32,
    pub unmatched_platform_timeout: HumanDuration,
    /// The status page's address as users reach it, like
    /// `https://bb.example.com:7982`. When set, the message of a failed
    /// action's ExecuteResponse links to the action's page (Bazel prints
    /// it with the failure).
    #[serde(default)]
    pub status_page_url: Option<String>,
}

fn default_execution_properties() -> Vec<String> {
    bb_util::platform::EXECUTION_PROPERTIES.iter().map(|p| p.to_string()).collect()
}

impl Config {
    /// Checks what serde cannot: relations between values.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.storage, &self.remote_storage) {
            (Some(_), Some(_)) => return Err("set either [storage] or [remote_storage], not both".into()),
            (None, None) => return Err("set [storage] (embedded) or [remote_storage] (a bb-storage)".into()),
            (Some(storage), None) => storage.validate()?,
            (None, Some(_)) => {}
        }
        let q = &self.scheduler;
        if q.default_action_timeout > q.maximum_action_timeout {
            return Err("scheduler.default_action_timeout exceeds scheduler.maximum_action_timeout".into());
        }
        if q.max_attempts == 0 {
            return Err("scheduler.max_attempts must be at least 1".into());
        }
        if q.executing_sync_interval >= q.worker_timeout {
            return Err(
                "scheduler.executing_sync_interval must be shorter than scheduler.worker_timeout".into()
            );
        }
        if q.idle_sync_wait >= q.worker_timeout {
            return Err("scheduler.idle_sync_wait must be shorter than scheduler.worker_timeout".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let config: Config = bb_util::config::parse(DEFAULT_CONFIG, "default").unwrap();
        config.validate().unwrap();
        assert_eq!(config.scheduler.platform_matching, MatchMode::Subset);
        assert_eq!(config.scheduler.max_attempts, 3);
    }

    #[test]
    fn storage_is_embedded_or_remote() {
        let start = DEFAULT_CONFIG.find("[storage]").unwrap();
        let remote = format!("{}[remote_storage]\nendpoint = \"grpc://s:8981\"\n", &DEFAULT_CONFIG[..start]);
        let config: Config = bb_util::config::parse(&remote, "t").unwrap();
        config.validate().unwrap();
        let both = format!("{DEFAULT_CONFIG}\n[remote_storage]\nendpoint = \"grpc://s:8981\"\n");
        let config: Config = bb_util::config::parse(&both, "t").unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn rejects_bad_matching_mode() {
        let text = DEFAULT_CONFIG.replace("platform_matching = \"subset\"", "platform_matching = \"fuzzy\"");
        let err = bb_util::config::parse::<Config>(&text, "t").unwrap_err().to_string();
        assert!(err.contains("fuzzy") && err.contains("platform_matching"), "{err}");
    }
}
