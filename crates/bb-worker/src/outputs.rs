//! An action's outputs: their parent directories made before it runs, and
//! what it left collected afterwards, for REv2.0 clients (`output_files`,
//! `output_directories`) and 2.1+ clients (`output_paths`) alike.

use bb_client::Source;
use bb_client::tree::{TreeBuilder, hash_entry};
use bb_proto::reapi;
use bb_proto::reapi::command::OutputDirectoryFormat;
use bb_util::dir::{Directory, Kind};
use bb_util::path::RelativePath;
use bb_util::{Digest, DigestFunction};
use std::sync::Arc;
use tonic::Status;

/// What an output path is expected to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    File,
    Directory,
    /// `output_paths` (2.1+): whatever it turns out to be.
    Any,
}

/// An output path, checked, as the client wrote it and resolved from the
/// working directory to a path beneath the input root.
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
            let path = RelativePath::resolve_from("output path", &working, name)?;
            if expect == Expect::File && (path == working || path.is_empty()) {
                return Err(Status::invalid_argument(format!("output file {name:?} names a directory")));
            }
            Ok(Output { name: name.clone(), path, expect })
        })
        .collect()
}

/// Creates the parent directories of every output (not the outputs), as
/// directories the runner's user can write in. Fails if a parent would have
/// to pass through a symlink or a file of the input root.
pub fn prepare(command: &reapi::Command, input_root: &Directory) -> Result<(), Status> {
    for output in outputs(command)? {
        let mut directory = input_root.try_clone().map_err(internal("input root"))?;
        for component in output.path.parent().components() {
            directory = match directory.metadata(component) {
                Ok(m) if m.kind == Kind::Directory => directory.open_child(component),
                Ok(_) => {
                    return Err(Status::invalid_argument(format!(
                        "output {:?}: {component:?} on its path is not a directory in the input root",
                        output.name
                    )));
                }
                Err(_) => directory.create_dir(component, 0o777),
            }
            .map_err(internal(&output.name))?;
        }
    }
    Ok(())
}

fn internal(what: &str) -> impl FnOnce(std::io::Error) -> Status + '_ {
    move |e| Status::internal(format!("preparing output {what:?}: {e}"))
}

/// The outputs the action produced, and the blobs to upload for them.
pub struct Collected {
    pub result: reapi::ActionResult,
    pub uploads: Vec<(Digest, Source)>,
}

/// Reads what the action left, beneath `input_root` and never following a
/// symlink: an output whose parent the action replaced by a symlink, or a
/// file by a FIFO, fails the action.
pub fn collect(
    command: &reapi::Command,
    input_root: &Arc<Directory>,
    function: DigestFunction,
) -> Result<Collected, Status> {
    let format = OutputDirectoryFormat::try_from(command.output_directory_format)
        .unwrap_or(OutputDirectoryFormat::TreeOnly);
    let mut collected = Collected { result: reapi::ActionResult::default(), uploads: Vec::new() };
    for output in outputs(command)? {
        let failed =
            |e: std::io::Error| Status::failed_precondition(format!("output {:?}: {e}", output.name));
        let parent = match input_root.open_dir(&output.path.parent()) {
            Ok(parent) => parent,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(e)),
        };
        let kind = match output.path.file_name() {
            // The input root itself.
            None => Kind::Directory,
            Some(name) => match parent.metadata(name) {
                Ok(metadata) => metadata.kind,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(e)),
            },
        };
        let mismatch = |what: &str| {
            Status::failed_precondition(format!(
                "output {:?} is not a {what} but was listed as one",
                output.name
            ))
        };
        match (kind, output.expect) {
            (Kind::Symlink, _) => collect_symlink(&output, &parent, &mut collected.result)?,
            (Kind::Directory, Expect::File) => return Err(mismatch("file")),
            (Kind::Directory, _) => collect_directory(&output, input_root, format, function, &mut collected)?,
            (Kind::File, Expect::Directory) => return Err(mismatch("directory")),
            (Kind::File, _) => collect_file(&output, input_root, &parent, function, &mut collected)?,
            (Kind::Other, _) => {
                return Err(Status::failed_precondition(format!(
                    "output {:?} is a FIFO, socket or device node, which REv2 cannot return",
                    output.name
                )));
            }
        }
    }
    Ok(collected)
}

