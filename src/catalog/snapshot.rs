//! The state as a snapshot holds it: what Raft stores and sends to a peer
//! that is behind, and what a server sends a client agent that is behind.
//!
//! [`StateSnapshot`] lists the persisted fields of every table in one plain
//! struct; lookup indexes derived from them are left out and rebuilt by
//! [`State::from_snapshot`]. postcard encodes it by field position, so its
//! fields and their order are the snapshot format: a new table is a new
//! field at the end and a new format version in `store` (a golden-bytes test
//! in `tests/state.rs` fails on any change). Format 3 added KV and sessions
//! after the catalog's fields; [`StateSnapshotV2`] reads format 2's body.
//! Format 4 added the ACL table after those; [`StateSnapshotV3`] reads
//! format 3's. Format 5 added the prepared queries after the ACL fields;
//! [`StateSnapshotV4`] reads format 4's.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::acl_types::{AclPolicy, AclToken};
use super::bulk_map;
use super::kv_types::{KvEntry, Session, Time, Tombstone};
use super::prepared_query::PreparedQuery;
use super::state::State;
use super::tables::{
    Acl, AclRows, CapturedMap, Checks, Kv, KvRows, NodeKey, Nodes, PreparedQueries, Rows, Services,
    Sessions, TableRows, Tables,
};
use super::types::{Check, Index, Node, Service};

/// Every table's rows and indexes, and the last applied index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// Nodes by lowercased name.
    #[serde(deserialize_with = "bulk_map::deserialize")]
    nodes: BTreeMap<NodeKey, Node>,
    /// Service instances by (lowercased node name, instance ID).
    #[serde(deserialize_with = "bulk_map::deserialize")]
    services: Rows<Service>,
    /// Checks by (lowercased node name, check ID).
    #[serde(deserialize_with = "bulk_map::deserialize")]
    checks: Rows<Check>,
    /// Index of the last change to any node.
    nodes_index: Index,
    /// Index of the last change to any service instance.
    services_index: Index,
    /// Index of the last change to any check.
    checks_index: Index,
    /// Index of the last change to each service name's answers.
    #[serde(deserialize_with = "bulk_map::deserialize")]
    service_indexes: BTreeMap<CompactString, Index>,
    /// Index of the last applied entry.
    last_index: Index,
    /// KV keys (since format 3).
    #[serde(deserialize_with = "bulk_map::deserialize")]
    kv: BTreeMap<String, KvEntry>,
    /// KV tombstones.
    #[serde(deserialize_with = "bulk_map::deserialize")]
    kv_tombstones: BTreeMap<String, Tombstone>,
    /// KV lock-delays: when each key's lock may next be taken.
    #[serde(deserialize_with = "bulk_map::deserialize")]
    kv_delays: BTreeMap<String, Time>,
    /// Index of the last change to any key.
    kv_index: Index,
    /// Highest index of a reaped tombstone.
    kv_reaped: Index,
    /// Sessions by ID.
    #[serde(deserialize_with = "bulk_map::deserialize")]
    sessions: BTreeMap<String, Session>,
    /// Index of the last session created or invalidated.
    sessions_index: Index,
    /// ACL tokens by AccessorID (since format 4).
    #[serde(deserialize_with = "bulk_map::deserialize")]
    acl_tokens: BTreeMap<String, AclToken>,
    /// ACL policies by ID.
    #[serde(deserialize_with = "bulk_map::deserialize")]
    acl_policies: BTreeMap<String, AclPolicy>,
    /// Index of the last change to a token or a policy.
    acl_index: Index,
    /// Index bootstrapping ended at; 0 while it is allowed.
    acl_bootstrapped: Index,
    /// Prepared queries by ID (since format 5).
    #[serde(deserialize_with = "bulk_map::deserialize")]
    prepared_queries: BTreeMap<String, PreparedQuery>,
    /// Index of the last change to a prepared query.
    prepared_queries_index: Index,
}

/// [`StateSnapshot`] borrowed from a [`State`]: the same fields in the same
/// order, so it encodes to the same bytes (a test holds them equal).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StateSnapshotRef<'a> {
    pub(super) nodes: &'a CapturedMap<NodeKey, Node>,
    pub(super) services: &'a TableRows<Service>,
    pub(super) checks: &'a TableRows<Check>,
    pub(super) nodes_index: Index,
    pub(super) services_index: Index,
    pub(super) checks_index: Index,
    pub(super) service_indexes: &'a CapturedMap<CompactString, Index>,
    pub(super) last_index: Index,
    pub(super) kv: &'a CapturedMap<String, KvEntry>,
    pub(super) kv_tombstones: &'a CapturedMap<String, Tombstone>,
    pub(super) kv_delays: &'a CapturedMap<String, Time>,
    pub(super) kv_index: Index,
    pub(super) kv_reaped: Index,
    pub(super) sessions: &'a CapturedMap<String, Session>,
    pub(super) sessions_index: Index,
    pub(super) acl_tokens: &'a CapturedMap<String, AclToken>,
    pub(super) acl_policies: &'a CapturedMap<String, AclPolicy>,
    pub(super) acl_index: Index,
    pub(super) acl_bootstrapped: Index,
    pub(super) prepared_queries: &'a CapturedMap<String, PreparedQuery>,
    pub(super) prepared_queries_index: Index,
}

