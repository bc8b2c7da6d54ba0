//! The runner's side of a sandbox: clone its init (which sets up what does
//! not depend on the action, maybe well before it), map the action's user
//! into the new user namespace, put init in its cgroup; then hand it the
//! action and learn whether it started; then wait for it, stop it, or kill
//! it.

use super::cgroup::{ActionCgroup, Limits};
use super::child;
use super::plan::{ActionPlan, Arena, Generic, Stage};
use super::sys::StatusReport;
use bb_proto::bbrs::sandbox::CgroupResourceUsage;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
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

/// A sandbox whose init waits for its action. Dropped unused, it is killed.
pub struct Prepared {
    parts: Option<Parts>,
}

struct Parts {
    init: Pid,
    control: UnixStream,
    report: File,
    status: File,
    /// Holds the generic plan; the action's is added to it.
    arena: Arena,
    cgroup: Option<ActionCgroup>,
    pid_namespace: bool,
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

/// Clones init with `flags`; it sets up the `generic` plan in `arena` once
/// its user is mapped and it is in `cgroup`. `keep`: descriptors of the
/// runner init must keep (the action's directories, without namespaces).
pub fn prepare(
    mut arena: Arena,
    mut generic: Generic,
    flags: libc::c_int,
    maps: Option<IdMaps>,
    cgroup: Option<ActionCgroup>,
    keep: &[RawFd],
) -> Result<Prepared, StartError> {
    let (control, child_control) = UnixStream::pair()?;
    let (report_read, report_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    generic.control_fd = child_control.as_raw_fd();
    generic.report_fd = report_write.as_raw_fd();
    generic.status_fd = status_write.as_raw_fd();
    let mut fds = vec![generic.stdin_fd, generic.control_fd, generic.report_fd, generic.status_fd];
    fds.extend_from_slice(keep);
    fds.sort_unstable();
    generic.keep_fds = arena.slice(&fds)?;
    generic.keep_len = fds.len();
    generic.pid_namespace = flags & libc::CLONE_NEWPID != 0;
    let pid_namespace = generic.pid_namespace;
    let generic = arena.value(generic)?;
    // SAFETY: the child only makes raw system calls on the shared plan.
    let pid = unsafe { super::sys::clone(flags) };
    if pid == 0 {
        unsafe { child::init_main(generic) }
    }
    if pid < 0 {
        return Err(StartError::Io(std::io::Error::last_os_error()));
    }
    let init = Pid::from_raw(pid);
    drop((child_control, report_write, status_write));
    let parts =
        Parts { init, control, report: report_read, status: status_read, arena, cgroup, pid_namespace };
    let mut prepared = Prepared { parts: Some(parts) };
    let parts = prepared.parts.as_mut().expect("just made");
    let placed =
        maps.map_or(Ok(()), |maps| write_id_maps(pid, &maps))
            .map_err(|e| std::io::Error::new(e.kind(), format!("mapping the action's user: {e}")))
            .and_then(|()| {
                let procs = parts.cgroup.as_ref().map(ActionCgroup::procs_files).unwrap_or_default();
                procs.iter().try_for_each(|procs| std::fs::write(procs, pid.to_string())).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("moving the action into its cgroup: {e}"))
                })
            });
    placed?;
    parts.control.write_all(&[1])?;
    Ok(prepared)
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

/// Why the child stopped, from what it wrote to the report pipe (nothing:
/// it exec'd the action, or finished a probe).
fn read_report(report: &mut File) -> Result<(), StartError> {
    let mut bytes = Vec::new();
    report.read_to_end(&mut bytes)?;
    match <[u8; 8]>::try_from(bytes.as_slice()) {
        Ok(bytes) => {
            let stage = i32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes"));
            let errno = i32::from_ne_bytes(bytes[4..].try_into().expect("4 bytes"));
            Err(StartError::Child(Stage::from_code(stage).unwrap_or(Stage::Go), errno))
        }
        Err(_) => Ok(()),
    }
}

