//! `bb action download`: an action's input root written into a directory,
//! to look at and to run again (the `bb exec` line to do so is printed).
//!
//! What the farm returns is written only beneath that directory: every
//! name is checked as one path component, and every entry is created
//! relative to its parent's handle, never through a path or a symlink.

use crate::blobs::Endpoint;
use crate::remote;
use bb_client::StorageClient;
use bb_client::remote::BATCH_BLOB_LIMIT;
use bb_proto::reapi;
use bb_util::Digest;
use bb_util::dir::Directory;
use bytes::Bytes;
use clap::Subcommand;
use prost::Message;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most entries a download writes (a small tree can name the same
/// directory a billion times over).
const MAX_ENTRIES: usize = 1_000_000;
/// Bytes of small files read per round.
const ROUND_BYTES: u64 = 32 << 20;

#[derive(Subcommand)]
pub enum ActionCommand {
    /// Write an action's input root into DIR (new or empty) and print the
    /// `bb exec` line that runs the action again from it.
    Download {
        /// The action's digest: HASH/SIZE, or FUNCTION:HASH/SIZE.
        action: String,
        directory: PathBuf,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// A file to write: its parent, name, contents and mode.
struct PendingFile {
    parent: Arc<Directory>,
    name: String,
    digest: Digest,
    executable: bool,
}

struct Download<'a> {
    storage: StorageClient,
    endpoint: &'a Endpoint,
    entries: usize,
}

pub async fn run(command: ActionCommand) -> anyhow::Result<()> {
    let ActionCommand::Download { action, directory, endpoint } = command;
    let digest = remote::parse_digest(&action)?;
    let mut download = Download {
        storage: StorageClient::new(endpoint.connection.channel()?),
        endpoint: &endpoint,
        entries: 0,
    };
    let action: reapi::Action = download.message(&digest, "Action").await?;
    let command: reapi::Command =
        download.message(&field(&digest, &action.command_digest, "command")?, "Command").await?;
    let root_digest = field(&digest, &action.input_root_digest, "input root")?;
    let root = empty_directory(&directory)?;
    let files = download.directories(root, root_digest).await?;
    let count = files.len();
    download.files(files).await?;
    let shown = directory.display().to_string();
    println!("{count} files of action {digest} are in {shown}. Run it again with:");
    println!("  {}", bb_client::rerun::exec_line(&endpoint.instance, &action, &command, &shown));
    Ok(())
}

fn field(like: &Digest, digest: &Option<reapi::Digest>, what: &str) -> anyhow::Result<Digest> {
    Digest::from_required(like.function(), digest.as_ref())
        .map_err(|e| anyhow::anyhow!("the Action's {what} digest: {e}"))
}

/// `path`, created if missing; it must hold nothing.
fn empty_directory(path: &Path) -> anyhow::Result<Directory> {
    std::fs::create_dir_all(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    let directory =
        Directory::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    if !directory.entries()?.is_empty() {
        anyhow::bail!("{} is not empty: name a new directory", path.display());
    }
    Ok(directory)
}

impl Download<'_> {
    async fn read(&self, digests: &[Digest], what: &str) -> anyhow::Result<HashMap<Digest, Bytes>> {
        self.storage
            .read_blobs(&self.endpoint.instance, digests, what)
            .await
            .map_err(|s| remote::explain(&self.endpoint.connection.endpoint, what, &s))
    }

    async fn message<M: Message + Default>(&self, digest: &Digest, what: &str) -> anyhow::Result<M> {
        let mut blobs = self.read(&[*digest], what).await?;
        let data = blobs.remove(digest).unwrap_or_default();
        M::decode(data).map_err(|e| anyhow::anyhow!("{what} {digest} does not decode: {e}"))
    }

    fn count(&mut self, n: usize) -> anyhow::Result<()> {
        self.entries += n;
        if self.entries > MAX_ENTRIES {
            anyhow::bail!("the input root has more than {MAX_ENTRIES} entries; not writing it");
        }
        Ok(())
    }

    /// Creates the tree's directories and symlinks, level by level (each
    /// level's Directory messages in one read); returns the files to write.
    async fn directories(&mut self, root: Directory, digest: Digest) -> anyhow::Result<Vec<PendingFile>> {
        let mut files = Vec::new();
        let mut level = vec![(Arc::new(root), digest)];
        while !level.is_empty() {
            let mut digests: Vec<Digest> = level.iter().map(|(_, d)| *d).collect();
            digests.sort_unstable();
            digests.dedup();
            let messages = self.read(&digests, "input directory").await?;
            let mut next = Vec::new();
            for (handle, digest) in level {
                let message = reapi::Directory::decode(messages.get(&digest).cloned().unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("input directory {digest} does not decode: {e}"))?;
                self.count(message.files.len() + message.directories.len() + message.symlinks.len())?;
                for f in message.files {
                    checked("file", &f.name)?;
                    let file_digest = field(&digest, &f.digest, &format!("file {:?}", f.name))?;
                    files.push(PendingFile {
                        parent: handle.clone(),
                        name: f.name,
                        digest: file_digest,
                        executable: f.is_executable,
                    });
                }
                for s in &message.symlinks {
                    checked("symlink", &s.name)?;
                    handle
                        .symlink(&s.target, &s.name)
                        .map_err(|e| anyhow::anyhow!("symlink {:?}: {e}", s.name))?;
                }
                for d in &message.directories {
                    checked("directory", &d.name)?;
                    let child = handle
                        .create_dir(&d.name, 0o755)
                        .map_err(|e| anyhow::anyhow!("directory {:?}: {e}", d.name))?;
                    next.push((
                        Arc::new(child),
                        field(&digest, &d.digest, &format!("directory {:?}", d.name))?,
                    ));
                }
            }
            level = next;
        }
        Ok(files)
    }

    /// Writes the files: small ones read in rounds of batches, large ones
    /// streamed one by one.
    async fn files(&self, files: Vec<PendingFile>) -> anyhow::Result<()> {
        let (small, large): (Vec<PendingFile>, Vec<PendingFile>) =
            files.into_iter().partition(|f| f.digest.size() <= BATCH_BLOB_LIMIT);
        for round in rounds(&small) {
            let mut digests: Vec<Digest> = round.iter().map(|f| f.digest).collect();
            digests.sort_unstable();
            digests.dedup();
            let contents = self.read(&digests, "input file").await?;
            for file in round {
                let data = contents.get(&file.digest).cloned().unwrap_or_default();
                create(file)?.write_all(&data)?;
            }
        }
        for file in &large {
            let mut out = create(file)?;
            self.storage
                .read_into(&self.endpoint.instance, &file.digest, &mut out, "input file")
                .await
                .map_err(|s| remote::explain(&self.endpoint.connection.endpoint, "input file", &s))?;
        }
        Ok(())
    }
}

/// Runs of files whose sizes add up to about `ROUND_BYTES`.
fn rounds(files: &[PendingFile]) -> Vec<&[PendingFile]> {
    let mut rounds = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, file) in files.iter().enumerate() {
        if bytes + file.digest.size() > ROUND_BYTES && i > start {
            rounds.push(&files[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += file.digest.size();
    }
    if start < files.len() {
        rounds.push(&files[start..]);
    }
    rounds
}

fn checked(what: &'static str, name: &str) -> anyhow::Result<()> {
    bb_util::path::check_name(what, name).map_err(|e| anyhow::anyhow!("the farm returned {e}"))
}

fn create(file: &PendingFile) -> anyhow::Result<std::fs::File> {
    let mode = if file.executable { 0o755 } else { 0o644 };
    file.parent.create_regular(&file.name, mode).map_err(|e| anyhow::anyhow!("file {:?}: {e}", file.name))
}
