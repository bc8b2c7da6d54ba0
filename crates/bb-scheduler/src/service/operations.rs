//! google.longrunning.Operations for the scheduler's operations: look one up,
//! cancel it, or wait for it. Listing and deleting are not offered.

use crate::queue::BuildQueue;
use bb_proto::longrunning::operations_server::Operations;
use bb_proto::longrunning::{
    CancelOperationRequest, DeleteOperationRequest, GetOperationRequest, ListOperationsRequest,
    ListOperationsResponse, Operation, WaitOperationRequest,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long WaitOperation waits when the request sets no timeout.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct OperationsService {
    queue: Arc<BuildQueue>,
}

impl OperationsService {
    pub fn new(queue: Arc<BuildQueue>) -> Self {
        OperationsService { queue }
    }
}

fn not_found(name: &str) -> Status {
    Status::not_found(format!("operation {name:?} does not exist"))
}

#[tonic::async_trait]
impl Operations for OperationsService {
    async fn list_operations(
        &self,
        _: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        Err(Status::unimplemented("listing operations is not supported; the status page lists them"))
    }

    async fn get_operation(
        &self,
        request: Request<GetOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        super::execution::require_execute_somewhere(&request)?;
        let name = &request.get_ref().name;
        self.queue.operation(name).map(Response::new).ok_or_else(|| not_found(name))
    }

    async fn delete_operation(&self, _: Request<DeleteOperationRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("operations are deleted automatically after they finish"))
    }

    async fn cancel_operation(
        &self,
        request: Request<CancelOperationRequest>,
    ) -> Result<Response<()>, Status> {
        super::execution::require_execute_somewhere(&request)?;
        let name = &request.get_ref().name;
        if self.queue.cancel(name) { Ok(Response::new(())) } else { Err(not_found(name)) }
    }

    async fn wait_operation(
        &self,
        request: Request<WaitOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        super::execution::require_execute_somewhere(&request)?;
        let request = request.into_inner();
        let mut watch = self.queue.attach(&request.name).ok_or_else(|| not_found(&request.name))?;
        let wait = match request.timeout {
            Some(t) => Duration::try_from(t).map_err(|_| Status::invalid_argument("timeout is negative"))?,
            None => DEFAULT_WAIT,
        };
        let _ =
            tokio::time::timeout(wait, watch.updates.wait_for(|progress| progress.response.is_some())).await;
        Ok(Response::new(watch.latest()))
    }
}
