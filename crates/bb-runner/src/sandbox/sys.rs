//! Raw Linux system calls the sandbox needs that neither `libc` nor `nix`
//! wraps in a form safe after a raw `clone` (or at all).

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 1;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct ifreq` as SIOCGIFFLAGS and SIOCSIFFLAGS use it.
#[repr(C)]
pub struct InterfaceFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    pub flags: libc::c_short,
    _rest: [u8; 22],
}

impl InterfaceFlags {
    pub fn loopback() -> InterfaceFlags {
        let mut name = [0; libc::IFNAMSIZ];
        for (to, from) in name.iter_mut().zip(b"lo") {
            *to = *from as libc::c_char;
        }
        InterfaceFlags { name, flags: 0, _rest: [0; 22] }
    }
}

/// What init writes to the runner once the action is over.
#[repr(C)]
pub struct StatusReport {
    pub status: libc::c_int,
    pub rusage: libc::rusage,
}

/// A detached copy of the mount tree at `source`, with the mounts beneath
/// it when `recursive` (open_tree(2)).
///
/// # Safety
/// A raw system call on a valid C string.
pub unsafe fn open_tree_clone(source: *const libc::c_char, recursive: bool) -> libc::c_long {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source, flags) }
}

/// Attaches the detached tree `fd` at `target` (move_mount(2)).
///
/// # Safety
/// A raw system call on a valid C string.
pub unsafe fn move_mount_to(fd: libc::c_int, target: *const libc::c_char) -> libc::c_long {
    unsafe {
        libc::syscall(libc::SYS_move_mount, fd, c"".as_ptr(), libc::AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)
    }
}

/// Makes the mount at `target` read-only, with every mount beneath it when
/// `recursive` (mount_setattr(2)).
///
/// # Safety
/// A raw system call on a valid C string.
pub unsafe fn make_read_only(target: *const libc::c_char, recursive: bool) -> libc::c_long {
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target,
            flags,
            &attr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

/// Empties the effective, permitted and inheritable sets (capset(2)).
///
/// # Safety
/// A raw system call on local data.
pub unsafe fn clear_capabilities() -> libc::c_long {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }
}

/// clone(2) without a new stack: like fork, with namespace `flags`.
///
/// # Safety
/// The child may only make raw system calls.
pub unsafe fn clone(flags: libc::c_int) -> libc::pid_t {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    let null = 0 as libc::c_ulong;
    unsafe { libc::syscall(libc::SYS_clone, flags, null, null, null, null) as libc::pid_t }
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3(2) without a new stack, like fork with `flags`, made in the
/// cgroup v2 directory `cgroup_fd` unless it is -1 (which takes no global
/// lock, unlike moving a process there). With CLONE_PARENT the child ends
/// with the caller's exit signal; otherwise with SIGCHLD.
///
/// # Safety
/// The child may only make raw system calls.
pub unsafe fn clone_into(flags: libc::c_int, cgroup_fd: libc::c_int) -> libc::pid_t {
    let sibling = flags & libc::CLONE_PARENT != 0;
    let exit_signal = if sibling { 0 } else { libc::SIGCHLD as u64 };
    let mut args = CloneArgs { flags: flags as u32 as u64, exit_signal, ..CloneArgs::default() };
    if cgroup_fd >= 0 {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cgroup_fd as u64;
    }
    unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, std::mem::size_of::<CloneArgs>()) as libc::pid_t }
}

/// Joins the namespace `fd` refers to, of type `nstype` (setns(2)).
///
/// # Safety
/// A raw system call.
pub unsafe fn join(fd: libc::c_int, nstype: libc::c_int) -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_setns, fd, nstype) }
}

/// A message header for recvmsg(2) or sendmsg(2): one buffer, and room
/// for control messages (u64s: aligned for cmsghdr).
pub fn message_header(iov: &mut libc::iovec, control: &mut [u64]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is an empty header.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(control) as _;
    message
}

/// Closes every descriptor above stderr but those in `keep` (sorted).
///
/// # Safety
/// Raw system calls; the descriptors closed must not be used again.
pub unsafe fn close_all_but(keep: &[libc::c_int]) {
    let mut from: libc::c_uint = 3;
    for &fd in keep {
        let fd = fd as libc::c_uint;
        if fd > from {
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) };
        }
        from = from.max(fd + 1);
    }
    unsafe { libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// clone_into's arguments as the kernel reads them: the child starts in
    /// the cgroup v2 directory given (root only, where cgroup2 is mounted).
    #[test]
    fn clone_into_starts_the_child_in_the_cgroup() {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mounts.lines().find(|l| l.contains(" - cgroup2 ")).and_then(|l| l.split(' ').nth(4));
        let (Some(mount), true) = (mount, nix::unistd::geteuid().is_root()) else {
            eprintln!("not run: needs root and a cgroup2 mount");
            return;
        };
        let name = format!("bb-runner-test-{}", std::process::id());
        let directory = std::path::Path::new(mount).join(&name);
        std::fs::create_dir(&directory).unwrap();
        let handle = std::fs::File::open(&directory).unwrap();
        // SAFETY: the child only pauses until killed.
        let pid = unsafe { clone_into(0, handle.as_raw_fd()) };
        if pid == 0 {
            loop {
                unsafe { libc::pause() };
            }
        }
        assert!(pid > 0, "{}", std::io::Error::last_os_error());
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let child = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL).unwrap();
        nix::sys::wait::waitpid(child, None).unwrap();
        std::fs::remove_dir(&directory).unwrap();
        assert!(cgroup.lines().any(|l| l.starts_with("0::") && l.ends_with(&name)), "{cgroup}");
    }
}
