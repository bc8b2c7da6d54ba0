//! buildbarn.remoteworker.OperationQueue: the worker API, one RPC.

use crate::queue::BuildQueue;
use bb_proto::buildbarn::remoteworker::operation_queue_server::OperationQueue;
use bb_proto::buildbarn::remoteworker::{SynchronizeRequest, SynchronizeResponse};
use bb_util::auth::Permission;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct OperationQueueService {
    queue: Arc<BuildQueue>,
}

impl OperationQueueService {
    pub fn new(queue: Arc<BuildQueue>) -> Self {
        OperationQueueService { queue }
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
        self.queue.synchronize(request.into_inner()).await.map(Response::new)
    }
}
