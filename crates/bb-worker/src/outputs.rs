//! An action's outputs: their parent directories made before it runs, and
//! what it left collected afterwards, for REv2.0 clients (`output_files`,
//! `output_directories`) and 2.1+ clients (`output_paths`) alike.

use crate::storage::Source;
use crate::tree::{TreeBuilder, check_symlink_target, hash_file, is_executable};
use bb_proto::reapi;
use bb_proto::reapi::command::OutputDirectoryFormat;
use bb_util::path::RelativePath;
use bb_util::{Digest, DigestFunction};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tonic::Status;

/// What an output path is expected to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    File,
    Directory,
    /// `output_paths` (2.1+): whatever it turns out to be.
    Any,
}

/// An output path, checked, as the client wrote it and below the input root.
struct Output {
    /// As in the Command (relative to the working directory).
    name: String,
    /// Relative to the input root.
    path: RelativePath,
    expect: Expect,
}

fn outputs(command: &reapi::Command) -> Result<Vec<Output>, Status> {
    let working = RelativePath::parse("working_directory", &command.working_directory)?;
    let listed: Vec<(&String, Expect)> = if command.output_paths.is_empty() {
        command
            .output_files
            .iter()
            .map(|p| (p, Expect::File))
            .chain(command.output_directories.iter().map(|p| (p, Expect::Directory)))
            .collect()
    } else {
        command.output_paths.iter().map(|p| (p, Expect::Any)).collect()
    };
    listed
        .into_iter()
        .map(|(name, expect)| {
            let relative = RelativePath::parse("output path", name)?;
            if relative.is_empty() && expect != Expect::Directory && expect != Expect::Any {
                return Err(Status::invalid_argument(format!(
                    "output file {name:?} names the working directory"
                )));
            }
            Ok(Output { name: name.clone(), path: working.join(&relative), expect })
        })
        .collect()
}

/// Creates the parent directories of every output (not the outputs), as
/// directories the runner's user can write in. Fails if a parent would have
/// to pass through a symlink or a file of the input root.
pub fn prepare(command: &reapi::Command, input_root: &Path) -> Result<(), Status> {
    for output in outputs(command)? {
        let mut path = input_root.to_path_buf();
        for component in output.path.parent().components() {
            path.push(component);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Status::invalid_argument(format!(
                        "output {:?}: {component:?} on its path is not a directory in the input root",
                        output.name
                    )));
                }
                Err(_) => {
                    std::fs::create_dir(&path)
                        .and_then(|()| {
                            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                        })
                        .map_err(|e| Status::internal(format!("creating {}: {e}", path.display())))?;
                }
            }
        }
    }
    Ok(())
}

/// The outputs the action produced, and the blobs to upload for them.
pub struct Collected {
    pub result: reapi::ActionResult,
    pub uploads: Vec<(Digest, Source)>,
}

