//! The sandbox's init process and the action it starts, after `clone`.
//!
//! The runner is multithreaded, and the child is made by a raw `clone`
//! system call, so nothing here may take a lock another thread could have
//! held: no allocation, no glibc wrapper that synchronises threads
//! (`setuid` and friends are called as raw system calls). Everything is
//! prepared by the runner in a [`Plan`] before the clone, and only read
//! here.

use super::plan::{MountStep, Place, Plan, Stage, TREES};
use super::sys;
use std::ffi::CStr;
use std::os::fd::RawFd;

/// The first thing the child runs; never returns.
///
/// # Safety
/// Called once, in the child of a raw `clone`, with the plan the parent
/// prepared (the child's copy of the parent's memory).
pub unsafe fn init_main(plan: &Plan) -> ! {
    unsafe { sys::close_all_but(&plan.keep_fds) };
    let status = match unsafe { set_up(plan) } {
        Ok(()) if plan.probe_only => 0,
        Ok(()) => unsafe { supervise(plan) },
        Err((stage, errno)) => {
            report(plan.report_fd, stage, errno);
            127
        }
    };
    unsafe { libc::_exit(status) }
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
fn check(stage: Stage, result: libc::c_long) -> Result<(), (Stage, i32)> {
    if result < 0 { Err((stage, errno())) } else { Ok(()) }
}

/// Everything before the action starts: wait for the runner's go, mounts,
/// hostname, loopback, directories, user, capabilities.
unsafe fn set_up(plan: &Plan) -> Result<(), (Stage, i32)> {
    let mut go = 0u8;
    // SAFETY: reads one byte into a local.
    if unsafe { libc::read(plan.go_fd, (&raw mut go).cast(), 1) } != 1 {
        return Err((Stage::Go, errno()));
    }
    let mut trees = [-1; TREES];
    for step in &plan.mounts {
        unsafe { mount_step(step, &mut trees) }?;
    }
    if let Some(hostname) = &plan.hostname {
        let bytes = hostname.to_bytes();
        check(Stage::Hostname, unsafe { libc::sethostname(hostname.as_ptr(), bytes.len()) }.into())?;
    }
    if plan.loopback_up {
        unsafe { loopback_up() }?;
    }
    unsafe { enter_directories(plan) }?;
    if let Some((uid, gid)) = plan.switch_user {
        if plan.may_set_groups {
            let groups = [gid];
            check(Stage::User, unsafe { libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()) })?;
        }
        check(Stage::User, unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
        check(Stage::User, unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })?;
    }
    unsafe { drop_capabilities() }
}

unsafe fn mount_step(step: &MountStep, trees: &mut [RawFd; TREES]) -> Result<(), (Stage, i32)> {
    let stage = Stage::Mount;
    let null = std::ptr::null::<libc::c_char>();
    let result: libc::c_long = match step {
        MountStep::Private => unsafe {
            libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null())
        }
        .into(),
        MountStep::Tmpfs { target, options } => unsafe {
            let flags = libc::MS_NOSUID | libc::MS_NODEV;
            libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), flags, options.as_ptr().cast())
        }
        .into(),
        MountStep::Proc { target } => unsafe {
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            libc::mount(c"proc".as_ptr(), target.as_ptr(), c"proc".as_ptr(), flags, std::ptr::null())
        }
        .into(),
        MountStep::BindToItself { target } => unsafe {
            let flags = libc::MS_BIND | libc::MS_REC;
            libc::mount(target.as_ptr(), target.as_ptr(), null, flags, std::ptr::null())
        }
        .into(),
        MountStep::ReadOnly { target, recursive } => unsafe { sys::make_read_only(target, *recursive) },
        MountStep::Mkdir { path } => {
            let result = unsafe { libc::mkdir(path.as_ptr(), 0o755) };
            if result < 0 && errno() != libc::EEXIST {
                return Err((stage, errno()));
            }
            0
        }
        MountStep::CloneTree { source, slot, expect } => {
            let fd = unsafe { sys::open_tree_clone(source) };
            if fd < 0 {
                return Err((stage, errno()));
            }
            if !unsafe { same_inode(fd as RawFd, *expect) } {
                return Err((Stage::Replaced, 0));
            }
            trees[*slot] = fd as RawFd;
            0
        }
        MountStep::MoveTree { slot, target } => unsafe { sys::move_mount_to(trees[*slot], target) },
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
unsafe fn enter_directories(plan: &Plan) -> Result<(), (Stage, i32)> {
    let cwd = |place: &Place| -> Result<(), (Stage, i32)> {
        match place {
            Place::Fd(fd) => check(Stage::Directory, unsafe { libc::fchdir(*fd) }.into()),
            Place::Path(path, expect) => {
                check(Stage::Directory, unsafe { libc::chdir(path.as_ptr()) }.into())?;
                if unsafe { same_inode_path(c".", *expect) } { Ok(()) } else { Err((Stage::Replaced, 0)) }
            }
        }
    };
    match &plan.chroot {
        Some((root, inside)) => {
            cwd(root)?;
            check(Stage::Chroot, unsafe { libc::chroot(c".".as_ptr()) }.into())?;
            cwd(inside)
        }
        None => cwd(&plan.working_directory),
    }
}

