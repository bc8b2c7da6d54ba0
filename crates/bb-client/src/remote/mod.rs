//! The one client of a remote REv2 CAS and Action Cache, used by the
//! worker, by a scheduler without embedded storage, by bb-storage in front
//! of another node, and by `bb`. Blobs up to `BATCH_BLOB_LIMIT` travel in
//! batch calls of at most `BATCH_BYTES`; larger ones are streamed over
//! ByteStream, to and from files where they come from or go to one, and
//! zstd-compressed (`compressed-blobs/zstd`) when asked for and the server
//! offers it. Everything downloaded is checked against its digest.

mod action_cache;
mod store;
mod upload;
mod writer;

pub use store::GrpcStore;
pub use writer::ByteStreamWriter;

use bb_proto::bytestream::byte_stream_client::ByteStreamClient;
use bb_proto::bytestream::{ReadRequest, ReadResponse};
use bb_proto::reapi;
use bb_proto::reapi::action_cache_client::ActionCacheClient;
use bb_proto::reapi::capabilities_client::CapabilitiesClient;
use bb_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use bb_util::grpc::Channel;
use bb_util::resource_name::{Compressor, ReadResource, routed};
use bb_util::zstd_stream::StreamDecoder;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tonic::{Status, Streaming};

/// Blobs up to this size travel in batch calls.
pub const BATCH_BLOB_LIMIT: u64 = 1 << 20;
/// The largest blob read into memory (a Command, a Directory).
pub const MAX_IN_MEMORY: u64 = 64 << 20;
/// Blob bytes per batch call (well below the usual 4 MiB message limit).
const BATCH_BYTES: u64 = 3 << 20;
/// Digests per FindMissingBlobs call.
const FIND_MISSING_CHUNK: usize = 10_000;
/// The largest message accepted from storage.
const MAX_MESSAGE: usize = 64 << 20;

/// A remote storage endpoint; cheap to clone, instance names per call.
#[derive(Clone)]
pub struct StorageClient {
    cas: ContentAddressableStorageClient<Channel>,
    bytestream: ByteStreamClient<Channel>,
    action_cache: ActionCacheClient<Channel>,
    capabilities: CapabilitiesClient<Channel>,
    zstd: Zstd,
}

/// Whether streamed transfers are zstd-compressed: when asked for, and
/// once the server's capabilities (asked once) offer it.
#[derive(Clone, Default)]
struct Zstd {
    wanted: bool,
    offered: Arc<tokio::sync::OnceCell<bool>>,
}

/// A download's bytes as they arrive (decompressed, not yet checked).
pub(crate) type Download = BoxStream<'static, Result<Bytes, Status>>;

fn is_missing(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
}

pub(crate) fn with_context(what: String) -> impl FnOnce(Status) -> Status {
    move |s| Status::new(s.code(), format!("{what}: {}", s.message()))
}

impl StorageClient {
    pub fn new(channel: Channel) -> Self {
        StorageClient {
            cas: ContentAddressableStorageClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
            bytestream: ByteStreamClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
            action_cache: ActionCacheClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
            capabilities: CapabilitiesClient::new(channel),
            zstd: Zstd::default(),
        }
    }

    /// With `wanted`, blobs streamed over ByteStream travel zstd-compressed
    /// when the server offers it: worth the CPU where the network is slower
    /// than compression (about 300 MB/s per core at the level used).
    pub fn with_zstd(mut self, wanted: bool) -> Self {
        self.zstd = Zstd { wanted, offered: Arc::default() };
        self
    }

    /// The compressor of the next streamed transfer.
    pub(crate) async fn stream_compressor(&self, instance: &str) -> Compressor {
        if !self.zstd.wanted {
            return Compressor::Identity;
        }
        let zstd = reapi::compressor::Value::Zstd as i32;
        let offered = self.zstd.offered.get_or_try_init(|| async {
            let capabilities = self.capabilities(instance).await?.cache_capabilities;
            Ok::<_, Status>(capabilities.is_some_and(|c| c.supported_compressors.contains(&zstd)))
        });
        match offered.await {
            Ok(true) => Compressor::Zstd,
            // Not offered, or not known yet (asked again next time).
            _ => Compressor::Identity,
        }
    }

