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
//! A shard holds each value once, found by the name inside it ([`Named`]):
//! a map from the lowercased name kept that name a second time, in an
//! allocation of its own, and copying a shard touched two reference counts
//! per entry where now it touches one. Names match without regard to ASCII
//! case, as the catalog's keys do, so a lookup needs no lowercased copy.
//! A lookup reads the name where the value is, so the view keeps short
//! names inline (`CompactString`): with the name behind a pointer of its
//! own, a lookup missed the cache once more, and `dns_answer`'s fast path
//! took 1,172–1,324 ns a query against 994–1,120 before; inline, 1,035–1,121
//! (interleaved runs at 100,000 instances).
//!
//! Writing each change in place into a second view, kept one change behind
//! (no shard copied once the two had diverged), was tried and measured
//! against this in interleaved runs of `cluster_vs_etcd` with the binary
//! swapped: the same server CPU per write (64 clients: 187–194 µs against
//! 188–189; 16 clients: 297–299 against 300–304; likely because the shards
//! it stopped copying are small and in cache), and 29–38 bytes more per
//! instance for the second view's shards. A profile under `perf` had put
//! the copying at 14 %: measure such a change with the binary swapped.

use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// A value a [`ShardedMap`] holds, found by its name; two names are the
/// same name when they differ only in ASCII case.
pub(crate) trait Named {
    /// The name, in any case.
    fn name(&self) -> &str;
}

impl<T: Named + ?Sized> Named for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
}

/// Entries at each level.
const FANOUT: usize = 16;
/// Shards in all.
const SHARDS: usize = FANOUT * FANOUT * FANOUT;

type Shard<V> = Arc<HashTable<V>>;
type Leaf<V> = Arc<[Shard<V>; FANOUT]>;
type Mid<V> = Arc<[Leaf<V>; FANOUT]>;

/// Values by name, sharded by a hash of the name.
#[derive(Debug, Clone)]
pub(crate) struct ShardedMap<V> {
    top: [Mid<V>; FANOUT],
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        let empty: Shard<V> = Arc::new(HashTable::new());
        let leaf: Leaf<V> = Arc::new(std::array::from_fn(|_| empty.clone()));
        let mid: Mid<V> = Arc::new(std::array::from_fn(|_| leaf.clone()));
        Self {
            top: std::array::from_fn(|_| mid.clone()),
        }
    }
}

/// Where a name is kept.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// The shard's index at each level.
    path: (usize, usize, usize),
    /// The hash its shard's table files it under.
    hash: u64,
}

/// FNV-1a over the name lowercased: cheap, and fixed (the same name lands
/// in the same shard whatever its case and whichever map holds it, which is
/// what makes two maps with the same entries compare equal shard by shard).
fn place(name: &str) -> Place {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The modulus keeps the value below SHARDS, which fits in usize.
    let i = (h % SHARDS as u64) as usize;
    Place {
        path: (i / (FANOUT * FANOUT), i / FANOUT % FANOUT, i % FANOUT),
        // The low bits chose the shard, so they are the same for all of a
        // shard's names; the table takes a bucket from a hash's low bits and
        // a tag from its top seven. It gets the other bits, multiplied by
        // an odd constant to spread them over both ends.
        hash: (h / SHARDS as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    }
}

/// Whether `value` is the one called `name`.
fn called<V: Named>(name: &str) -> impl Fn(&V) -> bool + '_ {
    move |value| value.name().eq_ignore_ascii_case(name)
}

/// The hash a table files `value` under, when it grows.
fn rehash<V: Named>(value: &V) -> u64 {
    place(value.name()).hash
}

impl<V: Named + Clone> ShardedMap<V> {
    /// The value called `name`, in any case.
    pub(crate) fn get(&self, name: &str) -> Option<&V> {
        let at = place(name);
        let (a, b, c) = at.path;
        self.top[a][b][c].find(at.hash, called(name))
    }

    /// Inserts `value`, or replaces the value of the same name; copies the
    /// arrays on the way and the shard first where another map shares them.
    pub(crate) fn insert(&mut self, value: V) {
        let at = place(value.name());
        let (a, b, c) = at.path;
        let mid = Arc::make_mut(&mut self.top[a]);
        let leaf = Arc::make_mut(&mut mid[b]);
        let table = Arc::make_mut(&mut leaf[c]);
        match table.entry(at.hash, called(value.name()), rehash) {
            Entry::Occupied(mut slot) => *slot.get_mut() = value,
            Entry::Vacant(slot) => {
                slot.insert(value);
            }
        }
    }

