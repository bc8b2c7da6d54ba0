//! Stores as a tree in the configuration: leaves that hold bytes (`disk`,
//! `memory`, `object_storage`) or reach another node (`grpc`), and
//! decorators over them, each from bb-client (`sharding`, `mirrored`,
//! `read_caching`, `existence_caching`). The same
//! tree configures the CAS and the Action Cache; for the Action Cache a
//! `grpc` leaf is the other node's Action Cache, and the decorators spread
//! results the same way.

use crate::action_cache::StoredActionCache;
use crate::content::ContentStore;
use crate::store::{BlobStore, BucketConfig, DiskStore, MemoryStore, ObjectStorageStore};
use anyhow::Context;
use bb_client::action_cache::{CacheShard, ShardedActionCache};
use bb_client::store::{ExistenceCachingStore, MirroredStore, ReadCachingStore, Shard, ShardingStore};
use bb_client::{ActionCache, GrpcStore, StorageClient};
use bb_util::config::{ByteSize, HumanDuration};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// A blob store: `backend = "disk"`, `"memory"`, `"object_storage"`,
/// `"grpc"`, `"sharding"`, `"mirrored"`, `"read_caching"` or
/// `"existence_caching"`.
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
    /// Objects of an S3-compatible bucket, with an index of what it holds
    /// (rebuilt from a listing at start) answering FindMissing. Usually the
    /// slow tier of a `read_caching` store.
    ObjectStorage(BucketConfig),
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
        /// Stream blobs over 1 MiB zstd-compressed when the node offers it
        /// (for a network slower than compression, about 300 MB/s per core).
        #[serde(default)]
        zstd: bool,
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
    /// `fast` (a local disk) in front of `slow` (another node, a bucket):
    /// reads from `fast` first, copying there what only `slow` had; writes
    /// to both, succeeding once `slow` has the blob; FindMissing from `slow`.
    ReadCaching {
        fast: Box<StoreConfig>,
        slow: Box<StoreConfig>,
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
    /// Whether this store keeps the bytes itself (in memory, on disk, in a
    /// bucket) rather than handing them to another node's services.
    pub fn holds_bytes(&self) -> bool {
        match self {
            StoreConfig::Disk { .. } | StoreConfig::Memory { .. } | StoreConfig::ObjectStorage(_) => true,
            StoreConfig::Grpc { .. } => false,
            StoreConfig::Sharding { shards, .. } => shards.iter().all(|s| s.store.holds_bytes()),
            StoreConfig::Mirrored { copies, .. } => copies.iter().all(StoreConfig::holds_bytes),
            StoreConfig::ReadCaching { fast, slow } => fast.holds_bytes() && slow.holds_bytes(),
            StoreConfig::ExistenceCaching { store, .. } => store.holds_bytes(),
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
            StoreConfig::ObjectStorage(bucket) => {
                ObjectStorageStore::new(Arc::new(bucket.open()?), &bucket.prefix, checked)
            }
            StoreConfig::Grpc { endpoint, instance_name, tls, token_file, zstd } => Arc::new(GrpcStore::of(
                grpc_client(endpoint, tls.as_ref(), token_file.as_deref())?.with_zstd(*zstd),
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
            StoreConfig::ReadCaching { fast, slow } => {
                Arc::new(ReadCachingStore::new(fast.open(checked)?, slow.open(checked)?))
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
            StoreConfig::Memory { .. } | StoreConfig::Disk { .. } | StoreConfig::ObjectStorage(_) => {
                Arc::new(StoredActionCache::new(self.open(false)?, content.clone(), max_inline_size))
            }
            // Entries in both tiers; a remote Action Cache is not a blob store.
            StoreConfig::ReadCaching { .. } if self.holds_bytes() => {
                Arc::new(StoredActionCache::new(self.open(false)?, content.clone(), max_inline_size))
            }
            StoreConfig::ReadCaching { .. } => anyhow::bail!(
                "read_caching of the Action Cache needs stores that hold bytes (disk, memory, object_storage), \
                 not another node's Action Cache"
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> StoreConfig {
        bb_util::config::parse(toml, "test.toml").unwrap()
    }

    #[tokio::test]
    async fn a_bucket_behind_a_disk_opens_without_a_request() {
        let dir = tempfile::tempdir().unwrap();
        let config = parse(&format!(
            "backend = \"read_caching\"\n\
             fast = {{ backend = \"disk\", path = {:?}, max_size = \"1MiB\" }}\n\
             slow = {{ backend = \"object_storage\", bucket = \"farm\", endpoint = \"http://127.0.0.1:9\", prefix = \"cas\" }}\n",
            dir.path().join("cas")
        ));
        assert!(config.holds_bytes());
        config.open(true).unwrap();
        let content = ContentStore::new(Arc::new(MemoryStore::new(1 << 20)));
        config.open_action_cache(&content, 0).unwrap();

        let over_a_node = parse(
            "backend = \"read_caching\"\n\
             fast = { backend = \"memory\", max_size = \"1MiB\" }\n\
             slow = { backend = \"grpc\", endpoint = \"grpc://127.0.0.1:9\" }\n",
        );
        assert!(!over_a_node.holds_bytes());
        over_a_node.open(true).unwrap();
        let refused = over_a_node.open_action_cache(&content, 0).err().unwrap();
        assert!(refused.to_string().contains("not another node's Action Cache"), "{refused}");
    }
}
