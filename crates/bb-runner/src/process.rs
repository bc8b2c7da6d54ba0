//! Starting an action's command in a process group of its own, waiting for
//! it with its resource usage, and killing the group.

use bb_util::dir::Directory;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Everything needed to start one command.
pub struct Launch {
    /// The resolved program, as the child will see it.
    pub program: PathBuf,
    /// argv, argv[0] included, passed on exactly.
    pub arguments: Vec<String>,
    pub environment: HashMap<String, String>,
    /// The working directory, entered through its handle.
    pub working_directory: Directory,
    pub stdout: File,
    pub stderr: File,
    /// chroot into this directory (entered through its handle), then enter
    /// the path inside it.
    pub chroot: Option<(Directory, PathBuf)>,
    /// Switch to this user and group.
    pub run_as: Option<(u32, u32)>,
}

/// How the command ended.
pub struct Exit {
    pub exit_code: i64,
    pub signal: Option<Signal>,
    pub rusage: libc::rusage,
}

/// A started command: its process group is killed when this is dropped, so
/// an abandoned action leaves nothing running.
pub struct Running {
    pid: Pid,
    armed: bool,
}

impl Running {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the command (not its stray children) to exit.
    pub async fn wait(&mut self) -> std::io::Result<Exit> {
        let pid = self.pid.as_raw();
        let exit = tokio::task::spawn_blocking(move || wait4(pid)).await.map_err(std::io::Error::other)??;
        Ok(exit)
    }

    /// Kills whatever is left of the process group (the command's
    /// background processes), and stops guarding it.
    pub fn kill_group(&mut self) {
        kill_group(self.pid);
        self.armed = false;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pid);
        }
    }
}

pub fn kill_group(group: Pid) {
    // ESRCH (nobody left) is the usual and fine outcome.
    let _ = killpg(group, Signal::SIGKILL);
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Starts the command in a new process group, with exactly the given
/// environment, a 022 umask, and the chroot and user switch if asked.
pub fn start(launch: Launch) -> std::io::Result<Running> {
    let mut command = Command::new(&launch.program);
    let (argv0, rest) =
        launch.arguments.split_first().ok_or_else(|| std::io::Error::other("no arguments"))?;
    command
        .arg0(argv0)
        .args(rest)
        .env_clear()
        .envs(&launch.environment)
        .stdin(Stdio::null())
        .stdout(launch.stdout)
        .stderr(launch.stderr)
        .process_group(0);
    // Prepared here: the child may only make async-signal-safe calls.
    let chroot = match &launch.chroot {
        Some((root, inside)) => Some((root.as_fd().as_raw_fd(), cstring(inside.as_os_str().as_bytes())?)),
        None => None,
    };
    let working_directory = launch.working_directory.as_fd().as_raw_fd();
    let run_as = launch.run_as;
    // SAFETY: the closure only makes raw system calls on data prepared
    // above; the handles it uses live in `launch` until after the spawn.
    unsafe {
        command.pre_exec(move || {
            let entered = match &chroot {
                Some((root, inside)) => {
                    libc::fchdir(*root) == 0
                        && libc::chroot(c".".as_ptr()) == 0
                        && libc::chdir(inside.as_ptr()) == 0
                }
                None => libc::fchdir(working_directory) == 0,
            };
            if !entered {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((uid, gid)) = run_as {
                let groups = [gid];
                if libc::setgroups(1, groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::umask(0o022);
            Ok(())
        });
    }
    let child = command.spawn()?;
    // The child leads its own group: its pid is the group id.
    Ok(Running { pid: Pid::from_raw(child.id() as i32), armed: true })
}

fn wait4(pid: i32) -> std::io::Result<Exit> {
    let mut status = 0;
    // SAFETY: rusage is plain data, filled in by the kernel.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to local variables.
        let result = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if result == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    if libc::WIFSIGNALED(status) {
        let signal = Signal::try_from(libc::WTERMSIG(status)).ok();
        Ok(Exit { exit_code: 128 + i64::from(libc::WTERMSIG(status)), signal, rusage })
    } else {
        Ok(Exit { exit_code: i64::from(libc::WEXITSTATUS(status)), signal: None, rusage })
    }
}

/// Finds the program to run, as a shell would but in the action's own
/// terms: argv[0] with a slash is a path (relative ones from the working
/// directory); without, it is looked up in the action's PATH, whose
/// relative entries are taken from the working directory. `root` maps
/// absolute paths when the action will be chrooted there.
pub fn resolve_program(
    argv0: &str,
    path_variable: Option<&str>,
    working_directory: &Path,
    root: Option<&Path>,
) -> Option<PathBuf> {
    // Where the runner finds `candidate`, and what the child calls it.
    let locate = |candidate: &Path| -> Option<(PathBuf, PathBuf)> {
        let seen_by_child =
            if candidate.is_absolute() { candidate.to_path_buf() } else { working_directory.join(candidate) };
        let seen_by_runner = match root {
            Some(root) => root.join(seen_by_child.strip_prefix("/").unwrap_or(&seen_by_child)),
            None => seen_by_child.clone(),
        };
        Some((seen_by_runner, seen_by_child))
    };
    let executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if argv0.contains('/') {
        let (runner_path, child_path) = locate(Path::new(argv0))?;
        return executable(&runner_path).then_some(child_path);
    }
    // The default of execvp(3) when PATH is unset.
    let search = path_variable.unwrap_or("/bin:/usr/bin");
    search.split(':').find_map(|entry| {
        let directory = if entry.is_empty() { Path::new(".") } else { Path::new(entry) };
        let (runner_path, child_path) = locate(&directory.join(argv0))?;
        executable(&runner_path).then_some(child_path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_programs_like_a_shell_in_the_actions_terms() {
        let dir = tempfile::tempdir().unwrap();
        let wd = dir.path().join("wd");
        std::fs::create_dir_all(wd.join("bin")).unwrap();
        let tool = wd.join("bin/tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::write(wd.join("bin/data"), "not executable").unwrap();

        assert_eq!(resolve_program("tool", Some("bin"), &wd, None), Some(wd.join("bin/tool")));
        assert_eq!(resolve_program("./bin/tool", None, &wd, None), Some(wd.join("./bin/tool")));
        assert_eq!(resolve_program("data", Some("bin"), &wd, None), None);
        assert_eq!(resolve_program("tool", Some("/usr/bin"), &wd, None), None, "not the runner's PATH");
        assert_eq!(resolve_program("sh", None, &wd, None), Some(PathBuf::from("/bin/sh")));
        // Chrooted: paths as the child sees them.
        assert_eq!(
            resolve_program("tool", Some("/wd/bin"), Path::new("/wd"), Some(dir.path())),
            Some(PathBuf::from("/wd/bin/tool"))
        );
    }
}
