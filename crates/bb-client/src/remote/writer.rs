//! A ByteStream write in progress: chunks are sent as they are handed in
//! (compressed first, for a zstd write), the last one carrying
//! `finish_write`, and the commit checks the size the server says it stored.

use crate::store::{BlobWriter, StoreError};
use bb_proto::bytestream::byte_stream_client::ByteStreamClient;
use bb_proto::bytestream::{WriteRequest, WriteResponse};
use bb_util::Digest;
use bb_util::grpc::Channel;
use bb_util::resource_name::{Compressor, WriteResource, routed};
use bb_util::zstd_stream::StreamEncoder;
use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;

pub struct ByteStreamWriter {
    digest: Digest,
    resource_name: String,
    sender: Option<mpsc::Sender<WriteRequest>>,
    call: tokio::task::JoinHandle<Result<WriteResponse, Status>>,
    offset: i64,
    /// The last chunk is held back so it can carry `finish_write`.
    pending: Option<Bytes>,
    /// For a zstd write; a compression error fails the commit.
    encoder: Option<Result<StreamEncoder, String>>,
}

impl ByteStreamWriter {
    pub(crate) fn start(
        client: &ByteStreamClient<Channel>,
        instance: &str,
        digest: &Digest,
        compressor: Compressor,
    ) -> Self {
        let (sender, receiver) = mpsc::channel::<WriteRequest>(4);
        let mut client = client.clone();
        let resource_name =
            WriteResource::format(instance, &uuid::Uuid::new_v4().to_string(), digest, compressor);
        let encoder = match compressor {
            Compressor::Identity => None,
            Compressor::Zstd => Some(StreamEncoder::new().map_err(|e| e.to_string())),
        };
        let request = routed(tokio_stream::wrappers::ReceiverStream::new(receiver), &resource_name);
        let call = tokio::spawn(async move { client.write(request).await.map(|r| r.into_inner()) });
        ByteStreamWriter {
            digest: *digest,
            resource_name,
            sender: Some(sender),
            call,
            offset: 0,
            pending: None,
            encoder,
        }
    }

    async fn send(&mut self, data: Bytes, finish_write: bool) {
        let request = WriteRequest {
            resource_name: if self.offset == 0 { self.resource_name.clone() } else { String::new() },
            write_offset: self.offset,
            finish_write,
            data,
        };
        self.offset += request.data.len() as i64;
        let Some(sender) = &self.sender else { return };
        if sender.send(request).await.is_err() {
            // The call ended early: either the blob exists already (fine) or
            // it failed, which the commit reports.
            self.sender = None;
        }
    }

    /// Hands in the next piece of the blob.
    pub async fn write_chunk(&mut self, data: Bytes) {
        let data = match &mut self.encoder {
            None => data,
            Some(Err(_)) => return,
            Some(Ok(encoder)) => {
                let mut compressed = Vec::new();
                if let Err(e) = encoder.feed(&data, &mut compressed) {
                    self.encoder = Some(Err(e.to_string()));
                    return;
                }
                if compressed.is_empty() {
                    return;
                }
                compressed.into()
            }
        };
        self.send_later(data).await;
    }

    async fn send_later(&mut self, data: Bytes) {
        if let Some(previous) = self.pending.replace(data) {
            self.send(previous, false).await;
        }
    }

    /// Ends the write; the server must have stored the whole blob.
    pub async fn finish(mut self) -> Result<(), Status> {
        let zstd = self.encoder.is_some();
        if let Some(encoder) = self.encoder.take() {
            let mut rest = Vec::new();
            encoder
                .and_then(|mut e| e.finish(&mut rest).map_err(|e| e.to_string()))
                .map_err(|e| Status::internal(format!("upload of {}: zstd: {e}", self.digest)))?;
            self.send_later(rest.into()).await;
        }
        let last = self.pending.take().unwrap_or_default();
        self.send(last, true).await;
        self.sender = None;
        let response = (&mut self.call)
            .await
            .map_err(|e| Status::internal(format!("ByteStream.Write task: {e}")))?
            .map_err(crate::remote::with_context(format!("uploading {}", self.digest)))?;
        // A compressed write commits the compressed bytes sent, or -1 when
        // the blob was stored already.
        let expected = if zstd { [self.offset, -1] } else { [self.digest.size() as i64; 2] };
        if !expected.contains(&response.committed_size) {
            return Err(Status::internal(format!(
                "upload of {}: storage committed {} bytes",
                self.digest, response.committed_size
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl BlobWriter for ByteStreamWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.write_chunk(data).await;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.finish().await.map_err(|status| StoreError::remote("ByteStream.Write", status))
    }
}

impl Drop for ByteStreamWriter {
    fn drop(&mut self) {
        // An unfinished write is abandoned: end the call without finish_write.
        self.call.abort();
    }
}
