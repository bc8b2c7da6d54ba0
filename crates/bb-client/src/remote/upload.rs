//! Uploads: what storage lacks, small blobs in batches, large ones streamed
//! from their source.

use super::writer::ByteStreamWriter;
use super::{BATCH_BLOB_LIMIT, StorageClient, batches, with_context};
use crate::source::Source;
use bb_proto::reapi;
use bb_util::Digest;
use bb_util::resource_name::Compressor;
use bytes::Bytes;
use std::collections::HashMap;
use std::io::Read;
use tonic::Status;

/// Bytes per ByteStream write message.
const WRITE_CHUNK: usize = 1 << 20;

/// Uploads of at most this many bytes in all are sent without asking
/// which blobs storage lacks: sending them again costs less than the
/// FindMissingBlobs round trip (an action's outputs, new as a rule, are
/// usually this small), and storage keeps one copy.
const SEND_WITHOUT_ASKING: u64 = 16 << 10;

impl StorageClient {
    /// Uploads what storage does not have yet (all of it, when small).
    pub async fn upload(&self, instance: &str, blobs: Vec<(Digest, Source)>) -> Result<(), Status> {
        let mut unique: HashMap<Digest, Source> = blobs.into_iter().filter(|(d, _)| !d.is_empty()).collect();
        let digests: Vec<Digest> = unique.keys().copied().collect();
        let missing = if digests.iter().map(Digest::size).sum::<u64>() <= SEND_WITHOUT_ASKING {
            digests
        } else {
            self.find_missing(instance, &digests).await?
        };
        let (small, large): (Vec<Digest>, Vec<Digest>) =
            missing.into_iter().partition(|d| d.size() <= BATCH_BLOB_LIMIT);
        for batch in batches(&small) {
            let sources: Vec<(Digest, Source)> =
                batch.iter().filter_map(|d| unique.remove(d).map(|s| (*d, s))).collect();
            // Files of one batch are read in one blocking call.
            let blobs = tokio::task::spawn_blocking(move || {
                sources
                    .into_iter()
                    .map(|(digest, source)| Ok((digest, source.read()?)))
                    .collect::<Result<_, Status>>()
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
            self.put_batch(instance, blobs).await?;
        }
        for digest in large {
            if let Some(source) = unique.remove(&digest) {
                self.write_stream(instance, &digest, source).await?;
            }
        }
        Ok(())
    }

    /// One BatchUpdateBlobs call (all of one digest function, together
    /// under the batch limit); every blob must be stored.
    pub(crate) async fn put_batch(&self, instance: &str, blobs: Vec<(Digest, Bytes)>) -> Result<(), Status> {
        let Some(function) = blobs.first().map(|(d, _)| d.function()) else { return Ok(()) };
        let request = reapi::BatchUpdateBlobsRequest {
            instance_name: instance.to_string(),
            requests: blobs
                .into_iter()
                .map(|(digest, data)| reapi::batch_update_blobs_request::Request {
                    digest: Some(digest.to_proto()),
                    data,
                    compressor: Compressor::Identity.to_proto(),
                })
                .collect(),
            digest_function: function.to_proto(),
        };
        let response = self
            .cas
            .clone()
            .batch_update_blobs(request)
            .await
            .map_err(with_context("uploading blobs".into()))?;
        for blob in response.into_inner().responses {
            if let Some(status) = blob.status.filter(|s| s.code != 0) {
                return Err(bb_util::status::from_rpc(&status));
            }
        }
        Ok(())
    }

    /// Starts a streamed upload of `digest`.
    pub async fn begin_write(&self, instance: &str, digest: &Digest) -> ByteStreamWriter {
        let compressor = self.stream_compressor(instance).await;
        ByteStreamWriter::start(&self.bytestream, instance, digest, compressor)
    }

    /// Streams a blob from its source, reading it on a blocking thread a
    /// chunk at a time.
    pub(crate) async fn write_stream(
        &self,
        instance: &str,
        digest: &Digest,
        source: Source,
    ) -> Result<(), Status> {
        let mut writer = self.begin_write(instance, digest).await;
        let mut reader =
            Some(tokio::task::spawn_blocking(move || source.reader()).await.map_err(join_error)??);
        let mut sent = 0u64;
        while sent < digest.size() {
            let mut taken = reader.take().expect("put back after every chunk");
            let (chunk, back) = tokio::task::spawn_blocking(move || {
                let mut chunk = Vec::with_capacity(WRITE_CHUNK);
                let read = (&mut taken).take(WRITE_CHUNK as u64).read_to_end(&mut chunk);
                read.map(|_| (chunk, taken))
            })
            .await
            .map_err(join_error)?
            .map_err(|e| Status::internal(format!("reading {digest} to upload: {e}")))?;
            if chunk.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "{digest}: the source ended after {sent} bytes"
                )));
            }
            sent += chunk.len() as u64;
            writer.write_chunk(chunk.into()).await;
            reader = Some(back);
        }
        writer.finish().await
    }
}

fn join_error(e: tokio::task::JoinError) -> Status {
    Status::internal(e.to_string())
}
