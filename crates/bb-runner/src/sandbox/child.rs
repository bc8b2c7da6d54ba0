//! The sandbox's init process and the action it starts, after `clone`.
//!
//! The child is made by a raw `clone` system call from the runner's
//! zygote, itself a fork of the runner ([`super::zygote`]), so nothing here
//! may take a lock another thread could have held: no allocation, no glibc
//! wrapper that synchronises threads (`setuid` and friends are called as
//! raw system calls). What the child does is written by the runner into
//! shared memory ([`super::plan`]) and only read here: the [`Generic`]
//! part before the clone, the [`ActionPlan`] when the action is known
//! (maybe long after).

use super::plan::{ActionPlan, Generic, MountStep, Place, Stage, TREES};
use super::sys;
use std::ffi::CStr;
use std::os::fd::RawFd;

type Failure = (Stage, i32);

/// The mount steps at `start` (null when there are none).
unsafe fn steps<'a>(start: *const MountStep, len: usize) -> &'a [MountStep] {
    if start.is_null() { &[] } else { unsafe { std::slice::from_raw_parts(start, len) } }
}

/// The first thing the child runs; never returns.
///
/// # Safety
/// Called once, in the child of a raw `clone`, with a plan in memory shared
/// with the runner.
unsafe fn init_main(generic: *const Generic) -> ! {
    let generic = unsafe { &*generic };
    // Named apart from the runner it was cloned from (`ps`, `pgrep -x`).
    unsafe { libc::prctl(libc::PR_SET_NAME, c"bb-sandbox".as_ptr(), 0, 0, 0) };
    unsafe { sys::close_all_but(std::slice::from_raw_parts(generic.keep_fds, generic.keep_len)) };
    let mut trees = [-1; TREES];
    let status = match unsafe { run(generic, &mut trees) } {
        Ok(status) => status,
        Err((stage, errno)) => {
            report(generic.report_fd, stage, errno);
            127
        }
    };
    unsafe { libc::_exit(status) }
}

/// What the launcher left: its pid (to reap), and init's pid (negative if
/// it failed, having reported why) and whether init started in its v2
/// cgroup.
pub struct Launched {
    pub launcher: libc::pid_t,
    pub init: libc::pid_t,
    pub in_cgroup: bool,
}

/// Starts the launcher and returns once it is done: it shares the caller's
/// memory (so its start copies nothing) and the caller waits meanwhile. It
/// enters the action's cgroup, joins the kept namespaces, and clones init
/// into new ones of the other kinds (`flags`) as the caller's child.
///
/// # Safety
/// `generic` is a plan in memory shared with the child; called in the
/// zygote ([`super::zygote`]).
pub unsafe fn launch(generic: *const Generic, flags: libc::c_int) -> Launched {
    struct Start {
        generic: *const Generic,
        flags: libc::c_int,
        init: libc::pid_t,
        in_cgroup: bool,
    }
    extern "C" fn entry(start: *mut libc::c_void) -> libc::c_int {
        let start = unsafe { &mut *start.cast::<Start>() };
        (start.init, start.in_cgroup) = unsafe { launcher_main(start.generic, start.flags) };
        unsafe { libc::_exit(0) }
    }
    let mut start = Start { generic, flags, init: -1, in_cgroup: false };
    // The launcher's stack; init, a copy of the caller's memory, goes on
    // from it into its own copy of what lies beneath. 16-byte aligned.
    let mut stack = [0u128; 4096];
    let top = stack.as_mut_ptr_range().end.cast::<libc::c_void>();
    let clone_flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    let launcher = unsafe { libc::clone(entry, top, clone_flags, (&raw mut start).cast()) };
    Launched { launcher, init: start.init, in_cgroup: start.in_cgroup }
}

/// Init's pid and whether it is in its v2 cgroup; in init, never returns.
unsafe fn launcher_main(generic: *const Generic, flags: libc::c_int) -> (libc::pid_t, bool) {
    let plan = unsafe { &*generic };
    if let Err((stage, errno)) = unsafe { enter_cgroup_v1(plan).and_then(|()| join_namespaces(plan)) } {
        report(plan.report_fd, stage, errno);
        return (-1, false);
    }
    let flags = flags | libc::CLONE_PARENT;
    // SAFETY: init only makes raw system calls; its parent is the zygote.
    let mut init = unsafe { sys::clone_into(flags, plan.cgroup_fd) };
    let mut in_cgroup = plan.cgroup_fd >= 0;
    if init < 0 && errno() == libc::ENOSYS {
        // clone3 refused by a seccomp filter (systemd's RestrictNamespaces=,
        // container runtimes): the runner moves init into its cgroup.
        init = unsafe { sys::clone(flags) };
        in_cgroup = false;
    }
    if init == 0 {
        unsafe { init_main(generic) }
    }
    if init < 0 {
        report(plan.report_fd, Stage::Fork, errno());
    }
    (init, in_cgroup)
}

