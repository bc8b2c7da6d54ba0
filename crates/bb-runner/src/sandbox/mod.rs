//! Every action in a sandbox of its own: new user, PID, mount, network,
//! IPC and UTS namespaces, entered by an init process the runner clones
//! (no external tool). Init reaps everything the action starts, passes
//! TERM on to all of it, and its exit takes the whole namespace with it.
//! Sandboxes are prepared ahead ([`pool`]): what costs most (the
//! namespaces, the cgroup, the mounts) is done before the action comes.

pub mod cgroup;
mod child;
mod kept;
mod mounts;
mod plan;
mod pool;
pub mod properties;
mod region;
mod running;
mod spawn;
mod sys;
mod zygote;

pub use cgroup::Limits;
pub use running::{Exit, Running, duration};
pub use spawn::StartError;
use zygote::Zygote;

use crate::config::{Config, SandboxConfig};
use bb_util::dir::Directory;
use plan::{ActionPlan, Arena, Generic, Place};
use spawn::Prepared;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One action to start.
pub struct Action {
    /// The resolved program, as the action will see it.
    pub program: PathBuf,
    /// argv, argv[0] included, passed on exactly.
    pub arguments: Vec<String>,
    pub environment: HashMap<String, String>,
    /// The input root: its handle, and its path as the runner names it.
    pub input_root: (Directory, PathBuf),
    /// The working directory: its handle, and its path inside the input root.
    pub working_directory: (Directory, PathBuf),
    pub temporary_directory: Option<(Directory, PathBuf)>,
    pub stdout: File,
    pub stderr: File,
    /// The action may use the host's network.
    pub network: bool,
    pub limits: Limits,
}

/// What the host lets the runner do, found out at start.
#[derive(Clone, Debug)]
pub struct Isolation {
    pub namespaces: bool,
    /// A fresh /proc for the action's PID namespace.
    pub proc: bool,
}

/// The runner's sandboxes: its settings checked against the host, and
/// those prepared ahead.
pub struct Sandbox {
    spec: Arc<Spec>,
    pool: Arc<pool::Pool>,
}

/// Everything a sandbox is made from.
struct Spec {
    settings: SandboxConfig,
    isolation: Isolation,
    build_directory: PathBuf,
    chroot: bool,
    run_as: Option<(u32, u32)>,
    /// /dev/null, the actions' stdin.
    null: File,
    /// Where action cgroups are made, or why they are not.
    cgroups: Result<cgroup::Cgroups, String>,
    /// The namespaces sandboxes join: set exactly when they have
    /// namespaces.
    kept: Option<Arc<kept::Kept>>,
    /// Clones each sandbox's init, and reaps it.
    zygote: Zygote,
    /// The runner's bounding set, a bit per capability (see [`Generic`]).
    bounding_set: u64,
}

/// The namespaces init is cloned into; the user namespace is the runner's
/// kept one ([`kept`]), joined first.
const ALL_NAMESPACES: libc::c_int =
    libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

impl Sandbox {
    /// Checks what the host allows by setting up an empty sandbox.
    pub fn new(config: &Config) -> std::io::Result<Sandbox> {
        let cgroups = if config.sandbox.cgroups {
            cgroup::Cgroups::discover(config.sandbox.cgroup_parent.as_deref())
        } else {
            Err("cgroups = false".into())
        };
        // After the runner has moved itself into its own leaf cgroup (v2),
        // and before it serves anything: the zygote is a copy of it.
        let zygote = Zygote::start()?;
        let mut spec = Spec {
            settings: config.sandbox.clone(),
            isolation: Isolation { namespaces: config.sandbox.namespaces, proc: config.sandbox.namespaces },
            build_directory: std::path::absolute(&config.build_directory)?,
            chroot: config.chroot_into_input_root,
            run_as: config.run_as.map(|r| (r.uid, r.gid)),
            null: File::open("/dev/null")?,
            cgroups,
            kept: None,
            zygote,
            bounding_set: caps::read(None, caps::CapSet::Bounding)
                .map_err(|e| std::io::Error::other(format!("reading the bounding set: {e}")))?
                .iter()
                .fold(0, |set, cap| set | 1u64 << cap.index()),
        };
        if spec.isolation.namespaces {
            match kept::Kept::new(&spec.id_maps()) {
                Ok(kept) => spec.kept = Some(kept),
                Err(e) => {
                    tracing::debug!("user namespaces are not available: {e}");
                    spec.isolation.namespaces = false;
                }
            }
        }
        if spec.isolation.namespaces && spec.probe().is_err() {
            spec.isolation.proc = false;
            if let Err(e) = spec.probe() {
                tracing::debug!("namespaces are not available: {e}");
                spec.isolation.namespaces = false;
                spec.kept = None;
            }
        }
        let prepared = if spec.isolation.namespaces { config.sandbox.prepared } else { 0 };
        Ok(Sandbox { spec: Arc::new(spec), pool: Arc::new(pool::Pool::new(prepared)) })
    }

