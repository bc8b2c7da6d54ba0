//! What every program of the farm shares.

pub mod auth;
pub mod chunking;
pub mod cli;
pub mod command;
pub mod config;
pub mod digest;
pub mod dir;
pub mod grpc;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod path;
pub mod platform;
pub mod resource_name;
pub mod shutdown;
pub mod status;
pub mod tls;
pub mod trace_context;
pub mod watched;
pub mod zstd_stream;

pub use digest::{Digest, DigestError, DigestFunction};

/// gRPC header in which bb-worker tells bb-runner an action's timeout, in
/// milliseconds. The runner kills the action's process group when it
/// passes, cleans up, and answers DEADLINE_EXCEEDED.
pub const RUNNER_TIMEOUT_HEADER: &str = "bb-action-timeout-ms";