impl StateSnapshotRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> StateSnapshot {
        StateSnapshot {
            nodes: (**self.nodes).clone(),
            services: (**self.services).clone(),
            checks: (**self.checks).clone(),
            nodes_index: self.nodes_index,
            services_index: self.services_index,
            checks_index: self.checks_index,
            service_indexes: (**self.service_indexes).clone(),
            last_index: self.last_index,
            kv: (**self.kv).clone(),
            kv_tombstones: (**self.kv_tombstones).clone(),
            kv_delays: (**self.kv_delays).clone(),
            kv_index: self.kv_index,
            kv_reaped: self.kv_reaped,
            sessions: (**self.sessions).clone(),
            sessions_index: self.sessions_index,
            acl_tokens: (**self.acl_tokens).clone(),
            acl_policies: (**self.acl_policies).clone(),
            acl_index: self.acl_index,
            acl_bootstrapped: self.acl_bootstrapped,
            prepared_queries: (**self.prepared_queries).clone(),
            prepared_queries_index: self.prepared_queries_index,
        }
    }
}

/// The snapshot as format version 4 wrote it: everything before the
/// prepared queries. Its fields are the first fields of [`StateSnapshot`],
/// in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshotV4 {
    nodes: BTreeMap<NodeKey, Node>,
    services: Rows<Service>,
    checks: Rows<Check>,
    nodes_index: Index,
    services_index: Index,
    checks_index: Index,
    service_indexes: BTreeMap<CompactString, Index>,
    last_index: Index,
    kv: BTreeMap<String, KvEntry>,
    kv_tombstones: BTreeMap<String, Tombstone>,
    kv_delays: BTreeMap<String, Time>,
    kv_index: Index,
    kv_reaped: Index,
    sessions: BTreeMap<String, Session>,
    sessions_index: Index,
    acl_tokens: BTreeMap<String, AclToken>,
    acl_policies: BTreeMap<String, AclPolicy>,
    acl_index: Index,
    acl_bootstrapped: Index,
}

impl From<StateSnapshotV4> for StateSnapshot {
    fn from(v4: StateSnapshotV4) -> Self {
        Self {
            nodes: v4.nodes,
            services: v4.services,
            checks: v4.checks,
            nodes_index: v4.nodes_index,
            services_index: v4.services_index,
            checks_index: v4.checks_index,
            service_indexes: v4.service_indexes,
            last_index: v4.last_index,
            kv: v4.kv,
            kv_tombstones: v4.kv_tombstones,
            kv_delays: v4.kv_delays,
            kv_index: v4.kv_index,
            kv_reaped: v4.kv_reaped,
            sessions: v4.sessions,
            sessions_index: v4.sessions_index,
            acl_tokens: v4.acl_tokens,
            acl_policies: v4.acl_policies,
            acl_index: v4.acl_index,
            acl_bootstrapped: v4.acl_bootstrapped,
            ..Self::default()
        }
    }
}

/// The snapshot as format version 3 wrote it: everything before the ACL
/// table. Its fields are the first fields of [`StateSnapshot`], in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshotV3 {
    nodes: BTreeMap<NodeKey, Node>,
    services: Rows<Service>,
    checks: Rows<Check>,
    nodes_index: Index,
    services_index: Index,
    checks_index: Index,
    service_indexes: BTreeMap<CompactString, Index>,
    last_index: Index,
    kv: BTreeMap<String, KvEntry>,
    kv_tombstones: BTreeMap<String, Tombstone>,
    kv_delays: BTreeMap<String, Time>,
    kv_index: Index,
    kv_reaped: Index,
    sessions: BTreeMap<String, Session>,
    sessions_index: Index,
}