    pub fn isolation(&self) -> &Isolation {
        &self.spec.isolation
    }

    /// What actions run without, for the runner's start-up message; empty
    /// when they get everything.
    pub fn missing(&self) -> Vec<String> {
        let spec = &self.spec;
        let mut missing = Vec::new();
        if !spec.isolation.namespaces {
            missing.push("namespaces (actions share the host's processes, /tmp and network)".to_string());
        } else if !spec.isolation.proc {
            missing.push("a /proc of their own (actions see the host's processes in /proc)".to_string());
        }
        match &spec.cgroups {
            Err(why) => missing.push(format!("a cgroup each (no limits; {why})")),
            Ok(cgroups) => {
                let limits = cgroups.missing();
                if !limits.is_empty() {
                    missing.push(format!("{} limits ({})", limits.join(" and "), cgroups.describe()));
                }
            }
        }
        missing
    }

    /// The isolation actions get, for the runner's start-up message.
    pub fn describe(&self) -> String {
        let namespaces = if self.spec.isolation.namespaces { "namespaces" } else { "no namespaces" };
        match &self.spec.cgroups {
            Ok(cgroups) => format!("{namespaces}, a cgroup each ({})", cgroups.describe()),
            Err(_) => format!("{namespaces}, no cgroups"),
        }
    }

    /// Prepares sandboxes ahead, in the background, until the pool is full:
    /// called once an action is over, before the next is likely to come
    /// (preparing while an action starts or runs would slow it).
    pub fn top_up(&self) {
        pool::Pool::top_up(&self.pool, &self.spec);
    }

    /// Starts `action` in a sandbox of its own: one prepared ahead where it
    /// fits (namespaces, the usual network), else one made now; returns
    /// once it runs.
    pub async fn start(&self, action: &Action) -> Result<Running, StartError> {
        let spec = &self.spec;
        let pooled = spec.isolation.namespaces && action.network == spec.settings.allow_network;
        let mut prepared = if pooled {
            self.pool.take(spec).await?
        } else {
            // The descriptors stay open: `action` holds them until it is over.
            Spec::prepare_apart(spec, action.network, spec.inherited_fds(action)).await?
        };
        prepared.limit(action.limits)?;
        prepared
            .start(|arena| spec.action_plan(action, arena), &action.stdout, &action.stderr)?
            .started()
            .await
    }
}

