//! The runner's side of a sandbox: have its init cloned (by the zygote,
//! [`super::zygote`]; init sets up what does not depend on the action,
//! maybe well before it), put init in its cgroup; then hand it the action
//! and learn whether it started; then wait for it, stop it, or kill it.
//! Init is the zygote's child: the runner holds a pidfd of it, and learns
//! from the zygote when it is reaped.

use super::cgroup::{ActionCgroup, Limits};
use super::kept::{Kept, NetworkLease};
use super::plan::{ActionPlan, Arena, Generic, Stage};
use super::running::{Aftermath, Running, on_runtime, reaped, set_nonblocking, signal};
use super::zygote::Zygote;
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg,
    socketpair,
};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

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

/// A sandbox whose init waits for its action. Dropped unused, it is killed.
pub struct Prepared {
    parts: Option<Parts>,
}

struct Parts {
    init: Pid,
    /// A pidfd of init: signals never reach a process that reused its pid.
    pidfd: OwnedFd,
    /// The zygote's socket for this sandbox: init's wait status once it is
    /// reaped.
    reaper: OwnedFd,
    control: UnixStream,
    /// Why init failed, if it did; its end (nothing in it) once the action
    /// runs. Taken when the action is handed over.
    report: Option<File>,
    status: File,
    /// Holds the generic plan; the action's is added to it.
    arena: Arena,
    cgroup: Option<ActionCgroup>,
    /// Given back once init is reaped.
    network: Option<NetworkLease>,
    pid_namespace: bool,
}

fn pipe() -> std::io::Result<(File, File)> {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(read), File::from(write)))
}

/// What a sandbox is made of.
pub struct Plan<'a> {
    pub arena: Arena,
    pub generic: Generic,
    pub flags: libc::c_int,
    pub join: Option<Join>,
    pub cgroup: Option<ActionCgroup>,
    /// Descriptors of the runner init must keep (the action's directories,
    /// without namespaces).
    pub keep: &'a [RawFd],
}

/// Has `zygote` clone init with the plan's flags through a launcher, which
/// first enters its cgroup and joins its namespaces; init sets up the
/// generic plan.
pub fn prepare(plan: Plan<'_>, zygote: &Zygote) -> Result<Prepared, StartError> {
    let Plan { mut arena, mut generic, flags, join, cgroup, keep } = plan;
    let (control, child_control) = UnixStream::pair()?;
    let (report_read, report_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    let (reaper, reaper_child) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(std::io::Error::from)?;
    generic.control_fd = child_control.as_raw_fd();
    generic.report_fd = report_write.as_raw_fd();
    generic.status_fd = status_write.as_raw_fd();
    generic.reaper_fd = reaper_child.as_raw_fd();
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
    // What the zygote is given: what init keeps, and the launcher's own.
    fds.extend([generic.reaper_fd, generic.join_user_fd, generic.join_network_fd, generic.cgroup_fd]);
    fds.retain(|fd| *fd >= 0);
    let generic = arena.value(generic)?;
    zygote.launch(&arena, generic, flags, &fds)?;
    drop((child_control, report_write, status_write, reaper_child, v2_cgroup));
    let mut report = report_read;
    let (init, pidfd, in_cgroup) = launched_init(&reaper, &mut report)?;
    let parts = Parts {
        init,
        pidfd,
        reaper,
        control,
        report: Some(report),
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
            None if flags & libc::CLONE_NEWNET != 0 => Some(kept.adopt_network(init.as_raw())?),
            None => None,
        };
    }
    if let (Some(directory), false) = (parts.cgroup.as_ref().and_then(ActionCgroup::v2_directory), in_cgroup)
    {
        std::fs::write(directory.join("cgroup.procs"), init.to_string())
            .map_err(|e| std::io::Error::new(e.kind(), format!("moving the action into its cgroup: {e}")))?;
    }
    // What was done by pid reached init if it still lives (its pid is not
    // free before the zygote reaps it).
    parts.check_alive()?;
    parts.control.write_all(&[1])?;
    Ok(prepared)
}

