//! cgroups `bb farm` (as root) delegates to each runner's user: on cgroup
//! v1 a directory `bb-farm-<pid>-runner-<n>` beneath the farm's own cgroup
//! in every hierarchy actions use, owned by the runner's user, for its
//! actions' cgroups. The farm's process ID keeps two farms started from
//! one cgroup (a shell, a test harness) out of each other's cgroups. (On cgroup v2 a runner needs a delegated cgroup of its own,
//! which systemd gives with `Delegate=yes`; the NixOS module does that.)

use nix::unistd::User;
use std::path::PathBuf;

/// The delegated directories of one runner; removed when dropped.
pub struct Delegated {
    pub name: String,
    directories: Vec<PathBuf>,
}

/// Makes `bb-farm-<pid>-runner-<index>` in every v1 hierarchy, owned by
/// `user` (after removing what farms no longer running left behind);
/// `None` where the host has none.
pub fn delegate(index: usize, user: &User) -> Option<Delegated> {
    let name = format!("bb-farm-{}-runner-{index}", std::process::id());
    let mut directories = Vec::new();
    for (controller, own) in bb_runner::sandbox::cgroup::own_v1_directories() {
        remove_left_behind(&own);
        let directory = own.join(&name);
        remove_with_children(&directory);
        let made = std::fs::create_dir(&directory).and_then(|()| {
            nix::unistd::chown(&directory, Some(user.uid), Some(user.gid)).map_err(Into::into)
        });
        match made {
            Ok(()) => directories.push(directory),
            Err(e) => tracing::warn!(
                "cannot delegate a {controller} cgroup to the runner: {}: {e}",
                directory.display()
            ),
        }
    }
    (!directories.is_empty()).then_some(Delegated { name, directories })
}

/// Removes the delegated cgroups of farms whose process is gone.
fn remove_left_behind(parent: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) =
            name.to_str().and_then(|n| n.strip_prefix("bb-farm-")).and_then(|n| n.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            remove_with_children(&entry.path());
        }
    }
}

/// Removes a cgroup directory and the (empty) cgroups beneath it.
fn remove_with_children(directory: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(directory) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_with_children(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(directory);
}

impl Drop for Delegated {
    fn drop(&mut self) {
        for directory in &self.directories {
            remove_with_children(directory);
        }
    }
}
