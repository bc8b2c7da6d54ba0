//! Output directories as REv2 Trees: every file hashed, symlinks recorded
//! (never followed), directories deduplicated and listed parents first, so
//! the Tree can be marked topologically sorted.

use crate::storage::Source;
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use prost::Message;
use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tonic::Status;

/// Hashes a file in chunks.
pub fn hash_file(path: &Path, function: DigestFunction) -> std::io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = function.hasher();
    let mut buffer = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        match file.read(&mut buffer)? {
            0 => return Ok(hasher.finish(size)),
            n => {
                hasher.update(&buffer[..n]);
                size += n as u64;
            }
        }
    }
}

pub fn is_executable(metadata: &std::fs::Metadata) -> bool {
    metadata.permissions().mode() & 0o111 != 0
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Status + '_ {
    move |e| Status::failed_precondition(format!("output {}: {e}", path.display()))
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

    /// Builds the Tree of the directory at `path`.
    pub fn build(mut self, path: &Path) -> Result<BuiltTree, Status> {
        let (root_digest, root, root_encoded) = self.directory(path)?;
        // Reverse post-order: every directory before the ones it contains.
        let mut children: Vec<(Digest, reapi::Directory, Bytes)> =
            self.post_order.into_iter().filter(|(d, _, _)| *d != root_digest).collect();
        children.reverse();
        let directories = children.iter().map(|(d, _, b)| (*d, b.clone())).collect();
        Ok(BuiltTree {
            tree: reapi::Tree {
                root: Some(root),
                children: children.into_iter().map(|(_, d, _)| d).collect(),
            },
            root_digest,
            directories,
            root_encoded,
        })
    }

    fn directory(&mut self, path: &Path) -> Result<(Digest, reapi::Directory, Bytes), Status> {
        let mut entries: Vec<(String, std::fs::DirEntry)> = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io_error(path))? {
            let entry = entry.map_err(io_error(path))?;
            let name = entry.file_name().into_string().map_err(|name| {
                Status::failed_precondition(format!("output {}: name {name:?} is not UTF-8", path.display()))
            })?;
            entries.push((name, entry));
        }
        // REv2 wants every list sorted by name (by code point, i.e. bytes).
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut directory = reapi::Directory::default();
        for (name, entry) in entries {
            let child = entry.path();
            let metadata = std::fs::symlink_metadata(&child).map_err(io_error(&child))?;
            let file_type = metadata.file_type();
            if file_type.is_symlink() {
                let target = std::fs::read_link(&child).map_err(io_error(&child))?;
                let target = target.into_os_string().into_string().map_err(|t| {
                    Status::failed_precondition(format!(
                        "output symlink {}: target {t:?} is not UTF-8",
                        child.display()
                    ))
                })?;
                check_symlink_target(&child, &target)?;
                directory.symlinks.push(reapi::SymlinkNode { name, target, node_properties: None });
            } else if file_type.is_dir() {
                let (digest, _, _) = self.directory(&child)?;
                directory.directories.push(reapi::DirectoryNode { name, digest: Some(digest.to_proto()) });
            } else if file_type.is_file() {
                let digest = hash_file(&child, self.function).map_err(io_error(&child))?;
                self.uploads.push((digest, Source::File(child)));
                directory.files.push(reapi::FileNode {
                    name,
                    digest: Some(digest.to_proto()),
                    is_executable: is_executable(&metadata),
                    node_properties: None,
                });
            }
            // Sockets, FIFOs and devices have no REv2 form; they are left out.
        }
        let encoded = Bytes::from(directory.encode_to_vec());
        let digest = Digest::of(self.function, &encoded);
        if self.seen.insert(digest) {
            self.post_order.push((digest, directory.clone(), encoded.clone()));
        }
        Ok((digest, directory, encoded))
    }
}

/// This farm advertises SymlinkAbsolutePathStrategy DISALLOWED: an action
/// that leaves an absolute symlink among its outputs fails, as REv2 says.
pub fn check_symlink_target(path: &Path, target: &str) -> Result<(), Status> {
    if target.starts_with('/') {
        return Err(Status::failed_precondition(format!(
            "output symlink {} has the absolute target {target:?}, which this farm does not allow",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let built = TreeBuilder::new(DigestFunction::Sha256, &mut uploads).build(root).unwrap();
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
    fn absolute_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("abs")).unwrap();
        let mut uploads = Vec::new();
        let err = TreeBuilder::new(DigestFunction::Sha256, &mut uploads).build(dir.path()).err().unwrap();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    }
}
