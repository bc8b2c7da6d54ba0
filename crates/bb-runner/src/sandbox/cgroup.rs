//! A cgroup per action: memory (swap off), process and CPU limits, what
//! the action used, and a kill that reaches every one of its processes.
//!
//! cgroup v2 where the runner's own cgroup has the controllers (systemd's
//! `Delegate=yes`); otherwise the v1 hierarchies of `memory`, `pids` and
//! `cpu` beneath the runner's own cgroups, where it may write.
//!
//! On v1, an action's cgroup is used again once its action is over and
//! nothing is left in it: its limits and peak are reset, its counters read
//! as a baseline for the next. Making a memory and a pids cgroup and
//! removing them (their teardown continues in a kernel worker) cost more
//! CPU than the rest of a no-op action's sandbox. On v2 every action gets
//! a fresh one: `pids.peak` there cannot be reset.

use bb_proto::bbrs::sandbox::CgroupResourceUsage;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one action may use; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub processes: Option<u64>,
    pub cpus: Option<f64>,
}

const CPU_PERIOD_MICROS: u64 = 100_000;

#[derive(Debug)]
enum Layout {
    /// The directory action cgroups are made in.
    V2(PathBuf),
    /// The same, per v1 controller the runner can use.
    V1 { memory: Option<PathBuf>, pids: Option<PathBuf>, cpu: Option<PathBuf> },
}

/// Where the runner makes its actions' cgroups.
#[derive(Debug)]
pub struct Cgroups {
    layout: Layout,
    prefix: String,
    /// Cgroups whose action is over, ready for another (v1 only).
    idle: Option<Arc<Idle>>,
}

/// At most this many cgroups wait for an action; more are removed.
const IDLE_MAX: usize = 16;

/// A cgroup still charged with more than this (page cache its actions
/// read) once its action is over is removed rather than used again: the
/// kernel hands the charge to the parent then, and the next action's peak
/// and limit are not skewed by it.
const RESIDUAL_MAX: u64 = 32 << 20;

/// Idle cgroups, removed when the runner lets go of them.
#[derive(Debug, Default)]
struct Idle {
    cgroups: Mutex<Vec<ActionCgroup>>,
}

impl Drop for Idle {
    fn drop(&mut self) {
        for cgroup in self.cgroups.get_mut().drain(..) {
            cgroup.remove();
        }
    }
}

/// Counters a cgroup only ever adds to: what an action did is the
/// difference between their values before and after it.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    oom_kills: u64,
    process_limit_hits: u64,
}