/// Init's pid, a pidfd of it, and whether it started in its v2 cgroup, as
/// the zygote tells them.
fn launched_init(reaper: &OwnedFd, report: &mut File) -> Result<(Pid, OwnedFd, bool), StartError> {
    let mut told = [0u8; 8];
    let mut space = nix::cmsg_space!(RawFd);
    let received = {
        let mut iov = [IoSliceMut::new(&mut told)];
        recvmsg::<()>(reaper.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(std::io::Error::from)
            .and_then(|message| {
                let pidfd = message.cmsgs().map_err(std::io::Error::from)?.find_map(|c| match c {
                    ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                });
                // SAFETY: a descriptor just received, nobody else's.
                let pidfd = pidfd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
                Ok((message.bytes, pidfd))
            })
    };
    match received {
        Ok((8, Some(pidfd))) => {
            let pid = libc::pid_t::from_ne_bytes(told[..4].try_into().expect("4 bytes"));
            Ok((Pid::from_raw(pid), pidfd, told[4..] != [0; 4]))
        }
        _ => {
            // What the launcher reported is there already; an init it may
            // have started holds the pipe open, waiting for the runner.
            set_nonblocking(report)?;
            let mut bytes = [0u8; 8];
            let read = report.read(&mut bytes).unwrap_or(0);
            decode_report(&bytes[..read])?;
            Err(StartError::Io(std::io::Error::other("the sandbox's zygote ended without starting it")))
        }
    }
}

/// Why the child stopped, from what it wrote to the report pipe (nothing:
/// it exec'd the action, or finished a probe).
fn read_report(report: &mut File) -> Result<(), StartError> {
    let mut bytes = Vec::new();
    report.read_to_end(&mut bytes)?;
    decode_report(&bytes)
}

/// The same, read on the runtime: the runner's one RPC thread goes on
/// meanwhile (init lays out the action's mounts, then spawns it).
async fn read_report_async(report: File) -> Result<(), StartError> {
    let report = on_runtime(report)?;
    let mut bytes = Vec::new();
    loop {
        let mut ready = report.readable().await?;
        match ready.try_io(|pipe| pipe.get_ref().read_to_end(&mut bytes)) {
            Ok(Ok(_)) => return decode_report(&bytes),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_would_block) => {}
        }
    }
}

fn decode_report(bytes: &[u8]) -> Result<(), StartError> {
    match <[u8; 8]>::try_from(bytes) {
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
        let outcome = match parts.report.as_mut() {
            Some(report) => read_report(report),
            None => Ok(()),
        };
        parts.kill();
        outcome
    }

    /// Sets the limits of the action that will run here.
    pub fn limit(&mut self, limits: Limits) -> std::io::Result<()> {
        match self.parts.as_mut() {
            Some(parts @ Parts { cgroup: Some(_), .. }) => {
                let init = parts.init.as_raw();
                parts.cgroup.as_mut().expect("matched").set_limits(limits, init)?;
                parts.check_alive()
            }
            _ => Ok(()),
        }
    }

    /// Hands init the action that `write` writes into the arena; it has
    /// started once [`Starting::started`] says so.
    pub fn start(
        mut self,
        write: impl FnOnce(&mut Arena) -> std::io::Result<ActionPlan>,
        stdout: &File,
        stderr: &File,
    ) -> Result<Starting, StartError> {
        let mut parts = self.parts.take().expect("a prepared sandbox has its parts");
        match parts.hand_over(write, stdout, stderr) {
            Ok(sent) => Ok(Starting { parts: Some(parts), sent }),
            Err(e) => {
                parts.kill();
                Err(e)
            }
        }
    }
}

/// A sandbox handed its action. Dropped before it started, it is killed.
pub struct Starting {
    parts: Option<Parts>,
    /// Whether the action reached init (if not, init's report says why).
    sent: nix::Result<usize>,
}

impl Starting {
    /// Returns once the action runs (its program was executed), or why it
    /// could not start.
    pub async fn started(mut self) -> Result<Running, StartError> {
        let parts = self.parts.as_mut().expect("a sandbox handed its action has its parts");
        let report = parts.report.take().ok_or_else(|| std::io::Error::other("already started"))?;
        // A failed send is explained by the report (init failed first).
        let outcome =
            read_report_async(report).await.and_then(|()| Ok(self.sent.map_err(std::io::Error::from)?));
        let parts = self.parts.take().expect("taken only here");
        if let Err(e) = outcome {
            parts.kill();
            return Err(e);
        }
        let Parts { pidfd, reaper, mut status, cgroup, network, pid_namespace, .. } = parts;
        let mut group = None;
        if !pid_namespace {
            // Init tells the action's process group: nothing else takes
            // everything down with it.
            let mut pid = [0u8; 4];
            status.read_exact(&mut pid)?;
            group = Some(Pid::from_raw(i32::from_ne_bytes(pid)));
        }
        Ok(Running::new(pidfd, group, status, Aftermath { reaper, cgroup, network })?)
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            parts.kill();
        }
    }
}

impl Parts {
    /// Sends init the action: the plan's address, and its stdout and stderr.
    fn hand_over(
        &mut self,
        write: impl FnOnce(&mut Arena) -> std::io::Result<ActionPlan>,
        stdout: &File,
        stderr: &File,
    ) -> Result<nix::Result<usize>, StartError> {
        let plan = write(&mut self.arena)?;
        let address = self.arena.value(plan)? as usize;
        let bytes = address.to_ne_bytes();
        let fds = [stdout.as_raw_fd(), stderr.as_raw_fd()];
        Ok(sendmsg::<()>(
            self.control.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        ))
    }

    /// An error if init is gone (killed, or ended by a failure it reported).
    fn check_alive(&self) -> std::io::Result<()> {
        if signal(&self.pidfd, None) {
            return Ok(());
        }
        Err(std::io::Error::other("the sandbox's init ended before its action came"))
    }

    fn kill(self) {
        signal(&self.pidfd, Some(Signal::SIGKILL));
        let _ = reaped(&self.reaper);
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
