//! Reads of sessions, and the index their answers block on (the sessions
//! table's, as Consul's).

use super::super::kv_types::{Session, Time};
use super::super::state::State;
use super::super::tables::key;
use super::super::types::Index;

impl State {
    /// One session.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.tables.sessions.get(id)
    }

    /// Every session, by ID.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.tables.sessions.iter()
    }

    /// The sessions of one node, by ID.
    pub fn sessions_on_node(&self, node: &str) -> Vec<&Session> {
        self.tables
            .sessions
            .on_node(&key(node))
            .iter()
            .filter_map(|id| self.tables.sessions.get(id))
            .collect()
    }

    /// Index of the last session created or invalidated.
    pub fn sessions_index(&self) -> Index {
        self.tables.sessions.index()
    }

    /// The sessions whose deadline is at or before `now`, for the leader to
    /// expire.
    pub fn sessions_due(&self, now: Time) -> Vec<String> {
        self.tables.sessions.due(now)
    }

    /// The earliest session deadline, for the leader's timer.
    pub fn next_session_deadline(&self) -> Option<Time> {
        self.tables.sessions.iter().filter_map(|s| s.expires).min()
    }
}
