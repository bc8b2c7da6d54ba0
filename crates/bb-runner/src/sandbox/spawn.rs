//! The runner's side of a sandbox: clone its init, map the action's user
//! into the new user namespace, let init go, and learn whether the action
//! started; then wait for it, stop it, or kill it.

use super::cgroup::ActionCgroup;
use super::child;
use super::plan::{Plan, Stage};
use super::sys::StatusReport;
use bb_proto::bbrs::sandbox::CgroupResourceUsage;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use tokio::sync::oneshot;

/// The user and group the action runs as, mapped to themselves in its user
/// namespace. `privileged`: the runner holds CAP_SETUID and CAP_SETGID
/// (for `run_as`), so the mapping need not be of its own ids.
pub struct IdMaps {
    pub uid: u32,
    pub gid: u32,
    pub privileged: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}: {}", .0.describe(), std::io::Error::from_raw_os_error(*.1))]
    Child(Stage, i32),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl StartError {
    /// The errno of a failed exec, which a shell would report as 126/127.
    pub fn exec_errno(&self) -> Option<i32> {
        match self {
            StartError::Child(Stage::Exec, errno) => Some(*errno),
            _ => None,
        }
    }
}

/// How the action ended.
pub struct Exit {
    pub exit_code: i64,
    pub signal: Option<Signal>,
    /// The action's and everything init reaped.
    pub rusage: libc::rusage,
    /// What its cgroup measured, where it had one.
    pub cgroup_usage: Option<CgroupResourceUsage>,
}

/// A started action. Dropping it kills everything it started.
pub struct Running {
    /// A pidfd of init: signals never reach a process that reused its pid.
    init: OwnedFd,
    /// The action's process group, as the runner sees it, when there is no
    /// PID namespace to take everything down with init.
    group: Option<Pid>,
    waiter: Option<oneshot::Receiver<std::io::Result<Exit>>>,
    done: bool,
}

fn pipe() -> std::io::Result<(File, File)> {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(read), File::from(write)))
}

