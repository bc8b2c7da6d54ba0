//! google.bytestream.ByteStream for CAS blobs: reads with offset and limit in
//! chunks of at most 1 MiB, resumable verified writes, and zstd-compressed
//! transfers both ways.

use super::request::{Instances, principal};
use super::uploads::PartialUploads;
use crate::content::{ContentStore, Upload};
use crate::store::BlobReader;
use bb_proto::bytestream::byte_stream_server::ByteStream;
use bb_proto::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest, WriteResponse,
};
use bb_util::auth::Permission;
use bb_util::resource_name::{Compressor, ReadResource, WriteResource, check_routing_header};
use bb_util::zstd_stream::{StreamDecoder, StreamEncoder};
use bytes::Bytes;
use futures::stream::BoxStream;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Largest chunk of data in one ReadResponse.
pub const READ_CHUNK: usize = 1 << 20;

/// Uncompressed input per compressed ReadResponse; its compressed form always
/// fits in `READ_CHUNK`.
const COMPRESS_INPUT: usize = 512 << 10;

#[derive(Clone)]
pub struct ByteStreamService {
    content: ContentStore,
    instances: Instances,
    uploads: Arc<PartialUploads>,
}

impl ByteStreamService {
    pub fn new(content: ContentStore, instances: Instances) -> Self {
        ByteStreamService { content, instances, uploads: Arc::new(PartialUploads::default()) }
    }

    /// An uncompressed write; it may resume one that was interrupted.
    async fn write_plain(
        &self,
        resource: WriteResource,
        first: WriteRequest,
        mut stream: Streaming<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let key = PartialUploads::key(&resource);
        let mut upload = match self.uploads.take(&key) {
            Some(partial) if first.write_offset == partial.received() as i64 => partial,
            _ if first.write_offset == 0 => self.content.begin_upload(&resource.digest).await?,
            partial => {
                let committed = partial.as_ref().map_or(0, |p| p.received());
                // A wrong offset leaves the interrupted upload resumable.
                if let Some(partial) = partial {
                    self.uploads.park(key, partial);
                }
                return Err(Status::invalid_argument(format!(
                    "blob {}: write_offset {} does not match the {committed} bytes committed so far",
                    resource.digest, first.write_offset
                )));
            }
        };
        let mut message = first;
        loop {
            check_message(&message, upload.received() as i64, &resource)?;
            upload.write(message.data).await?;
            if message.finish_write {
                upload.finish().await?;
                return Ok(Response::new(WriteResponse { committed_size: resource.digest.size() as i64 }));
            }
            message = match stream.message().await {
                Ok(Some(next)) => next,
                Ok(None) => {
                    let received = upload.received();
                    self.park(key, upload);
                    return Err(Status::invalid_argument(format!(
                        "blob {}: stream ended after {received} bytes without finish_write",
                        resource.digest
                    )));
                }
                Err(e) => {
                    self.park(key, upload);
                    return Err(e);
                }
            };
        }
    }

    fn park(&self, key: String, upload: Upload) {
        if upload.received() > 0 {
            self.uploads.park(key, upload);
        }
    }

    /// A zstd-compressed write. Offsets count compressed bytes, so such an
    /// upload cannot be resumed: it always starts at 0.
    async fn write_zstd(
        &self,
        resource: WriteResource,
        first: WriteRequest,
        mut stream: Streaming<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let digest = resource.digest;
        let mut upload = self.content.begin_upload(&digest).await?;
        let mut decoder = StreamDecoder::new().map_err(|e| Status::internal(format!("zstd: {e}")))?;
        let zstd_error =
            |e: std::io::Error| Status::invalid_argument(format!("blob {digest}: bad zstd data: {e}"));
        let mut compressed = 0i64;
        let mut message = first;
        loop {
            check_message(&message, compressed, &resource)?;
            compressed += message.data.len() as i64;
            let mut position = 0;
            while let Some(piece) = decoder.next_piece(&message.data, &mut position).map_err(zstd_error)? {
                upload.write(piece).await?;
            }
            if message.finish_write {
                decoder.finish().map_err(zstd_error)?;
                upload.finish().await?;
                return Ok(Response::new(WriteResponse { committed_size: compressed }));
            }
            message = stream.message().await?.ok_or_else(|| {
                Status::invalid_argument(format!("blob {digest}: stream ended without finish_write"))
            })?;
        }
    }
}

/// Every message of a write must continue where the previous one ended and
/// may only repeat the first message's resource name.
fn check_message(
    message: &WriteRequest,
    expected_offset: i64,
    resource: &WriteResource,
) -> Result<(), Status> {
    if message.write_offset != expected_offset {
        return Err(Status::invalid_argument(format!(
            "blob {}: write_offset {} where {expected_offset} was expected",
            resource.digest, message.write_offset
        )));
    }
    if !message.resource_name.is_empty()
        && WriteResource::parse(&message.resource_name).as_ref() != Ok(resource)
    {
        return Err(Status::invalid_argument(format!(
            "resource name changed within one write, to {:?}",
            message.resource_name
        )));
    }
    Ok(())
}

enum ReadState {
    Plain { reader: BlobReader, remaining: u64 },
    Zstd { reader: BlobReader, encoder: Box<StreamEncoder> },
    Done,
}

