//! A table's rows as a snapshot reads them: as they stood at one moment,
//! read a slice at a time while applying goes on changing them.
//!
//! Encoding a state of 100,000 instances takes about 100 ms on a small
//! machine, and a snapshot encoded under the state's read lock held every
//! write up that long. [`CapturedMap`] lets the snapshot take the lock for
//! one slice of rows at a time instead, and still read every row as it was
//! when the snapshot began.
//!
//! Opening a capture ([`CapturedMap::open`]) copies nothing. From then on,
//! the first change to each key saves what the key held before: its value,
//! or that it was absent. [`CapturedMap::captured_after`] reads the rows
//! after a key as they stood at the opening, each key's saved value where
//! one was saved and its live row otherwise. Only the keys written while a
//! snapshot is being read are saved: tens or hundreds, not the table.
//!
//! A capture is an `Arc<`[`Capture`]`>`, held by whoever reads it. Once it
//! is dropped, the next change drops the saved values with it. Captures
//! may overlap (a Raft snapshot, a client agent catching up): each keeps
//! its own saved values.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, btree_map};
use std::fmt;
use std::ops::{Bound, Deref};
use std::sync::{Arc, Weak};

use serde::{Serialize, Serializer};

/// The identity of one capture of the state: the maps save values for the
/// capture they were opened with while its `Arc` lives.
#[derive(Debug)]
pub(crate) struct Capture {
    /// Not built outside this module but through [`Capture::new`].
    _private: (),
}

impl Capture {
    /// A new capture, not yet opened on any map.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { _private: () })
    }
}

/// A B-tree map that can be read as it stood when a capture opened. Reads
/// go straight to the live rows (`Deref`); every change goes through a
/// method here, which saves the key's former value while a capture is open.
pub(crate) struct CapturedMap<K, V> {
    /// The rows as they are now.
    rows: BTreeMap<K, V>,
    /// For each open capture: what each key changed since it opened held
    /// before. Empty but for the moment a snapshot is encoded.
    before: Vec<Before<K, V>>,
}

/// The former values of the keys changed since a capture opened.
struct Before<K, V> {
    /// The capture they are kept for; dead once its reader is done.
    capture: Weak<Capture>,
    /// Each changed key's value at the opening; `None` when it was absent.
    rows: BTreeMap<K, Option<V>>,
}

impl<K, V> Default for CapturedMap<K, V> {
    fn default() -> Self {
        Self {
            rows: BTreeMap::new(),
            before: Vec::new(),
        }
    }
}

impl<K, V> From<BTreeMap<K, V>> for CapturedMap<K, V> {
    fn from(rows: BTreeMap<K, V>) -> Self {
        Self {
            rows,
            before: Vec::new(),
        }
    }
}

impl<K, V> Deref for CapturedMap<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &BTreeMap<K, V> {
        &self.rows
    }
}

/// A copy has the rows and no capture: a capture is read from the map it
/// was opened on.
impl<K: Clone, V: Clone> Clone for CapturedMap<K, V> {
    fn clone(&self) -> Self {
        Self::from(self.rows.clone())
    }
}

/// Equal when the rows are: a capture is not part of the table's value.
impl<K: PartialEq, V: PartialEq> PartialEq for CapturedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
    }
}

impl<K: Eq, V: Eq> Eq for CapturedMap<K, V> {}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for CapturedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.rows.fmt(f)
    }
}

/// Written as the live rows, as the map it wraps would be.
impl<K: Serialize, V: Serialize> Serialize for CapturedMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.rows.serialize(s)
    }
}

impl<K: Ord + Clone, V: Clone> CapturedMap<K, V> {
    /// Opens `capture` on this map.
    pub(crate) fn open(&mut self, capture: &Arc<Capture>) {
        prune(&mut self.before);
        self.before.push(Before {
            capture: Arc::downgrade(capture),
            rows: BTreeMap::new(),
        });
    }

    /// The values saved for `capture`, if it is open on this map.
    fn saved_for(&self, capture: &Arc<Capture>) -> Option<&BTreeMap<K, Option<V>>> {
        self.before
            .iter()
            .find(|b| std::ptr::eq(b.capture.as_ptr(), Arc::as_ptr(capture)))
            .map(|b| &b.rows)
    }

    /// Whether `capture` is open on this map: its saved values are here,
    /// and the rows can be read as they stood at its opening.
    pub(crate) fn holds(&self, capture: &Arc<Capture>) -> bool {
        self.saved_for(capture).is_some()
    }

    /// Saves `key`'s value (or its absence) for each open capture it has
    /// not changed under yet.
    fn save(&mut self, key: &K) {
        prune(&mut self.before);
        for saved in &mut self.before {
            if !saved.rows.contains_key(key) {
                saved.rows.insert(key.clone(), self.rows.get(key).cloned());
            }
        }
    }

