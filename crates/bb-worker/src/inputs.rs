//! From an input root digest to a directory on disk. The Directory tree is
//! fetched level by level and kept as the DAG it is: each distinct Directory
//! once, however many paths reach it, so memory follows the distinct blobs,
//! never the paths they describe. While fetching, the paths are counted
//! (files, directories, depth, bytes) against the worker's limits, so a
//! hostile tree is rejected before anything is laid out. Files are then
//! hardlinked from the file cache through directory handles.

use crate::file_cache::{FileCache, Key};
use bb_client::SizeLru;
use bb_client::StorageClient;
use bb_proto::reapi;
use bb_util::Digest;
use bb_util::config::ByteSize;
use bb_util::dir::Directory;
use bb_util::path::{RelativePath, check_name};
use parking_lot::Mutex;
use prost::Message;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tonic::Status;

/// Limits on one action's input root, checked while it is fetched. An
/// input root over any of them fails its action with INVALID_ARGUMENT
/// naming the limit.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputLimits {
    /// Directories nested inside each other, the input root not counted.
    pub max_depth: usize,
    /// Files and symlinks, counted once per path (a Directory listed twice
    /// counts twice).
    pub max_files: u64,
    /// Directories, counted once per path.
    pub max_directories: u64,
    /// Bytes of distinct input files: what the file cache must hold at once.
    /// Unset means the file cache's `cache_max_size`.
    pub max_bytes: Option<ByteSize>,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits { max_depth: 256, max_files: 4_000_000, max_directories: 1_000_000, max_bytes: None }
    }
}

/// One Directory, checked: valid unique names, valid digests.
#[derive(Debug, Default)]
pub struct Node {
    pub files: Vec<(String, Key)>,
    pub directories: Vec<(String, Digest)>,
    pub symlinks: Vec<(String, String)>,
}

/// Recently seen Directory messages, checked, by digest; bounded by their
/// encoded size.
pub struct DirectoryCache {
    entries: Mutex<SizeLru<Arc<Node>>>,
}

impl DirectoryCache {
    pub fn new(max_bytes: u64) -> Self {
        DirectoryCache { entries: Mutex::new(SizeLru::new(max_bytes)) }
    }
}

/// What the paths of a tree add up to, while it is fetched.
#[derive(Default)]
struct Totals {
    files: u64,
    directories: u64,
    symlinks: u64,
    /// Bytes of the distinct files.
    distinct_bytes: u64,
}

/// A checked input tree: the distinct Directories of the DAG.
#[derive(Debug)]
pub struct InputTree {
    pub root: Digest,
    pub nodes: HashMap<Digest, Arc<Node>>,
    pub(crate) keys: HashSet<Key>,
}

impl InputTree {
    /// Fetches and checks the tree under `root`, within `limits`.
    /// `cache_bytes` is the file cache's size (the default byte limit).
    pub async fn fetch(
        storage: &StorageClient,
        instance: &str,
        root: &Digest,
        cache: &DirectoryCache,
        limits: &InputLimits,
        cache_bytes: u64,
    ) -> Result<Self, Status> {
        let mut tree = InputTree { root: *root, nodes: HashMap::new(), keys: HashSet::new() };
        let mut totals = Totals::default();
        let max_bytes = limits.max_bytes.map_or(cache_bytes, |b| b.bytes());
        // Each distinct Directory of this level, with how many paths reach
        // it and the first of them (for messages).
        let mut level: HashMap<Digest, (u64, RelativePath)> = [(*root, (1, RelativePath::default()))].into();
        let mut depth = 0;
        while !level.is_empty() {
            if depth > limits.max_depth {
                let (_, path) = level.values().next().expect("level is not empty");
                return Err(Status::invalid_argument(format!(
                    "input root {root} nests directories deeper than this worker's limit of {} \
                     (input_limits.max_depth), at {:?}",
                    limits.max_depth,
                    shorten(&path.to_string())
                )));
            }
            let wanted: Vec<(Digest, &RelativePath)> = level
                .iter()
                .filter(|(d, _)| !tree.nodes.contains_key(d))
                .map(|(d, (_, p))| (*d, p))
                .collect();
            for (digest, node) in load(storage, instance, &wanted, cache).await? {
                for (_, key) in &node.files {
                    if tree.keys.insert(*key) {
                        totals.distinct_bytes = totals.distinct_bytes.saturating_add(key.0.size());
                    }
                }
                tree.nodes.insert(digest, node);
            }
            let mut next: HashMap<Digest, (u64, RelativePath)> = HashMap::new();
            for (digest, (count, path)) in &level {
                let node = &tree.nodes[digest];
                totals.add(node, *count);
                for (name, child) in &node.directories {
                    let entry = next.entry(*child).or_insert_with(|| (0, path.join_name(name)));
                    entry.0 = entry.0.saturating_add(*count);
                }
            }
            totals.check(root, limits, max_bytes)?;
            level = next;
            depth += 1;
        }
        Ok(tree)
    }

