//! A `BlobStore` that is a remote REv2 CAS: how the worker, and a scheduler
//! without embedded storage, reach the blobs. Small blobs travel in batch
//! calls, large ones through ByteStream; downloads are streamed and checked
//! against their digest as they arrive.

use crate::store::{Blob, BlobStore, BlobWriter, StoreError};
use bb_proto::bytestream::byte_stream_client::ByteStreamClient;
use bb_proto::bytestream::{ReadRequest, WriteRequest};
use bb_proto::reapi;
use bb_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use bb_util::grpc::Channel;
use bb_util::resource_name::{Compressor, ReadResource, WriteResource, routed};
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use tokio::sync::mpsc;

/// Blobs up to this size are read and written with batch calls.
const BATCH_BLOB_LIMIT: u64 = 1 << 20;
/// Digests per FindMissingBlobs call.
const FIND_MISSING_CHUNK: usize = 10_000;
/// Bytes per WriteRequest.
const WRITE_CHUNK: usize = 1 << 20;

#[derive(Clone)]
pub struct GrpcStore {
    cas: ContentAddressableStorageClient<Channel>,
    bytestream: ByteStreamClient<Channel>,
    instance_name: String,
}

fn remote_error(what: &str, status: tonic::Status) -> StoreError {
    StoreError::Remote { context: what.to_string(), status: Box::new(status) }
}

impl GrpcStore {
    pub fn new(channel: Channel, instance_name: &str) -> Self {
        GrpcStore {
            cas: ContentAddressableStorageClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            bytestream: ByteStreamClient::new(channel).max_decoding_message_size(64 << 20),
            instance_name: instance_name.to_string(),
        }
    }

    async fn batch_read(&self, digest: &Digest) -> Result<Option<Bytes>, StoreError> {
        let request = reapi::BatchReadBlobsRequest {
            instance_name: self.instance_name.clone(),
            digests: vec![digest.to_proto()],
            acceptable_compressors: vec![],
            digest_function: digest.function().to_proto(),
        };
        let response = self
            .cas
            .clone()
            .batch_read_blobs(request)
            .await
            .map_err(|s| remote_error("BatchReadBlobs", s))?;
        let Some(blob) = response.into_inner().responses.pop() else {
            return Err(remote_error("BatchReadBlobs", tonic::Status::internal("empty response")));
        };
        let status = blob.status.unwrap_or_default();
        match tonic::Code::from_i32(status.code) {
            tonic::Code::Ok => {
                digest
                    .verify(&blob.data)
                    .map_err(|e| StoreError::BadWrite { digest: *digest, reason: e.to_string() })?;
                Ok(Some(blob.data))
            }
            tonic::Code::NotFound => Ok(None),
            _ => Err(remote_error("BatchReadBlobs", bb_util::status::from_rpc(&status))),
        }
    }

    async fn batch_write(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        let request = reapi::BatchUpdateBlobsRequest {
            instance_name: self.instance_name.clone(),
            requests: vec![reapi::batch_update_blobs_request::Request {
                digest: Some(digest.to_proto()),
                data,
                compressor: Compressor::Identity.to_proto(),
            }],
            digest_function: digest.function().to_proto(),
        };
        let response = self
            .cas
            .clone()
            .batch_update_blobs(request)
            .await
            .map_err(|s| remote_error("BatchUpdateBlobs", s))?;
        match response.into_inner().responses.pop().and_then(|r| r.status) {
            Some(status) if status.code == 0 => Ok(()),
            Some(status) => Err(remote_error("BatchUpdateBlobs", bb_util::status::from_rpc(&status))),
            None => Err(remote_error("BatchUpdateBlobs", tonic::Status::internal("empty response"))),
        }
    }
}