    /// Removes the value called `name`, copying its path and shard only if
    /// it is there.
    pub(crate) fn remove(&mut self, name: &str) {
        let at = place(name);
        let (a, b, c) = at.path;
        if self.top[a][b][c].find(at.hash, called(name)).is_none() {
            return;
        }
        let mid = Arc::make_mut(&mut self.top[a]);
        let leaf = Arc::make_mut(&mut mid[b]);
        if let Ok(entry) = Arc::make_mut(&mut leaf[c]).find_entry(at.hash, called(name)) {
            entry.remove();
        }
    }

    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards().flat_map(|shard| shard.iter())
    }
}

impl<V> ShardedMap<V> {
    /// Every shard, in the order of their indexes.
    fn shards(&self) -> impl Iterator<Item = &Shard<V>> {
        self.top
            .iter()
            .flat_map(|mid| mid.iter())
            .flat_map(|leaf| leaf.iter())
    }
}

/// Equal when they hold equal values under the same names; a name is in the
/// same shard of both, so shards compare one to one.
impl<V: Named + PartialEq> PartialEq for ShardedMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.shards().zip(other.shards()).all(|(mine, theirs)| {
            Arc::ptr_eq(mine, theirs)
                || (mine.len() == theirs.len()
                    && mine.iter().all(|value| {
                        let name = value.name();
                        theirs.find(place(name).hash, called(name)) == Some(value)
                    }))
        })
    }
}

impl<V: Named + Eq> Eq for ShardedMap<V> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A named value for the tests.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Entry {
        name: String,
        value: u32,
    }

    impl Named for Entry {
        fn name(&self) -> &str {
            &self.name
        }
    }

    fn entry(name: &str, value: u32) -> Arc<Entry> {
        Arc::new(Entry {
            name: name.to_owned(),
            value,
        })
    }

    fn value(map: &ShardedMap<Arc<Entry>>, name: &str) -> Option<u32> {
        map.get(name).map(|e| e.value)
    }

    #[test]
    fn copies_share_untouched_shards_and_diverge_where_written() {
        let mut a = ShardedMap::default();
        for i in 0..1000 {
            a.insert(entry(&format!("name-{i}"), i));
        }
        let mut b = a.clone();
        b.insert(entry("name-7", 7000));
        b.remove("name-8");
        b.remove("absent");
        assert_eq!(value(&a, "name-7"), Some(7));
        assert_eq!(value(&b, "name-7"), Some(7000));
        assert_eq!(value(&a, "name-8"), Some(8));
        assert_eq!(value(&b, "name-8"), None);
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
        b.insert(entry("name-7", 7));
        b.insert(entry("name-8", 8));
        assert_eq!(a, b, "equal entries compare equal whatever was shared");
    }

    #[test]
    fn a_name_is_one_name_in_any_case() {
        let mut map = ShardedMap::default();
        map.insert(entry("Web", 1));
        assert_eq!(value(&map, "web"), Some(1));
        assert_eq!(value(&map, "WEB"), Some(1));
        assert_eq!(value(&map, "wEb"), Some(1));
        assert_eq!(value(&map, "webs"), None);
        map.insert(entry("WEB", 2));
        assert_eq!(map.values().count(), 1, "replaced, not added");
        assert_eq!(map.get("web").map(|e| e.name.as_str()), Some("WEB"));
        map.remove("wEB");
        assert_eq!(map.values().count(), 0);
        // Bytes beyond ASCII match only themselves, as the catalog's keys do.
        map.insert(entry("caf\u{c9}", 3));
        assert_eq!(value(&map, "CAF\u{c9}"), Some(3));
        assert_eq!(value(&map, "caf\u{e9}"), None);
    }

    #[test]
    fn a_full_shard_finds_every_name_after_growing() {
        // Names all in shard 0, so its table grows many times over.
        let names: Vec<String> = (0..200_000)
            .map(|i| format!("n{i}"))
            .filter(|n| place(n).path == (0, 0, 0))
            .collect();
        assert!(names.len() > 20, "{} names in shard 0", names.len());
        let mut map = ShardedMap::default();
        for (i, name) in names.iter().enumerate() {
            map.insert(entry(name, u32::try_from(i).unwrap()));
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(value(&map, &name.to_uppercase()), u32::try_from(i).ok());
        }
        assert_eq!(map.values().count(), names.len());
    }
}
