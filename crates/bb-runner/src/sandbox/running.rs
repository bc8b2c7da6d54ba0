//! A started action, as the runner sees it: the action's end read from
//! init's status pipe on the runtime itself (no thread between init and
//! the answer), then the aftermath on a blocking thread once the runner
//! has answered: init reaped by the zygote (the namespaces' teardown:
//! every other process of the sandbox is gone once init is), the cgroup
//! removed, the network namespace given back.

use super::cgroup::ActionCgroup;
use super::kept::NetworkLease;
use super::sys::StatusReport;
use bb_proto::bbrs::sandbox::CgroupResourceUsage;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

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
    /// A pidfd of init.
    init: OwnedFd,
    /// The action's process group, as the runner sees it, when there is no
    /// PID namespace to take everything down with init.
    group: Option<Pid>,
    /// Init's status pipe (non-blocking), until its report is read.
    status: Option<AsyncFd<File>>,
    report: [u8; REPORT],
    /// How much of the report has come.
    filled: usize,
    aftermath: Option<Aftermath>,
    done: bool,
}

const REPORT: usize = std::mem::size_of::<StatusReport>();

/// What is left to do once the action is over.
pub struct Aftermath {
    /// The zygote's socket for this sandbox: init's wait status once it is
    /// reaped.
    pub reaper: OwnedFd,
    pub cgroup: Option<ActionCgroup>,
    /// Given back once init is reaped.
    pub network: Option<NetworkLease>,
}

impl Running {
    /// Must be called on the runtime (the status pipe is registered with
    /// its reactor).
    pub fn new(
        init: OwnedFd,
        group: Option<Pid>,
        status: File,
        aftermath: Aftermath,
    ) -> std::io::Result<Running> {
        Ok(Running {
            init,
            group,
            status: Some(on_runtime(status)?),
            report: [0; REPORT],
            filled: 0,
            aftermath: Some(aftermath),
            done: false,
        })
    }

    /// Waits for the action to exit; may be called again after a timeout.
    pub async fn wait(&mut self) -> std::io::Result<Exit> {
        let reported = self.read_report().await?;
        self.done = true;
        let aftermath = self.aftermath.take().ok_or_else(|| std::io::Error::other("already waited for"))?;
        let (exit, mut aftermath, reaped) = match reported {
            // SAFETY: StatusReport is plain data, written whole by init.
            true => {
                let report = unsafe { std::ptr::read_unaligned(self.report.as_ptr().cast::<StatusReport>()) };
                (Ok(decode(report.status, report.rusage)), aftermath, None)
            }
            // Init ended without a report (killed): its own end, from the
            // zygote once it has reaped it.
            false => {
                let (waited, aftermath) =
                    tokio::task::spawn_blocking(move || (reaped(&aftermath.reaper), aftermath))
                        .await
                        .map_err(std::io::Error::other)?;
                let reaped = Some(waited.is_ok());
                (waited.map(|(status, rusage)| decode(status, rusage)), aftermath, reaped)
            }
        };
        let exit = exit.map(|mut exit| {
            exit.cgroup_usage = aftermath.cgroup.as_mut().map(|cgroup| cgroup_usage(cgroup, &exit.rusage));
            exit
        });
        tokio::task::spawn_blocking(move || aftermath.finish(reaped));
        exit
    }

    /// True once init's report is read whole, false if the pipe ended
    /// first; what came before a cancelled wait is kept.
    async fn read_report(&mut self) -> std::io::Result<bool> {
        let status = self.status.as_ref().ok_or_else(|| std::io::Error::other("already waited for"))?;
        while self.filled < REPORT {
            let mut ready = status.readable().await?;
            match ready.try_io(|pipe| pipe.get_ref().read(&mut self.report[self.filled..])) {
                Ok(Ok(0)) => break,
                Ok(Ok(read)) => self.filled += read,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        self.status = None;
        Ok(self.filled == REPORT)
    }

    /// Asks every process of the action to stop (SIGTERM, through init).
    pub fn terminate(&self) {
        if !self.done {
            signal(&self.init, Some(Signal::SIGTERM));
        }
    }

    /// Kills everything the action started.
    pub fn kill(&self) {
        if let Some(group) = self.group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        if !self.done {
            signal(&self.init, Some(Signal::SIGKILL));
        }
    }
}

impl Drop for Running {
    /// Kills the action; the aftermath, if nobody waited, on a blocking
    /// thread (inline where there is no runtime).
    fn drop(&mut self) {
        self.kill();
        if let Some(aftermath) = self.aftermath.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || aftermath.finish(None))),
                Err(_) => aftermath.finish(None),
            }
        }
    }
}

impl Aftermath {
    /// Blocks until init is reaped (unless `reaped` says whether it was),
    /// then gives the cgroup and the network namespace back, or lets them
    /// go if init's end is unknown (its sandbox may not be gone).
    fn finish(self, reaped: Option<bool>) {
        let reaped = reaped.unwrap_or_else(|| self::reaped(&self.reaper).is_ok());
        if let Some(cgroup) = self.cgroup {
            cgroup.release(reaped);
        }
        if !reaped && let Some(network) = self.network {
            network.discard();
        }
    }
}

/// Init's wait status and usage, once the zygote has reaped it.
pub fn reaped(reaper: &OwnedFd) -> std::io::Result<(i32, libc::rusage)> {
    let mut report = [0u8; REPORT];
    let read = nix::unistd::read(reaper, &mut report).map_err(std::io::Error::from)?;
    if read != report.len() {
        return Err(std::io::Error::other("the sandbox zygote ended before reaping its init"));
    }
    // SAFETY: StatusReport is plain data, written whole by the zygote.
    let report = unsafe { std::ptr::read_unaligned(report.as_ptr().cast::<StatusReport>()) };
    Ok((report.status, report.rusage))
}

/// Makes reads of `file` (a pipe's or socket's end) never block.
pub fn set_nonblocking(file: &File) -> std::io::Result<()> {
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    Ok(())
}

/// `file`, non-blocking, registered with the runtime's reactor to be read
/// on the runtime (must be called on it).
pub fn on_runtime(file: File) -> std::io::Result<AsyncFd<File>> {
    set_nonblocking(&file)?;
    // SAFETY: the File is the AsyncFd's own, open until it is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(file, Interest::READABLE) }?)
}

/// What the cgroup measured; its CPU times from `rusage` where it has none.
fn cgroup_usage(cgroup: &mut ActionCgroup, rusage: &libc::rusage) -> CgroupResourceUsage {
    let mut usage = cgroup.usage();
    usage.cpu_user_time = usage.cpu_user_time.or(Some(duration(rusage.ru_utime)));
    usage.cpu_system_time = usage.cpu_system_time.or(Some(duration(rusage.ru_stime)));
    usage
}

/// A `timeval` of `rusage` as a protobuf Duration.
pub fn duration(t: libc::timeval) -> prost_types::Duration {
    prost_types::Duration { seconds: t.tv_sec, nanos: (t.tv_usec * 1000) as i32 }
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

/// Sends `signal` (none: only checks) to the process of `pidfd`; false if
/// it is gone (ESRCH, the usual and fine outcome of a kill).
pub fn signal(pidfd: &OwnedFd, signal: Option<Signal>) -> bool {
    let number = signal.map_or(0, |s| s as libc::c_int);
    // SAFETY: a raw system call on a descriptor we own.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), number, 0usize, 0u32) == 0 }
}
