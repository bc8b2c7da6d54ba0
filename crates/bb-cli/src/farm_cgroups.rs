//! cgroups `bb farm` (as root) delegates to each runner's user: on cgroup
//! v1 a directory `bb-runner-<n>` beneath the farm's own cgroup in every
//! hierarchy actions use, owned by the runner's user, for its actions'
//! cgroups. (On cgroup v2 a runner needs a delegated cgroup of its own,
//! which systemd gives with `Delegate=yes`; the NixOS module does that.)

use nix::unistd::User;
use std::path::PathBuf;

/// The delegated directories of one runner; removed when dropped.
pub struct Delegated {
    pub name: String,
    directories: Vec<PathBuf>,
}

/// Makes (or takes over from an earlier run) `bb-runner-<index>` in every
/// v1 hierarchy, owned by `user`; `None` where the host has none.
pub fn delegate(index: usize, user: &User) -> Option<Delegated> {
    let name = format!("bb-runner-{index}");
    let mut directories = Vec::new();
    for (controller, own) in bb_runner::sandbox::cgroup::own_v1_directories() {
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
