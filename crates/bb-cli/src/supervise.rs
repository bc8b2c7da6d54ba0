//! The processes of `bb farm` (the scheduler, and each worker and runner),
//! kept running: one that exits is started again after a backoff (and says
//! so), until the farm stops it. Its log is appended to, so the reason it
//! died stays readable.

use nix::unistd::{Gid, Uid};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Who a child process runs as: user, group, supplementary groups.
pub type RunAs = Option<(Uid, Gid, Vec<Gid>)>;

/// First wait before a restart; doubled up to `MAX_BACKOFF` while the
/// process keeps dying, reset once it has run for `HEALTHY`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const HEALTHY: Duration = Duration::from_secs(30);

/// One program to keep running: `bb <role> --config <config>`.
pub struct Program {
    pub role: &'static str,
    /// The worker it belongs to, for messages; `None` for the scheduler.
    pub owner: Option<String>,
    pub config: PathBuf,
    /// Its stderr; `None`: the farm's own.
    pub log: Option<PathBuf>,
    pub run_as: RunAs,
    /// How long it may take to stop on SIGTERM before it is killed.
    pub stop_grace: Duration,
    /// A socket a dead instance leaves behind, removed before each start.
    pub stale_socket: Option<PathBuf>,
}

/// A running, supervised program.
pub struct Supervised {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// Starts the program (an error if it cannot start at all) and keeps it
    /// running.
    pub fn start(program: Program) -> anyhow::Result<Supervised> {
        let child = spawn(&program)?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(supervise(program, child, stop.clone()));
        Ok(Supervised { stop, task })
    }

    /// Stops it: SIGTERM, then SIGKILL after its stop grace.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn supervise(program: Program, mut child: Child, stop: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        let status = tokio::select! {
            status = child.wait() => status,
            _ = stop.cancelled() => {
                terminate(&child);
                if tokio::time::timeout(program.stop_grace, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                return;
            }
        };
        if started.elapsed() >= HEALTHY {
            backoff = MIN_BACKOFF;
        }
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        let log = program.log.as_ref().map(|log| format!(" (log: {})", log.display())).unwrap_or_default();
        eprintln!("bb farm: {} exited ({status}); starting it again in {backoff:?}{log}", program.name());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match spawn(&program) {
                Ok(started) => {
                    child = started;
                    break;
                }
                Err(e) => eprintln!("bb farm: {e:#}; trying again in {backoff:?}"),
            }
        }
    }
}

impl Program {
    fn name(&self) -> String {
        match &self.owner {
            Some(worker) => format!("the {} of worker {worker}", self.role),
            None => format!("the {}", self.role),
        }
    }
}

/// Starts `bb <role> --config <config>` with its stderr appended to `log`.
fn spawn(program: &Program) -> anyhow::Result<Child> {
    if let Some(socket) = &program.stale_socket {
        let _ = std::fs::remove_file(socket);
    }
    let log = match &program.log {
        Some(log) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(log)?),
        None => Stdio::inherit(),
    };
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg(program.role)
        .arg("--config")
        .arg(&program.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    let groups: Vec<libc::gid_t> =
        program.run_as.as_ref().map(|(_, _, g)| g.iter().map(|g| g.as_raw()).collect()).unwrap_or_default();
    let ids = program.run_as.as_ref().map(|(u, g, _)| (u.as_raw(), g.as_raw()));
    // SAFETY: only raw system calls on data prepared above.
    unsafe {
        command.pre_exec(move || {
            if let Some((uid, gid)) = ids {
                // Empty the bounding set while still root, as systemd's
                // empty CapabilityBoundingSet does, then become the user.
                for cap in 0..64 {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
                }
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Gone with the farm, even if it is killed.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command.spawn().map_err(|e| anyhow::anyhow!("cannot start bb {}: {e}", program.role))
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    }
}