/// Moves this thread (the launcher) into each v1 cgroup of the action.
unsafe fn enter_cgroup_v1(plan: &Generic) -> Result<(), Failure> {
    let mut files = plan.cgroup_tasks;
    while !files.is_null() && !unsafe { *files }.is_null() {
        let fd = unsafe { libc::open(*files, libc::O_WRONLY | libc::O_CLOEXEC) };
        check(Stage::Cgroup, fd.into())?;
        let written = unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) };
        let error = errno();
        unsafe { libc::close(fd) };
        if written != 1 {
            return Err((Stage::Cgroup, error));
        }
        files = unsafe { files.add(1) };
    }
    Ok(())
}

unsafe fn join_namespaces(plan: &Generic) -> Result<(), Failure> {
    for (fd, kind) in [(plan.join_user_fd, libc::CLONE_NEWUSER), (plan.join_network_fd, libc::CLONE_NEWNET)] {
        if fd >= 0 {
            check(Stage::Join, unsafe { sys::join(fd, kind) })?;
        }
    }
    Ok(())
}

unsafe fn run(generic: &Generic, trees: &mut [RawFd; TREES]) -> Result<i32, Failure> {
    unsafe { prepare(generic, trees) }?;
    if generic.probe_only {
        return Ok(0);
    }
    let (action, stdout, stderr) = unsafe { receive(generic.control_fd) }?;
    let action = unsafe { &*action };
    unsafe { set_up(generic, action, trees) }?;
    Ok(unsafe { supervise(generic, action, stdout, stderr) })
}

/// Writes why the start failed for the runner to read.
fn report(fd: RawFd, stage: Stage, errno: i32) {
    let message = [stage as i32, errno];
    // SAFETY: writes 8 bytes from a local array.
    unsafe { libc::write(fd, message.as_ptr().cast(), std::mem::size_of_val(&message)) };
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `Ok` when a system call's result says it worked.
fn check(stage: Stage, result: libc::c_long) -> Result<(), Failure> {
    if result < 0 { Err((stage, errno())) } else { Ok(()) }
}

/// What does not depend on the action: once the runner has mapped the
/// user, the generic mounts, the hostname and the loopback interface.
unsafe fn prepare(generic: &Generic, trees: &mut [RawFd; TREES]) -> Result<(), Failure> {
    let mut mapped = 0u8;
    // SAFETY: reads one byte into a local.
    if unsafe { libc::read(generic.control_fd, (&raw mut mapped).cast(), 1) } != 1 {
        return Err((Stage::Go, errno()));
    }
    for step in unsafe { steps(generic.mounts, generic.mounts_len) } {
        unsafe { mount_step(step, trees) }?;
    }
    if !generic.hostname.is_null() {
        let length = unsafe { CStr::from_ptr(generic.hostname) }.to_bytes().len();
        check(Stage::Hostname, unsafe { libc::sethostname(generic.hostname, length) }.into())?;
    }
    if generic.loopback_up {
        unsafe { loopback_up() }?;
    }
    unsafe { limit_capabilities(generic.bounding_set) }
}

/// Waits for the action: its plan's address, and its stdout and stderr.
unsafe fn receive(control: RawFd) -> Result<(*const ActionPlan, RawFd, RawFd), Failure> {
    let mut address = 0usize;
    let mut iov = libc::iovec { iov_base: (&raw mut address).cast(), iov_len: std::mem::size_of::<usize>() };
    // Room for two descriptors, aligned for cmsghdr.
    let mut control_buffer = [0u64; 8];
    let mut message = sys::message_header(&mut iov, &mut control_buffer);
    let received = unsafe { libc::recvmsg(control, &mut message, libc::MSG_CMSG_CLOEXEC) };
    if received != std::mem::size_of::<usize>() as isize {
        return Err((Stage::Go, errno()));
    }
    let header = unsafe { libc::CMSG_FIRSTHDR(&message) };
    if header.is_null() || unsafe { (*header).cmsg_type } != libc::SCM_RIGHTS {
        return Err((Stage::Streams, libc::EBADF));
    }
    let fds = unsafe { libc::CMSG_DATA(header) }.cast::<RawFd>();
    let (stdout, stderr) = unsafe { (fds.read_unaligned(), fds.add(1).read_unaligned()) };
    Ok((address as *const ActionPlan, stdout, stderr))
}

/// What depends on the action: its mounts, its directories, then the
/// user switch and dropping every capability.
unsafe fn set_up(generic: &Generic, action: &ActionPlan, trees: &mut [RawFd; TREES]) -> Result<(), Failure> {
    for step in unsafe { steps(action.mounts, action.mounts_len) } {
        unsafe { mount_step(step, trees) }?;
    }
    unsafe { enter_directories(action) }?;
    if generic.switch_user {
        let (uid, gid) = (generic.uid, generic.gid);
        if generic.may_set_groups {
            let groups = [gid];
            check(Stage::User, unsafe { libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()) })?;
        }
        check(Stage::User, unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
        check(Stage::User, unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })?;
    }
    unsafe { drop_capabilities() }
}

