//! What the sandbox's child does, written by the runner into memory it
//! shares with the child: plain data and pointers into that memory only,
//! so the child reads it without allocating, also what was written after
//! the clone (a sandbox prepared before its action was known).

use super::region;
use std::ffi::c_char;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

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
    Join,
    Cgroup,
}

impl Stage {
    pub fn from_code(code: i32) -> Option<Stage> {
        use Stage::*;
        [
            Go,
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
            Join,
            Cgroup,
        ]
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
            Stage::Join => "joining the runner's user and network namespaces",
            Stage::Cgroup => "entering the action's cgroup",
        }
    }
}

/// How many trees a sandbox may clone and move.
pub const TREES: usize = 4;

/// A NUL-terminated string in the shared memory.
pub type CPtr = *const c_char;

/// One step of the mount namespace's set-up, in order.
#[derive(Clone, Copy)]
#[repr(C)]
pub enum MountStep {
    /// Nothing mounted from here on propagates to the host.
    Private,
    /// A detached copy of the mount tree at `source` (with the mounts
    /// beneath when `recursive`), which must be the directory with device
    /// and inode `expect`; kept in tree slot `slot`.
    CloneTree {
        source: CPtr,
        expect: (u64, u64),
        slot: usize,
        recursive: bool,
    },
    /// Attaches the tree cloned into `slot` at `target`.
    MoveTree {
        slot: usize,
        target: CPtr,
    },
    /// Makes `target` a mount point of itself (with what is beneath).
    BindToItself {
        target: CPtr,
    },
    ReadOnly {
        target: CPtr,
        recursive: bool,
    },
    Tmpfs {
        target: CPtr,
        options: CPtr,
    },
    Mkdir {
        path: CPtr,
    },
    Proc {
        target: CPtr,
    },
}

/// A directory to enter: by a handle the child inherited (no new mount
/// namespace), or by path in the new one, checked to be the directory with
/// this device and inode.
#[derive(Clone, Copy)]
#[repr(C)]
pub enum Place {
    Fd(RawFd),
    Path(CPtr, (u64, u64)),
}

/// What every sandbox of a runner does before its action is known; the
/// launcher's part first.
#[repr(C)]
pub struct Generic {
    pub stdin_fd: RawFd,
    /// A socket: first a byte once the user mapping is written, then the
    /// action (its plan's address, and stdout and stderr as descriptors).
    pub control_fd: RawFd,
    /// Where the child reports a failed start (closed on exec).
    pub report_fd: RawFd,
    /// Where init writes the action's wait status and usage.
    pub status_fd: RawFd,
    /// Every descriptor the child keeps, sorted: it closes all others (a
    /// copy of another action's pipe would keep that one from ending).
    pub keep_fds: *const RawFd,
    pub keep_len: usize,
    /// Namespaces the sandbox joins rather than makes, through a launcher
    /// that joins them and clones init with the rest: the runner's user
    /// namespace, and a network namespace kept from an earlier action;
    /// -1 for none (no launcher, or a network namespace of its own).
    pub join_user_fd: RawFd,
    pub join_network_fd: RawFd,
    /// The zygote's socket to the runner for this sandbox: init's
    /// pid, whether it started in its v2 cgroup and a pidfd of it once it
    /// is cloned; its wait status and usage once it is reaped.
    pub reaper_fd: RawFd,
    /// The action's cgroup, which init starts in: a cgroup v2 directory
    /// init is cloned into, or cgroup v1 `tasks` files (NULL-terminated)
    /// the launcher moves itself into first; -1 and null for none. Neither
    /// takes the global lock that moving a whole process does (which
    /// stalls every fork and exit of the host for milliseconds).
    pub cgroup_fd: RawFd,
    pub cgroup_tasks: *const CPtr,
    pub mounts: *const MountStep,
    pub mounts_len: usize,
    /// Null for none.
    pub hostname: CPtr,
    pub loopback_up: bool,
    pub pid_namespace: bool,
    /// Switch to this user and group (`switch_user`).
    pub switch_user: bool,
    pub uid: u32,
    pub gid: u32,
    /// setgroups(2) is allowed (not denied for the user namespace).
    pub may_set_groups: bool,
    /// Init's bounding set, a bit per capability: the runner's, or all of
    /// them after joining a user namespace. Init drops each of these, and
    /// has nothing to do when there are none.
    pub bounding_set: u64,
    /// Set up, then exit without starting anything: the runner's check of
    /// what the host allows.
    pub probe_only: bool,
}

/// One action, written once it is known.
#[repr(C)]
pub struct ActionPlan {
    pub program: CPtr,
    /// NULL-terminated.
    pub argv: *const CPtr,
    pub envp: *const CPtr,
    pub mounts: *const MountStep,
    pub mounts_len: usize,
    pub working_directory: Place,
    /// Chroot into the first, then enter the second (`chroot`).
    pub chroot: bool,
    pub chroot_root: Place,
    pub chroot_inside: Place,
}

