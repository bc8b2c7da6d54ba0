//! This process's storage behind bb-client's interfaces, so a scheduler
//! with embedded storage reaches it exactly as it would a remote one.

use crate::content::{ContentStore, Upload};
use crate::server::Storage;
use bb_client::store::{Blob, BlobStore, BlobWriter, StoreError};
use bb_client::{ActionCache, Inline, StorageBackend};
use bb_proto::reapi;
use bb_util::Digest;
use bytes::Bytes;
use std::sync::Arc;
use tonic::Status;

/// The CAS as a blob store: reads see spliced blobs, writes are verified.
#[tonic::async_trait]
impl BlobStore for ContentStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        ContentStore::get(self, digest).await
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        Ok(ContentStore::put(self, digest, data).await?)
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(self.begin_upload(digest).await?))
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        ContentStore::find_missing(self, digests).await
    }
}

#[tonic::async_trait]
impl BlobWriter for Upload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        Ok(Upload::write(self, data).await?)
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        Ok(self.finish().await?)
    }
}

#[tonic::async_trait]
impl ActionCache for Storage {
    async fn get_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        inline: &Inline,
    ) -> Result<Option<reapi::ActionResult>, Status> {
        self.action_cache.get_action_result(instance_name, action, inline).await
    }

    async fn update_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), Status> {
        self.action_cache.update_action_result(instance_name, action, result).await
    }
}

#[tonic::async_trait]
impl StorageBackend for Storage {
    /// One CAS serves every instance name.
    fn cas(&self, _instance_name: &str) -> Arc<dyn BlobStore> {
        Arc::new(self.content.clone())
    }

    async fn cache_capabilities(
        &self,
        _instance_name: &str,
    ) -> Result<Option<reapi::CacheCapabilities>, Status> {
        Ok(Some(Storage::cache_capabilities(self)))
    }
}
