//! bb-storage: blob stores and the REv2 storage services (CAS, Action Cache,
//! ByteStream, Capabilities). The scheduler embeds it; the `bb-storage`
//! binary serves it on its own.

pub mod action_cache;
pub mod asset;
pub mod backend;
pub mod config;
pub mod content;
pub mod metrics;
pub mod server;
pub mod service;
pub mod spliced;
pub mod store;
pub mod store_tree;

pub use config::{Config, StorageConfig};
pub use server::{Storage, StorageServer};