/// Memory shared with the child: a memfd the runner maps in a slot of the
/// [`region`] and the zygote maps at the same address while it clones
/// init ([`super::zygote`]), so the pointers in it mean the same in both;
/// filled front to back.
pub struct Arena {
    base: *mut u8,
    size: usize,
    used: usize,
    file: OwnedFd,
}

// SAFETY: the arena owns its mapping; what it hands out are addresses into
// it, only dereferenced by the child.
unsafe impl Send for Arena {}

/// Room for an action's arguments and environment (ARG_MAX is far below):
/// reserved address space, only touched pages take memory.
pub const ARENA_SIZE: usize = 64 << 20;

fn too_big() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "the action's arguments and environment are too large",
    )
}

impl Arena {
    pub fn new() -> std::io::Result<Arena> {
        let file = nix::sys::memfd::memfd_create(c"bb-sandbox-plan", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(std::io::Error::from)?;
        nix::unistd::ftruncate(&file, ARENA_SIZE as libc::off_t).map_err(std::io::Error::from)?;
        let region = region::region(ARENA_SIZE)?;
        let slot = region.take()?;
        // SAFETY: over a slot of the reservation, which the arena now owns.
        let base = unsafe {
            libc::mmap(
                slot as *mut libc::c_void,
                ARENA_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE | libc::MAP_FIXED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let error = std::io::Error::last_os_error();
            region.give_back(slot);
            return Err(error);
        }
        Ok(Arena { base: base.cast(), size: ARENA_SIZE, used: 0, file })
    }

    /// The memfd behind the arena, and where the runner maps it.
    pub fn mapping(&self) -> (BorrowedFd<'_>, usize) {
        (self.file.as_fd(), self.base as usize)
    }

    fn reserve(&mut self, bytes: usize, align: usize) -> std::io::Result<*mut u8> {
        let start = self.used.next_multiple_of(align);
        let end = start.checked_add(bytes).filter(|end| *end <= self.size).ok_or_else(too_big)?;
        self.used = end;
        // SAFETY: within the mapping.
        Ok(unsafe { self.base.add(start) })
    }

    /// Copies `items` in; their address.
    pub fn slice<T: Copy>(&mut self, items: &[T]) -> std::io::Result<*const T> {
        let to = self.reserve(std::mem::size_of_val(items), std::mem::align_of::<T>())?.cast::<T>();
        // SAFETY: `to` has room for the items and is aligned for T.
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), to, items.len()) };
        Ok(to)
    }

    pub fn value<T>(&mut self, value: T) -> std::io::Result<*const T> {
        let to = self.reserve(std::mem::size_of::<T>(), std::mem::align_of::<T>())?.cast::<T>();
        // SAFETY: `to` has room for a T and is aligned for it.
        unsafe { to.write(value) };
        Ok(to)
    }

    /// `bytes` as a C string; refused if they hold a NUL.
    pub fn c_str(&mut self, bytes: &[u8]) -> std::io::Result<CPtr> {
        if bytes.contains(&0) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "contains NUL"));
        }
        let to = self.reserve(bytes.len() + 1, 1)?;
        // SAFETY: `to` has room for the bytes and the NUL.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), to, bytes.len());
            to.add(bytes.len()).write(0);
        }
        Ok(to.cast())
    }

    pub fn path(&mut self, path: &std::path::Path) -> std::io::Result<CPtr> {
        use std::os::unix::ffi::OsStrExt;
        self.c_str(path.as_os_str().as_bytes())
    }

    /// NULL-terminated pointers to copies of `items`.
    pub fn strings<S: AsRef<[u8]>>(&mut self, items: &[S]) -> std::io::Result<*const CPtr> {
        let mut pointers = items.iter().map(|s| self.c_str(s.as_ref())).collect::<Result<Vec<_>, _>>()?;
        pointers.push(std::ptr::null());
        self.slice(&pointers)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // The children keep their own mapping of the memfd.
        if let Some(region) = region::existing() {
            region.give_back(self.base as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_holds_strings_and_arrays() {
        let mut arena = Arena::new().unwrap();
        let argv = arena.strings(&["sh", "-c", "echo"]).unwrap();
        // SAFETY: written just above.
        let read = unsafe { std::ffi::CStr::from_ptr(*argv.add(2)) };
        assert_eq!(read.to_bytes(), b"echo");
        assert!(unsafe { *argv.add(3) }.is_null());
        assert!(arena.c_str(b"a\0b").is_err());
        let huge = vec![b'x'; ARENA_SIZE];
        assert!(arena.c_str(&huge).is_err(), "refused, not overflowing");
    }
}
