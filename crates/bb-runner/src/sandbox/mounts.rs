//! The mount namespace an action sees: the host read-only where
//! configured, hidden paths and the build directory covered by empty
//! directories, its own input root and temporary directory laid back over
//! them, a fresh `/tmp` and `/dev/shm`, and a `/proc` of its PID namespace.
//! All but the action's own directories is set up before the action is
//! known.

use super::Isolation;
use super::plan::{Arena, MountStep, TREES};
use crate::config::SandboxConfig;
use bb_util::dir::Directory;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Directories every action gets empty and writable.
const SCRATCH: [&str; 2] = ["/tmp", "/dev/shm"];

/// Where, inside the empty directory over the build directory, the whole
/// build directory waits for the action's directories to be taken from it.
const STAGING: &str = ".bb-staging";

fn is_directory(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn identity(handle: &Directory) -> std::io::Result<(u64, u64)> {
    let stat = nix::sys::stat::fstat(handle.as_fd()).map_err(std::io::Error::from)?;
    Ok((stat.st_dev, stat.st_ino))
}

/// Every ancestor of `path` beneath `existing` (known to exist), top down,
/// and `path` itself: mount points, made where missing (what exists is
/// left alone).
fn mkdirs(
    existing: &Path,
    path: &Path,
    arena: &mut Arena,
    steps: &mut Vec<MountStep>,
) -> std::io::Result<()> {
    let mut missing: Vec<&Path> = path.ancestors().take_while(|a| !existing.starts_with(a)).collect();
    missing.reverse();
    for ancestor in missing {
        steps.push(MountStep::Mkdir { path: arena.path(ancestor)? });
    }
    Ok(())
}

/// What every sandbox sets up before its action is known: the host
/// read-only, scratch and hidden directories, the build directory covered
/// (a copy of it staged beneath the cover), a `/proc`.
pub fn generic_steps(
    settings: &SandboxConfig,
    isolation: &Isolation,
    build: (&Directory, &Path),
    arena: &mut Arena,
) -> std::io::Result<Vec<MountStep>> {
    let (build_handle, build_directory) = build;
    let mut steps = vec![MountStep::Private];
    steps.push(MountStep::CloneTree {
        source: arena.path(build_directory)?,
        expect: identity(build_handle)?,
        slot: 0,
        recursive: true,
    });
    for path in settings.read_only_paths.iter().filter(|p| is_directory(p)) {
        let target = arena.path(path)?;
        if path != Path::new("/") {
            steps.push(MountStep::BindToItself { target });
        }
        steps.push(MountStep::ReadOnly { target, recursive: true });
    }
    let scratch: Vec<&Path> = SCRATCH.iter().map(Path::new).filter(|p| is_directory(p)).collect();
    for path in &scratch {
        steps.push(MountStep::Tmpfs { target: arena.path(path)?, options: arena.c_str(b"mode=1777")? });
    }
    let hidden = covered_paths(settings, &scratch);
    let small = arena.c_str(b"mode=755,size=1m")?;
    for path in &hidden {
        steps.push(MountStep::Tmpfs { target: arena.path(path)?, options: small });
    }
    mkdirs(Path::new("/"), build_directory, arena, &mut steps)?;
    steps.push(MountStep::Tmpfs { target: arena.path(build_directory)?, options: small });
    let staging = build_directory.join(STAGING);
    steps.push(MountStep::Mkdir { path: arena.path(&staging)? });
    steps.push(MountStep::MoveTree { slot: 0, target: arena.path(&staging)? });
    for path in &hidden {
        steps.push(MountStep::ReadOnly { target: arena.path(path)?, recursive: false });
    }
    if isolation.proc {
        steps.push(MountStep::Proc { target: arena.path(Path::new("/proc"))? });
    }
    Ok(steps)
}

/// What one action adds: its own directories (handles, and absolute paths
/// beneath the build directory) taken from the staged copy and laid over
/// the cover; then the copy is covered too (an unmount would wait for an
/// RCU grace period) and the cover turns read-only.
pub fn action_steps(
    build_directory: &Path,
    exposed: &[(&Directory, &Path)],
    arena: &mut Arena,
) -> std::io::Result<Vec<MountStep>> {
    assert!(exposed.len() < TREES, "at most {} directories are laid over the sandbox", TREES - 1);
    let staging = build_directory.join(STAGING);
    let mut steps = Vec::new();
    for (index, (handle, path)) in exposed.iter().enumerate() {
        let relative = path.strip_prefix(build_directory).map_err(|_| {
            std::io::Error::other(format!("{} is not in the build directory", path.display()))
        })?;
        let source = arena.path(&staging.join(relative))?;
        steps.push(MountStep::CloneTree {
            source,
            expect: identity(handle)?,
            slot: index + 1,
            recursive: false,
        });
    }
    for (index, (_, path)) in exposed.iter().enumerate() {
        // Beneath the cover over the build directory.
        mkdirs(build_directory, path, arena, &mut steps)?;
        steps.push(MountStep::MoveTree { slot: index + 1, target: arena.path(path)? });
    }
    steps
        .push(MountStep::Tmpfs { target: arena.path(&staging)?, options: arena.c_str(b"mode=000,size=4k")? });
    steps.push(MountStep::ReadOnly { target: arena.path(build_directory)?, recursive: false });
    Ok(steps)
}

/// The hidden paths to cover: those that exist, but none beneath a
/// scratch directory or another covered one.
fn covered_paths(settings: &SandboxConfig, scratch: &[&Path]) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> =
        settings.hidden_paths.iter().filter(|p| p.is_absolute() && is_directory(p)).cloned().collect();
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
        assert_eq!(covered_paths(&settings, &[]), vec![a.clone()], "a covers a/b");
        assert!(covered_paths(&settings, &[dir.path()]).is_empty(), "all in a scratch directory");
    }

    #[test]
    fn makes_only_what_lies_beneath_what_exists() {
        let mut arena = Arena::new().unwrap();
        let mut steps = Vec::new();
        mkdirs(Path::new("/b/build"), Path::new("/b/build/x/root"), &mut arena, &mut steps).unwrap();
        mkdirs(Path::new("/"), Path::new("/b"), &mut arena, &mut steps).unwrap();
        let made: Vec<String> = steps
            .iter()
            .map(|step| match step {
                // SAFETY: written into the arena just above.
                MountStep::Mkdir { path } => {
                    unsafe { std::ffi::CStr::from_ptr(*path) }.to_string_lossy().into()
                }
                _ => unreachable!("only Mkdir steps"),
            })
            .collect();
        assert_eq!(made, ["/b/build/x", "/b/build/x/root", "/b"]);
    }
}
