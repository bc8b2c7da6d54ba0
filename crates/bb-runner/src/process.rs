//! Finding the program an action runs, in the action's own terms.

use std::path::{Path, PathBuf};

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
