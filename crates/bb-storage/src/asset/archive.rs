//! FetchDirectory from an origin: a tar archive (gzip-compressed or not)
//! unpacked in memory into a tree of Directory messages in the CAS. Nothing
//! is written to disk and no path from the archive is ever opened: names
//! are checked component by component (no `..`, no absolute paths, no
//! empty or `.` components), symbolic links become SymlinkNodes with their
//! target as written, hard links name a file met earlier, and any other
//! entry type (devices, FIFOs) is refused. What the archive unpacks to is
//! bounded, so a small archive cannot expand without limit.

use crate::content::ContentStore;
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use std::io::Read;
use tonic::Status;

/// Entries an archive may hold.
const MAX_ENTRIES: usize = 1 << 20;

#[derive(Default)]
struct Dir {
    files: BTreeMap<String, (Bytes, bool)>,
    dirs: BTreeMap<String, Dir>,
    symlinks: BTreeMap<String, String>,
}

fn refused(why: String) -> Status {
    Status::failed_precondition(format!("the archive cannot be unpacked: {why}"))
}

/// Unpacks `archive` and stores its tree; returns the root Directory's
/// digest, or that of `subdirectory` within it.
pub async fn unpack(
    archive: Bytes,
    function: DigestFunction,
    content: &ContentStore,
    max_size: u64,
    subdirectory: Option<String>,
) -> Result<Digest, Status> {
    let mut root = tokio::task::spawn_blocking(move || read_archive(&archive, max_size))
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
    if let Some(path) = subdirectory {
        for name in components(&path)? {
            root = root.dirs.remove(name).ok_or_else(|| refused(format!("it has no directory {path:?}")))?;
        }
    }
    store(&root, function, content).await
}

/// The components of a relative path from an archive.
fn components(path: &str) -> Result<Vec<&str>, Status> {
    let trimmed = path.trim_start_matches("./").trim_end_matches('/');
    if path.starts_with('/') {
        return Err(refused(format!("{path:?} is absolute")));
    }
    let parts: Vec<&str> = trimmed.split('/').filter(|c| *c != ".").collect();
    if parts.iter().any(|c| c.is_empty() || *c == ".." || c.contains('\0')) {
        return Err(refused(format!("{path:?} is not a plain relative path")));
    }
    Ok(if trimmed.is_empty() { Vec::new() } else { parts })
}

fn read_archive(archive: &[u8], max_size: u64) -> Result<Dir, Status> {
    let reader: Box<dyn Read> = if archive.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(archive))
    } else {
        Box::new(archive)
    };
    let mut tar = tar::Archive::new(reader);
    let mut root = Dir::default();
    let mut total = 0u64;
    let entries = tar.entries().map_err(|e| refused(e.to_string()))?;
    for (index, entry) in entries.enumerate() {
        if index >= MAX_ENTRIES {
            return Err(refused(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(|e| refused(e.to_string()))?;
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| refused("an entry's name is not UTF-8".into()))?;
        let parts = components(&path)?;
        let Some((name, parents)) = parts.split_last() else { continue };
        let kind = entry.header().entry_type();
        let link = || -> Result<String, Status> {
            let target =
                entry.link_name_bytes().ok_or_else(|| refused(format!("link {path:?} has no target")))?;
            String::from_utf8(target.into_owned()).map_err(|_| refused(format!("link {path:?}: not UTF-8")))
        };
        if kind.is_hard_link() {
            let target = link()?;
            let file = find_file(&root, &target)?;
            insert(&mut root, parents, name, Node::File(file))?;
        } else if kind.is_symlink() {
            let target = link()?;
            insert(&mut root, parents, name, Node::Symlink(target))?;
        } else if kind.is_dir() {
            directory(&mut root, &parts)?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            total += entry.size();
            if total > max_size {
                return Err(Status::resource_exhausted(format!(
                    "the archive unpacks to more than storage.remote_asset.max_asset_size ({max_size} bytes)"
                )));
            }
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut data).map_err(|e| refused(format!("{path:?}: {e}")))?;
            let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
            insert(&mut root, parents, name, Node::File((data.into(), executable)))?;
        } else if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            continue;
        } else {
            return Err(refused(format!("{path:?} is a {kind:?}, which a directory tree cannot hold")));
        }
    }
    Ok(root)
}

enum Node {
    File((Bytes, bool)),
    Symlink(String),
}

/// The directory at `parts`, made (with its parents) if missing.
fn directory<'a>(root: &'a mut Dir, parts: &[&str]) -> Result<&'a mut Dir, Status> {
    let mut dir = root;
    for part in parts {
        if dir.files.contains_key(*part) || dir.symlinks.contains_key(*part) {
            return Err(refused(format!("{part:?} is both a directory and something else")));
        }
        dir = dir.dirs.entry(part.to_string()).or_default();
    }
    Ok(dir)
}

