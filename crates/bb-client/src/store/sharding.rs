//! Blobs spread over named stores by weighted rendezvous hashing: each blob
//! lives on the `copies` stores that score highest for it. Removing a store
//! moves only the blobs it held; adding one moves only its share. With more
//! than one copy, the stores of a blob are a mirror of each other (see
//! `mirrored`): writes need the quorum, reads and FindMissing are answered
//! by any, and a copy found lacking is repaired.

use super::mirrored::{MirroredStore, Repairs};
use super::{Blob, BlobStore, BlobWriter, StoreError};
use bb_util::Digest;
use bytes::Bytes;
use futures::future::try_join_all;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// One store of a sharded set.
pub struct Shard {
    /// A stable name: it decides which blobs the store holds, so renaming a
    /// store moves its blobs.
    pub name: String,
    /// Its share of the blobs, relative to the others'.
    pub weight: u32,
    pub store: Arc<dyn BlobStore>,
}

pub struct ShardingStore {
    shards: Vec<Shard>,
    copies: usize,
    write_quorum: usize,
    repairs: Arc<Repairs>,
}

impl ShardingStore {
    /// `copies` is clamped to 1..=shards, `write_quorum` to 1..=copies.
    pub fn new(shards: Vec<Shard>, copies: usize, write_quorum: usize) -> Self {
        let copies = copies.clamp(1, shards.len().max(1));
        ShardingStore { shards, copies, write_quorum, repairs: Arc::default() }
    }

    /// Missing copies repaired since start.
    pub fn repairs(&self) -> u64 {
        self.repairs.count()
    }

    /// The indexes of the shards that hold `digest`, best first.
    pub fn owners(&self, digest: &Digest) -> Vec<usize> {
        let mut key = digest.hash().to_vec();
        key.extend_from_slice(&digest.size().to_le_bytes());
        rendezvous(self.shards.iter().map(|s| (s.name.as_str(), s.weight)), &key, self.copies)
    }

    fn store_of(&self, owners: &[usize]) -> MirroredStore {
        let copies = owners.iter().map(|&i| self.shards[i].store.clone()).collect();
        MirroredStore::new(copies, self.write_quorum, self.repairs.clone())
    }
}

/// The `copies` best of the named, weighted members for `key`, best first.
pub(crate) fn rendezvous<'a>(
    members: impl Iterator<Item = (&'a str, u32)>,
    key: &[u8],
    copies: usize,
) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> =
        members.enumerate().map(|(i, (name, weight))| (score(name, weight, key), i)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(copies).map(|(_, i)| i).collect()
}

/// Weighted rendezvous score: `-weight / ln(u)` for a hash `u` in (0, 1) of
/// the member's name and the key, so each member wins a key with a
/// probability proportional to its weight.
fn score(name: &str, weight: u32, key: &[u8]) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0]);
    hasher.update(key);
    let hash = hasher.finalize();
    let bits = u64::from_le_bytes(hash[..8].try_into().expect("a SHA-256 has 32 bytes"));
    // In (0, 1): never 0 or 1, whose logarithms break the score.
    let u = ((bits >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight) / u.ln()
}

#[tonic::async_trait]
impl BlobStore for ShardingStore {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        self.store_of(&self.owners(digest)).get(digest).await
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        self.store_of(&self.owners(digest)).put(digest, data).await
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        self.store_of(&self.owners(digest)).begin_write(digest).await
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let mut by_owners: HashMap<Vec<usize>, Vec<Digest>> = HashMap::new();
        for digest in digests {
            by_owners.entry(self.owners(digest)).or_default().push(*digest);
        }
        let asked = by_owners.iter().map(|(owners, digests)| {
            let store = self.store_of(owners);
            async move { store.find_missing(digests).await }
        });
        Ok(try_join_all(asked).await?.into_iter().flatten().collect())
    }
}
