//! The state as a snapshot holds it: what Raft stores and sends to a peer
//! that is behind, and what a server sends a client agent that is behind.
//!
//! [`StateSnapshot`] lists the persisted fields of every table in one plain
//! struct; lookup indexes derived from them are left out and rebuilt by
//! [`State::from_snapshot`]. postcard encodes it by field position, so its
//! fields and their order are the snapshot format: a new table is a new
//! field at the end and a new format version in `store` (a golden-bytes test
//! in `tests/state.rs` fails on any change). Its bytes are those the state
//! serialized to before it had this form, so old data dirs read unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::State;
use super::tables::{Checks, Nodes, RowKey, Services, Tables};
use super::types::{Check, Index, Node, Service};

/// Every table's rows and indexes, and the last applied index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// Nodes by lowercased name.
    nodes: BTreeMap<String, Node>,
    /// Service instances by (lowercased node name, instance ID).
    services: BTreeMap<RowKey, Service>,
    /// Checks by (lowercased node name, check ID).
    checks: BTreeMap<RowKey, Check>,
    /// Index of the last change to any node.
    nodes_index: Index,
    /// Index of the last change to any service instance.
    services_index: Index,
    /// Index of the last change to any check.
    checks_index: Index,
    /// Index of the last change to each service name's answers.
    service_indexes: BTreeMap<String, Index>,
    /// Index of the last applied entry.
    last_index: Index,
}

impl StateSnapshot {
    /// Index of the last log entry the snapshot includes.
    pub fn last_index(&self) -> Index {
        self.last_index
    }
}

impl State {
    /// A copy of the persisted part of the state.
    pub fn to_snapshot(&self) -> StateSnapshot {
        // Destructured so that a new table fails to compile here until the
        // snapshot holds it.
        let Tables {
            nodes,
            services,
            checks,
        } = &self.tables;
        StateSnapshot {
            nodes: nodes.rows().clone(),
            services: services.rows().clone(),
            checks: checks.rows().clone(),
            nodes_index: nodes.index(),
            services_index: services.index(),
            checks_index: checks.index(),
            service_indexes: services.name_indexes().clone(),
            last_index: self.last_index,
        }
    }

    /// The state a snapshot holds, with its derived indexes rebuilt.
    pub fn from_snapshot(s: StateSnapshot) -> Self {
        Self {
            tables: Tables {
                nodes: Nodes::from_rows(s.nodes, s.nodes_index),
                services: Services::from_rows(s.services, s.services_index, s.service_indexes),
                checks: Checks::from_rows(s.checks, s.checks_index),
            },
            last_index: s.last_index,
        }
    }
}