/// Clones init with `flags` and lets it set up; `Ok` once init is ready to
/// start the action (or exited, for a probe).
fn launch(
    mut plan: Plan,
    flags: libc::c_int,
    maps: Option<IdMaps>,
    cgroup_procs: &[std::path::PathBuf],
) -> Result<(Pid, File), StartError> {
    let (go_read, mut go_write) = pipe()?;
    let (mut report_read, report_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    plan.go_fd = go_read.as_raw_fd();
    plan.report_fd = report_write.as_raw_fd();
    plan.status_fd = status_write.as_raw_fd();
    plan.collect_fds();
    // SAFETY: the child only makes raw system calls on the prepared plan.
    let pid = unsafe { super::sys::clone(flags) };
    if pid == 0 {
        unsafe { child::init_main(&plan) }
    }
    if pid < 0 {
        return Err(StartError::Io(std::io::Error::last_os_error()));
    }
    let init = Pid::from_raw(pid);
    drop((go_read, report_write, status_write));
    let prepared =
        maps.map_or(Ok(()), |maps| write_id_maps(pid, &maps))
            .map_err(|e| std::io::Error::new(e.kind(), format!("mapping the action's user: {e}")))
            .and_then(|()| {
                cgroup_procs.iter().try_for_each(|procs| std::fs::write(procs, pid.to_string())).map_err(
                    |e| std::io::Error::new(e.kind(), format!("moving the action into its cgroup: {e}")),
                )
            });
    if let Err(e) = prepared {
        let _ = kill(init, Signal::SIGKILL);
        reap(init);
        return Err(StartError::Io(e));
    }
    go_write.write_all(&[1])?;
    drop(go_write);
    let mut report = Vec::new();
    report_read.read_to_end(&mut report)?;
    if let Ok(bytes) = <[u8; 8]>::try_from(report.as_slice()) {
        reap(init);
        let stage = i32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes"));
        let errno = i32::from_ne_bytes(bytes[4..].try_into().expect("4 bytes"));
        let stage = Stage::from_code(stage).unwrap_or(Stage::Go);
        return Err(StartError::Child(stage, errno));
    }
    drop(plan);
    Ok((init, status_read))
}

fn write_id_maps(pid: libc::pid_t, maps: &IdMaps) -> std::io::Result<()> {
    let proc = format!("/proc/{pid}");
    if !maps.privileged {
        std::fs::write(format!("{proc}/setgroups"), "deny")?;
    }
    std::fs::write(format!("{proc}/uid_map"), format!("{0} {0} 1\n", maps.uid))?;
    std::fs::write(format!("{proc}/gid_map"), format!("{0} {0} 1\n", maps.gid))
}

fn reap(pid: Pid) {
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Sets up a sandbox that starts nothing: whether the host allows it.
pub fn probe(
    plan: Plan,
    flags: libc::c_int,
    maps: Option<IdMaps>,
    cgroup_procs: &[std::path::PathBuf],
) -> Result<(), StartError> {
    let (init, _) = launch(plan, flags, maps, cgroup_procs)?;
    reap(init);
    Ok(())
}

/// Starts the action; returns once it runs (its program was executed).
pub fn start(
    plan: Plan,
    flags: libc::c_int,
    maps: Option<IdMaps>,
    cgroup: Option<ActionCgroup>,
) -> Result<Running, StartError> {
    let pid_namespace = flags & libc::CLONE_NEWPID != 0;
    let procs = cgroup.as_ref().map(ActionCgroup::procs_files).unwrap_or_default();
    let launched = launch(plan, flags, maps, &procs);
    let (init, mut status) = match launched {
        Ok(launched) => launched,
        Err(e) => {
            if let Some(cgroup) = cgroup {
                cgroup.remove();
            }
            return Err(e);
        }
    };
    // Not reaped before the waiter below: the pid is still init's.
    let pidfd = pidfd_open(init)?;
    let mut group = None;
    if !pid_namespace {
        let mut pid = [0u8; 4];
        status.read_exact(&mut pid)?;
        group = Some(Pid::from_raw(i32::from_ne_bytes(pid)));
    }
    let (send, waiter) = oneshot::channel();
    tokio::task::spawn_blocking(move || wait(init, status, cgroup, send));
    Ok(Running { init: pidfd, group, waiter: Some(waiter), done: false })
}

/// Waits for init, then reads the action's wait status it left.
/// The waiter, on a blocking thread: the action's end as init reports it
/// (or, if init was killed, as init's own), sent as soon as it is known;
/// then init is reaped (the namespaces' teardown) and the cgroup removed,
/// after the runner has answered.
fn wait(
    init: Pid,
    mut status: File,
    cgroup: Option<ActionCgroup>,
    send: oneshot::Sender<std::io::Result<Exit>>,
) {
    let mut report = [0u8; std::mem::size_of::<StatusReport>()];
    let reported = status.read_exact(&mut report).is_ok();
    let reaped = if reported { None } else { Some(wait4(init)) };
    let exit = match reaped {
        // SAFETY: StatusReport is plain data, written whole by init.
        None => Ok(unsafe { std::ptr::read_unaligned(report.as_ptr().cast::<StatusReport>()) })
            .map(|r| decode(r.status, r.rusage)),
        Some(Ok((wait_status, rusage))) => Ok(decode(wait_status, rusage)),
        Some(Err(e)) => Err(e),
    };
    let exit = exit.map(|mut exit| {
        exit.cgroup_usage = cgroup.as_ref().map(ActionCgroup::usage);
        exit
    });
    let _ = send.send(exit);
    if reported {
        let _ = wait4(init);
    }
    if let Some(cgroup) = cgroup {
        cgroup.remove();
    }
}

fn wait4(pid: Pid) -> std::io::Result<(i32, libc::rusage)> {
    let mut wait_status = 0;
    // SAFETY: rusage is plain data, filled in by the kernel.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals.
        if unsafe { libc::wait4(pid.as_raw(), &mut wait_status, 0, &mut rusage) } == pid.as_raw() {
            return Ok((wait_status, rusage));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn decode(status: i32, rusage: libc::rusage) -> Exit {
    if libc::WIFSIGNALED(status) {
        let number = libc::WTERMSIG(status);
        Exit {
            exit_code: 128 + i64::from(number),
            signal: Signal::try_from(number).ok(),
            rusage,
            cgroup_usage: None,
        }
    } else {
        Exit { exit_code: i64::from(libc::WEXITSTATUS(status)), signal: None, rusage, cgroup_usage: None }
    }
}

impl Running {
    /// Waits for the action to exit; may be called again after a timeout.
    pub async fn wait(&mut self) -> std::io::Result<Exit> {
        let waiter = self.waiter.as_mut().ok_or_else(|| std::io::Error::other("already waited for"))?;
        let exit = waiter.await.map_err(|_| std::io::Error::other("the waiter is gone"))?;
        self.waiter = None;
        self.done = true;
        exit
    }

    /// Asks every process of the action to stop (SIGTERM, through init).
    pub fn terminate(&self) {
        if !self.done {
            signal(&self.init, Signal::SIGTERM);
        }
    }

    /// Kills everything the action started.
    pub fn kill(&self) {
        if let Some(group) = self.group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        if !self.done {
            signal(&self.init, Signal::SIGKILL);
        }
    }
}

fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: a raw system call; the fd it returns is ours to own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// ESRCH (init is gone) is the usual and fine outcome.
fn signal(pidfd: &OwnedFd, signal: Signal) {
    // SAFETY: a raw system call on a descriptor we own.
    unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal as libc::c_int, 0usize, 0u32)
    };
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