pub fn collect(
    command: &reapi::Command,
    input_root: &Path,
    function: DigestFunction,
) -> Result<Collected, Status> {
    let format = OutputDirectoryFormat::try_from(command.output_directory_format)
        .unwrap_or(OutputDirectoryFormat::TreeOnly);
    let mut result = reapi::ActionResult::default();
    let mut uploads = Vec::new();
    for output in outputs(command)? {
        // The parent was checked before the run; the action may have
        // replaced a component with a symlink since.
        let parent = output.path.parent().resolve_beneath(input_root, "output path")?;
        let path: PathBuf = match output.path.file_name() {
            Some(name) => parent.join(name),
            None => parent,
        };
        let Ok(metadata) = std::fs::symlink_metadata(&path) else { continue };
        let mismatch = |what: &str| {
            Status::failed_precondition(format!("output {:?} was expected to be a {what}", output.name))
        };
        if metadata.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(|e| Status::failed_precondition(format!("output {:?}: {e}", output.name)))?
                .to_string_lossy()
                .into_owned();
            check_symlink_target(&path, &target)?;
            // A 2.0 output that exists behind the link must be of the listed kind.
            let points_at = std::fs::metadata(&path).ok();
            let symlink = reapi::OutputSymlink { path: output.name.clone(), target, node_properties: None };
            match output.expect {
                Expect::File if points_at.as_ref().is_some_and(|m| m.is_dir()) => {
                    return Err(mismatch("file"));
                }
                Expect::Directory if points_at.as_ref().is_some_and(|m| !m.is_dir()) => {
                    return Err(mismatch("directory"));
                }
                #[allow(deprecated)]
                Expect::File => result.output_file_symlinks.push(symlink),
                #[allow(deprecated)]
                Expect::Directory => result.output_directory_symlinks.push(symlink),
                Expect::Any => result.output_symlinks.push(symlink),
            }
        } else if metadata.is_dir() {
            if output.expect == Expect::File {
                return Err(mismatch("file"));
            }
            let built = TreeBuilder::new(function, &mut uploads).build(&path)?;
            let mut directory = reapi::OutputDirectory { path: output.name.clone(), ..Default::default() };
            if format != OutputDirectoryFormat::DirectoryOnly {
                let encoded = prost::Message::encode_to_vec(&built.tree);
                let tree_digest = Digest::of(function, &encoded);
                uploads.push((tree_digest, Source::Bytes(encoded.into())));
                directory.tree_digest = Some(tree_digest.to_proto());
                directory.is_topologically_sorted = true;
            }
            if format != OutputDirectoryFormat::TreeOnly {
                uploads.push((built.root_digest, Source::Bytes(built.root_encoded.clone())));
                for (digest, encoded) in &built.directories {
                    uploads.push((*digest, Source::Bytes(encoded.clone())));
                }
                directory.root_directory_digest = Some(built.root_digest.to_proto());
            }
            result.output_directories.push(directory);
        } else if metadata.is_file() {
            if output.expect == Expect::Directory {
                return Err(mismatch("directory"));
            }
            let digest = hash_file(&path, function)
                .map_err(|e| Status::failed_precondition(format!("output {:?}: {e}", output.name)))?;
            uploads.push((digest, Source::File(path.clone())));
            result.output_files.push(reapi::OutputFile {
                path: output.name.clone(),
                digest: Some(digest.to_proto()),
                is_executable: is_executable(&metadata),
                contents: Vec::new(),
                node_properties: None,
            });
        }
    }
    Ok(Collected { result, uploads })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(files: &[&str], directories: &[&str], paths: &[&str]) -> reapi::Command {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        reapi::Command {
            output_files: strings(files),
            output_directories: strings(directories),
            output_paths: strings(paths),
            working_directory: "wd".into(),
            ..Default::default()
        }
    }

    #[test]
    fn prepares_parents_and_collects_v20_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("wd")).unwrap();
        let cmd = command(&["out/a.txt", "out/link", "missing"], &["gen/tree"], &[]);
        prepare(&cmd, root).unwrap();
        assert!(root.join("wd/out").is_dir() && root.join("wd/gen").is_dir());
        assert!(!root.join("wd/gen/tree").exists(), "the output directory itself is not made");
        std::fs::write(root.join("wd/out/a.txt"), "A").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("wd/out/link")).unwrap();
        std::fs::create_dir_all(root.join("wd/gen/tree/sub")).unwrap();
        std::fs::write(root.join("wd/gen/tree/sub/f"), "F").unwrap();

        let collected = collect(&cmd, root, DigestFunction::Sha256).unwrap();
        let r = &collected.result;
        assert_eq!(r.output_files.len(), 1);
        assert_eq!(r.output_files[0].path, "out/a.txt");
        #[allow(deprecated)]
        let file_symlinks = &r.output_file_symlinks;
        assert_eq!(file_symlinks[0].target, "a.txt");
        assert!(r.output_symlinks.is_empty(), "only for output_paths");
        assert_eq!(r.output_directories[0].path, "gen/tree");
        assert!(r.output_directories[0].tree_digest.is_some());
        assert!(r.output_directories[0].root_directory_digest.is_none(), "TREE_ONLY by default");
        // a.txt, f, and the Tree blob.
        assert_eq!(collected.uploads.len(), 3);
    }

    #[test]
    fn output_paths_and_directory_formats() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("wd/d")).unwrap();
        std::fs::write(root.join("wd/f"), "x").unwrap();
        std::os::unix::fs::symlink("f", root.join("wd/l")).unwrap();
        let mut cmd = command(&[], &[], &["f", "d", "l"]);
        cmd.output_directory_format = OutputDirectoryFormat::TreeAndDirectory as i32;
        let r = collect(&cmd, root, DigestFunction::Sha256).unwrap().result;
        assert_eq!((r.output_files.len(), r.output_directories.len(), r.output_symlinks.len()), (1, 1, 1));
        assert!(
            r.output_directories[0].tree_digest.is_some()
                && r.output_directories[0].root_directory_digest.is_some()
        );
        cmd.output_directory_format = OutputDirectoryFormat::DirectoryOnly as i32;
        let r = collect(&cmd, root, DigestFunction::Sha256).unwrap().result;
        assert!(r.output_directories[0].tree_digest.is_none());
    }

    #[test]
    fn mismatches_and_hostile_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("wd/dir")).unwrap();
        let err = collect(&command(&["dir"], &[], &[]), root, DigestFunction::Sha256).err().unwrap();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        for bad in ["../escape", "/abs"] {
            assert_eq!(
                prepare(&command(&[bad], &[], &[]), root).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
        // A parent that is a symlink out of the root.
        std::os::unix::fs::symlink("/tmp", root.join("wd/sneaky")).unwrap();
        assert!(prepare(&command(&["sneaky/x"], &[], &[]), root).is_err());
        std::fs::write(root.join("wd/file"), "").unwrap();
        assert!(prepare(&command(&["file/x"], &[], &[]), root).is_err());
    }
}
