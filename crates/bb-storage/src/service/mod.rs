//! The gRPC services of the storage API.

pub mod action_cache;
pub mod bytestream;
pub mod capabilities;
pub mod cas;
pub mod request;
mod split;
pub(crate) mod tree;
mod uploads;

pub use action_cache::ActionCacheService;
pub use bytestream::ByteStreamService;
pub use capabilities::CapabilitiesService;
pub use cas::CasService;
pub use request::Instances;
