//! Where the bytes of a blob to upload come from.

use bb_util::dir::Directory;
use bb_util::path::RelativePath;
use bytes::Bytes;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::Status;

/// A blob to upload.
#[derive(Clone, Debug)]
pub enum Source {
    Bytes(Bytes),
    /// A file at a path the uploader trusts (one a user named).
    File(PathBuf),
    /// A regular file beneath a directory handle, reached without following
    /// symlinks (an action's output).
    Beneath {
        root: Arc<Directory>,
        path: RelativePath,
    },
}

impl Source {
    /// A reader of the whole blob.
    pub fn reader(self) -> Result<Box<dyn Read + Send>, Status> {
        match self {
            Source::Bytes(data) => Ok(Box::new(std::io::Cursor::new(data))),
            other => Ok(Box::new(other.open()?)),
        }
    }

    /// The whole blob in memory (for blobs small enough to batch).
    pub fn read(&self) -> Result<Bytes, Status> {
        match self {
            Source::Bytes(data) => Ok(data.clone()),
            _ => {
                let mut data = Vec::new();
                self.open()?.read_to_end(&mut data).map_err(|e| Status::internal(e.to_string()))?;
                Ok(data.into())
            }
        }
    }

    fn open(&self) -> Result<std::fs::File, Status> {
        match self {
            Source::Bytes(_) => Err(Status::internal("in-memory blobs have no file")),
            Source::File(path) => {
                std::fs::File::open(path).map_err(|e| Status::internal(format!("{}: {e}", path.display())))
            }
            Source::Beneath { root, path } => root
                .open_file(path)
                .map(|(file, _)| file)
                .map_err(|e| Status::failed_precondition(format!("output {path}: {e}"))),
        }
    }
}
