//! The stores where bb-storage keeps bytes: memory, local disk and an
//! S3-compatible bucket, behind
//! the blob store interface of bb-client.

mod bucket;
mod disk;
mod memory;
mod object;

pub use bb_client::store::{
    Blob, BlobReader, BlobStore, BlobWriter, Chunks, Quarantine, SizeLru, StoreError,
};
pub use bucket::BucketConfig;
pub use disk::DiskStore;
pub use memory::MemoryStore;
pub use object::ObjectStorageStore;