unsafe fn same_inode_path(path: &CStr, expect: (u64, u64)) -> bool {
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::lstat(path.as_ptr(), &mut stat) };
    result == 0 && (stat.st_dev, stat.st_ino) == expect
}

/// Brings up `lo` in the new network namespace.
unsafe fn loopback_up() -> Result<(), (Stage, i32)> {
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
unsafe fn drop_capabilities() -> Result<(), (Stage, i32)> {
    let stage = Stage::Capabilities;
    check(stage, unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into())?;
    check(
        stage,
        unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) }.into(),
    )?;
    for cap in 0..=63 {
        // Only CAP_SETPCAP allows this; EINVAL past the last capability.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } == 1 {
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        }
    }
    check(stage, unsafe { sys::clear_capabilities() })
}

/// Runs the action as a child and reaps everything until it exits. TERM
/// from the runner is passed to every process of the action; the action's
/// wait status goes to the runner through the status pipe.
unsafe fn supervise(plan: &Plan) -> i32 {
    let mut signals: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut signals);
        for signal in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut signals, signal);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut());
    }
    if !plan.pid_namespace {
        // Orphans of the action come to us rather than to the host's init.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let action = unsafe { sys::fork() };
    if action < 0 {
        report(plan.report_fd, Stage::Fork, errno());
        return 127;
    }
    if action == 0 {
        unsafe { exec_action(plan) }
    }
    unsafe { libc::close(plan.report_fd) };
    if !plan.pid_namespace {
        // The runner kills this group if it has to kill us.
        unsafe { libc::write(plan.status_fd, (&raw const action).cast(), std::mem::size_of::<i32>()) };
    }
    let everyone = if plan.pid_namespace { -1 } else { -action };
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let signal = unsafe { libc::sigwaitinfo(&signals, &mut info) };
        if signal == libc::SIGCHLD {
            if let Some(status) = unsafe { reap(action) } {
                unsafe { finish(plan, everyone, status) };
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
unsafe fn finish(plan: &Plan, everyone: libc::pid_t, status: i32) {
    unsafe {
        libc::kill(everyone, libc::SIGKILL);
        let mut ignored = 0;
        // With a PID namespace, everyone left is our child; until ECHILD.
        while plan.pid_namespace && libc::waitpid(-1, &mut ignored, 0) > 0 {}
        let mut report = sys::StatusReport { status, rusage: std::mem::zeroed() };
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut report.rusage);
        libc::write(plan.status_fd, (&raw const report).cast(), std::mem::size_of::<sys::StatusReport>());
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

/// The action itself: its own session, default signals, the standard
/// streams, a 022 umask, then exec. Never returns.
unsafe fn exec_action(plan: &Plan) -> ! {
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // The runner ignores SIGPIPE (Rust does); actions expect the default.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::setsid();
        let streams = [(plan.stdin_fd, 0), (plan.stdout_fd, 1), (plan.stderr_fd, 2)];
        for (from, to) in streams {
            if libc::dup2(from, to) < 0 {
                report(plan.report_fd, Stage::Streams, errno());
                libc::_exit(127);
            }
        }
        libc::umask(0o022);
        libc::execve(plan.program.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        report(plan.report_fd, Stage::Exec, errno());
        libc::_exit(127)
    }
}
