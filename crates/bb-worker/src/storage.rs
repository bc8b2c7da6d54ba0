//! The worker's side of the CAS and the Action Cache: many small blobs per
//! batch call, large ones streamed straight to and from files, everything
//! checked against its digest.

use bb_proto::bytestream::byte_stream_client::ByteStreamClient;
use bb_proto::bytestream::{ReadRequest, WriteRequest};
use bb_proto::reapi;
use bb_proto::reapi::action_cache_client::ActionCacheClient;
use bb_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use bb_util::Digest;
use bb_util::dir::Directory;
use bb_util::grpc::Channel;
use bb_util::path::RelativePath;
use bb_util::resource_name::{Compressor, ReadResource, WriteResource, routed};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::Status;

/// Blobs up to this size travel in batch calls.
pub const SMALL_BLOB: u64 = 256 << 10;
/// The largest blob read into memory (a Command, a Directory).
pub const MAX_IN_MEMORY: u64 = 64 << 20;
/// Blob bytes per batch call (well below the usual 4 MiB message limit).
const BATCH_BYTES: u64 = 3 << 20;
/// Bytes per ByteStream write message.
const WRITE_CHUNK: usize = 1 << 20;

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

    fn read(&self) -> Result<Bytes, Status> {
        match self {
            Source::Bytes(data) => Ok(data.clone()),
            _ => {
                let mut data = Vec::new();
                self.open()?.read_to_end(&mut data).map_err(|e| Status::internal(e.to_string()))?;
                Ok(data.into())
            }
        }
    }
}

fn is_missing(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
}

#[derive(Clone)]
pub struct StorageClient {
    cas: ContentAddressableStorageClient<Channel>,
    bytestream: ByteStreamClient<Channel>,
    action_cache: ActionCacheClient<Channel>,
}

fn with_context(what: String) -> impl FnOnce(Status) -> Status {
    move |s| Status::new(s.code(), format!("{what}: {}", s.message()))
}

impl StorageClient {
    pub fn new(channel: Channel) -> Self {
        StorageClient {
            cas: ContentAddressableStorageClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            bytestream: ByteStreamClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            action_cache: ActionCacheClient::new(channel),
        }
    }

    /// The chunks a blob is stored as (SplitBlob), in order; `None` where
    /// the server does not split it (no support, or any error: a whole
    /// download then reports what is wrong).
    pub async fn split_blob(&self, instance: &str, digest: &Digest) -> Option<Vec<Digest>> {
        let request = reapi::SplitBlobRequest {
            instance_name: instance.to_string(),
            blob_digest: Some(digest.to_proto()),
            digest_function: digest.function().to_proto(),
            chunking_function: reapi::chunking_function::Value::FastCdc2020 as i32,
        };
        let response = self.cas.clone().split_blob(request).await.ok()?.into_inner();
        let chunks: Vec<Digest> = response
            .chunk_digests
            .iter()
            .map(|d| Digest::from_proto(digest.function(), d))
            .collect::<Result<_, _>>()
            .ok()?;
        // An answer whose sizes do not add up is not used.
        (chunks.iter().map(Digest::size).sum::<u64>() == digest.size()).then_some(chunks)
    }

    /// Blobs of any size, in memory: small ones in as few batch calls as
    /// fit, larger ones (up to `MAX_IN_MEMORY`) over ByteStream. Every
    /// digest asked for is in the answer; missing ones, and ones storage
    /// left out of its batch answer, are FAILED_PRECONDITION with a
    /// `MISSING` violation each.
    pub async fn read_blobs(
        &self,
        instance: &str,
        digests: &[Digest],
        what: &str,
    ) -> Result<HashMap<Digest, Bytes>, Status> {
        let (small, large): (Vec<Digest>, Vec<Digest>) = digests.iter().partition(|d| d.size() <= SMALL_BLOB);
        let mut found = HashMap::with_capacity(digests.len());
        let mut missing = Vec::new();
        for batch in batches(&small) {
            self.read_batch(instance, &batch, what, &mut found, &mut missing).await?;
        }
        for digest in large {
            if digest.size() > MAX_IN_MEMORY {
                return Err(Status::invalid_argument(format!(
                    "{what} {digest} is larger than the {MAX_IN_MEMORY} bytes a worker reads into memory"
                )));
            }
            let mut data = Vec::with_capacity(digest.size() as usize);
            match self
                .read_stream(instance, &digest, what, |chunk| {
                    data.extend_from_slice(chunk);
                    Ok(())
                })
                .await
            {
                Ok(()) => drop(found.insert(digest, Bytes::from(data))),
                Err(status) if is_missing(&status) => missing.push(digest),
                Err(status) => return Err(status),
            }
        }
        if !missing.is_empty() {
            return Err(bb_util::status::missing_blobs(what, &missing));
        }
        Ok(found)
    }