unsafe fn mount_step(step: &MountStep, trees: &mut [RawFd; TREES]) -> Result<(), Failure> {
    let stage = Stage::Mount;
    let null = std::ptr::null::<libc::c_char>();
    let result: libc::c_long = match *step {
        MountStep::Private => unsafe {
            libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null())
        }
        .into(),
        MountStep::Tmpfs { target, options } => unsafe {
            let flags = libc::MS_NOSUID | libc::MS_NODEV;
            libc::mount(c"tmpfs".as_ptr(), target, c"tmpfs".as_ptr(), flags, options.cast())
        }
        .into(),
        MountStep::Proc { target } => unsafe {
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            libc::mount(c"proc".as_ptr(), target, c"proc".as_ptr(), flags, std::ptr::null())
        }
        .into(),
        MountStep::BindToItself { target } => {
            unsafe { libc::mount(target, target, null, libc::MS_BIND | libc::MS_REC, std::ptr::null()) }
                .into()
        }
        MountStep::ReadOnly { target, recursive } => unsafe { sys::make_read_only(target, recursive) },
        MountStep::Mkdir { path } => {
            let result = unsafe { libc::mkdir(path, 0o755) };
            if result < 0 && errno() != libc::EEXIST {
                return Err((stage, errno()));
            }
            0
        }
        MountStep::CloneTree { source, slot, expect, recursive } => {
            let fd = unsafe { sys::open_tree_clone(source, recursive) };
            if fd < 0 {
                return Err((stage, errno()));
            }
            if !unsafe { same_inode(fd as RawFd, expect) } {
                return Err((Stage::Replaced, 0));
            }
            trees[slot] = fd as RawFd;
            0
        }
        MountStep::MoveTree { slot, target } => unsafe { sys::move_mount_to(trees[slot], target) },
    };
    check(stage, result)
}

/// Whether `fd` is the file the runner opened (device and inode).
unsafe fn same_inode(fd: RawFd, expect: (u64, u64)) -> bool {
    // SAFETY: fstat fills a local.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::fstat(fd, &mut stat) };
    result == 0 && (stat.st_dev, stat.st_ino) == expect
}

/// Enters the working directory (and the chroot), by path in the new mount
/// namespace, checking each is the directory the runner opened: a path
/// that leads elsewhere (a symlink made after the check) is refused.
unsafe fn enter_directories(action: &ActionPlan) -> Result<(), Failure> {
    let cwd = |place: Place| -> Result<(), Failure> {
        match place {
            Place::Fd(fd) => check(Stage::Directory, unsafe { libc::fchdir(fd) }.into()),
            Place::Path(path, expect) => {
                check(Stage::Directory, unsafe { libc::chdir(path) }.into())?;
                if unsafe { same_inode_path(c".", expect) } { Ok(()) } else { Err((Stage::Replaced, 0)) }
            }
        }
    };
    if action.chroot {
        cwd(action.chroot_root)?;
        check(Stage::Chroot, unsafe { libc::chroot(c".".as_ptr()) }.into())?;
        cwd(action.chroot_inside)
    } else {
        cwd(action.working_directory)
    }
}

unsafe fn same_inode_path(path: &CStr, expect: (u64, u64)) -> bool {
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::lstat(path.as_ptr(), &mut stat) };
    result == 0 && (stat.st_dev, stat.st_ino) == expect
}

/// Brings up `lo` in the new network namespace.
unsafe fn loopback_up() -> Result<(), Failure> {
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(Stage::Network, socket.into())?;
    let mut request = sys::InterfaceFlags::loopback();
    let mut result = unsafe { libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) };
    if result == 0 {
        request.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        result = unsafe { libc::ioctl(socket, libc::SIOCSIFFLAGS, &request) };
    }
    let failed = (result < 0).then(errno);
    unsafe { libc::close(socket) };
    failed.map_or(Ok(()), |e| Err((Stage::Network, e)))
}

/// Empties every capability set, the bounding set included, and sets
/// no_new_privs: nothing the action execs can gain a privilege.
unsafe fn drop_capabilities() -> Result<(), Failure> {
    check(Stage::Capabilities, unsafe { sys::clear_capabilities() })
}

