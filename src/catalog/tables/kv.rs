//! The KV table: keys, the tombstones of deleted keys, the lock-delays of
//! released locks, and which keys each session holds.
//!
//! The index a listing reports is the highest of its keys' ModifyIndex, the
//! tombstones under its prefix and the highest reaped tombstone, so that it
//! never goes backwards: a delete leaves a tombstone at its index, and
//! reaping one raises the floor to it. A missing key's index is its
//! tombstone's (or the floor), so a blocking read of one key wakes when that
//! key changes, not on every KV write (Consul #9449).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::super::kv_types::{KvEntry, Time, Tombstone};
use super::super::types::Index;
use super::{Capture, CapturedMap};

/// Keys, tombstones and lock-delays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Kv {
    /// Every key.
    rows: CapturedMap<String, KvEntry>,
    /// Deleted keys not yet reaped.
    tombstones: CapturedMap<String, Tombstone>,
    /// Keys whose lock may not be taken before the given time.
    delays: CapturedMap<String, Time>,
    /// Index of the last change to any key or tombstone.
    index: Index,
    /// Highest index of a reaped tombstone.
    reaped: Index,
    /// Derived: the keys each session holds.
    held: BTreeMap<String, BTreeSet<String>>,
    /// Keys written or deleted by the command being applied; drained by
    /// `State::apply` into what the command touched (empty between
    /// commands).
    changed: Vec<String>,
}

/// The KV table as a snapshot keeps it.
pub(crate) struct KvRows {
    /// Every key.
    pub(crate) rows: BTreeMap<String, KvEntry>,
    /// Deleted keys not yet reaped.
    pub(crate) tombstones: BTreeMap<String, Tombstone>,
    /// Lock-delays.
    pub(crate) delays: BTreeMap<String, Time>,
    /// Index of the last change.
    pub(crate) index: Index,
    /// Highest reaped tombstone index.
    pub(crate) reaped: Index,
}

/// The entries of `map` whose keys start with `prefix`, in key order.
fn under<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + use<'a, V> {
    map.range::<str, _>((
        std::ops::Bound::Included(prefix),
        std::ops::Bound::Unbounded,
    ))
    .take_while(move |(k, _)| k.starts_with(prefix))
}

impl Kv {
    /// Opens `capture` on the persisted maps: from now on they can be read
    /// as they are at this moment (`tables::CapturedMap`).
    pub(crate) fn open_capture(&mut self, capture: &Arc<Capture>) {
        self.rows.open(capture);
        self.tombstones.open(capture);
        self.delays.open(capture);
    }

    /// The table a snapshot holds, with its derived index rebuilt.
    pub(crate) fn from_rows(r: KvRows) -> Self {
        let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in r.rows.values() {
            if let Some(s) = &e.session {
                held.entry(s.clone()).or_default().insert(e.key.clone());
            }
        }
        Self {
            rows: r.rows.into(),
            tombstones: r.tombstones.into(),
            delays: r.delays.into(),
            index: r.index,
            reaped: r.reaped,
            held,
            changed: Vec::new(),
        }
    }

    /// Every key, for a snapshot.
    pub(crate) fn rows(&self) -> &CapturedMap<String, KvEntry> {
        &self.rows
    }

    /// The tombstones not yet reaped, for a snapshot.
    pub(crate) fn tombstones(&self) -> &CapturedMap<String, Tombstone> {
        &self.tombstones
    }

    /// The lock-delays, for a snapshot.
    pub(crate) fn delays(&self) -> &CapturedMap<String, Time> {
        &self.delays
    }

    /// Index of the last change to any key.
    pub(crate) fn index(&self) -> Index {
        self.index
    }

    /// Highest index of a reaped tombstone.
    pub(crate) fn reaped(&self) -> Index {
        self.reaped
    }

    /// One key.
    pub(crate) fn get(&self, key: &str) -> Option<&KvEntry> {
        self.rows.get(key)
    }

