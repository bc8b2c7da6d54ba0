//! The mount namespace an action sees: the host read-only where
//! configured, hidden paths and the build directory covered by empty
//! directories, its own input root and temporary directory laid back over
//! them, a fresh `/tmp` and `/dev/shm`, and a `/proc` of its PID namespace.

use super::Isolation;
use super::plan::{MountStep, TREES, c_string};
use crate::config::SandboxConfig;
use bb_util::dir::Directory;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Directories every action gets empty and writable.
const SCRATCH: [&str; 2] = ["/tmp", "/dev/shm"];

fn c_path(path: &Path) -> std::io::Result<CString> {
    c_string(path.as_os_str().as_bytes())
}

fn is_directory(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The steps, in order. `exposed` are the action's directories (handles,
/// and absolute paths as the runner names them), at most [`TREES`].
pub fn steps(
    settings: &SandboxConfig,
    isolation: &Isolation,
    build_directory: &Path,
    exposed: &[(&Directory, &Path)],
) -> std::io::Result<Vec<MountStep>> {
    assert!(exposed.len() <= TREES, "at most {TREES} directories are laid over the sandbox");
    let mut steps = vec![MountStep::Private];
    // Copies of the action's directories, taken before anything covers them.
    for (slot, (handle, path)) in exposed.iter().enumerate() {
        let stat = nix::sys::stat::fstat(handle.as_fd()).map_err(std::io::Error::from)?;
        steps.push(MountStep::CloneTree { source: c_path(path)?, expect: (stat.st_dev, stat.st_ino), slot });
    }
    for path in settings.read_only_paths.iter().filter(|p| is_directory(p)) {
        let target = c_path(path)?;
        if path != Path::new("/") {
            steps.push(MountStep::BindToItself { target: target.clone() });
        }
        steps.push(MountStep::ReadOnly { target, recursive: true });
    }
    let scratch: Vec<&Path> = SCRATCH.iter().map(Path::new).filter(|p| is_directory(p)).collect();
    for path in &scratch {
        steps.push(MountStep::Tmpfs { target: c_path(path)?, options: c"mode=1777".into() });
    }
    let hidden = covered_paths(settings, build_directory, &scratch);
    for path in &hidden {
        steps.push(MountStep::Tmpfs { target: c_path(path)?, options: c"mode=755,size=1m".into() });
    }
    for (slot, (_, path)) in exposed.iter().enumerate() {
        // Mount points: what exists on the host is left alone (EEXIST).
        for ancestor in path.ancestors().collect::<Vec<_>>().into_iter().rev().skip(1) {
            steps.push(MountStep::Mkdir { path: c_path(ancestor)? });
        }
        steps.push(MountStep::MoveTree { slot, target: c_path(path)? });
    }
    for path in &hidden {
        steps.push(MountStep::ReadOnly { target: c_path(path)?, recursive: false });
    }
    if isolation.proc {
        steps.push(MountStep::Proc { target: c"/proc".into() });
    }
    Ok(steps)
}

/// The directories to cover: the build directory and the hidden paths that
/// exist, but none beneath a scratch directory or another covered one.
fn covered_paths(settings: &SandboxConfig, build_directory: &Path, scratch: &[&Path]) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::iter::once(build_directory.to_path_buf())
        .chain(settings.hidden_paths.iter().cloned())
        .filter(|p| p.is_absolute() && is_directory(p))
        .collect();
    candidates.sort();
    let mut covered: Vec<PathBuf> = Vec::new();
    for path in candidates {
        let beneath = |top: &Path| path.starts_with(top);
        if !scratch.iter().any(|s| beneath(s)) && !covered.iter().any(|c| beneath(c)) {
            covered.push(path);
        }
    }
    covered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_each_directory_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("a/b"));
        std::fs::create_dir_all(&b).unwrap();
        let settings = SandboxConfig {
            hidden_paths: vec![b.clone(), a.clone(), "/no/such/directory".into(), "relative".into()],
            ..SandboxConfig::default()
        };
        assert_eq!(covered_paths(&settings, &b, &[]), vec![a.clone()], "a covers a/b");
        assert!(covered_paths(&settings, &b, &[dir.path()]).is_empty(), "all in a scratch directory");
    }
}