    /// Every distinct file the tree needs.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.keys.iter().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// Lays the tree out in `root` (an existing, empty directory): files
    /// from the cache (which must hold them all), directories writable by
    /// the runner's user so actions can create outputs in them.
    pub fn materialize(&self, root: &Directory, cache: &FileCache) -> std::io::Result<()> {
        self.lay_out(&self.root, root, cache)
    }

    fn lay_out(&self, digest: &Digest, directory: &Directory, cache: &FileCache) -> std::io::Result<()> {
        let node = &self.nodes[digest];
        for (name, key) in &node.files {
            link_or_copy(&cache.path(key), directory, name)?;
        }
        for (name, target) in &node.symlinks {
            directory.symlink(target, name)?;
        }
        for (name, child) in &node.directories {
            let subdirectory = directory.create_dir(name, 0o777)?;
            self.lay_out(child, &subdirectory, cache)?;
        }
        Ok(())
    }
}

impl Totals {
    fn add(&mut self, node: &Node, paths: u64) {
        let times = |n: usize| (n as u64).saturating_mul(paths);
        self.files = self.files.saturating_add(times(node.files.len()));
        self.symlinks = self.symlinks.saturating_add(times(node.symlinks.len()));
        self.directories = self.directories.saturating_add(times(node.directories.len()));
    }

    fn check(&self, root: &Digest, limits: &InputLimits, max_bytes: u64) -> Result<(), Status> {
        let over = |what: &str, limit: u64, option: &str| {
            Err(Status::invalid_argument(format!(
                "input root {root} has more {what} than this worker's limit of {limit} (input_limits.{option})"
            )))
        };
        if self.files.saturating_add(self.symlinks) > limits.max_files {
            return over("files and symlinks", limits.max_files, "max_files");
        }
        if self.directories > limits.max_directories {
            return over("directories", limits.max_directories, "max_directories");
        }
        if self.distinct_bytes > max_bytes {
            return over("bytes of distinct files", max_bytes, "max_bytes, or the file cache's size");
        }
        Ok(())
    }
}

/// The start and end of a very long path, for a message.
fn shorten(path: &str) -> String {
    if path.len() <= 120 {
        return path.to_string();
    }
    let cut = |i: usize| (0..=i).rev().find(|i| path.is_char_boundary(*i)).unwrap_or(0);
    format!("{}...{}", &path[..cut(60)], &path[cut(path.len() - 60)..])
}

/// Hardlinks a cached file; copies it when a link is impossible (another
/// file system, too many links).
fn link_or_copy(source: &std::path::Path, directory: &Directory, name: &str) -> std::io::Result<()> {
    match directory.hard_link_from(source, name) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EMLINK)) => {
            use std::os::unix::fs::PermissionsExt;
            let mut from = std::fs::File::open(source)?;
            let mode = from.metadata()?.permissions().mode() & 0o7777;
            let mut to = directory.create_regular(name, mode)?;
            std::io::copy(&mut from, &mut to)?;
            to.set_permissions(std::fs::Permissions::from_mode(mode))
        }
        Err(e) => Err(e),
    }
}

