//! bb-client: how every program of the farm reaches storage, and what the
//! scheduler's status page serves as JSON.
//!
//! - [`store`]: the blob store interface (get, get from an offset, put,
//!   find missing), the blobs it hands out, and the size-bounded LRU.
//! - [`action_cache`]: the Action Cache interface.
//! - [`backend`]: a whole storage service (a CAS per instance name, an
//!   Action Cache), in this process or remote.
//! - [`remote`]: the one client of a remote REv2 CAS and Action Cache;
//!   small blobs in batches, large ones over ByteStream.
//! - [`tree`]: hashing files and building REv2 Trees from directories.
//! - [`status`]: the scheduler's `/api/status` JSON.
//! - [`rerun`]: the `bb` command lines that run a stored action again.
//!
//! It depends on bb-proto and bb-util only, so the worker and the CLI reach
//! storage without linking the storage server.

pub mod action_cache;
pub mod backend;
pub mod remote;
pub mod rerun;
pub mod source;
pub mod status;
pub mod store;
pub mod tree;

pub use action_cache::{ActionCache, Inline};
pub use backend::{StorageBackend, read_message};
pub use remote::{GrpcStore, StorageClient};
pub use source::Source;
pub use store::{Blob, BlobReader, BlobStore, BlobWriter, SizeLru, StoreError};