/// What nothing the action runs may ever gain: no_new_privs, and empty
/// ambient and bounding sets (`bounding`: the capabilities in it). The
/// effective set, needed for the action's own mounts, is emptied later
/// ([`drop_capabilities`]).
unsafe fn limit_capabilities(bounding: u64) -> Result<(), Failure> {
    let stage = Stage::Capabilities;
    check(stage, unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into())?;
    check(
        stage,
        unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) }.into(),
    )?;
    for cap in (0..64).filter(|cap| bounding & 1 << cap != 0) {
        // Only CAP_SETPCAP allows this (without namespaces the runner has
        // said at start whether it could empty its own); EINVAL past the
        // last capability.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    Ok(())
}

/// Runs the action as a child and reaps everything until it exits. TERM
/// from the runner is passed to every process of the action; the action's
/// wait status goes to the runner through the status pipe.
unsafe fn supervise(generic: &Generic, action: &ActionPlan, stdout: RawFd, stderr: RawFd) -> i32 {
    let mut signals: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut signals);
        for signal in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut signals, signal);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut());
    }
    if !generic.pid_namespace {
        // Orphans of the action come to us rather than to the host's init.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let child = unsafe { spawn_action(generic, action, stdout, stderr) };
    if child < 0 {
        report(generic.report_fd, Stage::Fork, errno());
        return 127;
    }
    unsafe {
        libc::close(generic.report_fd);
        libc::close(stdout);
        libc::close(stderr);
    }
    if !generic.pid_namespace {
        // The runner kills this group if it has to kill us.
        unsafe { libc::write(generic.status_fd, (&raw const child).cast(), std::mem::size_of::<i32>()) };
    }
    let everyone = if generic.pid_namespace { -1 } else { -child };
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let signal = unsafe { libc::sigwaitinfo(&signals, &mut info) };
        if signal == libc::SIGCHLD {
            if let Some(status) = unsafe { reap(child) } {
                unsafe { finish(generic, everyone, status) };
                return 0;
            }
        } else if signal > 0 {
            unsafe { libc::kill(everyone, signal) };
        }
    }
}

/// The action exited: kill and reap everything it left, then tell the
/// runner its wait status and the resource usage of all of it. The runner
/// answers from that; the namespaces are torn down as init exits, after.
unsafe fn finish(generic: &Generic, everyone: libc::pid_t, status: i32) {
    unsafe {
        libc::kill(everyone, libc::SIGKILL);
        let mut ignored = 0;
        // With a PID namespace, everyone left is our child; until ECHILD.
        while generic.pid_namespace && libc::waitpid(-1, &mut ignored, 0) > 0 {}
        let mut report = sys::StatusReport { status, rusage: std::mem::zeroed() };
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut report.rusage);
        libc::write(generic.status_fd, (&raw const report).cast(), std::mem::size_of::<sys::StatusReport>());
    }
}

/// Reaps every child that exited; the action's wait status once it did.
unsafe fn reap(action: libc::pid_t) -> Option<i32> {
    let mut action_status = None;
    loop {
        let mut status = 0;
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return action_status;
        }
        if pid == action {
            action_status = Some(status);
        }
    }
}

/// What the action's process needs, on init's stack.
struct Start<'a> {
    generic: &'a Generic,
    action: &'a ActionPlan,
    stdout: RawFd,
    stderr: RawFd,
}

/// Starts the action as init's child the way posix_spawn does: sharing
/// init's memory (no page tables to copy; init waits) until it execs.
unsafe fn spawn_action(generic: &Generic, action: &ActionPlan, stdout: RawFd, stderr: RawFd) -> libc::pid_t {
    extern "C" fn entry(start: *mut libc::c_void) -> libc::c_int {
        let start = unsafe { &*start.cast::<Start>() };
        unsafe { exec_action(start.generic, start.action, start.stdout, start.stderr) }
    }
    let mut start = Start { generic, action, stdout, stderr };
    // The child's stack while it shares init's memory; 16-byte aligned.
    let mut stack = [0u128; 4096];
    let top = stack.as_mut_ptr_range().end.cast::<libc::c_void>();
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    unsafe { libc::clone(entry, top, flags, (&raw mut start).cast()) }
}

/// The action itself: its own session, default signals, the standard
/// streams, a 022 umask, then exec. Never returns.
unsafe fn exec_action(generic: &Generic, action: &ActionPlan, stdout: RawFd, stderr: RawFd) -> ! {
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // The runner ignores SIGPIPE (Rust does); actions expect the default.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::setsid();
        for (from, to) in [(generic.stdin_fd, 0), (stdout, 1), (stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                report(generic.report_fd, Stage::Streams, errno());
                libc::_exit(127);
            }
        }
        libc::umask(0o022);
        libc::execve(action.program, action.argv, action.envp);
        report(generic.report_fd, Stage::Exec, errno());
        libc::_exit(127)
    }
}
