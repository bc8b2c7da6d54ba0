//! REv2 Capabilities: what this server supports. The scheduler reuses it
//! with execution capabilities added.

use super::request::Instances;
use bb_proto::reapi;
use bb_proto::reapi::capabilities_server::Capabilities;
use bb_proto::semver::SemVer;
use bb_util::DigestFunction;
use tonic::{Request, Response, Status};

/// Bazel 4.2.3 speaks 2.0 only, so the range starts there.
pub const LOW_API_VERSION: (i32, i32) = (2, 0);
/// The newest revision whose fields this farm implements.
pub const HIGH_API_VERSION: (i32, i32) = (2, 12);

/// A `major.minor.0` version.
pub fn semver((major, minor): (i32, i32)) -> Option<SemVer> {
    Some(SemVer { major, minor, patch: 0, prerelease: String::new() })
}

/// All supported digest functions as `DigestFunction.Value` numbers.
pub fn digest_functions() -> Vec<i32> {
    DigestFunction::ALL.iter().map(|f| f.to_proto()).collect()
}

pub fn cache_capabilities(max_batch_size: u64, update_enabled: bool) -> reapi::CacheCapabilities {
    let zstd = reapi::compressor::Value::Zstd as i32;
    reapi::CacheCapabilities {
        digest_functions: digest_functions(),
        action_cache_update_capabilities: Some(reapi::ActionCacheUpdateCapabilities { update_enabled }),
        cache_priority_capabilities: None,
        max_batch_total_size_bytes: max_batch_size as i64,
        // Input symlinks are laid out exactly as given and output symlinks
        // returned exactly as made, wherever they point: the worker never
        // follows one (a sysroot is full of absolute links, and under
        // chroot_into_input_root they resolve inside the input root).
        symlink_absolute_path_strategy: reapi::symlink_absolute_path_strategy::Value::Allowed as i32,
        supported_compressors: vec![zstd],
        supported_batch_update_compressors: vec![zstd],
        ..Default::default()
    }
}

#[derive(Clone)]
pub struct CapabilitiesService {
    instances: Instances,
    cache: Option<reapi::CacheCapabilities>,
    execution: Option<reapi::ExecutionCapabilities>,
}

impl CapabilitiesService {
    pub fn new(
        instances: Instances,
        cache: Option<reapi::CacheCapabilities>,
        execution: Option<reapi::ExecutionCapabilities>,
    ) -> Self {
        CapabilitiesService { instances, cache, execution }
    }
}

#[tonic::async_trait]
impl Capabilities for CapabilitiesService {
    async fn get_capabilities(
        &self,
        request: Request<reapi::GetCapabilitiesRequest>,
    ) -> Result<Response<reapi::ServerCapabilities>, Status> {
        self.instances.check(&request.get_ref().instance_name)?;
        Ok(Response::new(reapi::ServerCapabilities {
            cache_capabilities: self.cache.clone(),
            execution_capabilities: self.execution.clone(),
            deprecated_api_version: None,
            low_api_version: semver(LOW_API_VERSION),
            high_api_version: semver(HIGH_API_VERSION),
        }))
    }
}