    /// One BatchReadBlobs call; what it does not answer counts as missing.
    async fn read_batch(
        &self,
        instance: &str,
        batch: &[Digest],
        what: &str,
        found: &mut HashMap<Digest, Bytes>,
        missing: &mut Vec<Digest>,
    ) -> Result<(), Status> {
        let function = batch[0].function();
        let request = reapi::BatchReadBlobsRequest {
            instance_name: instance.to_string(),
            digests: batch.iter().map(|d| d.to_proto()).collect(),
            acceptable_compressors: vec![],
            digest_function: function.to_proto(),
        };
        let response = self
            .cas
            .clone()
            .batch_read_blobs(request)
            .await
            .map_err(with_context(format!("reading {what}")))?;
        let wanted: HashSet<&Digest> = batch.iter().collect();
        let mut answered = HashSet::with_capacity(batch.len());
        for blob in response.into_inner().responses {
            let digest = Digest::from_required(function, blob.digest.as_ref())
                .map_err(|e| Status::unavailable(format!("storage answered with a bad digest: {e}")))?;
            if !wanted.contains(&digest) || !answered.insert(digest) {
                continue;
            }
            let status = blob.status.unwrap_or_default();
            match tonic::Code::from_i32(status.code) {
                tonic::Code::Ok => {
                    digest
                        .verify(&blob.data)
                        .map_err(|e| Status::data_loss(format!("{what} {digest}: {e}")))?;
                    found.insert(digest, blob.data);
                }
                tonic::Code::NotFound => missing.push(digest),
                _ => return Err(bb_util::status::from_rpc(&status)),
            }
        }
        missing.extend(batch.iter().filter(|d| !answered.contains(*d)));
        Ok(())
    }

    /// Streams a blob into `path` (created), checking its digest.
    pub async fn read_to_file(
        &self,
        instance: &str,
        digest: &Digest,
        path: &Path,
        what: &str,
    ) -> Result<(), Status> {
        let mut file =
            std::fs::File::create(path).map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
        self.read_stream(instance, digest, what, |chunk| {
            file.write_all(chunk).map_err(|e| Status::internal(format!("{}: {e}", path.display())))
        })
        .await
    }

