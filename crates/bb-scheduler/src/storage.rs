//! How the scheduler reaches blobs and action results: storage embedded in
//! this process, or a standalone bb-storage over gRPC.

use bb_proto::reapi;
use bb_proto::reapi::action_cache_client::ActionCacheClient;
use bb_proto::reapi::capabilities_client::CapabilitiesClient;
use bb_storage::content::ContentStore;
use bb_storage::remote::GrpcStore;
use bb_storage::service::action_cache::inline_outputs;
use bb_util::Digest;
use bb_util::grpc::Channel;
use prost::Message;
use std::sync::Arc;
use tonic::Status;

/// What a client asked to have inlined into an ActionResult.
#[derive(Clone, Debug, Default)]
pub struct Inline {
    pub stdout: bool,
    pub stderr: bool,
    pub files: Vec<String>,
}

#[derive(Clone)]
pub enum StorageAccess {
    Embedded(Box<bb_storage::Storage>),
    Remote(Channel),
}

impl StorageAccess {
    /// The CAS as seen from `instance_name`.
    pub fn content(&self, instance_name: &str) -> ContentStore {
        match self {
            StorageAccess::Embedded(storage) => storage.content.clone(),
            StorageAccess::Remote(channel) => {
                ContentStore::new(Arc::new(GrpcStore::new(channel.clone(), instance_name)))
            }
        }
    }

    /// A blob decoded as a message. A missing blob is FAILED_PRECONDITION
    /// with a `MISSING` violation naming it, as REv2 prescribes for Execute.
    pub async fn message<M: Message + Default>(
        &self,
        instance_name: &str,
        digest: &Digest,
        what: &str,
    ) -> Result<M, Status> {
        let Some(blob) = self.content(instance_name).get(digest).await? else {
            return Err(bb_util::status::missing_blobs(what, &[*digest]));
        };
        M::decode(blob.into_bytes().await?)
            .map_err(|e| Status::invalid_argument(format!("{what} {digest} is not a valid message: {e}")))
    }

    /// The Action Cache's result for `action`, with outputs inlined as asked.
    pub async fn action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        inline: &Inline,
    ) -> Result<Option<reapi::ActionResult>, Status> {
        match self {
            StorageAccess::Embedded(storage) => {
                let Some(mut result) = storage.action_cache.get(instance_name, action).await? else {
                    return Ok(None);
                };
                let wanted = (inline.stdout, inline.stderr, &inline.files[..]);
                inline_outputs(&storage.content, action.function(), &mut result, wanted, 1 << 20).await;
                Ok(Some(result))
            }
            StorageAccess::Remote(channel) => {
                let request = reapi::GetActionResultRequest {
                    instance_name: instance_name.to_string(),
                    action_digest: Some(action.to_proto()),
                    inline_stdout: inline.stdout,
                    inline_stderr: inline.stderr,
                    inline_output_files: inline.files.clone(),
                    digest_function: action.function().to_proto(),
                };
                match ActionCacheClient::new(channel.clone()).get_action_result(request).await {
                    Ok(response) => Ok(Some(response.into_inner())),
                    Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                    Err(status) => {
                        Err(Status::new(status.code(), format!("Action Cache: {}", status.message())))
                    }
                }
            }
        }
    }

    /// The cache capabilities clients should see next to ours.
    pub async fn cache_capabilities(
        &self,
        instance_name: &str,
    ) -> Result<Option<reapi::CacheCapabilities>, Status> {
        match self {
            StorageAccess::Embedded(storage) => Ok(Some(storage.cache_capabilities())),
            StorageAccess::Remote(channel) => {
                let request = reapi::GetCapabilitiesRequest { instance_name: instance_name.to_string() };
                let response = CapabilitiesClient::new(channel.clone()).get_capabilities(request).await?;
                Ok(response.into_inner().cache_capabilities)
            }
        }
    }
}
