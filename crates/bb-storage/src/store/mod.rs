//! The stores where bb-storage keeps bytes: memory and local disk, behind
//! the blob store interface of bb-client.

mod disk;
mod memory;

pub use bb_client::store::{
    Blob, BlobReader, BlobStore, BlobWriter, Chunks, Quarantine, SizeLru, StoreError,
};
pub use disk::DiskStore;
pub use memory::MemoryStore;
