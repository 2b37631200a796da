//! The state store: every table, the last applied index, and the one place
//! a command is dispatched by domain.

use super::command::{Command, Outcome};
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

    /// Applies one command at log index `index`. A refused command changes
    /// nothing but the last applied index.
    pub fn apply(&mut self, index: Index, cmd: &Command) -> (Outcome, Touched) {
        let mut touched = Touched::default();
        self.last_index = self.last_index.max(index);
        let result = match cmd {
            Command::Catalog(op) => rules::apply_catalog(&mut self.tables, index, op, &mut touched),
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
