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
        let refused = |e| Outcome::Refused(e);
        let outcome = match cmd {
            Command::Catalog(op) => rules::apply_catalog(tables, index, time, op, &mut touched)
                .map_or_else(refused, |()| Outcome::Applied(index)),
            Command::Kv(op) => rules::apply_kv(tables, index, time, op)
                .map_or_else(refused, |results| Outcome::Txn { index, results }),
            Command::Session(op) => rules::apply_session(tables, index, time, op)
                .map_or_else(refused, |()| Outcome::Applied(index)),
            Command::Txn(ops) => match rules::apply_txn(tables, index, time, ops) {
                Ok(results) => Outcome::Txn { index, results },
                Err(errors) => Outcome::TxnRefused(errors),
            },
            Command::Acl(op) => match rules::apply_acl(tables, index, time, op) {
                // A refused write changed nothing: the resolved tokens (and
                // the DNS answers cached under them) stay.
                Ok(()) => {
                    touched.acl = true;
                    Outcome::Applied(index)
                }
                Err(e) => refused(e),
            },
            Command::PreparedQuery(op) => rules::apply_prepared_query(tables, index, op)
                .map_or_else(|e| refused(e.into()), |()| Outcome::Applied(index)),
            Command::ReapTombstones { deleted_before } => {
                tables.kv.reap(*deleted_before, time);
                Outcome::Applied(index)
            }
        };
        // Whichever domain wrote them (a KV op, a transaction, a session's
        // invalidation releasing its locks), the keys written wake the
        // blocking reads of those keys.
        touched.kv_keys.extend(self.tables.kv.take_changed());
        // A blocking query on a service name wakes on whatever changed its
        // answers, whichever domain changed them.
        for name in &touched.services {
            self.tables.services.mark_changed(name, index);
        }
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
