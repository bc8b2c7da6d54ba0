//! GetTree: a directory and everything below it, breadth first, each
//! distinct directory once, in pages.
//!
//! A page token is the number of directories already returned. Directories
//! missing from the CAS below the root are left out, as REv2 allows.

use crate::content::ContentStore;
use bb_proto::reapi;
use bb_util::Digest;
use prost::Message;
use std::collections::{HashSet, VecDeque};
use tonic::Status;

/// Walks the tree under `root` in a fixed order.
pub struct TreeWalk {
    content: ContentStore,
    queue: VecDeque<Digest>,
    seen: HashSet<Digest>,
    /// Directories returned so far.
    pub position: usize,
    /// Directories left out because they are missing from the CAS.
    missing: usize,
}

impl TreeWalk {
    /// Starts a walk; NOT_FOUND if the root itself is missing.
    pub async fn start(content: ContentStore, root: Digest) -> Result<Self, Status> {
        if content.get(&root).await?.is_none() {
            return Err(Status::not_found(format!("root directory {root} not found")));
        }
        Ok(TreeWalk {
            content,
            queue: VecDeque::from([root]),
            seen: HashSet::from([root]),
            position: 0,
            missing: 0,
        })
    }

    /// How many directories below the root were missing so far.
    pub fn skipped(&self) -> usize {
        self.missing
    }

    /// The next directory, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<reapi::Directory>, Status> {
        while let Some(digest) = self.queue.pop_front() {
            let Some(blob) = self.content.get(&digest).await? else {
                self.missing += 1;
                continue;
            };
            let directory = reapi::Directory::decode(blob.into_bytes().await?).map_err(|e| {
                Status::invalid_argument(format!("directory {digest} is not a Directory message: {e}"))
            })?;
            for child in &directory.directories {
                let child = Digest::from_required(digest.function(), child.digest.as_ref())
                    .map_err(|e| Status::invalid_argument(format!("directory {digest}: {e}")))?;
                if self.seen.insert(child) {
                    self.queue.push_back(child);
                }
            }
            self.position += 1;
            return Ok(Some(directory));
        }
        Ok(None)
    }

    /// Whether no directory is left to visit.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty()
    }

    /// Skips to the position a page token names.
    pub async fn skip_to(&mut self, position: usize) -> Result<(), Status> {
        while self.position < position {
            if self.next().await?.is_none() {
                return Err(Status::invalid_argument(format!(
                    "page token {position} is past the end of the tree"
                )));
            }
        }
        Ok(())
    }
}

pub fn parse_page_token(token: &str) -> Result<usize, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse()
        .map_err(|_| Status::invalid_argument(format!("page token {token:?} was not issued by this server")))
}

/// Encoded size of a directory inside a GetTreeResponse.
pub fn encoded_len(directory: &reapi::Directory) -> usize {
    let len = directory.encoded_len();
    len + prost::length_delimiter_len(len) + 1
}
