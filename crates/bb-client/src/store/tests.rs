//! The decorators over stores that can be taken down and brought back.

use super::conformance::{blob, read, round_trips};
use super::*;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A node in memory that can be down: every call then fails, as a killed
/// storage node's would.
#[derive(Default)]
struct Node {
    blobs: Mutex<HashMap<Digest, Bytes>>,
    down: AtomicBool,
}

impl Node {
    fn check(&self) -> Result<(), StoreError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(StoreError::remote("node", tonic::Status::unavailable("node is down"))),
            false => Ok(()),
        }
    }

    fn holds(&self, digest: &Digest) -> bool {
        self.blobs.lock().contains_key(digest)
    }
}

struct NodeWriter {
    node: Arc<Node>,
    digest: Digest,
    data: Vec<u8>,
}

#[tonic::async_trait]
impl BlobWriter for NodeWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.node.check()?;
        self.data.extend_from_slice(&data);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.node.check()?;
        self.node.blobs.lock().insert(self.digest, self.data.into());
        Ok(())
    }
}

#[tonic::async_trait]
impl BlobStore for Arc<Node> {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        self.check()?;
        Ok(self.blobs.lock().get(digest).cloned().map(Blob::from_bytes))
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        self.check()?;
        self.blobs.lock().insert(*digest, data);
        Ok(())
    }

    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        self.check()?;
        Ok(Box::new(NodeWriter { node: self.clone(), digest: *digest, data: Vec::new() }))
    }

    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        self.check()?;
        Ok(digests.iter().filter(|d| !self.holds(d)).copied().collect())
    }
}

fn nodes(n: usize) -> Vec<Arc<Node>> {
    (0..n).map(|_| Arc::new(Node::default())).collect()
}

fn as_stores(nodes: &[Arc<Node>]) -> Vec<Arc<dyn BlobStore>> {
    nodes.iter().map(|n| Arc::new(n.clone()) as Arc<dyn BlobStore>).collect()
}

fn shards(nodes: &[Arc<Node>], weights: &[u32]) -> Vec<Shard> {
    let stores = as_stores(nodes);
    let named = stores.into_iter().zip(weights).enumerate();
    named.map(|(i, (store, &weight))| Shard { name: format!("node{i}"), weight, store }).collect()
}

/// Waits for background repairs to land.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen");
}

#[tokio::test]
async fn mirrored_and_sharded_stores_behave_as_stores() {
    round_trips(&MirroredStore::new(as_stores(&nodes(2)), 2, Arc::default())).await;
    round_trips(&ShardingStore::new(shards(&nodes(3), &[1, 1, 1]), 2, 1)).await;
}

#[tokio::test]
async fn a_mirror_goes_on_with_a_copy_down_and_repairs_it_when_it_returns() {
    let nodes = nodes(2);
    let repairs = Arc::new(Repairs::default());
    let store = MirroredStore::new(as_stores(&nodes), 1, repairs.clone());
    nodes[0].down.store(true, Ordering::SeqCst);
    let (d, data) = blob("written while a copy was down");
    store.put(&d, data.clone()).await.unwrap();
    assert_eq!(read(&store, &d).await, Some(data.clone()));
    assert!(store.find_missing(&[d]).await.unwrap().is_empty());

    nodes[0].down.store(false, Ordering::SeqCst);
    assert!(!nodes[0].holds(&d));
    // Node 0 is asked first, lacks the blob, and gets it from node 1.
    assert_eq!(read(&store, &d).await, Some(data));
    eventually("the repair", || nodes[0].holds(&d)).await;
    assert_eq!(repairs.count(), 1);

    // FindMissing repairs too.
    let (d2, data2) = blob("only on the second copy");
    nodes[1].blobs.lock().insert(d2, data2);
    assert!(store.find_missing(&[d2]).await.unwrap().is_empty());
    eventually("the repair from FindMissing", || nodes[0].holds(&d2)).await;
    assert_eq!(repairs.count(), 2);
}