impl From<StateSnapshotV3> for StateSnapshot {
    fn from(v3: StateSnapshotV3) -> Self {
        Self {
            nodes: v3.nodes,
            services: v3.services,
            checks: v3.checks,
            nodes_index: v3.nodes_index,
            services_index: v3.services_index,
            checks_index: v3.checks_index,
            service_indexes: v3.service_indexes,
            last_index: v3.last_index,
            kv: v3.kv,
            kv_tombstones: v3.kv_tombstones,
            kv_delays: v3.kv_delays,
            kv_index: v3.kv_index,
            kv_reaped: v3.kv_reaped,
            sessions: v3.sessions,
            sessions_index: v3.sessions_index,
            ..Self::default()
        }
    }
}

/// The snapshot as format version 2 wrote it: the catalog's tables alone.
/// Its fields are the first fields of [`StateSnapshot`], in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshotV2 {
    nodes: BTreeMap<NodeKey, Node>,
    services: Rows<Service>,
    checks: Rows<Check>,
    nodes_index: Index,
    services_index: Index,
    checks_index: Index,
    service_indexes: BTreeMap<CompactString, Index>,
    last_index: Index,
}

impl From<StateSnapshotV2> for StateSnapshot {
    fn from(v2: StateSnapshotV2) -> Self {
        Self {
            nodes: v2.nodes,
            services: v2.services,
            checks: v2.checks,
            nodes_index: v2.nodes_index,
            services_index: v2.services_index,
            checks_index: v2.checks_index,
            service_indexes: v2.service_indexes,
            last_index: v2.last_index,
            ..Self::default()
        }
    }
}

impl StateSnapshot {
    /// Index of the last log entry the snapshot includes.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// The snapshot without token secrets, as a client agent receives it.
    pub fn redacted(&self) -> Self {
        let mut out = self.clone();
        out.redact();
        out
    }

    /// Blanks every token's secret in place.
    fn redact(&mut self) {
        for token in self.acl_tokens.values_mut() {
            token.secret_id.clear();
        }
        for query in self.prepared_queries.values_mut() {
            query.token.clear();
        }
    }
}

impl State {
    /// A copy of the persisted part of the state.
    pub fn to_snapshot(&self) -> StateSnapshot {
        self.snapshot_ref().to_owned()
    }

    /// The persisted part of the state, borrowed: encoded, it is the same
    /// bytes as [`Self::to_snapshot`]'s, without the copy (at 100,000
    /// instances the copy took several times as long as the encoding, and
    /// applying waits for either).
    pub fn snapshot_ref(&self) -> StateSnapshotRef<'_> {
        // Destructured so that a new table fails to compile here until the
        // snapshot holds it.
        let Tables {
            nodes,
            services,
            checks,
            kv,
            sessions,
            acl,
            prepared_queries,
        } = &self.tables;
        let (acl_tokens, acl_policies) = acl.persisted();
        StateSnapshotRef {
            nodes: nodes.rows(),
            services: services.rows(),
            checks: checks.rows(),
            nodes_index: nodes.index(),
            services_index: services.index(),
            checks_index: checks.index(),
            service_indexes: services.name_indexes(),
            last_index: self.last_index,
            kv: kv.rows(),
            kv_tombstones: kv.tombstones(),
            kv_delays: kv.delays(),
            kv_index: kv.index(),
            kv_reaped: kv.reaped(),
            sessions: sessions.rows(),
            sessions_index: sessions.index(),
            acl_tokens,
            acl_policies,
            acl_index: acl.index(),
            acl_bootstrapped: acl.bootstrapped(),
            prepared_queries: prepared_queries.rows(),
            prepared_queries_index: prepared_queries.index(),
        }
    }

    /// The state a snapshot holds, with its derived indexes rebuilt.
    pub fn from_snapshot(s: StateSnapshot) -> Self {
        let nodes = Nodes::from_rows(s.nodes, s.nodes_index);
        let services = Services::from_rows(s.services, s.services_index, s.service_indexes, &nodes);
        let checks = Checks::from_rows(s.checks, s.checks_index, &services, &nodes);
        Self {
            tables: Tables {
                nodes,
                services,
                checks,
                kv: Kv::from_rows(KvRows {
                    rows: s.kv,
                    tombstones: s.kv_tombstones,
                    delays: s.kv_delays,
                    index: s.kv_index,
                    reaped: s.kv_reaped,
                }),
                sessions: Sessions::from_rows(s.sessions, s.sessions_index),
                acl: Acl::from_rows(AclRows {
                    tokens: s.acl_tokens,
                    policies: s.acl_policies,
                    index: s.acl_index,
                    bootstrapped: s.acl_bootstrapped,
                }),
                prepared_queries: PreparedQueries::from_rows(
                    s.prepared_queries,
                    s.prepared_queries_index,
                ),
            },
            last_index: s.last_index,
        }
    }
}
