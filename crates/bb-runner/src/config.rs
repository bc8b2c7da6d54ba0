//! bb-runner's configuration; `default-config.toml` documents every key.

use bb_util::grpc::ListenAddress;
use bb_util::logging::LogConfig;
use serde::Deserialize;
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = include_str!("../default-config.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: ListenAddress,
    pub build_directory: PathBuf,
    /// Capability names such as "CAP_SYS_CHROOT".
    #[serde(default)]
    pub keep_capabilities: Vec<String>,
    #[serde(default)]
    pub chroot_into_input_root: bool,
    #[serde(default)]
    pub run_as: Option<RunAs>,
    #[serde(default)]
    pub kill_user_processes: bool,
    #[serde(default)]
    pub readiness_paths: Vec<PathBuf>,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl Config {
    /// The capabilities to keep, parsed; and a check that what the options
    /// need is among them.
    pub fn capabilities(&self) -> Result<caps::CapsHashSet, String> {
        let mut keep = caps::CapsHashSet::new();
        for name in &self.keep_capabilities {
            let cap: caps::Capability =
                name.parse().map_err(|_| format!("keep_capabilities: {name:?} is not a capability name"))?;
            keep.insert(cap);
        }
        let need = |cap: caps::Capability, option: &str| {
            if keep.contains(&cap) {
                Ok(())
            } else {
                Err(format!("{option} needs {cap} in keep_capabilities"))
            }
        };
        if self.chroot_into_input_root {
            need(caps::Capability::CAP_SYS_CHROOT, "chroot_into_input_root")?;
        }
        if self.run_as.is_some() {
            need(caps::Capability::CAP_SETUID, "run_as")?;
            need(caps::Capability::CAP_SETGID, "run_as")?;
        }
        Ok(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses_and_keeps_nothing() {
        let config: Config = bb_util::config::parse(DEFAULT_CONFIG, "default").unwrap();
        assert!(config.capabilities().unwrap().is_empty());
    }

    #[test]
    fn options_need_their_capabilities() {
        let text = DEFAULT_CONFIG.replace("chroot_into_input_root = false", "chroot_into_input_root = true");
        let config: Config = bb_util::config::parse(&text, "t").unwrap();
        assert!(config.capabilities().unwrap_err().contains("CAP_SYS_CHROOT"));
        let text = text.replace("keep_capabilities = []", "keep_capabilities = [\"CAP_SYS_CHROOT\"]");
        let config: Config = bb_util::config::parse(&text, "t").unwrap();
        assert_eq!(config.capabilities().unwrap().len(), 1);
        let text = DEFAULT_CONFIG.replace("keep_capabilities = []", "keep_capabilities = [\"CAP_NONSENSE\"]");
        let config: Config = bb_util::config::parse(&text, "t").unwrap();
        assert!(config.capabilities().is_err());
    }
}