/// A symlink is returned exactly as made, never followed.
fn collect_symlink(
    output: &Output,
    parent: &Directory,
    result: &mut reapi::ActionResult,
) -> Result<(), Status> {
    let name = output.path.file_name().expect("the input root is no symlink");
    let target = parent
        .read_link(name)
        .map_err(|e| Status::failed_precondition(format!("output {:?}: {e}", output.name)))?
        .into_string()
        .map_err(|t| {
            Status::failed_precondition(format!("output {:?}: target {t:?} is not UTF-8", output.name))
        })?;
    let symlink = reapi::OutputSymlink { path: output.name.clone(), target, node_properties: None };
    match output.expect {
        #[allow(deprecated)]
        Expect::File => result.output_file_symlinks.push(symlink),
        #[allow(deprecated)]
        Expect::Directory => result.output_directory_symlinks.push(symlink),
        Expect::Any => result.output_symlinks.push(symlink),
    }
    Ok(())
}

fn collect_directory(
    output: &Output,
    input_root: &Arc<Directory>,
    format: OutputDirectoryFormat,
    function: DigestFunction,
    collected: &mut Collected,
) -> Result<(), Status> {
    let built = TreeBuilder::new(function, &mut collected.uploads).build(input_root, &output.path)?;
    let mut directory = reapi::OutputDirectory { path: output.name.clone(), ..Default::default() };
    if format != OutputDirectoryFormat::DirectoryOnly {
        let encoded = prost::Message::encode_to_vec(&built.tree);
        let tree_digest = Digest::of(function, &encoded);
        collected.uploads.push((tree_digest, Source::Bytes(encoded.into())));
        directory.tree_digest = Some(tree_digest.to_proto());
        directory.is_topologically_sorted = true;
    }
    if format != OutputDirectoryFormat::TreeOnly {
        collected.uploads.push((built.root_digest, Source::Bytes(built.root_encoded.clone())));
        for (digest, encoded) in &built.directories {
            collected.uploads.push((*digest, Source::Bytes(encoded.clone())));
        }
        directory.root_directory_digest = Some(built.root_digest.to_proto());
    }
    collected.result.output_directories.push(directory);
    Ok(())
}

