//! A size-bounded least-recently-used map from keys (digests, by default)
//! to entries: the bookkeeping every local store and cache shares
//! (bb-storage's memory and disk stores, the worker's file and directory
//! caches). The caller holds it under a lock.

use bb_util::Digest;
use lru::LruCache;
use std::hash::Hash;

pub struct SizeLru<V, K = Digest> {
    entries: LruCache<K, (u64, V)>,
    total: u64,
    capacity: u64,
    /// The most entries kept, whatever their size.
    max_entries: usize,
}

impl<V, K: Hash + Eq + Copy> SizeLru<V, K> {
    pub fn new(capacity: u64) -> Self {
        SizeLru { entries: LruCache::unbounded(), total: 0, capacity, max_entries: usize::MAX }
    }

    /// Also bounded to `max_entries` entries.
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    fn over(&self, adding: u64, entries: usize) -> bool {
        self.total + adding > self.capacity || self.entries.len() + entries > self.max_entries
    }

    fn evict_while(&mut self, adding: u64, entries: usize) -> Vec<(K, V)> {
        let mut evicted = Vec::new();
        while self.over(adding, entries) {
            let Some((old, (old_size, old_value))) = self.entries.pop_lru() else { break };
            self.total -= old_size;
            evicted.push((old, old_value));
        }
        evicted
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn total_size(&self) -> u64 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry, now the most recently used.
    pub fn get(&mut self, digest: &K) -> Option<&V> {
        self.entries.get(digest).map(|(_, v)| v)
    }

    /// Whether the entry exists; if so it becomes the most recently used.
    pub fn touch(&mut self, digest: &K) -> bool {
        self.entries.get(digest).is_some()
    }

    /// Adds an entry of `size` bytes as the most recently used, evicting
    /// the least recently used until everything fits; returns the evicted
    /// entries. An entry already present is only touched (`false`).
    pub fn insert(&mut self, digest: K, size: u64, value: V) -> (bool, Vec<(K, V)>) {
        if self.touch(&digest) {
            return (false, Vec::new());
        }
        let evicted = self.evict_while(size, 1);
        self.entries.put(digest, (size, value));
        self.total += size;
        (true, evicted)
    }

    /// Adds an entry as the least recently used (for loading a store's
    /// contents oldest-last at startup). No eviction happens.
    pub fn insert_oldest(&mut self, digest: K, size: u64, value: V) {
        if self.entries.put(digest, (size, value)).is_none() {
            self.total += size;
            self.entries.demote(&digest);
        }
    }

    /// Removes the least recently used entries until the total fits.
    pub fn shrink_to_capacity(&mut self) -> Vec<(K, V)> {
        self.evict_while(0, 0)
    }

    /// Whether the entry exists, without making it more recently used.
    pub fn contains(&self, digest: &K) -> bool {
        self.entries.contains(digest)
    }

    pub fn remove(&mut self, digest: &K) -> Option<V> {
        let (size, value) = self.entries.pop(digest)?;
        self.total -= size;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_util::DigestFunction;

    fn d(n: u8) -> Digest {
        Digest::of(DigestFunction::Sha256, &[n])
    }

    #[test]
    fn evicts_in_lru_order() {
        let mut lru = SizeLru::new(10);
        assert!(lru.insert(d(1), 4, ()).1.is_empty());
        assert!(lru.insert(d(2), 4, ()).1.is_empty());
        assert!(lru.touch(&d(1)));
        let (added, evicted) = lru.insert(d(3), 4, ());
        assert!(added);
        assert_eq!(evicted.iter().map(|e| e.0).collect::<Vec<_>>(), vec![d(2)]);
        assert_eq!(lru.total_size(), 8);
        assert!(!lru.insert(d(3), 4, ()).0);
        assert_eq!(lru.remove(&d(1)), Some(()));
        assert_eq!(lru.total_size(), 4);
        assert_eq!(lru.len(), 1);
    }

    #[test]
    fn loads_oldest_last() {
        let mut lru = SizeLru::new(8);
        lru.insert_oldest(d(1), 4, ()); // newest
        lru.insert_oldest(d(2), 4, ());
        lru.insert_oldest(d(3), 4, ()); // oldest
        let evicted = lru.shrink_to_capacity();
        assert_eq!(evicted.iter().map(|e| e.0).collect::<Vec<_>>(), vec![d(3)]);
    }

    #[test]
    fn bounds_the_number_of_entries_too() {
        // Keys of another type: the worker's file cache keys by (digest, executable).
        let mut lru: SizeLru<(), (Digest, bool)> = SizeLru::new(1 << 20).with_max_entries(2);
        lru.insert((d(1), false), 1, ());
        lru.insert((d(1), true), 1, ());
        assert!(lru.touch(&(d(1), false)));
        let (added, evicted) = lru.insert((d(2), false), 1, ());
        assert!(added);
        assert_eq!(evicted.iter().map(|e| e.0).collect::<Vec<_>>(), vec![(d(1), true)]);
        assert!(lru.contains(&(d(1), false)) && lru.contains(&(d(2), false)));
        assert_eq!((lru.len(), lru.total_size()), (2, 2));
    }
}