    /// Reads a blob over ByteStream, handing each chunk to `sink`, and
    /// checks that what came is exactly the blob.
    async fn read_stream(
        &self,
        instance: &str,
        digest: &Digest,
        what: &str,
        mut sink: impl FnMut(&[u8]) -> Result<(), Status>,
    ) -> Result<(), Status> {
        let resource_name = ReadResource::format(instance, digest, Compressor::Identity);
        let request = routed(
            ReadRequest { resource_name: resource_name.clone(), read_offset: 0, read_limit: 0 },
            &resource_name,
        );
        let mut stream = match self.bytestream.clone().read(request).await {
            Ok(response) => response.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Err(bb_util::status::missing_blobs(what, &[*digest]));
            }
            Err(s) => return Err(with_context(format!("reading {what} {digest}"))(s)),
        };
        let mut hasher = digest.function().hasher();
        let mut size = 0u64;
        while let Some(response) =
            stream.message().await.map_err(with_context(format!("reading {what} {digest}")))?
        {
            size += response.data.len() as u64;
            if size > digest.size() {
                return Err(Status::data_loss(format!("{what} {digest}: storage sent more bytes than that")));
            }
            hasher.update(&response.data);
            sink(&response.data)?;
        }
        let actual = hasher.finish(size);
        if actual != *digest {
            return Err(Status::data_loss(format!(
                "{what} {digest}: storage sent data with digest {actual}"
            )));
        }
        Ok(())
    }

    /// Uploads what storage does not have yet.
    pub async fn upload(&self, instance: &str, blobs: Vec<(Digest, Source)>) -> Result<(), Status> {
        let mut unique: HashMap<Digest, Source> = blobs.into_iter().filter(|(d, _)| !d.is_empty()).collect();
        let digests: Vec<Digest> = unique.keys().copied().collect();
        let missing = self.find_missing(instance, &digests).await?;
        let (small, large): (Vec<Digest>, Vec<Digest>) =
            missing.into_iter().partition(|d| d.size() <= SMALL_BLOB);
        for batch in batches(&small) {
            let sources: Vec<(Digest, Source)> =
                batch.iter().filter_map(|d| unique.remove(d).map(|s| (*d, s))).collect();
            // Files of one batch are read in one blocking call.
            let requests = tokio::task::spawn_blocking(move || {
                sources
                    .into_iter()
                    .map(|(digest, source)| {
                        Ok(reapi::batch_update_blobs_request::Request {
                            digest: Some(digest.to_proto()),
                            data: source.read()?,
                            compressor: 0,
                        })
                    })
                    .collect::<Result<Vec<_>, Status>>()
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
            let request = reapi::BatchUpdateBlobsRequest {
                instance_name: instance.to_string(),
                requests,
                digest_function: batch[0].function().to_proto(),
            };
            let response = self
                .cas
                .clone()
                .batch_update_blobs(request)
                .await
                .map_err(with_context("uploading outputs".into()))?;
            for blob in response.into_inner().responses {
                if let Some(status) = blob.status.filter(|s| s.code != 0) {
                    return Err(bb_util::status::from_rpc(&status));
                }
            }
        }
        for digest in large {
            if let Some(source) = unique.remove(&digest) {
                self.write_stream(instance, &digest, source).await?;
            }
        }
        Ok(())
    }

    pub async fn find_missing(&self, instance: &str, digests: &[Digest]) -> Result<Vec<Digest>, Status> {
        bb_storage::remote::find_missing_blobs(&self.cas, instance, digests)
            .await
            .map_err(with_context("FindMissingBlobs".into()))
    }

    async fn write_stream(&self, instance: &str, digest: &Digest, source: Source) -> Result<(), Status> {
        let name =
            WriteResource::format(instance, &uuid::Uuid::new_v4().to_string(), digest, Compressor::Identity);
        let (sender, receiver) = tokio::sync::mpsc::channel::<WriteRequest>(2);
        let routing_name = name.clone();
        let digest_copy = *digest;
        // Read the source on a blocking thread while the call sends.
        let producer = tokio::task::spawn_blocking(move || -> Result<(), Status> {
            let mut reader: Box<dyn Read> = match source {
                Source::Bytes(data) => Box::new(std::io::Cursor::new(data)),
                other => Box::new(other.open()?),
            };
            let mut offset = 0u64;
            loop {
                let mut chunk = vec![0u8; WRITE_CHUNK];
                let n = read_full(&mut reader, &mut chunk).map_err(|e| Status::internal(e.to_string()))?;
                chunk.truncate(n);
                let finish = offset + n as u64 >= digest_copy.size();
                let request = WriteRequest {
                    resource_name: if offset == 0 { name.clone() } else { String::new() },
                    write_offset: offset as i64,
                    finish_write: finish,
                    data: chunk.into(),
                };
                offset += n as u64;
                if sender.blocking_send(request).is_err() || finish || n == 0 {
                    return Ok(());
                }
            }
        });
        let response = self
            .bytestream
            .clone()
            .write(routed(tokio_stream::wrappers::ReceiverStream::new(receiver), &routing_name))
            .await
            .map_err(with_context(format!("uploading {digest}")))?;
        producer.await.map_err(|e| Status::internal(e.to_string()))??;
        let committed = response.into_inner().committed_size;
        if committed != digest.size() as i64 {
            return Err(Status::internal(format!("upload of {digest}: storage committed {committed} bytes")));
        }
        Ok(())
    }

    pub async fn update_action_result(
        &self,
        instance: &str,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), Status> {
        let request = reapi::UpdateActionResultRequest {
            instance_name: instance.to_string(),
            action_digest: Some(action.to_proto()),
            action_result: Some(result.clone()),
            results_cache_policy: None,
            digest_function: action.function().to_proto(),
        };
        self.action_cache
            .clone()
            .update_action_result(request)
            .await
            .map_err(with_context("UpdateActionResult".into()))?;
        Ok(())
    }
}

/// Groups digests (all small) into batches of at most `BATCH_BYTES`, one
/// digest function per batch.
fn batches(digests: &[Digest]) -> Vec<Vec<Digest>> {
    let mut sorted: Vec<Digest> = digests.to_vec();
    sorted.sort_by_key(|d| d.function());
    sorted.dedup();
    let mut batches: Vec<Vec<Digest>> = Vec::new();
    let mut bytes = 0;
    for digest in sorted {
        let fits = batches
            .last()
            .is_some_and(|b| b[0].function() == digest.function() && bytes + digest.size() <= BATCH_BYTES);
        if !fits {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += digest.size();
        batches.last_mut().expect("pushed above").push(digest);
    }
    batches
}

fn read_full(reader: &mut dyn Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