#[tokio::test]
async fn a_write_needs_its_quorum() {
    let nodes = nodes(2);
    let store = MirroredStore::new(as_stores(&nodes), 2, Arc::default());
    nodes[1].down.store(true, Ordering::SeqCst);
    let (d, data) = blob("needs two copies");
    assert!(store.put(&d, data.clone()).await.is_err());
    let mut writer = store.begin_write(&d).await.unwrap();
    writer.write(data).await.unwrap();
    assert!(writer.commit().await.is_err());
    // Every copy down: errors, not "missing".
    nodes[0].down.store(true, Ordering::SeqCst);
    assert!(store.get(&d).await.is_err());
    assert!(store.find_missing(&[d]).await.is_err());
}

fn many_blobs(n: usize) -> Vec<(Digest, Bytes)> {
    (0..n).map(|i| blob(&format!("blob number {i}"))).collect()
}

#[tokio::test]
async fn shards_get_blobs_in_proportion_to_their_weight() {
    let nodes = nodes(3);
    let store = ShardingStore::new(shards(&nodes, &[1, 1, 2]), 1, 1);
    for (d, data) in many_blobs(4000) {
        store.put(&d, data).await.unwrap();
    }
    let held: Vec<usize> = nodes.iter().map(|n| n.blobs.lock().len()).collect();
    assert_eq!(held.iter().sum::<usize>(), 4000, "one copy each");
    // Expected 1000, 1000, 2000.
    assert!(held[0].abs_diff(1000) < 150 && held[1].abs_diff(1000) < 150, "{held:?}");
    assert!(held[2].abs_diff(2000) < 150, "{held:?}");
}

#[tokio::test]
async fn adding_or_removing_a_shard_moves_only_its_share() {
    let nodes = nodes(4);
    let three = ShardingStore::new(shards(&nodes[..3], &[1, 1, 1]), 1, 1);
    let four = ShardingStore::new(shards(&nodes, &[1, 1, 1, 1]), 1, 1);
    let blobs = many_blobs(2000);
    let mut moved = 0usize;
    for (d, _) in &blobs {
        let (before, after) = (three.owners(d), four.owners(d));
        if before != after {
            assert_eq!(after, vec![3], "a blob moved between old shards");
            moved += 1;
        }
    }
    // The new shard takes about a quarter.
    assert!(moved.abs_diff(500) < 100, "{moved} of 2000 moved");
}

#[tokio::test]
async fn two_copies_over_three_nodes_survive_one_node_and_catch_up() {
    let nodes = nodes(3);
    let store = ShardingStore::new(shards(&nodes, &[1, 1, 1]), 2, 1);
    let blobs = many_blobs(300);
    nodes[1].down.store(true, Ordering::SeqCst);
    for (d, data) in &blobs {
        store.put(d, data.clone()).await.unwrap();
    }
    for (d, data) in &blobs {
        assert_eq!(read(&store, d).await.as_ref(), Some(data), "readable with a node down");
        let owners = store.owners(d);
        assert_eq!(owners.len(), 2);
        for (i, node) in nodes.iter().enumerate() {
            let expected = owners.contains(&i) && i != 1;
            assert_eq!(node.holds(d), expected, "blob on node {i}, owners {owners:?}");
        }
    }
    let digests: Vec<Digest> = blobs.iter().map(|b| b.0).collect();
    assert!(store.find_missing(&digests).await.unwrap().is_empty());

    // Node 1 comes back empty-handed; FindMissing finds what it lacks and
    // the copies catch up.
    nodes[1].down.store(false, Ordering::SeqCst);
    let owed = digests.iter().filter(|d| store.owners(d).contains(&1)).count();
    assert!(owed > 100, "node 1 owns about two thirds: {owed}");
    assert!(store.find_missing(&digests).await.unwrap().is_empty());
    eventually("the catch-up", || nodes[1].blobs.lock().len() == owed).await;
    assert_eq!(store.repairs(), owed as u64);
}

