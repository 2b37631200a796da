//! The sessions table, and which sessions each node and each check keeps
//! alive (what a deregistration or a critical check invalidates).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::super::kv_types::{Session, Time};
use super::super::types::Index;
use super::{Capture, CapturedMap, RowKey, key, row_key};

/// Sessions by ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sessions {
    /// Every session.
    rows: CapturedMap<String, Session>,
    /// Index of the last session created or invalidated.
    index: Index,
    /// Derived: sessions by lowercased node name.
    by_node: BTreeMap<String, BTreeSet<String>>,
    /// Derived: sessions by (lowercased node name, check ID).
    by_check: BTreeMap<RowKey, BTreeSet<String>>,
    /// Derived: sessions with a TTL by (deadline, ID), so the leader finds
    /// the due ones and the next deadline without a scan.
    by_deadline: BTreeSet<(Time, String)>,
}

impl Sessions {
    /// Opens `capture` on the persisted maps: from now on they can be read
    /// as they are at this moment (`tables::CapturedMap`).
    pub(crate) fn open_capture(&mut self, capture: &Arc<Capture>) {
        self.rows.open(capture);
    }

    /// The table a snapshot holds, with its derived indexes rebuilt.
    pub(crate) fn from_rows(rows: BTreeMap<String, Session>, index: Index) -> Self {
        let mut t = Self {
            rows: CapturedMap::default(),
            index,
            by_node: BTreeMap::new(),
            by_check: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
        };
        for s in rows.into_values() {
            t.link(&s);
            t.rows.insert(s.id.clone(), s);
        }
        t
    }

    /// Every session by ID.
    pub(crate) fn rows(&self) -> &CapturedMap<String, Session> {
        &self.rows
    }

    /// Index of the last session created or invalidated.
    pub(crate) fn index(&self) -> Index {
        self.index
    }

    /// One session.
    pub(crate) fn get(&self, id: &str) -> Option<&Session> {
        self.rows.get(id)
    }

    /// Every session, by ID.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Session> {
        self.rows.values()
    }

    /// The sessions of a node.
    pub(crate) fn on_node(&self, node_key: &str) -> Vec<String> {
        self.by_node
            .get(node_key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The sessions that depend on a check.
    pub(crate) fn on_check(&self, node_key: &str, check_id: &str) -> Vec<String> {
        self.by_check
            .get(&row_key(node_key, check_id))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The sessions with a TTL whose deadline is at or before `now`.
    pub(crate) fn due(&self, now: Time) -> Vec<String> {
        self.by_deadline
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The earliest deadline of a session with a TTL.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Adds a session at `index`.
    pub(crate) fn insert(&mut self, index: Index, s: Session) {
        self.link(&s);
        self.rows.insert(s.id.clone(), s);
        self.index = self.index.max(index);
    }

    /// Moves a session's deadline; the session's indexes stay, as a renewal
    /// in Consul changes nothing a blocking query sees.
    pub(crate) fn set_expiry(&mut self, id: &str, expires: Option<Time>) {
        if let Some(s) = self.rows.get_mut(id) {
            if let Some(at) = s.expires {
                self.by_deadline.remove(&(at, s.id.clone()));
            }
            s.expires = expires;
            if let Some(at) = expires {
                self.by_deadline.insert((at, s.id.clone()));
            }
        }
    }

    /// Removes a session at `index`.
    pub(crate) fn remove(&mut self, index: Index, id: &str) -> Option<Session> {
        let s = self.rows.remove(id)?;
        if let Some(at) = s.expires {
            self.by_deadline.remove(&(at, s.id.clone()));
        }
        let node_key = key(&s.node);
        if let Some(ids) = self.by_node.get_mut(&node_key) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_node.remove(&node_key);
            }
        }
        for check in s.check_ids() {
            let k = row_key(&node_key, check);
            if let Some(ids) = self.by_check.get_mut(&k) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_check.remove(&k);
                }
            }
        }
        self.index = self.index.max(index);
        Some(s)
    }

    fn link(&mut self, s: &Session) {
        if let Some(at) = s.expires {
            self.by_deadline.insert((at, s.id.clone()));
        }
        let node_key = key(&s.node);
        self.by_node
            .entry(node_key.clone())
            .or_default()
            .insert(s.id.clone());
        for check in s.check_ids() {
            self.by_check
                .entry(row_key(&node_key, check))
                .or_default()
                .insert(s.id.clone());
        }
    }
}
