//! What the sandbox's child does, prepared by the runner before the clone:
//! every string as a C string, every pointer array built, every file open.

use std::ffi::{CString, c_char};
use std::os::fd::RawFd;

/// Where the child failed, as it reports it to the runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Stage {
    Go = 1,
    Mount,
    Hostname,
    Network,
    Directory,
    Replaced,
    Chroot,
    User,
    Capabilities,
    Fork,
    Streams,
    Exec,
}

impl Stage {
    pub fn from_code(code: i32) -> Option<Stage> {
        use Stage::*;
        [Go, Mount, Hostname, Network, Directory, Replaced, Chroot, User, Capabilities, Fork, Streams, Exec]
            .into_iter()
            .find(|s| *s as i32 == code)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Stage::Go => "waiting for the runner",
            Stage::Mount => "setting up the mount namespace",
            Stage::Hostname => "setting the hostname",
            Stage::Network => "bringing up the loopback interface",
            Stage::Directory => "entering the working directory",
            Stage::Replaced => "checking the directories (one was replaced while the action started)",
            Stage::Chroot => "entering the chroot",
            Stage::User => "switching to the action's user",
            Stage::Capabilities => "dropping capabilities",
            Stage::Fork => "starting the action",
            Stage::Streams => "attaching stdin, stdout and stderr",
            Stage::Exec => "executing the program",
        }
    }
}

/// How many trees a plan may clone and move.
pub const TREES: usize = 4;

/// One step of the mount namespace's set-up, in order.
pub enum MountStep {
    /// Nothing mounted from here on propagates to the host.
    Private,
    /// A detached copy of the mount tree at `source`, which must be the
    /// directory with device and inode `expect`; kept in tree slot `slot`.
    CloneTree {
        source: CString,
        expect: (u64, u64),
        slot: usize,
    },
    /// Attaches the tree cloned into `slot` at `target`.
    MoveTree {
        slot: usize,
        target: CString,
    },
    /// Makes `target` a mount point of itself (with what is beneath).
    BindToItself {
        target: CString,
    },
    ReadOnly {
        target: CString,
        recursive: bool,
    },
    Tmpfs {
        target: CString,
        options: CString,
    },
    Mkdir {
        path: CString,
    },
    Proc {
        target: CString,
    },
}

/// A directory to enter: by handle (no new mount namespace), or by path in
/// the new one, checked to be the directory with this device and inode.
pub enum Place {
    Fd(RawFd),
    Path(CString, (u64, u64)),
}

/// Everything the child needs; borrowed by it after the clone.
pub struct Plan {
    pub program: CString,
    /// NUL-terminated pointer arrays into `strings`.
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
    /// Owns what `argv` and `envp` point at (only ever read through them).
    #[allow(dead_code)]
    pub strings: Vec<CString>,
    pub stdin_fd: RawFd,
    pub stdout_fd: RawFd,
    pub stderr_fd: RawFd,
    /// The runner writes one byte once the child's user mapping is set.
    pub go_fd: RawFd,
    /// Where the child reports a failed start (closed on exec).
    pub report_fd: RawFd,
    /// Where init writes the action's wait status.
    pub status_fd: RawFd,
    pub mounts: Vec<MountStep>,
    pub hostname: Option<CString>,
    pub loopback_up: bool,
    pub pid_namespace: bool,
    pub working_directory: Place,
    /// The root to chroot into, then the working directory inside it.
    pub chroot: Option<(Place, Place)>,
    pub switch_user: Option<(u32, u32)>,
    /// setgroups(2) is allowed (not denied for the user namespace).
    pub may_set_groups: bool,
    /// Every descriptor the child uses, sorted: it closes all others (a
    /// copy of another action's pipe would keep that one from ending).
    pub keep_fds: Vec<RawFd>,
    /// Set everything up, then exit without starting anything: the
    /// runner's check of what the host allows.
    pub probe_only: bool,
}

impl Plan {
    /// Fills `keep_fds` from the descriptors the plan names.
    pub fn collect_fds(&mut self) {
        let mut fds =
            vec![self.stdin_fd, self.stdout_fd, self.stderr_fd, self.go_fd, self.report_fd, self.status_fd];
        let places = [
            Some(&self.working_directory),
            self.chroot.as_ref().map(|c| &c.0),
            self.chroot.as_ref().map(|c| &c.1),
        ];
        fds.extend(places.into_iter().flatten().filter_map(|p| match p {
            Place::Fd(fd) => Some(*fd),
            Place::Path(..) => None,
        }));
        fds.retain(|fd| *fd >= 0);
        fds.sort_unstable();
        fds.dedup();
        self.keep_fds = fds;
    }

    /// NUL-terminated pointers to `items`, which `strings` keeps alive.
    pub fn pointers(strings: &mut Vec<CString>, items: Vec<CString>) -> Vec<*const c_char> {
        let mut pointers: Vec<*const c_char> = items.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        strings.extend(items);
        pointers
    }
}

/// A C string from bytes the runner already checked to hold no NUL.
pub fn c_string(bytes: impl Into<Vec<u8>>) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "contains NUL"))
}
