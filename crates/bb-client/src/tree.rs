//! Output directories as REv2 Trees: every file hashed, symlinks recorded
//! (never followed), directories deduplicated and listed parents first, so
//! the Tree can be marked topologically sorted.

use crate::source::Source;
use bb_proto::reapi;
use bb_util::dir::{Directory, Kind, Metadata};
use bb_util::path::RelativePath;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use prost::Message;
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use tonic::Status;

/// Hashes a file at a path the caller trusts, in chunks.
pub fn hash_file(path: &Path, function: DigestFunction) -> std::io::Result<Digest> {
    hash_reader(&mut std::fs::File::open(path)?, function)
}

/// Hashes everything `reader` yields, in chunks.
pub fn hash_reader(reader: &mut impl Read, function: DigestFunction) -> std::io::Result<Digest> {
    let mut hasher = function.hasher();
    let mut buffer = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        match reader.read(&mut buffer)? {
            0 => return Ok(hasher.finish(size)),
            n => {
                hasher.update(&buffer[..n]);
                size += n as u64;
            }
        }
    }
}

fn io_error(path: &RelativePath) -> impl FnOnce(std::io::Error) -> Status + '_ {
    move |e| Status::failed_precondition(format!("output {:?}: {e}", path.to_string()))
}

/// A built Tree and what must be uploaded for it.
pub struct BuiltTree {
    pub tree: reapi::Tree,
    pub root_digest: Digest,
    /// Every Directory message but the root's, encoded, with its digest.
    pub directories: Vec<(Digest, Bytes)>,
    pub root_encoded: Bytes,
}

pub struct TreeBuilder<'a> {
    function: DigestFunction,
    /// Files to upload.
    pub uploads: &'a mut Vec<(Digest, Source)>,
    seen: HashSet<Digest>,
    /// Distinct directories, children before parents.
    post_order: Vec<(Digest, reapi::Directory, Bytes)>,
}

impl<'a> TreeBuilder<'a> {
    pub fn new(function: DigestFunction, uploads: &'a mut Vec<(Digest, Source)>) -> Self {
        TreeBuilder { function, uploads, seen: HashSet::new(), post_order: Vec::new() }
    }

    /// Builds the Tree of the directory at `path` beneath `root`, reached
    /// and read without following any symlink.
    pub fn build(mut self, root: &Arc<Directory>, path: &RelativePath) -> Result<BuiltTree, Status> {
        let handle = root.open_dir(path).map_err(io_error(path))?;
        let (root_digest, top, root_encoded) = self.directory(root, &handle, path)?;
        // Reverse post-order: every directory before the ones it contains.
        let mut children: Vec<(Digest, reapi::Directory, Bytes)> =
            self.post_order.into_iter().filter(|(d, _, _)| *d != root_digest).collect();
        children.reverse();
        let directories = children.iter().map(|(d, _, b)| (*d, b.clone())).collect();
        Ok(BuiltTree {
            tree: reapi::Tree {
                root: Some(top),
                children: children.into_iter().map(|(_, d, _)| d).collect(),
            },
            root_digest,
            directories,
            root_encoded,
        })
    }

