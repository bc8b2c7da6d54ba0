//! Paths that come from clients: Directory entry names, output paths,
//! working directories. They are untrusted, so they are checked component by
//! component: no `..`, no NUL, no empty names, nothing absolute, and (when
//! resolved on disk) no symlink on the way, so nothing can reach outside the
//! directory they are relative to.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{what} {name:?}: {reason}")]
    BadName { what: &'static str, name: String, reason: &'static str },
    #[error("{what} {path:?}: {reason}")]
    BadPath { what: &'static str, path: String, reason: String },
}

impl From<PathError> for tonic::Status {
    fn from(error: PathError) -> Self {
        tonic::Status::invalid_argument(error.to_string())
    }
}

/// Checks one name of a Directory entry (file, directory or symlink).
pub fn check_name(what: &'static str, name: &str) -> Result<(), PathError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "is not a name"
    } else if name.contains('/') {
        "contains a slash"
    } else if name.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(PathError::BadName { what, name: name.to_string(), reason })
}

/// Refuses absolute paths and NUL; returns how to say what else is wrong.
fn check_relative<'a>(
    what: &'static str,
    path: &'a str,
) -> Result<impl Fn(&str) -> PathError + 'a, PathError> {
    let bad =
        move |reason: &str| PathError::BadPath { what, path: path.to_string(), reason: reason.to_string() };
    if path.starts_with('/') {
        return Err(bad("is absolute"));
    }
    if path.contains('\0') {
        return Err(bad("contains NUL"));
    }
    Ok(bad)
}

/// A checked relative path: its components are names (see `check_name`).
/// Empty and `.` components are dropped, so `""`, `"."` and `"a/./b/"`
/// are fine; `..` anywhere is not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativePath(Vec<String>);

impl RelativePath {
    pub fn parse(what: &'static str, path: &str) -> Result<Self, PathError> {
        let bad = check_relative(what, path)?;
        let mut components = Vec::new();
        for component in path.split('/') {
            match component {
                "" | "." => continue,
                ".." => return Err(bad("contains \"..\"")),
                name => components.push(name.to_string()),
            }
        }
        Ok(RelativePath(components))
    }

    /// `path` taken from `base` (both relative to one root), component by
    /// component: `..` steps back out of `base` and may climb as far as the
    /// root, never above it. BuildStream's output paths need this
    /// (`../../../buildstream-install` from its working directory).
    pub fn resolve_from(what: &'static str, base: &RelativePath, path: &str) -> Result<Self, PathError> {
        let bad = check_relative(what, path)?;
        let mut components = base.0.clone();
        for component in path.split('/') {
            match component {
                "" | "." => continue,
                ".." => {
                    if components.pop().is_none() {
                        return Err(bad("climbs above the input root"));
                    }
                }
                name => components.push(name.to_string()),
            }
        }
        Ok(RelativePath(components))
    }

    /// `self` with the entry `name` appended; `name` must have passed
    /// `check_name`.
    pub fn join_name(&self, name: &str) -> RelativePath {
        debug_assert!(check_name("name", name).is_ok(), "{name:?}");
        let mut components = self.0.clone();
        components.push(name.to_string());
        RelativePath(components)
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self` followed by `other`.
    pub fn join(&self, other: &RelativePath) -> RelativePath {
        RelativePath(self.0.iter().chain(&other.0).cloned().collect())
    }

    /// The path without its last component (empty for a one-component path).
    pub fn parent(&self) -> RelativePath {
        RelativePath(self.0[..self.0.len().saturating_sub(1)].to_vec())
    }

    pub fn file_name(&self) -> Option<&str> {
        self.0.last().map(String::as_str)
    }

    /// The path below `base`. Safe as a string join because every
    /// component is a plain name.
    pub fn under(&self, base: &Path) -> PathBuf {
        let mut path = base.to_path_buf();
        path.extend(&self.0);
        path
    }

    /// Like `under`, after checking on disk that no existing component is a
    /// symlink (which could lead outside `base`). Components that do not
    /// exist yet are fine; their parents were checked.
    pub fn resolve_beneath(&self, base: &Path, what: &'static str) -> Result<PathBuf, PathError> {
        let mut path = base.to_path_buf();
        for component in &self.0 {
            path.push(component);
            match std::fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.file_type().is_symlink() => {
                    return Err(PathError::BadPath {
                        what,
                        path: self.to_string(),
                        reason: format!("{component:?} is a symlink"),
                    });
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(self.under(base))
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("file", "a.txt").is_ok());
        assert!(check_name("file", "..hidden").is_ok());
        for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
            assert!(check_name("file", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(RelativePath::parse("p", "a/./b/").unwrap().components(), ["a", "b"]);
        assert!(RelativePath::parse("p", "").unwrap().is_empty());
        assert!(RelativePath::parse("p", ".").unwrap().is_empty());
        for bad in ["/etc", "a/../b", "..", "a/\0"] {
            assert!(RelativePath::parse("p", bad).is_err(), "{bad:?}");
        }
        let p = RelativePath::parse("p", "x/y/z").unwrap();
        assert_eq!(p.parent().to_string(), "x/y");
        assert_eq!(p.file_name(), Some("z"));
        assert_eq!(p.under(Path::new("/base")), PathBuf::from("/base/x/y/z"));
    }

    #[test]
    fn paths_resolved_from_a_working_directory() {
        let wd = RelativePath::parse("p", "buildstream/project/element.bst").unwrap();
        let at = |path: &str| RelativePath::resolve_from("output path", &wd, path);
        assert_eq!(at("../../../buildstream-install").unwrap().to_string(), "buildstream-install");
        assert_eq!(at(".").unwrap(), wd);
        assert_eq!(at("out/../lib/x").unwrap().to_string(), "buildstream/project/element.bst/lib/x");
        for above in ["../../../..", "../../../../etc", "a/../../../../.."] {
            let error = at(above).unwrap_err().to_string();
            assert!(error.contains("climbs above the input root"), "{above}: {error}");
        }
        assert!(at("/abs").is_err() && at("a\0").is_err());
    }

    #[test]
    fn resolving_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        let ok = RelativePath::parse("p", "real/new/file").unwrap();
        assert_eq!(ok.resolve_beneath(dir.path(), "p").unwrap(), dir.path().join("real/new/file"));
        let bad = RelativePath::parse("p", "link/passwd").unwrap();
        assert!(bad.resolve_beneath(dir.path(), "p").is_err());
    }
}
