//! buildbarn.remoteworker.OperationQueue: the worker API, one RPC.

use crate::queue::BuildQueue;
use bb_client::ActionCache;
use bb_proto::buildbarn::remoteworker::operation_queue_server::OperationQueue;
use bb_proto::buildbarn::remoteworker::{SynchronizeRequest, SynchronizeResponse};
use bb_util::auth::Permission;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct OperationQueueService {
    queue: Arc<BuildQueue>,
    /// Where the results workers report are cached.
    results: Arc<dyn ActionCache>,
}

impl OperationQueueService {
    pub fn new(queue: Arc<BuildQueue>, results: Arc<dyn ActionCache>) -> Self {
        OperationQueueService { queue, results }
    }
}

#[tonic::async_trait]
impl OperationQueue for OperationQueueService {
    async fn synchronize(
        &self,
        request: Request<SynchronizeRequest>,
    ) -> Result<Response<SynchronizeResponse>, Status> {
        // Work is handed out beneath the prefix the worker names: its
        // identity must hold `worker` there.
        bb_util::auth::require(&request, &request.get_ref().instance_name_prefix, Permission::Worker)?;
        let request = request.into_inner();
        // A successful result is cached before its clients hear of it.
        if let Some((instance, action, result)) = self.queue.result_to_cache(&request)
            && let Err(status) = self.results.update_action_result(&instance, &action, result).await
        {
            tracing::warn!("caching the result of action {action}: {}", status.message());
        }
        self.queue.synchronize(request).await.map(Response::new)
    }
}
