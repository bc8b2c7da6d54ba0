//! bb-scheduler: the farm's head. Clients send it actions over REv2
//! Execution; workers long-poll it for work over Buildbarn's OperationQueue.

pub mod config;
pub mod metrics;
pub mod platform;
pub mod queue;
pub mod server;
pub mod service;
pub mod status;
pub mod storage;
