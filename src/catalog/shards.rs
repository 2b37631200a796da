//! A copy-on-write map split into shards, for the DNS view: copying it for
//! the next view costs a few dozen pointers, and an update copies only the
//! path to the shard it touches. With one plain map, every applied log entry
//! cloned every name in the catalog (O(catalog) per write on every server).
//!
//! Shards sit three levels deep, 16 × 16 × 16, each level a fixed array
//! inside its `Arc`. Copying the map for the next view copies the top 16
//! pointers; an update then copies one array of 16 at each level below and
//! one shard of about `n / 4096` entries. Two levels of 64, in vectors,
//! copied 64 pointers for the map and 64 for the group, and every pointer
//! copied is a reference count touched, most of them a cache miss (14 % of
//! a server's CPU under 64-client catalog writes, `cluster_vs_etcd`; three
//! runs each, this layout took 204–215 µs of server CPU per write against
//! 215–227). A lookup follows no more pointers than before, the vectors
//! each having added one (`dns_answer`'s fast path, interleaved runs:
//! 1,003–1,078 ns a query against 1,068–1,141).
//!
//! Writing each change in place into a second view, kept one change behind
//! (no shard copied once the two had diverged), was tried and measured
//! against this in interleaved runs of `cluster_vs_etcd` with the binary
//! swapped: the same server CPU per write (64 clients: 187–194 µs against
//! 188–189; 16 clients: 297–299 against 300–304; likely because the shards
//! it stopped copying are small and in cache), and 29–38 bytes more per
//! instance for the second view's shards. A profile under `perf` had put
//! the copying at 14 %: measure such a change with the binary swapped.

use std::collections::HashMap;
use std::sync::Arc;

/// Entries at each level.
const FANOUT: usize = 16;
/// Shards in all.
const SHARDS: usize = FANOUT * FANOUT * FANOUT;

type Shard<V> = Arc<HashMap<Arc<str>, V>>;
type Leaf<V> = Arc<[Shard<V>; FANOUT]>;
type Mid<V> = Arc<[Leaf<V>; FANOUT]>;

/// A map from lowercased names to `V`, sharded by a hash of the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardedMap<V> {
    top: [Mid<V>; FANOUT],
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        let empty: Shard<V> = Arc::new(HashMap::new());
        let leaf: Leaf<V> = Arc::new(std::array::from_fn(|_| empty.clone()));
        let mid: Mid<V> = Arc::new(std::array::from_fn(|_| leaf.clone()));
        Self {
            top: std::array::from_fn(|_| mid.clone()),
        }
    }
}

/// FNV-1a: cheap, and fixed (the same name always lands in the same shard,
/// which is what makes two maps with the same entries compare equal).
fn shard_of(key: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The modulus keeps the value below SHARDS, which fits in usize.
    (h % SHARDS as u64) as usize
}

/// The shard of `key`: its index at each level.
fn place(key: &str) -> (usize, usize, usize) {
    let i = shard_of(key);
    (i / (FANOUT * FANOUT), i / FANOUT % FANOUT, i % FANOUT)
}

impl<V: Clone> ShardedMap<V> {
    /// The value for `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        let (a, b, c) = place(key);
        self.top[a][b][c].get(key)
    }

    /// Inserts or replaces; copies the arrays on the way and the shard
    /// first where another map shares them.
    pub(crate) fn insert(&mut self, key: Arc<str>, value: V) {
        let (a, b, c) = place(&key);
        let mid = Arc::make_mut(&mut self.top[a]);
        let leaf = Arc::make_mut(&mut mid[b]);
        Arc::make_mut(&mut leaf[c]).insert(key, value);
    }

    /// Removes `key`, copying its path and shard only if it is there.
    pub(crate) fn remove(&mut self, key: &str) {
        let (a, b, c) = place(key);
        if self.top[a][b][c].contains_key(key) {
            let mid = Arc::make_mut(&mut self.top[a]);
            let leaf = Arc::make_mut(&mut mid[b]);
            Arc::make_mut(&mut leaf[c]).remove(key);
        }
    }

    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.top
            .iter()
            .flat_map(|mid| mid.iter())
            .flat_map(|leaf| leaf.iter())
            .flat_map(|shard| shard.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_untouched_shards_and_diverge_where_written() {
        let mut a: ShardedMap<u32> = ShardedMap::default();
        for i in 0..1000 {
            a.insert(Arc::from(format!("name-{i}")), i);
        }
        let mut b = a.clone();
        b.insert(Arc::from("name-7"), 7000);
        b.remove("name-8");
        b.remove("absent");
        assert_eq!(a.get("name-7"), Some(&7));
        assert_eq!(b.get("name-7"), Some(&7000));
        assert_eq!(a.get("name-8"), Some(&8));
        assert_eq!(b.get("name-8"), None);
        let shared = a
            .top
            .iter()
            .zip(&b.top)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= FANOUT - 2, "only the written paths were copied");
        assert_eq!(a.values().count(), 1000);
        assert_eq!(b.values().count(), 999);
        assert_ne!(a, b);
        b.insert(Arc::from("name-7"), 7);
        b.insert(Arc::from("name-8"), 8);
        assert_eq!(a, b, "equal entries compare equal whatever was shared");
    }
}
