pub mod action_cache;
pub mod content;
pub mod store;
pub mod zstd_stream;
