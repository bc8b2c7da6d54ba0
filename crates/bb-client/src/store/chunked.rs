//! A blob read as the concatenation of chunks that are blobs of their own
//! in a store: how a spliced blob is served without a second copy of its
//! bytes. Each chunk is checked as it is read, like any blob of the store;
//! a chunk gone since the blob was opened fails the read.

use super::{BlobReader, BlobStore, StoreError};
use bb_util::Digest;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

pub struct Chunks {
    store: Arc<dyn BlobStore>,
    chunks: Vec<Digest>,
}

impl Chunks {
    pub fn new(store: Arc<dyn BlobStore>, chunks: Vec<Digest>) -> Self {
        Chunks { store, chunks }
    }

    pub fn size(&self) -> u64 {
        self.chunks.iter().map(Digest::size).sum()
    }

    /// Reads from `offset`: the chunks before it are never opened.
    pub(crate) fn reader(self, offset: u64) -> ChunksReader {
        let mut skip = offset;
        let mut rest: VecDeque<Digest> = self.chunks.into();
        while let Some(first) = rest.front() {
            if first.size() > skip || first.size() == 0 && skip == 0 {
                break;
            }
            skip -= first.size();
            rest.pop_front();
        }
        ChunksReader { store: self.store, rest, current: None, skip }
    }
}

pub struct ChunksReader {
    store: Arc<dyn BlobStore>,
    rest: VecDeque<Digest>,
    current: Option<BlobReader>,
    /// Bytes of the next chunk opened to leave out (the read's offset).
    skip: u64,
}

impl ChunksReader {
    pub(crate) async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        loop {
            if let Some(reader) = &mut self.current {
                // Boxed: a chunk's reader is a BlobReader too.
                if let Some(data) = Box::pin(reader.next_chunk(max)).await? {
                    return Ok(Some(data));
                }
                self.current = None;
            }
            let Some(chunk) = self.rest.pop_front() else { return Ok(None) };
            let blob = self.store.get(&chunk).await?.ok_or(StoreError::ChunkGone { digest: chunk })?;
            self.current = Some(blob.reader(std::mem::take(&mut self.skip)));
        }
    }
}
