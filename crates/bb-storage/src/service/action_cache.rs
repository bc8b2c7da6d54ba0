//! REv2 ActionCache over any `bb_client::ActionCache` (the store tree of
//! the configuration), which inlines stdout, stderr and output files on
//! request.

use super::request::{Instances, principal, required_digest};
use crate::content::ContentStore;
use bb_client::{ActionCache, Inline};
use bb_proto::reapi;
use bb_proto::reapi::action_cache_server::ActionCache as ActionCacheApi;
use bb_util::auth::Permission;
use bb_util::{Digest, DigestFunction};
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct ActionCacheService {
    cache: Arc<dyn ActionCache>,
    instances: Instances,
    allow_updates: bool,
}

impl ActionCacheService {
    pub fn new(cache: Arc<dyn ActionCache>, instances: Instances, allow_updates: bool) -> Self {
        ActionCacheService { cache, instances, allow_updates }
    }
}

/// Fills `stdout_raw`, `stderr_raw` and output file contents as requested,
/// smallest first, while they fit in `budget` bytes. Blobs that cannot be
/// read are simply not inlined: the client still has their digests.
pub async fn inline_outputs(
    content: &ContentStore,
    function: DigestFunction,
    result: &mut reapi::ActionResult,
    (stdout, stderr, files): (bool, bool, &[String]),
    budget: u64,
) {
    enum Slot {
        Stdout,
        Stderr,
        File(usize),
    }
    let mut wanted: Vec<(Digest, Slot)> = Vec::new();
    let digest_of = |d: &Option<reapi::Digest>| d.as_ref().and_then(|d| Digest::from_proto(function, d).ok());
    if stdout && let Some(d) = digest_of(&result.stdout_digest) {
        wanted.push((d, Slot::Stdout));
    }
    if stderr && let Some(d) = digest_of(&result.stderr_digest) {
        wanted.push((d, Slot::Stderr));
    }
    for (i, file) in result.output_files.iter().enumerate() {
        if files.contains(&file.path)
            && let Some(d) = digest_of(&file.digest)
        {
            wanted.push((d, Slot::File(i)));
        }
    }
    wanted.sort_by_key(|(d, _)| d.size());
    let mut left = budget;
    for (digest, slot) in wanted {
        if digest.size() > left {
            break;
        }
        let Ok(data) = content.get_bytes(&digest).await else { continue };
        left -= digest.size();
        match slot {
            Slot::Stdout => result.stdout_raw = data.to_vec(),
            Slot::Stderr => result.stderr_raw = data.to_vec(),
            Slot::File(i) => result.output_files[i].contents = data.to_vec(),
        }
    }
}

#[tonic::async_trait]
impl ActionCacheApi for ActionCacheService {
    async fn get_action_result(
        &self,
        request: Request<reapi::GetActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.instances.admit(&principal, &request.instance_name, &[Permission::Read])?;
        let action =
            required_digest(request.digest_function, request.action_digest.as_ref(), "action_digest")?;
        let inline = Inline {
            stdout: request.inline_stdout,
            stderr: request.inline_stderr,
            files: request.inline_output_files.clone(),
        };
        let Some(result) = self.cache.get_action_result(&request.instance_name, &action, &inline).await?
        else {
            metrics::counter!(crate::metrics::AC_REQUESTS, "outcome" => "miss").increment(1);
            return Err(Status::not_found(format!("no action result for action {action}")));
        };
        metrics::counter!(crate::metrics::AC_REQUESTS, "outcome" => "hit").increment(1);
        Ok(Response::new(result))
    }

    async fn update_action_result(
        &self,
        request: Request<reapi::UpdateActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.instances.admit(&principal, &request.instance_name, &[Permission::WriteActionCache])?;
        if !self.allow_updates {
            return Err(Status::permission_denied(
                "this server does not accept Action Cache updates from clients",
            ));
        }
        let action =
            required_digest(request.digest_function, request.action_digest.as_ref(), "action_digest")?;
        let result = request
            .action_result
            .ok_or_else(|| Status::invalid_argument(format!("action {action}: action_result is missing")))?;
        self.cache.update_action_result(&request.instance_name, &action, &result).await?;
        Ok(Response::new(result))
    }
}