impl Prepared {
    /// Sets up, starts nothing: whether the host allows the plan.
    pub fn probe(mut self) -> Result<(), StartError> {
        let mut parts = self.parts.take().expect("a prepared sandbox has its parts");
        let outcome = read_report(&mut parts.report);
        reap(parts.init);
        if let Some(cgroup) = parts.cgroup.take() {
            cgroup.remove();
        }
        outcome
    }

    /// Sets the limits of the action that will run here.
    pub fn limit(&mut self, limits: Limits) -> std::io::Result<()> {
        match self.parts.as_mut() {
            Some(Parts { cgroup: Some(cgroup), init, .. }) => cgroup.set_limits(limits, init.as_raw()),
            _ => Ok(()),
        }
    }

    /// Starts the action that `write` writes into the arena; returns once
    /// it runs (its program was executed).
    pub fn start(
        mut self,
        write: impl FnOnce(&mut Arena) -> std::io::Result<ActionPlan>,
        stdout: &File,
        stderr: &File,
    ) -> Result<Running, StartError> {
        let mut parts = self.parts.take().expect("a prepared sandbox has its parts");
        if let Err(e) = parts.start(write, stdout, stderr) {
            parts.kill();
            return Err(e);
        }
        let Parts { init, mut status, cgroup, pid_namespace, .. } = parts;
        // Not reaped before the waiter below: the pid is still init's.
        let pidfd = pidfd_open(init)?;
        let mut group = None;
        if !pid_namespace {
            // Init tells the action's process group: nothing else takes
            // everything down with it.
            let mut pid = [0u8; 4];
            status.read_exact(&mut pid)?;
            group = Some(Pid::from_raw(i32::from_ne_bytes(pid)));
        }
        let (send, waiter) = oneshot::channel();
        tokio::task::spawn_blocking(move || wait(init, status, cgroup, send));
        Ok(Running { init: pidfd, group, waiter: Some(waiter), done: false })
    }
}

impl Parts {
    /// Hands init the action.
    fn start(
        &mut self,
        write: impl FnOnce(&mut Arena) -> std::io::Result<ActionPlan>,
        stdout: &File,
        stderr: &File,
    ) -> Result<(), StartError> {
        let plan = write(&mut self.arena)?;
        let address = self.arena.value(plan)? as usize;
        let bytes = address.to_ne_bytes();
        let fds = [stdout.as_raw_fd(), stderr.as_raw_fd()];
        let sent = sendmsg::<()>(
            self.control.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        );
        // A failed send is explained by the report (init failed first).
        let report = read_report(&mut self.report);
        report?;
        sent.map_err(std::io::Error::from)?;
        Ok(())
    }

    fn kill(self) {
        let _ = kill(self.init, Signal::SIGKILL);
        reap(self.init);
        if let Some(cgroup) = self.cgroup {
            cgroup.remove();
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            parts.kill();
        }
    }
}

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
    let exit = if reported {
        // SAFETY: StatusReport is plain data, written whole by init.
        let report = unsafe { std::ptr::read_unaligned(report.as_ptr().cast::<StatusReport>()) };
        Ok(decode(report.status, report.rusage))
    } else {
        wait4(init).map(|(wait_status, rusage)| decode(wait_status, rusage))
    };
    let exit = exit.map(|mut exit| {
        exit.cgroup_usage = cgroup.as_ref().map(|cgroup| {
            let mut usage = cgroup.usage();
            usage.cpu_user_time = usage.cpu_user_time.or(Some(duration(exit.rusage.ru_utime)));
            usage.cpu_system_time = usage.cpu_system_time.or(Some(duration(exit.rusage.ru_stime)));
            usage
        });
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

/// A `timeval` of `rusage` as a protobuf Duration.
pub fn duration(t: libc::timeval) -> prost_types::Duration {
    prost_types::Duration { seconds: t.tv_sec, nanos: (t.tv_usec * 1000) as i32 }
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
        let signal = Signal::try_from(number).ok();
        Exit { exit_code: 128 + i64::from(number), signal, rusage, cgroup_usage: None }
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

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
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
