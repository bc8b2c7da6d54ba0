//! Stores as a tree in the configuration: leaves that hold bytes (`disk`,
//! `memory`) or reach another node (`grpc`), and decorators over them, each
//! from bb-client (`sharding`, `mirrored`, `existence_caching`). The same
//! tree configures the CAS and the Action Cache; for the Action Cache a
//! `grpc` leaf is the other node's Action Cache, and the decorators spread
//! results the same way.

use crate::action_cache::StoredActionCache;
use crate::content::ContentStore;
use crate::store::{BlobStore, DiskStore, MemoryStore};
use anyhow::Context;
use bb_client::action_cache::{CacheShard, ShardedActionCache};
use bb_client::store::{ExistenceCachingStore, MirroredStore, Shard, ShardingStore};
use bb_client::{ActionCache, GrpcStore, StorageClient};
use bb_util::config::{ByteSize, HumanDuration};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// A blob store: `backend = "disk"`, `"memory"`, `"grpc"`, `"sharding"`,
/// `"mirrored"` or `"existence_caching"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    Disk {
        /// Directory of the store, created if missing.
        path: PathBuf,
        /// Size beyond which the least recently used blobs are evicted.
        max_size: ByteSize,
        /// fsync each blob before it becomes visible.
        #[serde(default = "yes")]
        sync_writes: bool,
    },
    Memory {
        max_size: ByteSize,
    },
    /// Another bb-storage (or any REv2 storage) over gRPC. As the CAS its
    /// blobs; as the Action Cache its Action Cache, whose own completeness
    /// check must be off when it holds only a share of the CAS.
    Grpc {
        /// `grpc://host:port`, `grpcs://host:port` or `unix:/path`.
        endpoint: String,
        /// The instance name blobs are stored under there (the Action Cache
        /// keeps the caller's).
        #[serde(default)]
        instance_name: String,
        /// The CA (and client certificate) for `grpcs://`.
        #[serde(default)]
        tls: Option<bb_util::tls::ClientTls>,
        /// A file holding the bearer token to present.
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    /// Blobs spread over named stores by weighted rendezvous hashing, each
    /// on `copies` of them. Removing a shard moves only its blobs.
    Sharding {
        shards: Vec<ShardConfig>,
        /// Stores holding each blob (a mirror of each other).
        #[serde(default = "one")]
        copies: usize,
        /// Copies a write must reach to succeed.
        #[serde(default = "one")]
        write_quorum: usize,
    },
    /// Every blob on each of these stores: reads from the first that has
    /// it, a copy found lacking is repaired from another.
    Mirrored {
        copies: Vec<StoreConfig>,
        /// Copies a write must reach to succeed.
        #[serde(default = "one")]
        write_quorum: usize,
    },
    /// Remembers which blobs `store` was seen to hold, for `ttl`, so
    /// FindMissing asks it only about the others. CAS only.
    ExistenceCaching {
        store: Box<StoreConfig>,
        #[serde(default = "default_existence_ttl")]
        ttl: HumanDuration,
        /// Digests remembered at most.
        #[serde(default = "default_existence_entries")]
        max_entries: u64,
    },
}

/// One shard of a `sharding` store.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// A stable name: it decides which blobs the shard holds.
    pub name: String,
    /// Its share of the blobs, relative to the other shards'.
    #[serde(default = "one_u32")]
    pub weight: u32,
    pub store: StoreConfig,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn one_u32() -> u32 {
    1
}
fn default_existence_ttl() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}
fn default_existence_entries() -> u64 {
    1_000_000
}

impl StoreConfig {
    /// Whether bytes live in this process (no node elsewhere is involved).
    pub fn is_local(&self) -> bool {
        match self {
            StoreConfig::Disk { .. } | StoreConfig::Memory { .. } => true,
            StoreConfig::Grpc { .. } => false,
            StoreConfig::Sharding { shards, .. } => shards.iter().all(|s| s.store.is_local()),
            StoreConfig::Mirrored { copies, .. } => copies.iter().all(StoreConfig::is_local),
            StoreConfig::ExistenceCaching { store, .. } => store.is_local(),
        }
    }

