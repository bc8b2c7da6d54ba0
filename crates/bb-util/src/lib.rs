//! What every program of the farm shares.

pub mod config;
pub mod digest;
pub mod grpc;
pub mod logging;
pub mod metrics;
pub mod resource_name;
pub mod shutdown;
pub mod status;

pub use digest::{Digest, DigestError, DigestFunction};
