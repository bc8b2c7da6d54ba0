//! The scheduler's gRPC services.

pub mod capabilities;
pub mod execution;
pub mod forward;
pub mod operation_queue;
pub mod operations;

pub use capabilities::SchedulerCapabilities;
pub use execution::ExecutionService;
pub use operation_queue::OperationQueueService;
pub use operations::OperationsService;
