//! From an input root digest to a directory on disk: the Directory tree is
//! fetched level by level (a directory cache saves repeated fetches), every
//! name is checked, and files are hardlinked from the file cache.

use crate::file_cache::{FileCache, Key};
use crate::storage::StorageClient;
use bb_proto::reapi;
use bb_util::Digest;
use bb_util::path::{RelativePath, check_name, symlink_stays_inside};
use lru::LruCache;
use parking_lot::Mutex;
use prost::Message;
use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tonic::Status;

/// Entries one input root may have at most, to bound memory.
const MAX_ENTRIES: usize = 10_000_000;

/// Recently seen Directory messages, by digest.
pub struct DirectoryCache {
    entries: Mutex<LruCache<Digest, Arc<reapi::Directory>>>,
}

impl DirectoryCache {
    pub fn new(capacity: usize) -> Self {
        DirectoryCache {
            entries: Mutex::new(LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("at least 1"))),
        }
    }
}

/// A checked input tree, flattened.
#[derive(Default, Debug)]
pub struct InputTree {
    /// Parents before children.
    pub directories: Vec<RelativePath>,
    pub files: Vec<(RelativePath, Key)>,
    pub symlinks: Vec<(RelativePath, String)>,
}

impl InputTree {
    /// Fetches and checks the tree under `root`.
    pub async fn fetch(
        storage: &StorageClient,
        instance: &str,
        root: &Digest,
        cache: &DirectoryCache,
    ) -> Result<Self, Status> {
        let mut tree = InputTree::default();
        let mut level: Vec<(RelativePath, Digest)> = vec![(RelativePath::default(), *root)];
        let mut entries = 0usize;
        while !level.is_empty() {
            let directories = load(storage, instance, &level, cache).await?;
            let mut next = Vec::new();
            for ((path, digest), directory) in level.iter().zip(directories) {
                entries += directory.files.len() + directory.directories.len() + directory.symlinks.len();
                if entries > MAX_ENTRIES {
                    return Err(Status::invalid_argument(format!(
                        "input root {root} has more than {MAX_ENTRIES} entries"
                    )));
                }
                tree.add(path, digest, &directory, &mut next)?;
            }
            level = next;
        }
        Ok(tree)
    }

    /// Checks one directory's entries and adds them; subdirectories go to `next`.
    fn add(
        &mut self,
        path: &RelativePath,
        digest: &Digest,
        directory: &reapi::Directory,
        next: &mut Vec<(RelativePath, Digest)>,
    ) -> Result<(), Status> {
        let context = |e: bb_util::path::PathError| {
            Status::invalid_argument(format!("input directory {:?} ({digest}): {e}", path.to_string()))
        };
        let mut names = HashSet::new();
        let mut unique = |name: &str| {
            if names.insert(name.to_string()) {
                Ok(())
            } else {
                Err(Status::invalid_argument(format!(
                    "input directory {:?} ({digest}) has two entries named {name:?}",
                    path.to_string()
                )))
            }
        };
        let function = digest.function();
        let child =
            |name: &str| path.join(&RelativePath::parse("name", name).expect("checked by check_name"));
        for file in &directory.files {
            check_name("file", &file.name).map_err(context)?;
            unique(&file.name)?;
            let file_digest = Digest::from_required(function, file.digest.as_ref()).map_err(|e| {
                Status::invalid_argument(format!("input file {:?}: {e}", child(&file.name).to_string()))
            })?;
            self.files.push((child(&file.name), (file_digest, file.is_executable)));
        }
        for subdirectory in &directory.directories {
            check_name("directory", &subdirectory.name).map_err(context)?;
            unique(&subdirectory.name)?;
            let sub_digest = Digest::from_required(function, subdirectory.digest.as_ref()).map_err(|e| {
                Status::invalid_argument(format!(
                    "input directory {:?}: {e}",
                    child(&subdirectory.name).to_string()
                ))
            })?;
            let sub_path = child(&subdirectory.name);
            self.directories.push(sub_path.clone());
            next.push((sub_path, sub_digest));
        }
        for symlink in &directory.symlinks {
            check_name("symlink", &symlink.name).map_err(context)?;
            unique(&symlink.name)?;
            let location = child(&symlink.name);
            if !symlink_stays_inside(&location, &symlink.target) {
                return Err(Status::invalid_argument(format!(
                    "input symlink {:?} points at {:?}, outside the input root",
                    location.to_string(),
                    symlink.target
                )));
            }
            self.symlinks.push((location, symlink.target.clone()));
        }
        Ok(())
    }

