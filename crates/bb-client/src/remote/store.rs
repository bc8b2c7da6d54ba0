//! A remote CAS as a blob store of one instance name: what a scheduler
//! without embedded storage, or a storage node in front of others, reads
//! and writes through.

use super::{BATCH_BLOB_LIMIT, StorageClient};
use crate::store::{Blob, BlobStore, BlobWriter, StoreError};
use bb_util::Digest;
use bb_util::grpc::Channel;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;

#[derive(Clone)]
pub struct GrpcStore {
    client: StorageClient,
    instance_name: String,
}

impl GrpcStore {
    pub fn new(channel: Channel, instance_name: &str) -> Self {
        GrpcStore::of(StorageClient::new(channel), instance_name)
    }

    pub fn of(client: StorageClient, instance_name: &str) -> Self {
        GrpcStore { client, instance_name: instance_name.to_string() }
    }
}

fn remote(what: &'static str) -> impl FnOnce(tonic::Status) -> StoreError {
    move |status| StoreError::remote(what, status)
}

#[tonic::async_trait]
impl BlobStore for GrpcStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        if digest.size() <= BATCH_BLOB_LIMIT {
            let (mut found, mut missing) = (HashMap::new(), Vec::new());
            let batch = [*digest];
            let read = self.client.read_batch(&self.instance_name, &batch, "blob", &mut found, &mut missing);
            read.await.map_err(remote("BatchReadBlobs"))?;
            return Ok(found.remove(digest).map(Blob::from_bytes));
        }
        let stream =
            self.client.open_stream(&self.instance_name, digest).await.map_err(remote("ByteStream.Read"))?;
        let digest = *digest;
        Ok(stream.map(|stream| {
            let bytes = stream
                .map_err(move |status| StoreError::remote(format!("download of blob {digest}"), status));
            Blob::from_byte_stream(bytes.boxed(), digest, None)
        }))
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        if digest.size() <= BATCH_BLOB_LIMIT {
            let put = self.client.put_batch(&self.instance_name, vec![(*digest, data)]);
            return put.await.map_err(remote("BatchUpdateBlobs"));
        }
        let write = self.client.write_stream(&self.instance_name, digest, crate::Source::Bytes(data));
        write.await.map_err(remote("ByteStream.Write"))
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(self.client.begin_write(&self.instance_name, digest).await))
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        self.client.find_missing(&self.instance_name, digests).await.map_err(remote("FindMissingBlobs"))
    }
}
