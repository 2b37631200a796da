//! A copy-on-write map split into shards, for the DNS view: copying it for
//! the next view costs one pointer per shard, and an update copies only the
//! shards it touches. With one plain map, every applied log entry cloned
//! every name in the catalog (O(catalog) per write on every server).

use std::collections::HashMap;
use std::sync::Arc;

/// How many shards: enough that a shard of a 100,000-name catalog holds a
/// few hundred names, few enough that copying the shard table is trivial.
const SHARDS: usize = 256;

/// A map from lowercased names to `V`, sharded by a hash of the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardedMap<V> {
    shards: Vec<Arc<HashMap<Arc<str>, V>>>,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        let empty = Arc::new(HashMap::new());
        Self {
            shards: vec![empty; SHARDS],
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

impl<V: Clone> ShardedMap<V> {
    /// The value for `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.shards[shard_of(key)].get(key)
    }

    /// Inserts or replaces; copies the shard first if another map shares it.
    pub(crate) fn insert(&mut self, key: Arc<str>, value: V) {
        Arc::make_mut(&mut self.shards[shard_of(&key)]).insert(key, value);
    }

    /// Removes `key`, copying its shard only if it is there.
    pub(crate) fn remove(&mut self, key: &str) {
        let shard = &mut self.shards[shard_of(key)];
        if shard.contains_key(key) {
            Arc::make_mut(shard).remove(key);
        }
    }

    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
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
            .shards
            .iter()
            .zip(&b.shards)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= SHARDS - 2, "only the written shards were copied");
        assert_eq!(a.values().count(), 1000);
        assert_eq!(b.values().count(), 999);
        assert_ne!(a, b);
        b.insert(Arc::from("name-7"), 7);
        b.insert(Arc::from("name-8"), 8);
        assert_eq!(a, b, "equal entries compare equal whatever was shared");
    }
}
