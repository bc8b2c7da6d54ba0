//! Every action in a sandbox of its own: new user, PID, mount, network,
//! IPC and UTS namespaces, entered by an init process the runner clones
//! (no external tool). Init reaps everything the action starts, passes
//! TERM on to all of it, and its exit takes the whole namespace with it.

pub mod cgroup;
mod child;
mod mounts;
mod plan;
pub mod properties;
mod spawn;
mod sys;

pub use cgroup::Limits;
pub use spawn::{Exit, Running, StartError};

use crate::config::{Config, SandboxConfig};
use bb_util::dir::Directory;
use plan::{Place, Plan, c_string};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

/// The runner's sandbox settings, checked against the host.
pub struct Sandbox {
    settings: SandboxConfig,
    isolation: Isolation,
    build_directory: PathBuf,
    chroot: bool,
    run_as: Option<(u32, u32)>,
    /// /dev/null, the actions' stdin.
    null: File,
    /// Where action cgroups are made, or why they are not.
    cgroups: Result<cgroup::Cgroups, String>,
}

const ALL_NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

impl Sandbox {
    /// Checks what the host allows by starting an empty sandbox.
    pub fn new(config: &Config) -> std::io::Result<Sandbox> {
        let build_directory = std::path::absolute(&config.build_directory)?;
        let mut sandbox = Sandbox {
            settings: config.sandbox.clone(),
            isolation: Isolation { namespaces: config.sandbox.namespaces, proc: config.sandbox.namespaces },
            build_directory,
            chroot: config.chroot_into_input_root,
            run_as: config.run_as.map(|r| (r.uid, r.gid)),
            null: File::open("/dev/null")?,
            cgroups: cgroup::Cgroups::discover(config.sandbox.cgroup_parent.as_deref()),
        };
        if sandbox.isolation.namespaces && sandbox.probe().is_err() {
            sandbox.isolation.proc = false;
            if let Err(e) = sandbox.probe() {
                tracing::debug!("namespaces are not available: {e}");
                sandbox.isolation.namespaces = false;
            }
        }
        Ok(sandbox)
    }

    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// What actions run without, for the runner's start-up message; empty
    /// when they get everything.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if !self.isolation.namespaces {
            missing.push("namespaces (actions share the host's processes, /tmp and network)".to_string());
        } else if !self.isolation.proc {
            missing.push("a /proc of their own (actions see the host's processes in /proc)".to_string());
        }
        match &self.cgroups {
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
        let namespaces = if self.isolation.namespaces { "namespaces" } else { "no namespaces" };
        match &self.cgroups {
            Ok(cgroups) => {
                format!("{namespaces}, a cgroup each ({})", cgroups.describe())
            }
            Err(_) => format!("{namespaces}, no cgroups"),
        }
    }

    fn probe(&self) -> Result<(), StartError> {
        let build = Directory::open(&self.build_directory).map_err(StartError::Io)?;
        let exposed = [(&build, self.build_directory.as_path())];
        let mounts = mounts::steps(&self.settings, &self.isolation, &self.build_directory, &exposed)
            .map_err(StartError::Io)?;
        let mut plan = self.plan_base(c_string("/")?, Vec::new(), Vec::new(), mounts, true);
        plan.working_directory = Place::Fd(build.as_fd().as_raw_fd());
        plan.probe_only = true;
        spawn::probe(plan, self.flags(true), self.id_maps(), &[])
    }

    fn flags(&self, network_namespace: bool) -> libc::c_int {
        match (self.isolation.namespaces, network_namespace) {
            (false, _) => 0,
            (true, true) => ALL_NAMESPACES,
            (true, false) => ALL_NAMESPACES & !libc::CLONE_NEWNET,
        }
    }

    /// The user and group mapped into the action's user namespace.
    fn id_maps(&self) -> Option<spawn::IdMaps> {
        if !self.isolation.namespaces {
            return None;
        }
        let (uid, gid, privileged) = match self.run_as {
            Some((uid, gid)) => (uid, gid, true),
            None => (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw(), false),
        };
        Some(spawn::IdMaps { uid, gid, privileged })
    }

    fn plan_base(
        &self,
        program: std::ffi::CString,
        arguments: Vec<std::ffi::CString>,
        environment: Vec<std::ffi::CString>,
        mounts: Vec<plan::MountStep>,
        network_namespace: bool,
    ) -> Plan {
        let mut strings = Vec::new();
        let argv = Plan::pointers(&mut strings, arguments);
        let envp = Plan::pointers(&mut strings, environment);
        let namespaces = self.isolation.namespaces;
        Plan {
            program,
            argv,
            envp,
            strings,
            stdin_fd: self.null.as_raw_fd(),
            stdout_fd: -1,
            stderr_fd: -1,
            go_fd: -1,
            report_fd: -1,
            status_fd: -1,
            mounts,
            hostname: namespaces.then(|| c_string(self.settings.hostname.as_bytes()).ok()).flatten(),
            loopback_up: namespaces && network_namespace,
            pid_namespace: namespaces,
            working_directory: Place::Fd(-1),
            chroot: None,
            switch_user: self.run_as,
            may_set_groups: !namespaces || self.run_as.is_some(),
            keep_fds: Vec::new(),
            probe_only: false,
        }
    }

    /// Starts `action` in its sandbox, in a cgroup of its own where the
    /// host has them.
    pub fn start(&self, action: &Action) -> Result<Running, StartError> {
        let cgroup = match &self.cgroups {
            Ok(cgroups) => Some(cgroups.create(action.limits).map_err(|e| {
                StartError::Io(std::io::Error::new(e.kind(), format!("creating the action's cgroup: {e}")))
            })?),
            Err(_) => None,
        };
        let network_namespace = !action.network;
        let mut exposed = vec![(&action.input_root.0, action.input_root.1.as_path())];
        if let Some((handle, path)) = &action.temporary_directory {
            exposed.push((handle, path.as_path()));
        }
        let mounts = if self.isolation.namespaces {
            mounts::steps(&self.settings, &self.isolation, &self.build_directory, &exposed)?
        } else {
            Vec::new()
        };
        let arguments = action.arguments.iter().map(|a| c_string(a.as_bytes())).collect::<Result<_, _>>()?;
        let mut environment: Vec<(&String, &String)> = action.environment.iter().collect();
        environment.sort();
        let environment = environment
            .into_iter()
            .map(|(name, value)| c_string(format!("{name}={value}")))
            .collect::<Result<_, _>>()?;
        let program = c_string(action.program.as_os_str().as_bytes())?;
        let mut plan = self.plan_base(program, arguments, environment, mounts, network_namespace);
        plan.stdout_fd = action.stdout.as_raw_fd();
        plan.stderr_fd = action.stderr.as_raw_fd();
        let (root, root_path) = &action.input_root;
        let (working, inside) = &action.working_directory;
        let namespaces = self.isolation.namespaces;
        let place = |handle: &Directory, path: &Path| -> std::io::Result<Place> {
            if namespaces {
                let stat = nix::sys::stat::fstat(handle.as_fd()).map_err(std::io::Error::from)?;
                Ok(Place::Path(c_string(path.as_os_str().as_bytes())?, (stat.st_dev, stat.st_ino)))
            } else {
                Ok(Place::Fd(handle.as_fd().as_raw_fd()))
            }
        };
        if self.chroot {
            let inside = Path::new("/").join(inside);
            plan.chroot = Some((place(root, root_path)?, place(working, &inside)?));
        } else {
            plan.working_directory = place(working, &root_path.join(inside))?;
        }
        spawn::start(plan, self.flags(network_namespace), self.id_maps(), cgroup)
    }
}