fn insert(root: &mut Dir, parents: &[&str], name: &str, node: Node) -> Result<(), Status> {
    let dir = directory(root, parents)?;
    if dir.dirs.contains_key(name) {
        return Err(refused(format!("{name:?} is both a directory and something else")));
    }
    // A later entry of the same name replaces an earlier one, as tar does.
    dir.files.remove(name);
    dir.symlinks.remove(name);
    match node {
        Node::File(file) => dir.files.insert(name.to_string(), file).map(|_| ()),
        Node::Symlink(target) => dir.symlinks.insert(name.to_string(), target).map(|_| ()),
    };
    Ok(())
}

fn find_file(root: &Dir, path: &str) -> Result<(Bytes, bool), Status> {
    let parts = components(path)?;
    let Some((name, parents)) = parts.split_last() else {
        return Err(refused(format!("hard link to {path:?}")));
    };
    let mut dir = root;
    for part in parents {
        dir = dir.dirs.get(*part).ok_or_else(|| refused(format!("hard link to {path:?}, not met before")))?;
    }
    dir.files.get(*name).cloned().ok_or_else(|| refused(format!("hard link to {path:?}, not met before")))
}

/// Stores every file and Directory below `dir`; returns `dir`'s digest.
async fn store(dir: &Dir, function: DigestFunction, content: &ContentStore) -> Result<Digest, Status> {
    let mut message = reapi::Directory::default();
    for (name, child) in &dir.dirs {
        let digest = Box::pin(store(child, function, content)).await?;
        message
            .directories
            .push(reapi::DirectoryNode { name: name.clone(), digest: Some(digest.to_proto()) });
    }
    for (name, (data, executable)) in &dir.files {
        let digest = content.put_data(function, data.clone()).await?;
        message.files.push(reapi::FileNode {
            name: name.clone(),
            digest: Some(digest.to_proto()),
            is_executable: *executable,
            ..Default::default()
        });
    }
    for (name, target) in &dir.symlinks {
        message.symlinks.push(reapi::SymlinkNode {
            name: name.clone(),
            target: target.clone(),
            ..Default::default()
        });
    }
    content.put_data(function, Bytes::from(message.encode_to_vec())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header
    }

    /// An entry with a raw name, so hostile names get into the archive.
    fn raw(builder: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8]) {
        let mut header = header(kind, data.len() as u64, 0o644);
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    #[test]
    fn files_directories_links_and_modes() {
        let bytes = archive(|b| {
            let mut h = header(tar::EntryType::Regular, 2, 0o755);
            b.append_data(&mut h, "pkg/bin/tool", &b"#!"[..]).unwrap();
            let mut h = header(tar::EntryType::Symlink, 0, 0o777);
            b.append_link(&mut h, "pkg/link", "../elsewhere").unwrap();
            let mut h = header(tar::EntryType::Link, 0, 0o644);
            b.append_link(&mut h, "pkg/same", "pkg/bin/tool").unwrap();
        });
        let root = read_archive(&bytes, 1 << 20).unwrap();
        let pkg = &root.dirs["pkg"];
        assert_eq!(pkg.dirs["bin"].files["tool"], (Bytes::from_static(b"#!"), true));
        assert_eq!(pkg.symlinks["link"], "../elsewhere", "kept as written, never followed");
        assert_eq!(pkg.files["same"].0, Bytes::from_static(b"#!"));
    }

    #[test]
    fn names_that_leave_the_tree_are_refused() {
        for name in ["../evil", "a/../../evil", "/etc/passwd", "a//b"] {
            let bytes = archive(|b| raw(b, name, tar::EntryType::Regular, b"x"));
            let err = read_archive(&bytes, 1 << 20).err().unwrap_or_else(|| panic!("{name} was accepted"));
            assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{name}: {err:?}");
        }
    }

    #[test]
    fn devices_and_links_to_nothing_are_refused() {
        let bytes = archive(|b| raw(b, "dev", tar::EntryType::Char, b""));
        assert!(read_archive(&bytes, 1 << 20).is_err());
        let bytes = archive(|b| {
            let mut h = header(tar::EntryType::Link, 0, 0o644);
            b.append_link(&mut h, "a", "missing").unwrap();
        });
        assert!(read_archive(&bytes, 1 << 20).is_err());
    }

    #[test]
    fn unpacking_is_bounded() {
        let bytes = archive(|b| {
            let mut h = header(tar::EntryType::Regular, 4096, 0o644);
            b.append_data(&mut h, "big", &[0u8; 4096][..]).unwrap();
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        let compressed = gz.finish().unwrap();
        let err = read_archive(&compressed, 1024).err().unwrap();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(read_archive(&compressed, 8192).is_ok(), "gzip is recognised");
    }
}