fn collect_file(
    output: &Output,
    input_root: &Arc<Directory>,
    parent: &Directory,
    function: DigestFunction,
    collected: &mut Collected,
) -> Result<(), Status> {
    let name = output.path.file_name().expect("the input root is no file");
    let (digest, metadata) = hash_entry(parent, name, function)
        .map_err(|e| Status::failed_precondition(format!("output {:?}: {e}", output.name)))?;
    collected.uploads.push((digest, Source::Beneath { root: input_root.clone(), path: output.path.clone() }));
    collected.result.output_files.push(reapi::OutputFile {
        path: output.name.clone(),
        digest: Some(digest.to_proto()),
        is_executable: metadata.is_executable(),
        contents: Vec::new(),
        node_properties: None,
    });
    Ok(())
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

    fn handle(path: &std::path::Path) -> Arc<Directory> {
        Arc::new(Directory::open(path).unwrap())
    }

    fn collect_in(cmd: &reapi::Command, root: &std::path::Path) -> Result<Collected, Status> {
        collect(cmd, &handle(root), DigestFunction::Sha256)
    }

    #[test]
    fn prepares_parents_and_collects_v20_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("wd")).unwrap();
        let cmd = command(&["out/a.txt", "out/link", "missing"], &["gen/tree"], &[]);
        prepare(&cmd, &handle(root)).unwrap();
        assert!(root.join("wd/out").is_dir() && root.join("wd/gen").is_dir());
        assert!(!root.join("wd/gen/tree").exists(), "the output directory itself is not made");
        std::fs::write(root.join("wd/out/a.txt"), "A").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("wd/out/link")).unwrap();
        std::fs::create_dir_all(root.join("wd/gen/tree/sub")).unwrap();
        std::fs::write(root.join("wd/gen/tree/sub/f"), "F").unwrap();

        let collected = collect_in(&cmd, root).unwrap();
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
        let r = collect_in(&cmd, root).unwrap().result;
        assert_eq!((r.output_files.len(), r.output_directories.len(), r.output_symlinks.len()), (1, 1, 1));
        assert!(
            r.output_directories[0].tree_digest.is_some()
                && r.output_directories[0].root_directory_digest.is_some()
        );
        cmd.output_directory_format = OutputDirectoryFormat::DirectoryOnly as i32;
        let r = collect_in(&cmd, root).unwrap().result;
        assert!(r.output_directories[0].tree_digest.is_none());
    }

    #[test]
    fn paths_with_dot_dot_resolve_from_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("buildstream/p/e.bst")).unwrap();
        let mut cmd = command(&[], &[], &[".", "../../../buildstream-install"]);
        cmd.working_directory = "buildstream/p/e.bst".into();
        prepare(&cmd, &handle(root)).unwrap();
        std::fs::create_dir(root.join("buildstream-install")).unwrap();
        std::fs::write(root.join("buildstream-install/bin"), "B").unwrap();
        std::fs::write(root.join("buildstream/p/e.bst/log"), "L").unwrap();
        let r = collect_in(&cmd, root).unwrap().result;
        let paths: Vec<&str> = r.output_directories.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, [".", "../../../buildstream-install"]);
        let above = command(&[], &[], &["../.."]);
        assert_eq!(prepare(&above, &handle(root)).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(collect_in(&command(&["."], &[], &[]), root).is_err(), "a file cannot be the directory");
    }

    #[test]
    fn mismatches_and_hostile_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("wd/dir")).unwrap();
        let err = collect_in(&command(&["dir"], &[], &[]), root).err().unwrap();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        for bad in ["../../escape", "/abs"] {
            assert_eq!(
                prepare(&command(&[bad], &[], &[]), &handle(root)).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
        // A parent that is a symlink out of the root.
        std::os::unix::fs::symlink("/tmp", root.join("wd/sneaky")).unwrap();
        assert!(prepare(&command(&["sneaky/x"], &[], &[]), &handle(root)).is_err());
        std::fs::write(root.join("wd/file"), "").unwrap();
        assert!(prepare(&command(&["file/x"], &[], &[]), &handle(root)).is_err());
    }

    /// What an action may leave where its outputs were expected: nothing
    /// outside the input root is ever read, and the action fails.
    #[test]
    fn replaced_outputs_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("wd")).unwrap();
        std::fs::create_dir_all(outside.join("private")).unwrap();
        std::fs::write(outside.join("private/secret"), "secret").unwrap();
        // The parent of an output replaced by a symlink out of the root.
        std::os::unix::fs::symlink(outside.join("private"), root.join("wd/out")).unwrap();
        let err = collect_in(&command(&["out/secret"], &[], &[]), &root).err().unwrap();
        assert!(err.message().contains("symlink"), "{}", err.message());
        // The working directory itself replaced.
        std::fs::rename(root.join("wd"), root.join("wd-moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("wd")).unwrap();
        let err = collect_in(&command(&[], &["private"], &[]), &root).err().unwrap();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{}", err.message());
        std::fs::remove_file(root.join("wd")).unwrap();
        std::fs::rename(root.join("wd-moved"), root.join("wd")).unwrap();
        // A FIFO as an output file (reading it would block the worker).
        nix::unistd::mkfifo(&root.join("wd/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        let err = collect_in(&command(&["fifo"], &[], &[]), &root).err().unwrap();
        assert!(err.message().contains("FIFO"), "{}", err.message());
        // An output directory holding a link out is returned as a link,
        // absolute or relative, its target never read.
        std::fs::create_dir(root.join("wd/tree")).unwrap();
        for target in [outside.join("private/secret"), "../../../outside/private/secret".into()] {
            let _ = std::fs::remove_file(root.join("wd/tree/ln"));
            std::os::unix::fs::symlink(&target, root.join("wd/tree/ln")).unwrap();
            let collected = collect_in(&command(&[], &["tree"], &[]), &root).unwrap();
            assert_eq!(collected.uploads.len(), 1, "only the Tree: the link's target is not read");
        }
        // An output file that is an absolute link: returned as made.
        std::os::unix::fs::symlink("/etc/passwd", root.join("wd/abs")).unwrap();
        let collected = collect_in(&command(&["abs"], &[], &[]), &root).unwrap();
        assert!(collected.uploads.is_empty(), "the link's target is not read");
        #[allow(deprecated)]
        let links = &collected.result.output_file_symlinks;
        assert_eq!(links.iter().map(|l| l.target.as_str()).collect::<Vec<_>>(), ["/etc/passwd"]);
    }
}