/// Numbers action cgroups: unique in the process, also with several
/// runners in it (tests), so no two actions ever share one.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// One action's cgroup (one directory per hierarchy).
#[derive(Debug)]
pub struct ActionCgroup {
    v2: bool,
    directories: Vec<(&'static str, PathBuf)>,
    /// On v1, the action's cgroup in the `cpu` hierarchy, made only for an
    /// action with a CPU limit: a task's first exec in a fresh v1 cpu
    /// cgroup costs about a millisecond. CPU time is measured without it.
    cpu_directory: Option<PathBuf>,
    limits: Limits,
    /// Where it goes once its action is over, if it may be used again.
    idle: Option<Arc<Idle>>,
    /// The counters before this action, and what was charged then.
    baseline: Counters,
    residual: u64,
    /// The counters as read after this action.
    after: Option<Counters>,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A number from a flat-keyed file (`memory.events`, `cpu.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn number(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// Whether the runner may make cgroups in `directory`.
fn writable(directory: &Path) -> bool {
    let probe =
        directory.join(format!("probe-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir(&probe).is_ok() && std::fs::remove_dir(&probe).is_ok()
}

impl Cgroups {
    /// Finds the runner's cgroups and what it may do there; `Err` says why
    /// actions get no cgroup. `beneath`: a subdirectory of the runner's own
    /// cgroups delegated to it (made by whoever started it).
    pub fn discover(beneath: Option<&str>) -> Result<Cgroups, String> {
        let own = read(Path::new("/proc/self/cgroup")).ok_or("no /proc/self/cgroup")?;
        let mounts = read(Path::new("/proc/self/mountinfo")).ok_or("no /proc/self/mountinfo")?;
        let layout = match v2_base(&own, &mounts, beneath) {
            Ok(base) => Layout::V2(base),
            Err(v2) => v1_layout(&own, &mounts, beneath).map_err(|v1| format!("{v2}; {v1}"))?,
        };
        let idle = matches!(layout, Layout::V1 { .. }).then(Arc::default);
        Ok(Cgroups { layout, prefix: format!("action-{}-", std::process::id()), idle })
    }

    pub fn describe(&self) -> String {
        match &self.layout {
            Layout::V2(base) => format!("cgroup v2 under {}", base.display()),
            Layout::V1 { memory, pids, cpu, .. } => {
                let names: Vec<&str> = [("memory", memory), ("pids", pids), ("cpu", cpu)]
                    .into_iter()
                    .filter_map(|(name, dir)| dir.as_ref().map(|_| name))
                    .collect();
                format!("cgroup v1 ({})", names.join(", "))
            }
        }
    }

    /// What these cgroups cannot limit.
    pub fn missing(&self) -> Vec<&'static str> {
        match &self.layout {
            Layout::V2(_) => Vec::new(),
            Layout::V1 { memory, pids, cpu, .. } => [("memory", memory), ("process", pids), ("CPU", cpu)]
                .into_iter()
                .filter(|(_, dir)| dir.is_none())
                .map(|(name, _)| name)
                .collect(),
        }
    }

    /// A cgroup without limits for one action: an idle one, or a new one.
    pub fn create(&self) -> std::io::Result<ActionCgroup> {
        if let Some(idle) = &self.idle {
            let reused = idle.cgroups.lock().pop();
            if let Some(mut cgroup) = reused {
                cgroup.idle = Some(idle.clone());
                return Ok(cgroup);
            }
        }
        let mut cgroup = self.make()?;
        cgroup.idle = self.idle.clone();
        Ok(cgroup)
    }

    fn make(&self) -> std::io::Result<ActionCgroup> {
        let name = format!("{}{}", self.prefix, NEXT.fetch_add(1, Ordering::Relaxed));
        let (v2, directories) = match &self.layout {
            Layout::V2(base) => (true, vec![("unified", base.join(&name))]),
            Layout::V1 { memory, pids, .. } => {
                let all = [("memory", memory), ("pids", pids)];
                let dirs = all.into_iter().filter_map(|(c, d)| Some((c, d.as_ref()?.join(&name)))).collect();
                (false, dirs)
            }
        };
        let cpu_directory = match &self.layout {
            Layout::V1 { cpu: Some(cpu), .. } => Some(cpu.join(&name)),
            _ => None,
        };
        let cgroup = ActionCgroup {
            v2,
            directories,
            cpu_directory,
            limits: Limits::default(),
            idle: None,
            baseline: Counters::default(),
            residual: 0,
            after: None,
        };
        for (_, directory) in &cgroup.directories {
            if let Err(e) = std::fs::create_dir(directory) {
                cgroup.remove();
                return Err(e);
            }
        }
        if v2 {
            let dir = &cgroup.directories[0].1;
            let _ = std::fs::write(dir.join("memory.oom.group"), "1");
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        } else if let Some(dir) = cgroup.directory("memory") {
            let _ = std::fs::write(dir.join("memory.swappiness"), "0");
        }
        Ok(cgroup)
    }
}

/// The runner's v2 cgroup, set up to hold action cgroups with the memory,
/// pids and cpu controllers: the runner moves itself into a leaf of its
/// own (no process may sit beside child cgroups in v2).
fn v2_base(own: &str, mounts: &str, beneath: Option<&str>) -> Result<PathBuf, String> {
    let mount = mount_points(mounts, "cgroup2").next().ok_or("no cgroup v2 mount")?.0;
    let path = own.lines().find_map(|l| l.strip_prefix("0::")).ok_or("in no v2 cgroup")?;
    let mut base = mount.join(path.trim_start_matches('/'));
    if let Some(beneath) = beneath {
        base = base.join(beneath);
    }
    let controllers = read(&base.join("cgroup.controllers")).unwrap_or_default();
    let has = |name: &str| controllers.split_whitespace().any(|c| c == name);
    if !has("memory") || !has("pids") {
        return Err(format!("cgroup v2 {} has no memory and pids controllers", base.display()));
    }
    if base == mount {
        return Err("the runner is in the root cgroup: give it a delegated one (systemd Delegate=yes)".into());
    }
    if !writable(&base) {
        return Err(format!("cgroup v2 {} is not delegated to the runner", base.display()));
    }
    if beneath.is_none() {
        let leaf = base.join("runner");
        if !leaf.is_dir() {
            std::fs::create_dir(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
        }
        std::fs::write(leaf.join("cgroup.procs"), "0")
            .map_err(|e| format!("moving into {}: {e}", leaf.display()))?;
    }
    let control = base.join("cgroup.subtree_control");
    for controller in ["memory", "pids", "cpu"] {
        if has(controller)
            && std::fs::write(&control, format!("+{controller}")).is_err()
            && controller != "cpu"
        {
            return Err(format!("cannot enable {controller} in {}", control.display()));
        }
    }
    Ok(base)
}

/// The controllers action cgroups use on v1.
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// This process's own cgroup directory in each v1 hierarchy of a
/// controller actions use (those mounted).
pub fn own_v1_directories() -> Vec<(&'static str, PathBuf)> {
    let (Some(own), Some(mounts)) =
        (read(Path::new("/proc/self/cgroup")), read(Path::new("/proc/self/mountinfo")))
    else {
        return Vec::new();
    };
    v1_directories(&own, &mounts)
}

fn v1_directories(own: &str, mounts: &str) -> Vec<(&'static str, PathBuf)> {
    let directory = |controller: &str| -> Option<PathBuf> {
        let (mount, _) = mount_points(mounts, "cgroup").find(|(_, options)| options.contains(&controller))?;
        let path = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
            names.split(',').any(|n| n == controller).then_some(path)
        })?;
        Some(mount.join(path.trim_start_matches('/')))
    };
    V1_CONTROLLERS.into_iter().filter_map(|c| Some((c, directory(c)?))).collect()
}

fn v1_layout(own: &str, mounts: &str, beneath: Option<&str>) -> Result<Layout, String> {
    let directories = v1_directories(own, mounts);
    let base = |controller: &str| -> Option<PathBuf> {
        let (_, own) = directories.iter().find(|(c, _)| *c == controller)?;
        let base = match beneath {
            Some(beneath) => own.join(beneath),
            None => own.clone(),
        };
        writable(&base).then_some(base)
    };
    let layout = Layout::V1 { memory: base("memory"), pids: base("pids"), cpu: base("cpu") };
    match &layout {
        Layout::V1 { memory: None, pids: None, cpu: None, .. } => {
            Err("no cgroup v1 memory, pids or cpu hierarchy the runner may write".into())
        }
        _ => Ok(layout),
    }
}

/// Mount points of filesystems of `fstype`, with their super options.
fn mount_points<'a>(mounts: &'a str, fstype: &'a str) -> impl Iterator<Item = (PathBuf, Vec<&'a str>)> + 'a {
    mounts.lines().filter_map(move |line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        if after.next()? != fstype {
            return None;
        }
        let options = after.nth(1).unwrap_or_default().split(',').collect();
        Some((PathBuf::from(before.split_whitespace().nth(4)?), options))
    })
}

impl ActionCgroup {
    fn directory(&self, controller: &str) -> Option<&Path> {
        let wanted = if self.v2 { "unified" } else { controller };
        self.directories.iter().find(|(c, _)| *c == wanted).map(|(_, d)| d.as_path())
    }

    /// Sets the limits of the action that will run here (before it runs),
    /// whose init is `pid`.
    pub fn set_limits(&mut self, limits: Limits, pid: libc::pid_t) -> std::io::Result<()> {
        self.limits = limits;
        if limits.cpus.is_some()
            && let Some(directory) = self.cpu_directory.take()
        {
            std::fs::create_dir(&directory)?;
            self.directories.push(("cpu", directory.clone()));
            std::fs::write(directory.join("cgroup.procs"), pid.to_string())?;
        }
        self.apply_limits()
    }

    fn apply_limits(&self) -> std::io::Result<()> {
        let write = |controller: &str, file: &str, value: String| -> std::io::Result<()> {
            match self.directory(controller) {
                Some(dir) => std::fs::write(dir.join(file), value),
                None => Ok(()),
            }
        };
        let Limits { memory, processes, cpus } = self.limits;
        let quota = cpus.map(|cpus| ((cpus * CPU_PERIOD_MICROS as f64).round() as u64).max(1000));
        if let Some(processes) = processes {
            write("pids", "pids.max", processes.to_string())?;
        }
        if self.v2 {
            if let Some(bytes) = memory {
                write("memory", "memory.max", bytes.to_string())?;
            }
            if let Some(quota) = quota {
                write("cpu", "cpu.max", format!("{quota} {CPU_PERIOD_MICROS}"))?;
            }
        } else {
            if let Some(bytes) = memory {
                write("memory", "memory.limit_in_bytes", bytes.to_string())?;
                // Only where swap is accounted; swappiness is 0 in any case.
                let _ = write("memory", "memory.memsw.limit_in_bytes", bytes.to_string());
            }
            if let Some(quota) = quota {
                write("cpu", "cpu.cfs_period_us", CPU_PERIOD_MICROS.to_string())?;
                write("cpu", "cpu.cfs_quota_us", quota.to_string())?;
            }
        }
        Ok(())
    }

    /// The cgroup v2 directory, which init is cloned into.
    pub fn v2_directory(&self) -> Option<&Path> {
        if self.v2 { self.directory("unified") } else { None }
    }

    /// The v1 files a thread moves itself in by (`tasks`, one per
    /// hierarchy).
    pub fn v1_tasks_files(&self) -> Vec<PathBuf> {
        if self.v2 {
            return Vec::new();
        }
        self.directories.iter().map(|(_, d)| d.join("tasks")).collect()
    }

    /// What the action used, read once it exited.
    pub fn usage(&mut self) -> CgroupResourceUsage {
        let micros = |us: u64| prost_types::Duration {
            seconds: (us / 1_000_000) as i64,
            nanos: (us % 1_000_000 * 1000) as i32,
        };
        let after = self.counters();
        self.after = Some(after);
        let mut usage = CgroupResourceUsage {
            memory_limit_bytes: self.limits.memory.unwrap_or(0),
            process_limit: self.limits.processes.unwrap_or(0),
            cpu_limit: self.limits.cpus.unwrap_or(0.0),
            process_limit_hits: after.process_limit_hits.saturating_sub(self.baseline.process_limit_hits),
            oom_kills: after.oom_kills.saturating_sub(self.baseline.oom_kills),
            ..Default::default()
        };
        if self.v2 {
            usage.memory_peak_bytes = self.number("memory", "memory.peak");
            usage.processes_peak = self.number("pids", "pids.peak");
            usage.cpu_user_time = Some(micros(self.keyed("cpu", "cpu.stat", "user_usec")));
            usage.cpu_system_time = Some(micros(self.keyed("cpu", "cpu.stat", "system_usec")));
        } else {
            // What was charged before the action is not its own.
            let peak = self.number("memory", "memory.max_usage_in_bytes");
            usage.memory_peak_bytes = peak.saturating_sub(self.residual);
            // CPU time: measured by init's rusage of everything it reaped.
        }
        usage
    }

    fn file(&self, controller: &str, name: &str) -> Option<PathBuf> {
        self.directory(controller).map(|d| d.join(name))
    }

    /// A number file's value; 0 where it cannot be read.
    fn number(&self, controller: &str, name: &str) -> u64 {
        self.file(controller, name).and_then(|p| number(&p)).unwrap_or(0)
    }

    /// A value of a flat-keyed file; 0 where it cannot be read.
    fn keyed(&self, controller: &str, name: &str, key: &str) -> u64 {
        self.file(controller, name).and_then(|p| read(&p)).and_then(|t| keyed(&t, key)).unwrap_or(0)
    }

    fn counters(&self) -> Counters {
        let oom = if self.v2 { ("memory.events", "oom_kill") } else { ("memory.oom_control", "oom_kill") };
        Counters {
            oom_kills: self.keyed("memory", oom.0, oom.1),
            process_limit_hits: self.keyed("pids", "pids.events", "max"),
        }
    }

    /// Done with once its action is over (`reaped`: its init is known to
    /// be gone): kept for another action where it may be, else removed.
    pub fn release(mut self, reaped: bool) {
        let Some(idle) = self.idle.take() else { return self.remove() };
        if !reaped || !self.recycle() {
            return self.remove();
        }
        let mut cgroups = idle.cgroups.lock();
        if cgroups.len() < IDLE_MAX {
            cgroups.push(self);
        } else {
            drop(cgroups);
            self.remove();
        }
    }

    /// Makes a v1 cgroup whose action is over ready for the next: false if
    /// it is not empty, or cannot be reset.
    fn recycle(&mut self) -> bool {
        let left = match self.directory("pids") {
            Some(_) => self.number("pids", "pids.current"),
            // A line per process; unreadable counts as not empty.
            None => self
                .file("memory", "cgroup.procs")
                .and_then(|p| read(&p))
                .map_or(1, |t| t.lines().count() as u64),
        };
        if left > 0 {
            return false;
        }
        if let Some(index) = self.directories.iter().position(|(c, _)| *c == "cpu") {
            let (_, directory) = self.directories.remove(index);
            if std::fs::remove_dir(&directory).is_err() {
                return false;
            }
            self.cpu_directory = Some(directory);
        }
        if self.reset_limits().is_err() {
            return false;
        }
        self.baseline = self.after.take().unwrap_or_else(|| self.counters());
        let Some(memory) = self.directory("memory").map(Path::to_path_buf) else { return true };
        if std::fs::write(memory.join("memory.max_usage_in_bytes"), "0").is_err() {
            return false;
        }
        self.residual = number(&memory.join("memory.usage_in_bytes")).unwrap_or(u64::MAX);
        self.residual <= RESIDUAL_MAX
    }

    /// Lifts the limits the last action had.
    fn reset_limits(&mut self) -> std::io::Result<()> {
        let limits = std::mem::take(&mut self.limits);
        if limits.processes.is_some()
            && let Some(file) = self.file("pids", "pids.max")
        {
            std::fs::write(file, "max")?;
        }
        if limits.memory.is_some()
            && let Some(memory) = self.directory("memory")
        {
            // The swap limit first: it may never be below the memory one.
            let _ = std::fs::write(memory.join("memory.memsw.limit_in_bytes"), "-1");
            std::fs::write(memory.join("memory.limit_in_bytes"), "-1")?;
        }
        Ok(())
    }

    /// Kills whatever is left in the cgroup and removes it.
    pub fn remove(&self) {
        if self.v2 {
            if let Some(dir) = self.directory("unified") {
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            }
        } else {
            for (_, dir) in &self.directories {
                for pid in read(&dir.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.parse() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, dir) in &self.directories {
            // Busy while the last processes are still exiting.
            while std::fs::remove_dir(dir).is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mount_points_and_keyed_files() {
        let mounts = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let v1: Vec<_> = mount_points(mounts, "cgroup").collect();
        assert_eq!(v1, vec![(PathBuf::from("/sys/fs/cgroup/memory"), vec!["rw", "memory"])]);
        assert_eq!(
            mount_points(mounts, "cgroup2").next().unwrap().0,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(keyed("low 0\nmax 3\noom_kill 2\n", "oom_kill"), Some(2));
        assert_eq!(keyed("max 3\n", "ma"), None);
    }
}
