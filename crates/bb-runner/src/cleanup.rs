//! What the runner does after every action: kill what it left running,
//! empty its temporary directory, and hand its outputs over to the worker.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

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

/// Removes everything inside `directory`, keeping the directory. Does not
/// follow symlinks; makes directories the action locked (chmod 0) writable
/// again on the way.
pub fn empty_directory(directory: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(directory)? {
        let path = entry?.path();
        let metadata = fs::symlink_metadata(&path)?;
        if metadata.is_dir() {
            unlock_tree(&path);
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Gives the owner full access to every directory under `root` it owns.
fn unlock_tree(root: &Path) {
    let Ok(metadata) = fs::symlink_metadata(root) else { return };
    if !metadata.is_dir() {
        return;
    }
    let _ = fs::set_permissions(root, fs::Permissions::from_mode(metadata.mode() & 0o7777 | 0o700));
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            unlock_tree(&entry.path());
        }
    }
}

/// Makes what the action created under `root` (entries owned by `uid`)
/// readable by the worker, and its directories writable, so the worker can
/// upload the outputs and remove the build directory. Input files, owned by
/// the worker, are left alone; symlinks are not followed.
pub fn hand_over(root: &Path, uid: u32) {
    let Ok(entries) = fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(metadata) = fs::symlink_metadata(&path) else { continue };
        if metadata.file_type().is_symlink() {
            continue;
        }
        let mode = metadata.mode() & 0o7777;
        if metadata.uid() == uid {
            let wanted = if metadata.is_dir() { mode | 0o777 } else { mode | 0o644 };
            if wanted != mode {
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(wanted));
            }
        }
        if metadata.is_dir() {
            hand_over(&path, uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empties_even_locked_directories() {
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked/inner");
        fs::create_dir_all(&locked).unwrap();
        fs::write(locked.join("f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(dir.path().join("locked"), fs::Permissions::from_mode(0o500)).unwrap();
        empty_directory(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(Path::new("/etc/passwd").exists(), "the symlink was not followed");
    }

    #[test]
    fn hands_over_own_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/secret"), "x").unwrap();
        fs::set_permissions(dir.path().join("d/secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(dir.path().join("d"), fs::Permissions::from_mode(0o700)).unwrap();
        hand_over(dir.path(), uid);
        assert_eq!(fs::metadata(dir.path().join("d")).unwrap().mode() & 0o777, 0o777);
        assert_eq!(fs::metadata(dir.path().join("d/secret")).unwrap().mode() & 0o777, 0o644);
        // Someone else's files are not ours to change.
        hand_over(dir.path(), uid + 1);
    }
}