    /// The blob store this describes; `checked`: local stores verify what
    /// they hand out (the CAS).
    pub fn open(&self, checked: bool) -> anyhow::Result<Arc<dyn BlobStore>> {
        Ok(match self {
            StoreConfig::Memory { max_size } => Arc::new(MemoryStore::new(max_size.bytes())),
            StoreConfig::Disk { path, max_size, sync_writes } => Arc::new(
                DiskStore::open(path, max_size.bytes(), checked, *sync_writes)
                    .with_context(|| format!("cannot open the disk store in {}", path.display()))?,
            ),
            StoreConfig::Grpc { endpoint, instance_name, tls, token_file } => Arc::new(GrpcStore::of(
                grpc_client(endpoint, tls.as_ref(), token_file.as_deref())?,
                instance_name,
            )),
            StoreConfig::Sharding { shards, copies, write_quorum } => {
                let shards = shards
                    .iter()
                    .map(|s| {
                        Ok(Shard { name: s.name.clone(), weight: s.weight, store: s.store.open(checked)? })
                    })
                    .collect::<anyhow::Result<_>>()?;
                Arc::new(ShardingStore::new(shards, *copies, *write_quorum))
            }
            StoreConfig::Mirrored { copies, write_quorum } => {
                let copies = copies.iter().map(|c| c.open(checked)).collect::<anyhow::Result<_>>()?;
                Arc::new(MirroredStore::new(copies, *write_quorum, Arc::default()))
            }
            StoreConfig::ExistenceCaching { store, ttl, max_entries } => {
                Arc::new(ExistenceCachingStore::new(store.open(checked)?, ttl.get(), *max_entries))
            }
        })
    }

    /// The Action Cache this describes; local leaves keep entries in their
    /// store, inlining outputs from `content` up to `max_inline_size`.
    pub fn open_action_cache(
        &self,
        content: &ContentStore,
        max_inline_size: u64,
    ) -> anyhow::Result<Arc<dyn ActionCache>> {
        let child = |config: &StoreConfig| config.open_action_cache(content, max_inline_size);
        Ok(match self {
            StoreConfig::Memory { .. } | StoreConfig::Disk { .. } => {
                Arc::new(StoredActionCache::new(self.open(false)?, content.clone(), max_inline_size))
            }
            StoreConfig::Grpc { endpoint, tls, token_file, .. } => {
                Arc::new(grpc_client(endpoint, tls.as_ref(), token_file.as_deref())?)
            }
            StoreConfig::Sharding { shards, copies, write_quorum } => {
                let shards = shards
                    .iter()
                    .map(|s| {
                        Ok(CacheShard { name: s.name.clone(), weight: s.weight, cache: child(&s.store)? })
                    })
                    .collect::<anyhow::Result<_>>()?;
                Arc::new(ShardedActionCache::new(shards, *copies, *write_quorum))
            }
            StoreConfig::Mirrored { copies, write_quorum } => {
                let shards = copies
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Ok(CacheShard { name: format!("copy {i}"), weight: 1, cache: child(c)? }))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let all = shards.len();
                Arc::new(ShardedActionCache::new(shards, all, *write_quorum))
            }
            StoreConfig::ExistenceCaching { .. } => {
                anyhow::bail!("existence_caching applies to the CAS only, not to the Action Cache")
            }
        })
    }
}

/// The client of a `grpc` store.
fn grpc_client(
    endpoint: &str,
    tls: Option<&bb_util::tls::ClientTls>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<StorageClient> {
    let token = token_file.map(bb_util::grpc::BearerToken::from_file).transpose()?;
    let channel = bb_util::grpc::channel_with(endpoint, tls, token.as_ref())
        .with_context(|| format!("storage node {endpoint}"))?;
    Ok(StorageClient::new(channel))
}