    fn directory(
        &mut self,
        root: &Arc<Directory>,
        handle: &Directory,
        path: &RelativePath,
    ) -> Result<(Digest, reapi::Directory, Bytes), Status> {
        let mut names = Vec::new();
        for name in handle.entries().map_err(io_error(path))? {
            names.push(name.into_string().map_err(|name| {
                Status::failed_precondition(format!(
                    "output {:?}: name {name:?} is not UTF-8",
                    path.to_string()
                ))
            })?);
        }
        // REv2 wants every list sorted by name (by code point, i.e. bytes).
        names.sort();
        let mut directory = reapi::Directory::default();
        for name in names {
            let child = path.join_name(&name);
            let metadata = handle.metadata(&name).map_err(io_error(&child))?;
            match metadata.kind {
                Kind::Symlink => {
                    let target = handle.read_link(&name).map_err(io_error(&child))?;
                    let target = target.into_string().map_err(|t| {
                        Status::failed_precondition(format!(
                            "output symlink {:?}: target {t:?} is not UTF-8",
                            child.to_string()
                        ))
                    })?;
                    directory.symlinks.push(reapi::SymlinkNode { name, target, node_properties: None });
                }
                Kind::Directory => {
                    let subdirectory = handle.open_child(&name).map_err(io_error(&child))?;
                    let (digest, _, _) = self.directory(root, &subdirectory, &child)?;
                    directory
                        .directories
                        .push(reapi::DirectoryNode { name, digest: Some(digest.to_proto()) });
                }
                Kind::File => {
                    let (digest, metadata) =
                        hash_entry(handle, &name, self.function).map_err(io_error(&child))?;
                    self.uploads.push((digest, Source::Beneath { root: root.clone(), path: child }));
                    directory.files.push(reapi::FileNode {
                        name,
                        digest: Some(digest.to_proto()),
                        is_executable: metadata.is_executable(),
                        node_properties: None,
                    });
                }
                // Sockets, FIFOs and devices have no REv2 form; they are left out.
                Kind::Other => {}
            }
        }
        let encoded = Bytes::from(directory.encode_to_vec());
        let digest = Digest::of(self.function, &encoded);
        if self.seen.insert(digest) {
            self.post_order.push((digest, directory.clone(), encoded.clone()));
        }
        Ok((digest, directory, encoded))
    }
}

/// Opens the regular file `name` (never a symlink, FIFO or device) and
/// hashes it.
pub fn hash_entry(
    directory: &Directory,
    name: &str,
    function: DigestFunction,
) -> std::io::Result<(Digest, Metadata)> {
    let (mut file, metadata) = directory.open_regular(name)?;
    Ok((hash_reader(&mut file, function)?, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn builds_sorted_deduplicated_topological_trees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/same")).unwrap();
        std::fs::create_dir_all(root.join("a/same")).unwrap();
        std::fs::create_dir_all(root.join("a/deeper/same")).unwrap();
        for same in ["a/same", "b/same", "a/deeper/same"] {
            std::fs::write(root.join(same).join("f"), "identical").unwrap();
        }
        std::fs::write(root.join("z.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("z.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a/same/f", root.join("link")).unwrap();

        let mut uploads = Vec::new();
        let handle = Arc::new(Directory::open(root).unwrap());
        let built = TreeBuilder::new(DigestFunction::Sha256, &mut uploads)
            .build(&handle, &RelativePath::default())
            .unwrap();
        let top = built.tree.root.as_ref().unwrap();
        let names: Vec<&str> = top.directories.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(top.files[0].is_executable);
        assert_eq!(top.symlinks[0].target, "a/same/f");
        // "same" appears three times but is stored once; "b" and
        // "a/deeper" (each holding just "same") are one Directory too.
        assert_eq!(built.tree.children.len(), 3);
        // Parents before children.
        let digest_of = |d: &reapi::Directory| Digest::of(DigestFunction::Sha256, &d.encode_to_vec());
        let position = |digest: &Digest| built.tree.children.iter().position(|c| digest_of(c) == *digest);
        for (i, child) in built.tree.children.iter().enumerate() {
            for sub in &child.directories {
                let sub = Digest::from_required(DigestFunction::Sha256, sub.digest.as_ref()).unwrap();
                assert!(position(&sub).unwrap() > i, "child listed before its parent");
            }
        }
        assert_eq!(uploads.len(), 4, "three identical files and the script");
        assert_eq!(Digest::of(DigestFunction::Sha256, &built.root_encoded), built.root_digest);
    }

    #[test]
    fn symlinks_are_returned_exactly_as_made() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../outside", dir.path().join("up")).unwrap();
        let mut uploads = Vec::new();
        let handle = Arc::new(Directory::open(dir.path()).unwrap());
        let built = TreeBuilder::new(DigestFunction::Sha256, &mut uploads)
            .build(&handle, &RelativePath::default())
            .unwrap();
        let targets: Vec<&str> =
            built.tree.root.as_ref().unwrap().symlinks.iter().map(|s| s.target.as_str()).collect();
        assert_eq!(targets, ["/etc/passwd", "../../outside"]);
        assert!(uploads.is_empty(), "nothing was followed and read");
    }
}