/// Counts FindMissing calls and the digests they carry.
struct Counting {
    inner: Arc<Node>,
    asked: Mutex<Vec<usize>>,
}

#[tonic::async_trait]
impl BlobStore for Counting {
    async fn get(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        self.inner.get(digest).await
    }
    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), StoreError> {
        self.inner.put(digest, data).await
    }
    async fn begin_write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>, StoreError> {
        self.inner.begin_write(digest).await
    }
    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        self.asked.lock().push(digests.len());
        self.inner.find_missing(digests).await
    }
}

#[tokio::test]
async fn find_missing_asks_only_about_blobs_not_seen_lately() {
    let node = nodes(1).remove(0);
    let counting = Arc::new(Counting { inner: node.clone(), asked: Mutex::default() });
    let store = ExistenceCachingStore::new(counting.clone(), Duration::from_millis(300), 1000);
    round_trips(&ExistenceCachingStore::new(Arc::new(node.clone()), Duration::from_secs(60), 10)).await;

    let blobs = many_blobs(10);
    for (d, data) in &blobs[..5] {
        node.put(d, data.clone()).await.unwrap();
    }
    let digests: Vec<Digest> = blobs.iter().map(|b| b.0).collect();
    assert_eq!(store.find_missing(&digests).await.unwrap(), digests[5..]);
    // The five present ones are not asked about again; the absent ones are.
    assert_eq!(store.find_missing(&digests).await.unwrap(), digests[5..]);
    store.put(&blobs[5].0, blobs[5].1.clone()).await.unwrap();
    assert_eq!(store.find_missing(&digests).await.unwrap(), digests[6..]);
    assert_eq!(*counting.asked.lock(), vec![10, 5, 4]);
    // After the TTL, it asks again: an evicted blob is found missing.
    node.blobs.lock().remove(&digests[0]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let missing = store.find_missing(&digests).await.unwrap();
    assert!(missing.contains(&digests[0]));
    assert_eq!(counting.asked.lock().last(), Some(&10));
}

#[tokio::test]
async fn a_read_cache_copies_what_it_reads_and_never_fails_for_its_fast_store() {
    let [fast, slow] = [Arc::new(Node::default()), Arc::new(Node::default())];
    let store = ReadCachingStore::new(Arc::new(fast.clone()), Arc::new(slow.clone()));
    round_trips(&store).await;

    // Only the slow store has it: the first read copies it.
    let (d, data) = blob("inputs of every action");
    slow.blobs.lock().insert(d, data.clone());
    assert!(!fast.holds(&d));
    assert_eq!(read(&store, &d).await, Some(data.clone()));
    assert!(fast.holds(&d), "not copied into the fast store");
    slow.down.store(true, Ordering::SeqCst);
    assert_eq!(read(&store, &d).await, Some(data.clone()), "served from the fast store");
    // Writes need the slow store; what it lacks is not stored.
    let (d2, data2) = blob("written while the slow store is down");
    assert!(store.put(&d2, data2.clone()).await.is_err());
    assert!(!fast.holds(&d2));
    slow.down.store(false, Ordering::SeqCst);

    // The fast store down: every call goes on against the slow one.
    fast.down.store(true, Ordering::SeqCst);
    store.put(&d2, data2.clone()).await.unwrap();
    let mut writer = store.begin_write(&blob("streamed").0).await.unwrap();
    writer.write(blob("streamed").1).await.unwrap();
    writer.commit().await.unwrap();
    assert_eq!(read(&store, &d2).await, Some(data2));
    assert_eq!(read(&store, &blob("streamed").0).await, Some(blob("streamed").1));
    fast.down.store(false, Ordering::SeqCst);

    // The slow store answers for what is stored.
    let (d3, data3) = blob("only in the fast store");
    fast.blobs.lock().insert(d3, data3);
    assert_eq!(store.find_missing(&[d, d3]).await.unwrap(), vec![d3]);
}