    /// Every key under `prefix`, in key order.
    pub(crate) fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> {
        under(&self.rows, prefix).map(|(_, e)| e)
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// When the earliest lock-delay ends.
    pub(crate) fn earliest_delay_end(&self) -> Option<Time> {
        self.delays.values().copied().min()
    }

    /// When the oldest tombstone was made.
    pub(crate) fn oldest_tombstone(&self) -> Option<Time> {
        self.tombstones.values().map(|t| t.time).min()
    }

    /// The index a read of one key reports and blocks on: its ModifyIndex,
    /// or its tombstone's, or the reaped floor.
    pub(crate) fn key_index(&self, key: &str) -> Index {
        match (self.rows.get(key), self.tombstones.get(key)) {
            (Some(e), _) => e.modify_index,
            (None, Some(t)) => t.index.max(self.reaped),
            (None, None) => self.reaped,
        }
    }

    /// The index a listing of `prefix` reports and blocks on; the table's
    /// for the empty prefix.
    pub(crate) fn prefix_index(&self, prefix: &str) -> Index {
        if prefix.is_empty() {
            return self.index;
        }
        let keys = under(&self.rows, prefix).map(|(_, e)| e.modify_index);
        let graves = under(&self.tombstones, prefix).map(|(_, t)| t.index);
        keys.chain(graves).max().unwrap_or(0).max(self.reaped)
    }

    /// When the lock of `key` may next be taken, if a lock-delay is on it.
    pub(crate) fn delay(&self, key: &str) -> Option<Time> {
        self.delays.get(key).copied()
    }

    /// The keys `session` holds.
    pub(crate) fn held_by(&self, session: &str) -> Vec<String> {
        self.held
            .get(session)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The keys written or deleted since the last call.
    pub(crate) fn take_changed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.changed)
    }

    /// Writes `entry` (its indexes already set) at `index`.
    pub(crate) fn put(&mut self, index: Index, entry: KvEntry) {
        self.changed.push(entry.key.clone());
        self.tombstones.remove(&entry.key);
        if let Some(s) = &entry.session {
            self.held
                .entry(s.clone())
                .or_default()
                .insert(entry.key.clone());
        }
        let key = entry.key.clone();
        let new_session = entry.session.clone();
        if let Some(old) = self.rows.insert(key.clone(), entry)
            && let Some(s) = old.session
            && Some(&s) != new_session.as_ref()
        {
            self.unhold(&s, &key);
        }
        self.index = self.index.max(index);
    }

    /// Deletes `key` at `index`, leaving a tombstone dated `time`.
    pub(crate) fn remove(&mut self, index: Index, time: Time, key: &str) -> Option<KvEntry> {
        let old = self.rows.remove(key)?;
        self.changed.push(key.to_string());
        if let Some(s) = &old.session {
            self.unhold(s, key);
        }
        self.tombstones
            .insert(key.to_string(), Tombstone { index, time });
        self.index = self.index.max(index);
        Some(old)
    }

    /// Puts a lock-delay on `key` until `until`.
    pub(crate) fn set_delay(&mut self, key: &str, until: Time) {
        match self.delays.get_mut(key) {
            Some(at) => *at = (*at).max(until),
            None => {
                self.delays.insert(key.to_string(), until);
            }
        }
    }

    /// Reaps the tombstones of deletes before `deleted_before` and the
    /// lock-delays over by `now`; true when anything was reaped.
    pub(crate) fn reap(&mut self, deleted_before: Time, now: Time) -> bool {
        let before = self.tombstones.len() + self.delays.len();
        let mut floor = self.reaped;
        self.tombstones.retain(|_, t| {
            let keep = t.time >= deleted_before;
            if !keep {
                floor = floor.max(t.index);
            }
            keep
        });
        self.reaped = floor;
        self.delays.retain(|_, until| *until > now);
        before != self.tombstones.len() + self.delays.len()
    }

    fn unhold(&mut self, session: &str, key: &str) {
        if let Some(keys) = self.held.get_mut(session) {
            keys.remove(key);
            if keys.is_empty() {
                self.held.remove(session);
            }
        }
    }
}