#[tonic::async_trait]
impl BlobStore for GrpcStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        if digest.size() <= BATCH_BLOB_LIMIT {
            return Ok(self.batch_read(digest).await?.map(Blob::from_bytes));
        }
        let resource_name = ReadResource::format(&self.instance_name, digest, Compressor::Identity);
        let request = routed(
            ReadRequest { resource_name: resource_name.clone(), read_offset: 0, read_limit: 0 },
            &resource_name,
        );
        match self.bytestream.clone().read(request).await {
            Ok(response) => Ok(Some(Blob::from_stream(response.into_inner(), *digest))),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(remote_error("ByteStream.Read", status)),
        }
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        if digest.size() <= BATCH_BLOB_LIMIT {
            return self.batch_write(digest, data).await;
        }
        let mut writer = self.begin_write(digest).await?;
        for offset in (0..data.len()).step_by(WRITE_CHUNK) {
            writer.write(data.slice(offset..(offset + WRITE_CHUNK).min(data.len()))).await?;
        }
        writer.commit().await
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        let (sender, receiver) = mpsc::channel::<WriteRequest>(4);
        let mut client = self.bytestream.clone();
        let resource_name = WriteResource::format(
            &self.instance_name,
            &uuid::Uuid::new_v4().to_string(),
            digest,
            Compressor::Identity,
        );
        let request = routed(tokio_stream::wrappers::ReceiverStream::new(receiver), &resource_name);
        let call = tokio::spawn(async move { client.write(request).await.map(|r| r.into_inner()) });
        Ok(Box::new(GrpcWriter {
            digest: *digest,
            resource_name,
            sender: Some(sender),
            call,
            offset: 0,
            pending: None,
        }))
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        find_missing_blobs(&self.cas, &self.instance_name, digests)
            .await
            .map_err(|s| remote_error("FindMissingBlobs", s))
    }
}

/// FindMissingBlobs on a remote CAS, for digests of any functions: one call
/// per digest function, in chunks small enough for any server's message limit.
pub async fn find_missing_blobs(
    cas: &ContentAddressableStorageClient<Channel>,
    instance_name: &str,
    digests: &[Digest],
) -> Result<Vec<Digest>, tonic::Status> {
    let mut missing = Vec::new();
    for function in DigestFunction::ALL {
        let of_function: Vec<&Digest> = digests.iter().filter(|d| d.function() == function).collect();
        for chunk in of_function.chunks(FIND_MISSING_CHUNK) {
            let request = reapi::FindMissingBlobsRequest {
                instance_name: instance_name.to_string(),
                blob_digests: chunk.iter().map(|d| d.to_proto()).collect(),
                digest_function: function.to_proto(),
            };
            let response = cas.clone().find_missing_blobs(request).await?;
            for d in response.into_inner().missing_blob_digests {
                let d = Digest::from_proto(function, &d)
                    .map_err(|e| tonic::Status::internal(format!("the CAS answered a bad digest: {e}")))?;
                missing.push(d);
            }
        }
    }
    Ok(missing)
}

struct GrpcWriter {
    digest: Digest,
    resource_name: String,
    sender: Option<mpsc::Sender<WriteRequest>>,
    call: tokio::task::JoinHandle<Result<bb_proto::bytestream::WriteResponse, tonic::Status>>,
    offset: i64,
    /// The last chunk is held back so it can carry `finish_write`.
    pending: Option<Bytes>,
}

impl GrpcWriter {
    async fn send(&mut self, data: Bytes, finish_write: bool) -> Result<(), StoreError> {
        let request = WriteRequest {
            resource_name: if self.offset == 0 { self.resource_name.clone() } else { String::new() },
            write_offset: self.offset,
            finish_write,
            data,
        };
        self.offset += request.data.len() as i64;
        let Some(sender) = &self.sender else { return Ok(()) };
        if sender.send(request).await.is_err() {
            // The call ended early: either the blob exists already (fine) or it failed.
            self.sender = None;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl BlobWriter for GrpcWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        if let Some(previous) = self.pending.replace(data) {
            self.send(previous, false).await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let last = self.pending.take().unwrap_or_default();
        self.send(last, true).await?;
        self.sender = None;
        let response = (&mut self.call)
            .await
            .map_err(|e| StoreError::io("ByteStream.Write task", std::io::Error::other(e)))?
            .map_err(|s| remote_error("ByteStream.Write", s))?;
        let size = self.digest.size() as i64;
        if response.committed_size != size {
            return Err(remote_error(
                "ByteStream.Write",
                tonic::Status::internal(format!(
                    "server committed {} bytes of blob {}",
                    response.committed_size, self.digest
                )),
            ));
        }
        Ok(())
    }
}

impl Drop for GrpcWriter {
    fn drop(&mut self) {
        // An uncommitted write is abandoned: end the call without finish_write.
        self.call.abort();
    }
}
