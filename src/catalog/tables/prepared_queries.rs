//! The prepared queries table: queries by ID, found by name and templates
//! by the longest prefix (both case-insensitive, as Consul's indexes), and
//! the queries each session keeps alive.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::super::prepared_query::PreparedQuery;
use super::super::types::Index;
use super::{Capture, CapturedMap, key};

/// Prepared queries by ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PreparedQueries {
    /// Every query.
    rows: CapturedMap<String, PreparedQuery>,
    /// Index of the last change to any query.
    index: Index,
    /// Derived: the ID of each named query by lowercased name.
    by_name: BTreeMap<String, String>,
    /// Derived: the ID of each template by lowercased name (its prefix;
    /// the catch-all's is empty).
    templates: BTreeMap<String, String>,
    /// Derived: the queries bound to each session.
    by_session: BTreeMap<String, BTreeSet<String>>,
}

impl PreparedQueries {
    /// Opens `capture` on the persisted maps: from now on they can be read
    /// as they are at this moment (`tables::CapturedMap`).
    pub(crate) fn open_capture(&mut self, capture: &Arc<Capture>) {
        self.rows.open(capture);
    }

    /// The table a snapshot holds, with its derived indexes rebuilt.
    pub(crate) fn from_rows(rows: BTreeMap<String, PreparedQuery>, index: Index) -> Self {
        let mut t = Self {
            index,
            ..Self::default()
        };
        for q in rows.into_values() {
            t.link(&q);
            t.rows.insert(q.id.clone(), q);
        }
        t
    }

    /// Every query by ID.
    pub(crate) fn rows(&self) -> &CapturedMap<String, PreparedQuery> {
        &self.rows
    }

    /// Index of the last change to any query.
    pub(crate) fn index(&self) -> Index {
        self.index
    }

    /// One query by ID.
    pub(crate) fn get(&self, id: &str) -> Option<&PreparedQuery> {
        self.rows.get(id)
    }

    /// The query named exactly `name` (any case), template or not.
    pub(crate) fn by_name(&self, name: &str) -> Option<&PreparedQuery> {
        self.by_name
            .get(&key(name))
            .and_then(|id| self.rows.get(id))
    }

    /// The template with the longest name that prefixes `name` (any case);
    /// the catch-all (empty name) prefixes everything.
    pub(crate) fn template_for(&self, name: &str) -> Option<&PreparedQuery> {
        let name = key(name);
        // Templates are few; the candidates are the prefixes of the name.
        (0..=name.len())
            .rev()
            .filter(|&n| name.is_char_boundary(n))
            .find_map(|n| self.templates.get(&name[..n]))
            .and_then(|id| self.rows.get(id))
    }

    /// The queries bound to a session.
    pub(crate) fn on_session(&self, session: &str) -> Vec<String> {
        self.by_session
            .get(session)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Inserts or replaces a query, at `index`.
    pub(crate) fn put(&mut self, query: PreparedQuery, index: Index) {
        if let Some(old) = self.rows.remove(&query.id) {
            self.unlink(&old);
        }
        self.link(&query);
        self.rows.insert(query.id.clone(), query);
        self.index = index;
    }

    /// Removes a query, at `index`; whether it was there.
    pub(crate) fn remove(&mut self, id: &str, index: Index) -> bool {
        let Some(old) = self.rows.remove(id) else {
            return false;
        };
        self.unlink(&old);
        self.index = index;
        true
    }

    fn link(&mut self, q: &PreparedQuery) {
        if !q.name.is_empty() {
            self.by_name.insert(key(&q.name), q.id.clone());
        }
        if q.is_template() {
            self.templates.insert(key(&q.name), q.id.clone());
        }
        if !q.session.is_empty() {
            self.by_session
                .entry(q.session.clone())
                .or_default()
                .insert(q.id.clone());
        }
    }

    fn unlink(&mut self, q: &PreparedQuery) {
        if !q.name.is_empty() {
            self.by_name.remove(&key(&q.name));
        }
        if q.is_template() {
            self.templates.remove(&key(&q.name));
        }
        if let Some(ids) = self.by_session.get_mut(&q.session) {
            ids.remove(&q.id);
            if ids.is_empty() {
                self.by_session.remove(&q.session);
            }
        }
    }
}
