//! The tables of the state store, one file per table.
//!
//! A table owns its rows, the lookup indexes derived from them, and the
//! index of its last change (what a blocking list query waits on). Its
//! write methods apply the rules that concern that table alone (how a row is
//! built from a registration, when an upsert is no change at all) and say
//! what they changed; the rules that span tables (a node's removal takes its
//! services and checks, a check names an instance on its node, what a change
//! touches for the DNS view) are in [`super::rules`], and the read queries
//! in [`super::query`].
//!
//! Rows of one node are keyed `(lowercased node name, ID)`, so that a node's
//! services and checks are a range of their table (Consul keys them the same
//! way). A domain is a file here (`kv.rs` also keeps tombstones and
//! lock-delays; `sessions.rs`), a field in [`Tables`], and its part of the
//! snapshot; `acl.rs` holds tokens and policies; `prepared_queries.rs`
//! the prepared queries. A node's key is one shared word in every key of
//! its rows (`node_key.rs`).

mod acl;
mod captured;
mod checks;
mod kv;
mod node_key;
mod nodes;
mod prepared_queries;
mod services;
mod sessions;

use std::collections::BTreeMap;

use compact_str::CompactString;

pub(crate) use acl::{Acl, AclRows};
pub(crate) use captured::{Capture, CapturedMap};
pub(crate) use checks::{Checks, check_id};
pub(crate) use kv::{Kv, KvRows};
pub(crate) use node_key::NodeKey;
pub(crate) use nodes::Nodes;
pub(crate) use prepared_queries::PreparedQueries;
pub(crate) use services::{Services, instance_id};
pub(crate) use sessions::Sessions;

/// Every table of the state store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tables {
    /// Nodes by lowercased name.
    pub(crate) nodes: Nodes,
    /// Service instances by (lowercased node name, instance ID).
    pub(crate) services: Services,
    /// Checks by (lowercased node name, check ID).
    pub(crate) checks: Checks,
    /// KV keys, tombstones and lock-delays.
    pub(crate) kv: Kv,
    /// Sessions by ID.
    pub(crate) sessions: Sessions,
    /// ACL tokens and policies.
    pub(crate) acl: Acl,
    /// Prepared queries by ID.
    pub(crate) prepared_queries: PreparedQueries,
}

/// The key of a row that belongs to a node: (its node's key, ID). The
/// node's part is the nodes table's shared key ([`NodeKey`]); the ID is
/// inline up to 24 bytes (`CompactString`), as most are, so that a search
/// comparing the keys of one node's rows reads them in the B-tree's node
/// rather than in allocations of their own.
pub(crate) type RowKey = (NodeKey, CompactString);

/// The key of row `id` on the node keyed `node_key`, to look a row up: its
/// node's part is an allocation of its own, not the nodes table's.
pub(crate) fn row_key(node_key: &str, id: &str) -> RowKey {
    (NodeKey::new(node_key), CompactString::new(id))
}

/// A table of rows that belong to nodes (service instances, checks), each
/// row boxed. std's B-tree keeps its values inside its nodes, eleven slots
/// apiece, and a tree built by inserting holds about a third of its slots
/// empty: a boxed row leaves an empty slot of 56 bytes where an inline
/// check left 288 (`benches/scale`, `--only breakdown`). serde reads and
/// writes a box as what it holds, so the snapshot's bytes are the same.
pub(crate) type Rows<T> = BTreeMap<RowKey, Box<T>>;

/// [`Rows`] as a table keeps them: readable as they stood when a snapshot
/// began while they go on changing.
pub(crate) type TableRows<T> = CapturedMap<RowKey, Box<T>>;

/// The key of a node or a service name: names compare case-insensitively,
/// as Consul's do.
pub(crate) fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The rows of one node, in ID order.
fn on_node<'a, V>(rows: &'a Rows<V>, node_key: &str) -> impl Iterator<Item = &'a V> + use<'a, V> {
    let start = row_key(node_key, "");
    let node = start.0.clone();
    rows.range(start..)
        .take_while(move |((n, _), _)| *n == node)
        .map(|(_, v)| &**v)
}
