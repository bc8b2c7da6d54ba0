//! A blob opened for reading: bytes in memory, a file read in chunks, a
//! download, or the concatenation of stored chunks.
//!
//! File blobs of a content-addressed store are checked while they are read:
//! the reader hashes everything from the start of the file and hands out the
//! last chunk only once the hash matched. A corrupted blob is thereby never
//! served whole; the reader removes it from its store and fails instead.

use super::StoreError;
use bb_util::Digest;
use bb_util::digest::Hasher;
use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Called with the digest of a blob found corrupted, to drop it from its store.
pub type Quarantine = Arc<dyn Fn(&Digest) + Send + Sync>;

/// The bytes of a download, in the order they arrive.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

pub struct Blob {
    size: u64,
    body: Body,
}

enum Body {
    Memory(Bytes),
    File { file: Arc<File>, check: Option<(Digest, Quarantine)> },
    Remote { stream: ByteStream, digest: Digest, quarantine: Option<Quarantine> },
    Chunks(super::chunked::Chunks),
}

impl Blob {
    pub fn from_bytes(data: Bytes) -> Self {
        Blob { size: data.len() as u64, body: Body::Memory(data) }
    }

    /// A file of `size` bytes; with `check`, its contents must hash to the digest.
    pub fn from_file(file: File, size: u64, check: Option<(Digest, Quarantine)>) -> Self {
        Blob { size, body: Body::File { file: Arc::new(file), check } }
    }

    /// A download of `digest` from anywhere, checked as it arrives; with
    /// `quarantine`, data that does not match is corruption in the store the
    /// stream comes from, which drops it.
    pub fn from_byte_stream(stream: ByteStream, digest: Digest, quarantine: Option<Quarantine>) -> Self {
        Blob { size: digest.size(), body: Body::Remote { stream, digest, quarantine } }
    }

    /// The concatenation of chunks stored on their own (a spliced blob).
    pub fn from_chunks(chunks: super::chunked::Chunks) -> Self {
        Blob { size: chunks.size(), body: Body::Chunks(chunks) }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads from `offset` (at most `size`) to the end.
    pub fn reader(self, offset: u64) -> BlobReader {
        let offset = offset.min(self.size);
        match self.body {
            Body::Memory(data) => BlobReader::Memory(data.slice(offset as usize..)),
            Body::File { file, check } => {
                let hasher = check.as_ref().map(|(digest, _)| digest.function().hasher());
                // A checked read starts at 0: the hash covers the whole blob.
                let position = if check.is_some() { 0 } else { offset };
                BlobReader::File(Box::new(FileReader {
                    file,
                    size: self.size,
                    position,
                    skip_until: offset,
                    hasher,
                    check,
                }))
            }
            Body::Remote { stream, digest, quarantine } => BlobReader::Remote(Box::new(StreamReader {
                stream,
                quarantine,
                hasher: Some(digest.function().hasher()),
                digest,
                received: 0,
                skip_until: offset,
                buffered: Bytes::new(),
            })),
            Body::Chunks(chunks) => BlobReader::Chunks(Box::new(chunks.reader(offset))),
        }
    }

    /// The whole blob in memory.
    pub async fn into_bytes(self) -> Result<Bytes, StoreError> {
        if let Body::Memory(data) = &self.body {
            return Ok(data.clone());
        }
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        let mut reader = self.reader(0);
        let mut chunks = Vec::new();
        while let Some(chunk) = reader.next_chunk(size.max(1)).await? {
            chunks.push(chunk);
        }
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => chunks.concat().into(),
        })
    }
}

pub enum BlobReader {
    Memory(Bytes),
    File(Box<FileReader>),
    Remote(Box<StreamReader>),
    Chunks(Box<super::chunked::ChunksReader>),
}

/// Reads a ByteStream download, checking it against its digest: the chunk
/// that completes the blob is only returned once the whole blob matched.
pub struct StreamReader {
    stream: ByteStream,
    quarantine: Option<Quarantine>,
    hasher: Option<Hasher>,
    digest: Digest,
    received: u64,
    skip_until: u64,
    /// Verified data not yet handed out.
    buffered: Bytes,
}

impl StreamReader {
    async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        loop {
            if !self.buffered.is_empty() {
                let n = max.min(self.buffered.len());
                return Ok(Some(self.buffered.split_to(n)));
            }
            let Some(hasher) = &mut self.hasher else { return Ok(None) };
            let mut data = match self.stream.next().await.transpose()? {
                Some(data) => data,
                None if self.received == self.digest.size() => Bytes::new(),
                None => return Err(self.mismatch(format!("download ended after {} bytes", self.received))),
            };
            let start = self.received;
            self.received += data.len() as u64;
            if self.received > self.digest.size() {
                return Err(self.mismatch("download is too long".into()));
            }
            hasher.update(&data);
            if self.received == self.digest.size() {
                let hasher = self.hasher.take().expect("checked above");
                let actual = hasher.finish(self.received);
                if actual != self.digest {
                    return Err(self.mismatch(format!("downloaded data has digest {actual}")));
                }
            }
            if self.received > self.skip_until {
                if start < self.skip_until {
                    data.advance((self.skip_until - start) as usize);
                }
                self.buffered = data;
            }
        }
    }
}