impl ReadState {
    async fn next(self) -> Result<Option<(ReadResponse, ReadState)>, Status> {
        match self {
            ReadState::Done => Ok(None),
            ReadState::Plain { mut reader, remaining } => {
                if remaining == 0 {
                    return Ok(None);
                }
                let max = (READ_CHUNK as u64).min(remaining) as usize;
                match reader.next_chunk(max).await? {
                    None => Ok(None),
                    Some(data) => {
                        metrics::counter!(crate::metrics::READ_BYTES).increment(data.len() as u64);
                        let remaining = remaining - data.len() as u64;
                        Ok(Some((ReadResponse { data }, ReadState::Plain { reader, remaining })))
                    }
                }
            }
            ReadState::Zstd { mut reader, mut encoder } => {
                let mut out = Vec::new();
                let compress_error = |e: std::io::Error| Status::internal(format!("zstd: {e}"));
                loop {
                    match reader.next_chunk(COMPRESS_INPUT).await? {
                        Some(chunk) => {
                            metrics::counter!(crate::metrics::READ_BYTES).increment(chunk.len() as u64);
                            encoder.feed(&chunk, &mut out).map_err(compress_error)?;
                            if !out.is_empty() {
                                let response = ReadResponse { data: Bytes::from(out) };
                                return Ok(Some((response, ReadState::Zstd { reader, encoder })));
                            }
                        }
                        None => {
                            encoder.finish(&mut out).map_err(compress_error)?;
                            return Ok(Some((ReadResponse { data: Bytes::from(out) }, ReadState::Done)));
                        }
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl ByteStream for ByteStreamService {
    type ReadStream = BoxStream<'static, Result<ReadResponse, Status>>;

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let principal = principal(&request)?;
        check_routing_header(request.metadata(), &request.get_ref().resource_name)?;
        let request = request.into_inner();
        let resource = ReadResource::parse(&request.resource_name)?;
        self.instances.admit(&principal, &resource.instance_name, &[Permission::Read])?;
        let digest = resource.digest;
        if request.read_offset < 0 || request.read_offset as u64 > digest.size() {
            return Err(Status::out_of_range(format!(
                "blob {digest}: read_offset {} is outside the blob's {} bytes",
                request.read_offset,
                digest.size()
            )));
        }
        if request.read_limit < 0 {
            return Err(Status::invalid_argument(format!(
                "blob {digest}: read_limit {} is negative",
                request.read_limit
            )));
        }
        if resource.compressor == Compressor::Zstd && request.read_limit != 0 {
            return Err(Status::invalid_argument(format!(
                "blob {digest}: read_limit must be 0 for compressed reads"
            )));
        }
        let blob = self
            .content
            .get(&digest)
            .await?
            .ok_or_else(|| Status::not_found(format!("blob {digest} not found")))?;
        let offset = request.read_offset as u64;
        let reader = blob.reader(offset);
        let state = match resource.compressor {
            Compressor::Identity => {
                let available = digest.size() - offset;
                let remaining = if request.read_limit == 0 {
                    available
                } else {
                    available.min(request.read_limit as u64)
                };
                ReadState::Plain { reader, remaining }
            }
            Compressor::Zstd => {
                let encoder = StreamEncoder::new().map_err(|e| Status::internal(format!("zstd: {e}")))?;
                ReadState::Zstd { reader, encoder: Box::new(encoder) }
            }
        };
        Ok(Response::new(Box::pin(futures::stream::try_unfold(state, ReadState::next))))
    }

    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let principal = principal(&request)?;
        let metadata = request.metadata().clone();
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("write stream carried no request"))?;
        check_routing_header(&metadata, &first.resource_name)?;
        let resource = WriteResource::parse(&first.resource_name)?;
        self.instances.admit(&principal, &resource.instance_name, &[Permission::WriteCas])?;
        if self.content.find_missing(&[resource.digest]).await?.is_empty() {
            // Stored already (maybe by a concurrent writer): nothing to do.
            let committed_size = match resource.compressor {
                Compressor::Identity => resource.digest.size() as i64,
                Compressor::Zstd => -1,
            };
            return Ok(Response::new(WriteResponse { committed_size }));
        }
        match resource.compressor {
            Compressor::Identity => self.write_plain(resource, first, stream).await,
            Compressor::Zstd => self.write_zstd(resource, first, stream).await,
        }
    }

    async fn query_write_status(
        &self,
        request: Request<QueryWriteStatusRequest>,
    ) -> Result<Response<QueryWriteStatusResponse>, Status> {
        let principal = principal(&request)?;
        check_routing_header(request.metadata(), &request.get_ref().resource_name)?;
        let resource = WriteResource::parse(&request.get_ref().resource_name)?;
        self.instances.admit(&principal, &resource.instance_name, &[Permission::WriteCas])?;
        if self.content.find_missing(&[resource.digest]).await?.is_empty() {
            return Ok(Response::new(QueryWriteStatusResponse {
                committed_size: resource.digest.size() as i64,
                complete: true,
            }));
        }
        let committed_size = self.uploads.received(&PartialUploads::key(&resource)).unwrap_or(0) as i64;
        Ok(Response::new(QueryWriteStatusResponse { committed_size, complete: false }))
    }
}
