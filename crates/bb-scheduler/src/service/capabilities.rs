//! REv2 Capabilities of the scheduler: execution, plus the cache
//! capabilities of its storage (embedded, or asked of the remote bb-storage).

use bb_client::StorageBackend;
use bb_proto::reapi;
use bb_proto::reapi::capabilities_server::Capabilities;
use bb_storage::service::Instances;
use bb_storage::service::capabilities::{HIGH_API_VERSION, LOW_API_VERSION, digest_functions, semver};
use bb_util::DigestFunction;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct SchedulerCapabilities {
    storage: Arc<dyn StorageBackend>,
    instances: Instances,
}

impl SchedulerCapabilities {
    pub fn new(storage: Arc<dyn StorageBackend>, instances: Instances) -> Self {
        SchedulerCapabilities { storage, instances }
    }
}

pub fn execution_capabilities() -> reapi::ExecutionCapabilities {
    reapi::ExecutionCapabilities {
        // For clients before 2.3, which read only this field.
        digest_function: DigestFunction::Sha256.to_proto(),
        exec_enabled: true,
        execution_priority_capabilities: Some(reapi::PriorityCapabilities {
            priorities: vec![reapi::priority_capabilities::PriorityRange {
                min_priority: i32::MIN,
                max_priority: i32::MAX,
            }],
        }),
        supported_node_properties: vec![],
        digest_functions: digest_functions(),
    }
}

#[tonic::async_trait]
impl Capabilities for SchedulerCapabilities {
    async fn get_capabilities(
        &self,
        request: Request<reapi::GetCapabilitiesRequest>,
    ) -> Result<Response<reapi::ServerCapabilities>, Status> {
        let instance = &request.get_ref().instance_name;
        self.instances.check(instance)?;
        Ok(Response::new(reapi::ServerCapabilities {
            cache_capabilities: self.storage.cache_capabilities(instance).await?,
            execution_capabilities: Some(execution_capabilities()),
            deprecated_api_version: None,
            low_api_version: semver(LOW_API_VERSION),
            high_api_version: semver(HIGH_API_VERSION),
        }))
    }
}
