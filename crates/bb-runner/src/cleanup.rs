//! What the runner does after every action: kill what it left running,
//! empty its temporary directory, and hand its outputs over to the worker.

use bb_util::dir::{Directory, Kind};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::MetadataExt;

/// Kills every process of `uid` but runners (this one, and others sharing
/// the user), also those that left the action's process group (daemons,
/// `setsid`). Repeats while new processes keep appearing (a fork racing the
/// kill), a bounded number of times.
pub fn kill_user_processes(uid: u32) -> usize {
    let me = std::process::id() as i32;
    let runner = std::env::current_exe().ok();
    let is_runner = |pid: i32| runner.is_some() && fs::read_link(format!("/proc/{pid}/exe")).ok() == runner;
    let mut killed = std::collections::HashSet::new();
    for _ in 0..10 {
        let victims: Vec<i32> = processes_of(uid)
            .into_iter()
            .filter(|pid| *pid != me && !killed.contains(pid) && !is_runner(*pid))
            .collect();
        if victims.is_empty() {
            break;
        }
        for pid in victims {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.insert(pid);
        }
    }
    killed.len()
}

/// Pids of processes running as `uid`. The owner of /proc/<pid> is the
/// process's effective user: one stat per process, no file to read.
fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            (entry.metadata().ok()?.uid() == uid).then_some(pid)
        })
        .collect()
}

/// Makes what the action created under `root` (entries owned by `uid`)
/// readable by the worker, and its directories writable, so the worker can
/// upload the outputs and remove the build directory. Input files, owned by
/// the worker, are left alone. Everything is reached through directory
/// handles: a symlink the action left is never followed.
pub fn hand_over(root: &Directory, uid: u32) {
    let Ok(names) = root.entries() else { return };
    for name in names {
        let Some(name) = name.to_str() else { continue };
        let Ok(metadata) = root.metadata(name) else { continue };
        let wanted = match metadata.kind {
            Kind::Directory => metadata.mode | 0o777,
            Kind::File => metadata.mode | 0o644,
            Kind::Symlink | Kind::Other => continue,
        };
        if metadata.uid == uid && wanted != metadata.mode {
            let _ = root.set_entry_mode(name, wanted);
        }
        if metadata.kind == Kind::Directory
            && let Ok(child) = root.open_child(name)
        {
            hand_over(&child, uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hands_over_own_entries_only_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(root.join("d")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o750)).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        fs::write(root.join("d/secret"), "x").unwrap();
        fs::set_permissions(root.join("d/secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let handle = Directory::open(&root).unwrap();
        hand_over(&handle, uid);
        let mode = |p: &std::path::Path| fs::symlink_metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&root.join("d")), 0o777);
        assert_eq!(mode(&root.join("d/secret")), 0o644);
        assert_eq!(mode(&outside), 0o750, "the symlink's target was left alone");
        // Someone else's files are not ours to change.
        fs::set_permissions(root.join("d/secret"), fs::Permissions::from_mode(0o600)).unwrap();
        hand_over(&handle, uid + 1);
        assert_eq!(mode(&root.join("d/secret")), 0o600);
    }
}