impl StreamReader {
    /// The download is not the blob: corruption where the store can drop
    /// it, a bad transfer otherwise.
    fn mismatch(&mut self, reason: String) -> StoreError {
        self.hasher = None;
        match &self.quarantine {
            Some(quarantine) => {
                quarantine(&self.digest);
                StoreError::Corrupt { digest: self.digest }
            }
            None => StoreError::BadWrite { digest: self.digest, reason },
        }
    }
}

pub struct FileReader {
    file: Arc<File>,
    size: u64,
    position: u64,
    /// Bytes before this offset are hashed but not returned.
    skip_until: u64,
    hasher: Option<Hasher>,
    check: Option<(Digest, Quarantine)>,
}

impl BlobReader {
    /// The next chunk of at most `max` bytes, or `None` at the end.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        match self {
            BlobReader::Memory(data) => {
                if data.is_empty() {
                    return Ok(None);
                }
                let n = max.min(data.len());
                Ok(Some(data.split_to(n)))
            }
            BlobReader::File(reader) => reader.next_chunk(max).await,
            BlobReader::Remote(reader) => reader.next_chunk(max).await,
            BlobReader::Chunks(reader) => reader.next_chunk(max).await,
        }
    }
}

impl FileReader {
    async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        loop {
            if self.position >= self.size {
                return Ok(None);
            }
            // While skipping towards the offset, stop each read at it.
            let limit = if self.position < self.skip_until { self.skip_until } else { self.size };
            let len = (limit - self.position).min(max as u64) as usize;
            let file = self.file.clone();
            let position = self.position;
            let read = tokio::task::spawn_blocking(move || read_exact_at(&file, len, position))
                .await
                .map_err(|e| StoreError::io("blob read task", std::io::Error::other(e)))?;
            let chunk = match read {
                Ok(chunk) => chunk,
                // The file shrank under us: that is corruption too.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(self.corrupt()),
                Err(e) => return Err(StoreError::io("read blob file", e)),
            };
            self.position += len as u64;
            if let Some(hasher) = &mut self.hasher {
                hasher.update(&chunk);
            }
            if self.position == self.size
                && let (Some(hasher), Some((digest, _))) = (self.hasher.take(), &self.check)
                && hasher.finish(self.size) != *digest
            {
                return Err(self.corrupt());
            }
            if position >= self.skip_until {
                return Ok(Some(chunk));
            }
        }
    }

    /// The blob is not what its digest says: drop it from the store.
    fn corrupt(&mut self) -> StoreError {
        self.position = self.size;
        match &self.check {
            Some((digest, quarantine)) => {
                quarantine(digest);
                StoreError::Corrupt { digest: *digest }
            }
            None => StoreError::io("read blob file", std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        }
    }
}

fn read_exact_at(file: &File, len: usize, position: u64) -> std::io::Result<Bytes> {
    let mut buffer = vec![0u8; len];
    file.read_exact_at(&mut buffer, position)?;
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_util::DigestFunction;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn file_with(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    fn counting_quarantine() -> (Quarantine, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        (
            Arc::new(move |_: &Digest| {
                c.fetch_add(1, Ordering::SeqCst);
            }),
            count,
        )
    }

    async fn collect(mut reader: BlobReader, max: usize) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        while let Some(chunk) = reader.next_chunk(max).await? {
            assert!(chunk.len() <= max);
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn checked_file_reads_with_offsets() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let digest = Digest::of(DigestFunction::Sha256, &data);
        for offset in [0u64, 1, 4095, 9999, 10_000] {
            let (q, count) = counting_quarantine();
            let blob = Blob::from_file(file_with(&data), data.len() as u64, Some((digest, q)));
            let got = collect(blob.reader(offset), 1000).await.unwrap();
            assert_eq!(got, &data[offset as usize..]);
            assert_eq!(count.load(Ordering::SeqCst), 0);
        }
    }

    #[tokio::test]
    async fn corrupted_file_is_never_served_whole() {
        let data = vec![7u8; 5000];
        let digest = Digest::of(DigestFunction::Sha256, &data);
        let mut bad = data.clone();
        bad[4999] = 8;
        let (q, count) = counting_quarantine();
        let blob = Blob::from_file(file_with(&bad), 5000, Some((digest, q)));
        let mut reader = blob.reader(0);
        let mut served = 0;
        let result = loop {
            match reader.next_chunk(1000).await {
                Ok(Some(chunk)) => served += chunk.len(),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(matches!(result, Err(StoreError::Corrupt { .. })));
        assert!(served < 5000);
        assert_eq!(count.load(Ordering::SeqCst), 1);

        // Truncated file: also corrupt.
        let (q, count) = counting_quarantine();
        let blob = Blob::from_file(file_with(&data[..100]), 5000, Some((digest, q)));
        assert!(matches!(blob.into_bytes().await, Err(StoreError::Corrupt { .. })));
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
