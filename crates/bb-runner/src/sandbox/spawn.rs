//! The runner's side of a sandbox: clone its init (which sets up what does
//! not depend on the action, maybe well before it), map the action's user
//! into the new user namespace, put init in its cgroup; then hand it the
//! action and learn whether it started; then wait for it, stop it, or kill
//! it.

use super::cgroup::{ActionCgroup, Limits};
use super::child;
use super::kept::{Kept, NetworkLease};
use super::plan::{ActionPlan, Arena, Generic, Stage};
use super::sys::StatusReport;
use bb_proto::bbrs::sandbox::CgroupResourceUsage;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Namespaces a sandbox joins rather than makes: the runner's user
/// namespace, and a network namespace lent to it (without one, a new one
/// is made where the flags ask, and kept afterwards).
pub struct Join {
    pub kept: Arc<Kept>,
    pub network: Option<NetworkLease>,
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
    /// Given back once init is reaped.
    network: Option<NetworkLease>,
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

/// Clones init with `flags` through a launcher, which first enters
/// `cgroup` and joins `join`; init sets up the `generic` plan in `arena`.
/// `keep`: descriptors of the runner init must keep (the action's
/// directories, without namespaces).
pub fn prepare(
    mut arena: Arena,
    mut generic: Generic,
    flags: libc::c_int,
    join: Option<Join>,
    cgroup: Option<ActionCgroup>,
    keep: &[RawFd],
) -> Result<Prepared, StartError> {
    let (control, child_control) = UnixStream::pair()?;
    let (report_read, report_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    let (mut launch_read, launch_write) = pipe()?;
    generic.control_fd = child_control.as_raw_fd();
    generic.report_fd = report_write.as_raw_fd();
    generic.status_fd = status_write.as_raw_fd();
    generic.launch_fd = launch_write.as_raw_fd();
    if let Some(join) = &join {
        generic.join_user_fd = join.kept.user().as_raw_fd();
        generic.join_network_fd = join.network.as_ref().map_or(-1, |lease| lease.fd().as_raw_fd());
    }
    let v2_cgroup = match cgroup.as_ref().and_then(ActionCgroup::v2_directory) {
        Some(directory) => Some(File::open(directory)?),
        None => None,
    };
    generic.cgroup_fd = v2_cgroup.as_ref().map_or(-1, |d| d.as_raw_fd());
    if let Some(cgroup) = &cgroup {
        let files: Vec<Vec<u8>> =
            cgroup.v1_tasks_files().into_iter().map(|f| f.into_os_string().into_vec()).collect();
        generic.cgroup_tasks = arena.strings(&files)?;
    }
    let mut fds = vec![generic.stdin_fd, generic.control_fd, generic.report_fd, generic.status_fd];
    fds.extend_from_slice(keep);
    fds.sort_unstable();
    generic.keep_fds = arena.slice(&fds)?;
    generic.keep_len = fds.len();
    generic.pid_namespace = flags & libc::CLONE_NEWPID != 0;
    let pid_namespace = generic.pid_namespace;
    let generic = arena.value(generic)?;
    // SAFETY: the children only make raw system calls on the shared plan.
    let launcher = unsafe { child::launch(generic, flags) };
    if launcher < 0 {
        return Err(StartError::Io(std::io::Error::last_os_error()));
    }
    drop((child_control, report_write, status_write, launch_write, v2_cgroup));
    let mut report = report_read;
    let (init, in_cgroup) = launched_init(Pid::from_raw(launcher), &mut launch_read, &mut report)?;
    let parts = Parts {
        init: Pid::from_raw(init),
        control,
        report,
        status: status_read,
        arena,
        cgroup,
        network: None,
        pid_namespace,
    };
    let mut prepared = Prepared { parts: Some(parts) };
    let parts = prepared.parts.as_mut().expect("just made");
    if let Some(Join { kept, network }) = join {
        parts.network = match network {
            Some(lease) => Some(lease),
            None if flags & libc::CLONE_NEWNET != 0 => Some(kept.adopt_network(init)?),
            None => None,
        };
    }
    if let (Some(directory), false) = (parts.cgroup.as_ref().and_then(ActionCgroup::v2_directory), in_cgroup)
    {
        std::fs::write(directory.join("cgroup.procs"), init.to_string())
            .map_err(|e| std::io::Error::new(e.kind(), format!("moving the action into its cgroup: {e}")))?;
    }
    parts.control.write_all(&[1])?;
    Ok(prepared)
}

/// Init's pid, and whether it started in its v2 cgroup, as the launcher
/// tells them; the launcher is reaped.
fn launched_init(
    launcher: Pid,
    launch: &mut File,
    report: &mut File,
) -> Result<(libc::pid_t, bool), StartError> {
    let mut told = [0u8; 8];
    let read = launch.read_exact(&mut told);
    reap(launcher);
    if read.is_err() {
        read_report(report)?;
        return Err(StartError::Io(std::io::Error::other(
            "the sandbox's launcher ended without starting it",
        )));
    }
    let pid = libc::pid_t::from_ne_bytes(told[..4].try_into().expect("4 bytes"));
    Ok((pid, told[4..] != [0; 4]))
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
        parts.kill();
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
        let Parts { init, mut status, cgroup, network, pid_namespace, .. } = parts;
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
        tokio::task::spawn_blocking(move || wait(init, status, cgroup, network, send));
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
        drop(self.network);
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
/// then init is reaped (the namespaces' teardown: every other process of
/// the sandbox is gone once init is), the cgroup removed and the network
/// namespace given back, after the runner has answered.
fn wait(
    init: Pid,
    mut status: File,
    cgroup: Option<ActionCgroup>,
    network: Option<NetworkLease>,
    send: oneshot::Sender<std::io::Result<Exit>>,
) {
    let mut report = [0u8; std::mem::size_of::<StatusReport>()];
    let reported = status.read_exact(&mut report).is_ok();
    let (exit, mut reaped) = if reported {
        // SAFETY: StatusReport is plain data, written whole by init.
        let report = unsafe { std::ptr::read_unaligned(report.as_ptr().cast::<StatusReport>()) };
        (Ok(decode(report.status, report.rusage)), false)
    } else {
        let waited = wait4(init);
        let reaped = waited.is_ok();
        (waited.map(|(wait_status, rusage)| decode(wait_status, rusage)), reaped)
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
        reaped = wait4(init).is_ok();
    }
    if let Some(cgroup) = cgroup {
        cgroup.remove();
    }
    if !reaped && let Some(network) = network {
        network.discard();
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