    /// Saves the value of `key`, if the map holds it, for each open capture
    /// it has not changed under yet.
    fn save_present<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        prune(&mut self.before);
        if self.before.is_empty() {
            return;
        }
        let Some((k, v)) = self.rows.get_key_value(key) else {
            return;
        };
        for saved in &mut self.before {
            if !saved.rows.contains_key(key) {
                saved.rows.insert(k.clone(), Some(v.clone()));
            }
        }
    }

    /// Inserts or replaces the row at `key`; returns the row it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.save(&key);
        self.rows.insert(key, value)
    }

    /// [`Self::insert`] in one search of the tree: returns the row it
    /// replaced and the row now at `key`. A key already there stays, and
    /// `key` is dropped, as [`BTreeMap::insert`] does.
    pub(crate) fn insert_get(&mut self, key: K, value: V) -> (Option<V>, &V) {
        self.save(&key);
        match self.rows.entry(key) {
            btree_map::Entry::Occupied(slot) => {
                let row = slot.into_mut();
                let old = std::mem::replace(row, value);
                (Some(old), row)
            }
            btree_map::Entry::Vacant(slot) => (None, slot.insert(value)),
        }
    }

    /// Removes the row at `key`; returns it.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.save_present(key);
        self.rows.remove(key)
    }

    /// The row at `key`, to change in place.
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.save_present(key);
        self.rows.get_mut(key)
    }

    /// Keeps only the rows `keep` says to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        prune(&mut self.before);
        let before = &mut self.before;
        self.rows.retain(|k, v| {
            let kept = keep(k, v);
            if !kept {
                for saved in before.iter_mut() {
                    saved
                        .rows
                        .entry(k.clone())
                        .or_insert_with(|| Some(v.clone()));
                }
            }
            kept
        });
    }

    /// Calls `emit` on the rows after `after` (from the first when `None`)
    /// as they stood when `capture` opened, in key order, visiting at most
    /// `max` keys. Returns the last key visited while more may follow, and
    /// `None` once the end is reached. The caller has checked
    /// [`Self::holds`]; without its capture the map reads as it is now.
    pub(crate) fn captured_after<E>(
        &self,
        capture: &Arc<Capture>,
        after: Option<&K>,
        max: usize,
        mut emit: impl FnMut(&K, &V) -> Result<(), E>,
    ) -> Result<Option<K>, E> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut live = self
            .rows
            .range::<K, _>((lower, Bound::Unbounded))
            .peekable();
        let mut saved = self
            .saved_for(capture)
            .into_iter()
            .flat_map(|saved| saved.range::<K, _>((lower, Bound::Unbounded)))
            .peekable();
        let mut last = None;
        for _ in 0..max.max(1) {
            let from_saved = match (live.peek(), saved.peek()) {
                (None, None) => return Ok(None),
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((l, _)), Some((s, _))) => match l.cmp(s) {
                    Ordering::Less => false,
                    Ordering::Greater => true,
                    Ordering::Equal => {
                        // Changed since the opening: the saved value stands.
                        live.next();
                        true
                    }
                },
            };
            let (k, v) = if from_saved {
                match saved.next() {
                    Some((k, v)) => (k, v.as_ref()),
                    None => return Ok(None),
                }
            } else {
                match live.next() {
                    Some((k, v)) => (k, Some(v)),
                    None => return Ok(None),
                }
            };
            if let Some(v) = v {
                emit(k, v)?;
            }
            last = Some(k);
        }
        Ok(last.cloned())
    }
}

/// Drops the saved values of the captures whose readers are done.
fn prune<K, V>(before: &mut Vec<Before<K, V>>) {
    before.retain(|b| b.capture.strong_count() > 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of `map` as it stood when `capture` opened, read a row
    /// at a time.
    fn as_captured(map: &CapturedMap<u32, char>, capture: &Arc<Capture>) -> Vec<(u32, char)> {
        let mut rows = Vec::new();
        let mut after = None;
        loop {
            let next = map
                .captured_after(capture, after.as_ref(), 1, |k, v| {
                    rows.push((*k, *v));
                    Ok::<(), ()>(())
                })
                .unwrap();
            match next {
                Some(k) => after = Some(k),
                None => return rows,
            }
        }
    }

    #[test]
    fn every_kind_of_change_reads_back_as_before_it() {
        let start = [(1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (6, 'f')];
        let mut map = CapturedMap::from(BTreeMap::from(start));
        let capture = Capture::new();
        map.open(&capture);
        map.insert(1, 'A');
        map.insert(5, 'e');
        map.remove(&2);
        if let Some(v) = map.get_mut(&3) {
            *v = 'C';
        }
        map.retain(|k, _| *k != 4);
        map.insert(2, 'B');
        map.remove(&9);
        assert_eq!(map.insert_get(6, 'F'), (Some('f'), &'F'));
        assert_eq!(map.insert_get(7, 'g'), (None, &'g'));
        assert_eq!(as_captured(&map, &capture), start);
        let now: Vec<(u32, char)> = map.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            now,
            [(1, 'A'), (2, 'B'), (3, 'C'), (5, 'e'), (6, 'F'), (7, 'g')]
        );
        // Only the changed keys were saved, each once, as first found.
        assert_eq!(map.before[0].rows.len(), 7);
        assert_eq!(map.before[0].rows[&2], Some('b'));
        assert_eq!(map.before[0].rows[&5], None);
        assert_eq!(map.before[0].rows[&7], None);
    }

    #[test]
    fn a_dropped_capture_keeps_nothing_after_the_next_change() {
        let mut map = CapturedMap::from(BTreeMap::from([(1, 'a')]));
        let capture = Capture::new();
        map.open(&capture);
        map.insert(1, 'b');
        assert!(map.holds(&capture));
        drop(capture);
        map.insert(2, 'c');
        assert!(map.before.is_empty());
        // Copies and comparisons see the rows alone.
        let copy = map.clone();
        assert_eq!(copy, map);
        assert!(copy.before.is_empty());
    }

    #[test]
    fn overlapping_captures_each_read_their_own_moment() {
        let mut map = CapturedMap::from(BTreeMap::from([(1, 'a')]));
        let first = Capture::new();
        map.open(&first);
        map.insert(2, 'b');
        let second = Capture::new();
        map.open(&second);
        map.insert(1, 'A');
        map.remove(&2);
        assert_eq!(as_captured(&map, &first), [(1, 'a')]);
        assert_eq!(as_captured(&map, &second), [(1, 'a'), (2, 'b')]);
        assert!(!map.holds(&Capture::new()));
    }
}
