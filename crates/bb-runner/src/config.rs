//! bb-runner's configuration; `default-config.toml` documents every key.

use bb_util::config::{ByteSize, HumanDuration};
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
    /// Actions see their input root as `/`. In the sandbox's namespaces the
    /// runner needs no capability for it; without them, CAP_SYS_CHROOT in
    /// `keep_capabilities`.
    #[serde(default)]
    pub chroot_into_input_root: bool,
    #[serde(default)]
    pub run_as: Option<RunAs>,
    #[serde(default)]
    pub kill_user_processes: bool,
    #[serde(default)]
    pub readiness_paths: Vec<PathBuf>,
    /// Variables every action gets unless it sets them itself, such as
    /// the `PATH` of the toolchain a worker host offers (Bazel sends no
    /// PATH unless told to). Also where argv[0] is looked up.
    #[serde(default)]
    pub default_environment: std::collections::BTreeMap<String, String>,
    /// How each action is isolated from the host and from other actions.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// The `[sandbox]` table: namespaces, cgroup limits and how actions end.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Run every action in new user, PID, mount, network, IPC and UTS
    /// namespaces: `kill -9 -1` reaches only the action, everything it
    /// started dies with it, `/tmp` is its own, and it has no network.
    pub namespaces: bool,
    /// The hostname actions see, the same on every worker.
    pub hostname: String,
    /// Let actions use the host's network. Otherwise they have a loopback
    /// interface of their own and nothing else, unless `network_property`
    /// lets an action ask. An action may always refuse it
    /// (`dockerNetwork=off`).
    pub allow_network: bool,
    /// An action may ask for the host's network with the platform property
    /// `dockerNetwork=bridge` (or `host`), as BuildBuddy's users write it.
    /// Otherwise such an action fails with FAILED_PRECONDITION.
    pub network_property: bool,
    /// Directories covered by an empty read-only directory inside actions.
    /// The build directory is always covered, and only the action's own
    /// input root and temporary directory are laid back over it.
    pub hidden_paths: Vec<PathBuf>,
    /// Directories (with everything mounted beneath) that actions see
    /// read-only. Their input root, temporary directory, `/tmp` and
    /// `/dev/shm` stay writable.
    pub read_only_paths: Vec<PathBuf>,
    /// When an action runs out of time, it gets SIGTERM, and SIGKILL this
    /// long after.
    pub termination_grace: HumanDuration,
    /// Refuse to start, rather than run with less, when the host cannot
    /// give every action its namespaces and its cgroup.
    pub require_isolation: bool,
    /// Sandboxes kept ready (in their namespaces and cgroup, waiting for
    /// an action), so that starting an action costs little more than its
    /// own mounts. 0 makes each when its action comes.
    pub prepared: usize,
    /// Give every action a cgroup of its own (limits, usage, and a kill
    /// that reaches everything it started). On cgroup v1 a later action
    /// may get the same one once it is empty, its limits lifted and its
    /// peak and counters reset. Off: actions run in the runner's cgroup,
    /// unlimited.
    pub cgroups: bool,
    /// Make action cgroups in this subdirectory of the runner's own cgroup
    /// (in every hierarchy), one that was delegated to the runner's user by
    /// whoever started it (`bb farm` does). Unset: the runner's own cgroup,
    /// delegated by systemd's `Delegate=yes`.
    pub cgroup_parent: Option<String>,
    /// What one action may use, through a cgroup of its own, unless it
    /// asks otherwise (platform properties `memoryLimit`, `processLimit`,
    /// `cpuLimit`).
    pub limits: LimitsConfig,
    /// The most an action may ask for; unset: whatever it asks.
    pub max_limits: LimitsConfig,
}

/// The `[sandbox.limits]` table. Unset is unlimited (within the runner's
/// own cgroup).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Memory, swap off; past it the action's processes are OOM-killed.
    pub memory: Option<ByteSize>,
    /// Processes and threads at once: a fork bomb stops here.
    pub processes: Option<u64>,
    /// CPU time per wall-clock second, in cores (`1.5`).
    pub cpus: Option<f64>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            namespaces: true,
            hostname: "localhost".into(),
            allow_network: false,
            network_property: false,
            hidden_paths: vec!["/root".into(), "/home".into()],
            read_only_paths: vec!["/".into()],
            termination_grace: HumanDuration::from_secs(5),
            require_isolation: false,
            prepared: 2,
            cgroups: true,
            cgroup_parent: None,
            limits: LimitsConfig::default(),
            max_limits: LimitsConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl Config {
    /// The user actions run as: `run_as`, or the runner's own.
    pub fn action_uid(&self, own_uid: u32) -> u32 {
        self.run_as.map_or(own_uid, |r| r.uid)
    }

    /// With `kill_user_processes`, every process of the action's user is
    /// killed after each action; refused where that would reach processes
    /// that are not the action's: root's, or the worker's (the owner of the
    /// build directory). The runner's own user is fine when it is
    /// dedicated: the runner spares itself and other runners.
    pub fn check_kill_scope(&self, own_uid: u32, worker_uid: Option<u32>) -> Result<(), String> {
        if !self.kill_user_processes {
            return Ok(());
        }
        let uid = self.action_uid(own_uid);
        if uid == 0 {
            return Err("kill_user_processes would kill every process of root (uid 0) after each action: \
                        run bb-runner as a dedicated user, or set run_as to one"
                .into());
        }
        if worker_uid == Some(uid) {
            return Err(format!(
                "kill_user_processes would kill the worker: actions run as uid {uid}, which owns the build \
                 directory {}; run actions as a user of their own",
                self.build_directory.display()
            ));
        }
        Ok(())
    }

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
        if self.chroot_into_input_root && !self.sandbox.namespaces {
            need(caps::Capability::CAP_SYS_CHROOT, "chroot_into_input_root without namespaces")?;
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
    fn killing_by_user_never_reaches_root_or_the_worker() {
        let text = DEFAULT_CONFIG.replace("kill_user_processes = false", "kill_user_processes = true");
        let config: Config = bb_util::config::parse(&text, "t").unwrap();
        assert!(config.check_kill_scope(0, None).unwrap_err().contains("root"));
        assert!(config.check_kill_scope(1001, Some(1001)).unwrap_err().contains("worker"));
        assert!(config.check_kill_scope(1001, Some(1002)).is_ok(), "a dedicated runner user");
        let mut config = config;
        config.run_as = Some(RunAs { uid: 0, gid: 0 });
        assert!(config.check_kill_scope(1001, None).is_err());
        config.kill_user_processes = false;
        assert!(config.check_kill_scope(0, Some(0)).is_ok(), "nothing is killed by user");
    }

    #[test]
    fn options_need_their_capabilities() {
        let text = DEFAULT_CONFIG.replace("chroot_into_input_root = false", "chroot_into_input_root = true");
        let config: Config = bb_util::config::parse(&text, "t").unwrap();
        assert!(config.capabilities().unwrap().is_empty(), "the sandbox chroots in its user namespace");
        let text = text.replace("namespaces = true", "namespaces = false");
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