/// Checks one Directory's entries: names valid and unique, digests valid,
/// symlink targets well-formed. `path` is where it was first seen.
fn check(path: &RelativePath, digest: &Digest, directory: reapi::Directory) -> Result<Node, Status> {
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
    let bad_digest = |what: &str, name: &str, e: bb_util::DigestError| {
        Status::invalid_argument(format!("input {what} {:?}: {e}", path.join_name(name).to_string()))
    };
    let mut node = Node::default();
    for file in directory.files {
        check_name("file", &file.name).map_err(context)?;
        unique(&file.name)?;
        let file_digest = Digest::from_required(function, file.digest.as_ref())
            .map_err(|e| bad_digest("file", &file.name, e))?;
        node.files.push((file.name, (file_digest, file.is_executable)));
    }
    for subdirectory in directory.directories {
        check_name("directory", &subdirectory.name).map_err(context)?;
        unique(&subdirectory.name)?;
        let child = Digest::from_required(function, subdirectory.digest.as_ref())
            .map_err(|e| bad_digest("directory", &subdirectory.name, e))?;
        node.directories.push((subdirectory.name, child));
    }
    for symlink in directory.symlinks {
        check_name("symlink", &symlink.name).map_err(context)?;
        unique(&symlink.name)?;
        check_symlink_target(&path.join_name(&symlink.name), &symlink.target)?;
        node.symlinks.push((symlink.name, symlink.target));
    }
    Ok(node)
}

/// An input symlink is laid out exactly as given, wherever it points (the
/// farm announces absolute symlinks ALLOWED: nothing the worker does
/// follows one); its target need only be one the kernel can store.
fn check_symlink_target(location: &RelativePath, target: &str) -> Result<(), Status> {
    let why = if target.is_empty() {
        "an empty target"
    } else if target.contains('\0') {
        "a target with a NUL byte"
    } else {
        return Ok(());
    };
    Err(Status::invalid_argument(format!("input symlink {:?} has {why}", location.to_string())))
}

/// The checked Directories of one level, from the cache or from storage.
async fn load(
    storage: &StorageClient,
    instance: &str,
    wanted: &[(Digest, &RelativePath)],
    cache: &DirectoryCache,
) -> Result<Vec<(Digest, Arc<Node>)>, Status> {
    let mut loaded = Vec::with_capacity(wanted.len());
    let mut fetch = Vec::new();
    {
        let mut entries = cache.entries.lock();
        for (digest, path) in wanted {
            match entries.get(digest) {
                Some(node) => loaded.push((*digest, node.clone())),
                None => fetch.push((*digest, *path)),
            }
        }
    }
    if fetch.is_empty() {
        return Ok(loaded);
    }
    let digests: Vec<Digest> = fetch.iter().map(|(d, _)| *d).collect();
    let mut blobs = storage.read_blobs(instance, &digests, "input directory").await?;
    for (digest, path) in fetch {
        let data = blobs.remove(&digest).ok_or_else(|| {
            Status::internal(format!("storage client returned no input directory {digest}"))
        })?;
        let directory = reapi::Directory::decode(data).map_err(|e| {
            Status::invalid_argument(format!(
                "input directory {:?} ({digest}) is not a Directory: {e}",
                path.to_string()
            ))
        })?;
        let node = Arc::new(check(path, &digest, directory)?);
        cache.entries.lock().insert(digest, digest.size(), node.clone());
        loaded.push((digest, node));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_util::DigestFunction;

    fn digest(text: &str) -> Option<reapi::Digest> {
        Some(Digest::of(DigestFunction::Sha256, text.as_bytes()).to_proto())
    }

    fn add(directory: reapi::Directory) -> Result<Node, Status> {
        let root = Digest::of(DigestFunction::Sha256, b"root");
        check(&RelativePath::default(), &root, directory)
    }

    fn file(name: &str) -> reapi::FileNode {
        reapi::FileNode { name: name.into(), digest: digest(name), ..Default::default() }
    }

    #[test]
    fn accepts_a_sound_directory() {
        let node = add(reapi::Directory {
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
        assert_eq!(node.files.len(), 2);
        assert_eq!(node.directories[0].0, "d");
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
        for (target, valid) in [
            ("/etc/passwd", true),
            ("../outside", true),
            ("a/../../outside", true),
            ("", false),
            ("a\0b", false),
        ] {
            let directory = reapi::Directory {
                symlinks: vec![reapi::SymlinkNode {
                    name: "l".into(),
                    target: target.into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            assert_eq!(add(directory).is_ok(), valid, "{target:?}");
        }
        let no_digest = reapi::Directory {
            files: vec![reapi::FileNode { name: "f".into(), digest: None, ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(add(no_digest).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn long_paths_are_shortened_in_messages() {
        let long = "a/".repeat(1000);
        let short = shorten(&long);
        assert!(short.len() < 130 && short.contains("..."), "{short}");
        assert_eq!(shorten("a/b"), "a/b");
    }
}