    /// The server's capabilities for `instance`.
    pub async fn capabilities(&self, instance: &str) -> Result<reapi::ServerCapabilities, Status> {
        let request = reapi::GetCapabilitiesRequest { instance_name: instance.to_string() };
        Ok(self.capabilities.clone().get_capabilities(request).await?.into_inner())
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
        let (small, large): (Vec<Digest>, Vec<Digest>) =
            digests.iter().partition(|d| d.size() <= BATCH_BLOB_LIMIT);
        let mut found = HashMap::with_capacity(digests.len());
        let mut missing = Vec::new();
        for batch in batches(&small) {
            self.read_batch(instance, &batch, what, &mut found, &mut missing).await?;
        }
        for digest in large {
            if digest.size() > MAX_IN_MEMORY {
                return Err(Status::invalid_argument(format!(
                    "{what} {digest} is larger than the {MAX_IN_MEMORY} bytes read into memory"
                )));
            }
            let mut data = Vec::with_capacity(digest.size() as usize);
            let read = self.read_stream(instance, &digest, what, |chunk| {
                data.extend_from_slice(chunk);
                Ok(())
            });
            match read.await {
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
    pub(crate) async fn read_batch(
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
        self.read_into(instance, digest, &mut file, what).await
    }

    /// Streams a blob into `file`, checking its digest.
    pub async fn read_into(
        &self,
        instance: &str,
        digest: &Digest,
        file: &mut std::fs::File,
        what: &str,
    ) -> Result<(), Status> {
        self.read_stream(instance, digest, what, |chunk| {
            file.write_all(chunk).map_err(|e| Status::internal(format!("writing {what} {digest}: {e}")))
        })
        .await
    }

    /// Starts a ByteStream read of a whole blob; `None` when it is not stored.
    pub(crate) async fn open_stream(
        &self,
        instance: &str,
        digest: &Digest,
    ) -> Result<Option<Download>, Status> {
        let compressor = self.stream_compressor(instance).await;
        let resource_name = ReadResource::format(instance, digest, compressor);
        let request = routed(
            ReadRequest { resource_name: resource_name.clone(), read_offset: 0, read_limit: 0 },
            &resource_name,
        );
        let stream = match self.bytestream.clone().read(request).await {
            Ok(response) => response.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(s),
        };
        Ok(Some(match compressor {
            Compressor::Identity => stream.map_ok(|response| response.data).boxed(),
            Compressor::Zstd => decompressed(stream),
        }))
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
        let context = || with_context(format!("reading {what} {digest}"));
        let Some(mut stream) = self.open_stream(instance, digest).await.map_err(context())? else {
            return Err(bb_util::status::missing_blobs(what, &[*digest]));
        };
        let mut hasher = digest.function().hasher();
        let mut size = 0u64;
        while let Some(data) = stream.try_next().await.map_err(context())? {
            size += data.len() as u64;
            if size > digest.size() {
                return Err(Status::data_loss(format!("{what} {digest}: storage sent more bytes than that")));
            }
            hasher.update(&data);
            sink(&data)?;
        }
        let actual = hasher.finish(size);
        if actual != *digest {
            return Err(Status::data_loss(format!(
                "{what} {digest}: storage sent data with digest {actual}"
            )));
        }
        Ok(())
    }

    /// FindMissingBlobs for digests of any functions: one call per digest
    /// function, in chunks small enough for any server's message limit.
    pub async fn find_missing(&self, instance: &str, digests: &[Digest]) -> Result<Vec<Digest>, Status> {
        let mut missing = Vec::new();
        for function in DigestFunction::ALL {
            let of_function: Vec<&Digest> = digests.iter().filter(|d| d.function() == function).collect();
            for chunk in of_function.chunks(FIND_MISSING_CHUNK) {
                let request = reapi::FindMissingBlobsRequest {
                    instance_name: instance.to_string(),
                    blob_digests: chunk.iter().map(|d| d.to_proto()).collect(),
                    digest_function: function.to_proto(),
                };
                let response = self
                    .cas
                    .clone()
                    .find_missing_blobs(request)
                    .await
                    .map_err(with_context("FindMissingBlobs".into()))?;
                for d in response.into_inner().missing_blob_digests {
                    let d = Digest::from_proto(function, &d)
                        .map_err(|e| Status::unavailable(format!("the CAS answered a bad digest: {e}")))?;
                    missing.push(d);
                }
            }
        }
        Ok(missing)
    }
}

/// The decompressed pieces of a `compressed-blobs/zstd` download, bounded
/// in size each (the reader stops a blob that grows past its size).
fn decompressed(stream: Streaming<ReadResponse>) -> Download {
    let bad = |e: std::io::Error| Status::data_loss(format!("storage sent bad zstd data: {e}"));
    let decoder = match StreamDecoder::new() {
        Ok(decoder) => decoder,
        Err(e) => {
            return futures::stream::once(async move { Err(Status::internal(format!("zstd: {e}"))) }).boxed();
        }
    };
    let start = Some((stream, decoder, Bytes::new(), 0usize));
    futures::stream::unfold(start, move |state| async move {
        let (mut stream, mut decoder, mut data, mut position) = state?;
        loop {
            match decoder.next_piece(&data, &mut position) {
                Ok(Some(piece)) => return Some((Ok(piece), Some((stream, decoder, data, position)))),
                Ok(None) => {}
                Err(e) => return Some((Err(bad(e)), None)),
            }
            match stream.message().await {
                Ok(Some(message)) => (data, position) = (message.data, 0),
                Ok(None) => return decoder.finish().err().map(|e| (Err(bad(e)), None)),
                Err(status) => return Some((Err(status), None)),
            }
        }
    })
    .boxed()
}

/// Groups digests (all small) into batches of at most `BATCH_BYTES`, one
/// digest function per batch.
pub(crate) fn batches(digests: &[Digest]) -> Vec<Vec<Digest>> {
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

#[tonic::async_trait]
impl crate::backend::StorageBackend for StorageClient {
    fn cas(&self, instance_name: &str) -> std::sync::Arc<dyn crate::store::BlobStore> {
        std::sync::Arc::new(GrpcStore::of(self.clone(), instance_name))
    }

    async fn cache_capabilities(
        &self,
        instance_name: &str,
    ) -> Result<Option<reapi::CacheCapabilities>, Status> {
        Ok(self.capabilities(instance_name).await?.cache_capabilities)
    }
}
