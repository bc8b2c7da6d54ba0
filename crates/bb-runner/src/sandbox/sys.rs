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