impl Spec {
    /// [`Spec::prepare`] on a blocking thread.
    async fn prepare_apart(
        spec: &Arc<Spec>,
        network: bool,
        keep: Vec<RawFd>,
    ) -> Result<Prepared, StartError> {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || spec.prepare(network, &keep))
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e)))?
    }

    fn flags(&self, network_namespace: bool) -> libc::c_int {
        match (self.isolation.namespaces, network_namespace) {
            (false, _) => 0,
            (true, true) => ALL_NAMESPACES,
            (true, false) => ALL_NAMESPACES & !libc::CLONE_NEWNET,
        }
    }

    /// The user and group mapped into the actions' user namespace.
    fn id_maps(&self) -> kept::IdMaps {
        let (uid, gid, privileged) = match self.run_as {
            Some((uid, gid)) => (uid, gid, true),
            None => (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw(), false),
        };
        kept::IdMaps { uid, gid, privileged }
    }

    /// A sandbox waiting for its action; `keep` are descriptors of the
    /// runner it inherits for it (without namespaces).
    fn prepare(&self, network: bool, keep: &[RawFd]) -> Result<Prepared, StartError> {
        self.prepare_generic(network, keep, false)
    }

    fn probe(&self) -> Result<(), StartError> {
        self.prepare_generic(self.settings.allow_network, &[], true)?.probe()
    }

    fn prepare_generic(
        &self,
        network: bool,
        keep: &[RawFd],
        probe_only: bool,
    ) -> Result<Prepared, StartError> {
        let mut arena = Arena::new()?;
        let namespaces = self.isolation.namespaces;
        let (mounts, mounts_len) = if namespaces {
            let build = Directory::open(&self.build_directory)?;
            let steps = mounts::generic_steps(
                &self.settings,
                &self.isolation,
                (&build, &self.build_directory),
                &mut arena,
            )?;
            (arena.slice(&steps)?, steps.len())
        } else {
            (std::ptr::null(), 0)
        };
        let hostname =
            if namespaces { arena.c_str(self.settings.hostname.as_bytes())? } else { std::ptr::null() };
        let (uid, gid) = self.run_as.unwrap_or_default();
        let generic = Generic {
            stdin_fd: self.null.as_raw_fd(),
            control_fd: -1,
            report_fd: -1,
            status_fd: -1,
            join_user_fd: -1,
            join_network_fd: -1,
            reaper_fd: -1,
            cgroup_fd: -1,
            cgroup_tasks: std::ptr::null(),
            keep_fds: std::ptr::null(),
            keep_len: 0,
            mounts,
            mounts_len,
            hostname,
            loopback_up: namespaces && !network,
            pid_namespace: namespaces,
            switch_user: self.run_as.is_some(),
            uid,
            gid,
            may_set_groups: !namespaces || self.run_as.is_some(),
            // Joining a user namespace fills the bounding set (setns(2)).
            bounding_set: if namespaces { u64::MAX } else { self.bounding_set },
            probe_only,
        };
        let cgroup = match &self.cgroups {
            Ok(cgroups) if !probe_only => Some(cgroups.create()?),
            _ => None,
        };
        // With namespaces, the kept ones are joined (a lent network
        // namespace rather than a new one).
        let join = self.kept.as_ref().map(|kept| spawn::Join {
            kept: kept.clone(),
            network: if network { None } else { kept.lend_network() },
        });
        let lent = join.as_ref().is_some_and(|j| j.network.is_some());
        let flags = self.flags(!network && !lent);
        spawn::prepare(spawn::Plan { arena, generic, flags, join, cgroup, keep }, &self.zygote)
    }

    /// Without namespaces, the action's directories are entered by handle.
    fn inherited_fds(&self, action: &Action) -> Vec<RawFd> {
        if self.isolation.namespaces {
            return Vec::new();
        }
        vec![action.input_root.0.as_fd().as_raw_fd(), action.working_directory.0.as_fd().as_raw_fd()]
    }

    /// The action's part of the plan, written into `arena`.
    fn action_plan(&self, action: &Action, arena: &mut Arena) -> std::io::Result<ActionPlan> {
        let namespaces = self.isolation.namespaces;
        let (root, root_path) = &action.input_root;
        let (mounts, mounts_len) = if namespaces {
            let mut exposed = vec![(root, root_path.as_path())];
            if let Some((handle, path)) = &action.temporary_directory {
                exposed.push((handle, path.as_path()));
            }
            let steps = mounts::action_steps(&self.build_directory, &exposed, arena)?;
            (arena.slice(&steps)?, steps.len())
        } else {
            (std::ptr::null(), 0)
        };
        let mut environment: Vec<(&String, &String)> = action.environment.iter().collect();
        environment.sort();
        let environment: Vec<String> = environment.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
        let mut place = |handle: &Directory, path: &Path| -> std::io::Result<Place> {
            if namespaces {
                let stat = nix::sys::stat::fstat(handle.as_fd()).map_err(std::io::Error::from)?;
                Ok(Place::Path(arena.path(path)?, (stat.st_dev, stat.st_ino)))
            } else {
                Ok(Place::Fd(handle.as_fd().as_raw_fd()))
            }
        };
        let (working, inside) = &action.working_directory;
        let (working_directory, chroot_root, chroot_inside) = if self.chroot {
            let inside = Path::new("/").join(inside);
            let root = place(root, root_path)?;
            let inside = place(working, &inside)?;
            (root, root, inside)
        } else {
            let working = place(working, &root_path.join(inside))?;
            (working, working, working)
        };
        Ok(ActionPlan {
            program: arena.path(&action.program)?,
            argv: arena.strings(&action.arguments)?,
            envp: arena.strings(&environment)?,
            mounts,
            mounts_len,
            working_directory,
            chroot: self.chroot,
            chroot_root,
            chroot_inside,
        })
    }
}