    /// Every distinct file the tree needs.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.files.iter().map(|(_, key)| *key).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Creates the tree under `root` (an existing, empty directory): files
    /// from the cache (which must hold them all), directories writable by
    /// the runner's user so actions can create outputs in them.
    pub fn materialize(&self, root: &Path, cache: &FileCache) -> std::io::Result<()> {
        for directory in &self.directories {
            let path = directory.under(root);
            std::fs::create_dir(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
        }
        for (path, key) in &self.files {
            link_or_copy(&cache.path(key), &path.under(root))?;
        }
        for (path, target) in &self.symlinks {
            std::os::unix::fs::symlink(target, path.under(root))?;
        }
        Ok(())
    }
}

/// Hardlinks a cached file; copies it when a link is impossible (another
/// file system, too many links).
fn link_or_copy(source: &Path, target: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(source, target) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EMLINK)) => {
            std::fs::copy(source, target)?;
            let mode = std::fs::metadata(source)?.permissions().mode();
            std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
        }
        Err(e) => Err(e),
    }
}

/// The Directory messages of one level, from the cache or in batches.
async fn load(
    storage: &StorageClient,
    instance: &str,
    level: &[(RelativePath, Digest)],
    cache: &DirectoryCache,
) -> Result<Vec<Arc<reapi::Directory>>, Status> {
    let mut found: Vec<Option<Arc<reapi::Directory>>> = {
        let mut entries = cache.entries.lock();
        level.iter().map(|(_, d)| entries.get(d).cloned()).collect()
    };
    let wanted: Vec<Digest> =
        level.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|((_, d), _)| *d).collect();
    if !wanted.is_empty() {
        let blobs = storage.read_small(instance, &wanted, "input directory").await?;
        let mut entries = cache.entries.lock();
        for ((path, digest), slot) in level.iter().zip(found.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let directory = reapi::Directory::decode(blobs[digest].clone()).map_err(|e| {
                Status::invalid_argument(format!(
                    "input directory {:?} ({digest}) is not a Directory: {e}",
                    path.to_string()
                ))
            })?;
            let directory = Arc::new(directory);
            entries.put(*digest, directory.clone());
            *slot = Some(directory);
        }
    }
    Ok(found.into_iter().map(|d| d.expect("filled above")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_util::DigestFunction;

    fn digest(text: &str) -> Option<reapi::Digest> {
        Some(Digest::of(DigestFunction::Sha256, text.as_bytes()).to_proto())
    }

    fn add(directory: reapi::Directory) -> Result<InputTree, Status> {
        let mut tree = InputTree::default();
        let root = Digest::of(DigestFunction::Sha256, b"root");
        tree.add(&RelativePath::default(), &root, &directory, &mut Vec::new())?;
        Ok(tree)
    }

    fn file(name: &str) -> reapi::FileNode {
        reapi::FileNode { name: name.into(), digest: digest(name), ..Default::default() }
    }

    #[test]
    fn accepts_a_sound_directory() {
        let tree = add(reapi::Directory {
            files: vec![file("a"), file("b")],
            directories: vec![reapi::DirectoryNode { name: "d".into(), digest: digest("d") }],
            symlinks: vec![reapi::SymlinkNode {
                name: "l".into(),
                target: "d/x".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(tree.files.len(), 2);
        assert_eq!(tree.directories[0].to_string(), "d");
    }

    #[test]
    fn rejects_hostile_entries() {
        for bad in ["..", ".", "", "a/b", "/etc", "x\0"] {
            assert!(
                add(reapi::Directory { files: vec![file(bad)], ..Default::default() }).is_err(),
                "{bad:?}"
            );
        }
        let duplicate = reapi::Directory {
            files: vec![file("same")],
            directories: vec![reapi::DirectoryNode { name: "same".into(), digest: digest("d") }],
            ..Default::default()
        };
        assert!(add(duplicate).unwrap_err().message().contains("two entries"));
        for target in ["/etc/passwd", "../outside", "a/../../outside"] {
            let directory = reapi::Directory {
                symlinks: vec![reapi::SymlinkNode {
                    name: "l".into(),
                    target: target.into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            assert!(add(directory).is_err(), "{target}");
        }
        let no_digest = reapi::Directory {
            files: vec![reapi::FileNode { name: "f".into(), digest: None, ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(add(no_digest).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
