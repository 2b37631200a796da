//! The state store: every table, the last applied index, and the one place
//! a command is dispatched by domain.

use super::command::{Command, Outcome};
use super::kv_types::Time;
use super::rules::{self, Touched};
use super::tables::Tables;
use super::types::Index;

/// The replicated state: the tables and the index of the last applied log
/// entry. It changes only through [`State::apply`], which is deterministic.
/// Reads are in `query.rs`; what a snapshot holds is [`super::StateSnapshot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Every table.
    pub(super) tables: Tables,
    /// Index of the last applied entry, including refused commands and no-ops.
    pub(super) last_index: Index,
}

impl State {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one command at log index `index` of an entry the leader
    /// proposed at `time`. A refused command changes nothing but the last
    /// applied index.
    pub fn apply(&mut self, index: Index, time: Time, cmd: &Command) -> (Outcome, Touched) {
        let mut touched = Touched::default();
        self.last_index = self.last_index.max(index);
        let tables = &mut self.tables;
        let result = match cmd {
            Command::Catalog(op) => rules::apply_catalog(tables, index, time, op, &mut touched),
            Command::Kv(op) => match rules::apply_kv(tables, index, time, op) {
                Ok(results) => return (Outcome::Txn { index, results }, touched),
                Err(e) => Err(e),
            },
            Command::Session(op) => rules::apply_session(tables, index, time, op),
            Command::Txn(ops) => {
                let outcome = match rules::apply_txn(tables, index, time, ops) {
                    Ok(results) => Outcome::Txn { index, results },
                    Err(errors) => Outcome::TxnRefused(errors),
                };
                return (outcome, touched);
            }
            Command::ReapTombstones { deleted_before } => {
                tables.kv.reap(*deleted_before, time);
                Ok(())
            }
        };
        // A blocking query on a service name wakes on whatever changed its
        // answers, whichever domain changed them.
        for name in &touched.services {
            self.tables.services.mark_changed(name, index);
        }
        let outcome = match result {
            Ok(()) => Outcome::Applied(index),
            Err(e) => Outcome::Refused(e),
        };
        (outcome, touched)
    }

    /// Records that a log entry without a command (blank, membership) was applied.
    pub fn apply_noop(&mut self, index: Index) {
        self.last_index = self.last_index.max(index);
    }

    /// Index of the last applied log entry.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// Panics unless the derived indexes agree with the tables they index.
    #[cfg(test)]
    pub(super) fn assert_derived_indexes(&self) {
        self.tables.services.assert_derived_indexes();
    }
}
