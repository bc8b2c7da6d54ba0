//! A storage service as the programs that use it see it, whether it runs in
//! the same process (a scheduler with embedded storage) or elsewhere: a CAS
//! per instance name, an Action Cache, and the cache capabilities to
//! announce. Callers hold an `Arc<dyn StorageBackend>` and never ask which.

use crate::action_cache::ActionCache;
use crate::store::BlobStore;
use bb_proto::reapi;
use bb_util::Digest;
use prost::Message;
use std::sync::Arc;
use tonic::Status;

#[tonic::async_trait]
pub trait StorageBackend: ActionCache {
    /// The CAS as seen from `instance_name`.
    fn cas(&self, instance_name: &str) -> Arc<dyn BlobStore>;

    /// The cache capabilities of `instance_name`, for a server that
    /// announces them next to its own.
    async fn cache_capabilities(
        &self,
        instance_name: &str,
    ) -> Result<Option<reapi::CacheCapabilities>, Status>;
}

/// A blob decoded as a message. A missing blob is FAILED_PRECONDITION with a
/// `MISSING` violation naming it, as REv2 prescribes for Execute.
pub async fn read_message<M: Message + Default>(
    cas: &dyn BlobStore,
    digest: &Digest,
    what: &str,
) -> Result<M, Status> {
    let Some(blob) = cas.get(digest).await? else {
        return Err(bb_util::status::missing_blobs(what, &[*digest]));
    };
    M::decode(blob.into_bytes().await?)
        .map_err(|e| Status::invalid_argument(format!("{what} {digest} is not a valid message: {e}")))
}
