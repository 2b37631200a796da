//! The nodes table: one row per machine, keyed by lowercased name. Its
//! keys are the ones the rows of each node share ([`NodeKey`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Capture, CapturedMap, NodeKey, Rows};
use crate::catalog::types::{Index, Node, Registration};

/// Nodes, and the index of the last change to any of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Nodes {
    /// Nodes by lowercased name.
    rows: CapturedMap<NodeKey, Node>,
    /// Index of the last change to any node.
    index: Index,
}

/// What [`Nodes::upsert`] did.
#[derive(Debug)]
pub(crate) struct NodeUpsert<'a> {
    /// The node's key as the table holds it, for its rows in other tables
    /// to share.
    pub(crate) key: NodeKey,
    /// The row, when it changed.
    pub(crate) changed: Option<&'a Node>,
    /// Whether the node is new: no row of another table names it yet.
    pub(crate) created: bool,
}

impl Nodes {
    /// Opens `capture` on the persisted maps: from now on they can be read
    /// as they are at this moment (`tables::CapturedMap`).
    pub(crate) fn open_capture(&mut self, capture: &Arc<Capture>) {
        self.rows.open(capture);
    }

    /// The table as a snapshot held it.
    pub(crate) fn from_rows(rows: BTreeMap<NodeKey, Node>, index: Index) -> Self {
        Self {
            rows: rows.into(),
            index,
        }
    }

    /// The rows, for a snapshot.
    pub(crate) fn rows(&self) -> &CapturedMap<NodeKey, Node> {
        &self.rows
    }

    /// Index of the last change to any node.
    pub(crate) fn index(&self) -> Index {
        self.index
    }

    /// One node by its key.
    pub(crate) fn get(&self, node_key: &str) -> Option<&Node> {
        self.rows.get(node_key)
    }

    /// The key of the node keyed `node_key` as this table holds it, for
    /// the node's rows in other tables to share.
    pub(crate) fn key_of(&self, node_key: &str) -> Option<&NodeKey> {
        self.rows.get_key_value(node_key).map(|(k, _)| k)
    }

    /// `rows` with the node's part of each key this table's, where the
    /// node is here (as it is for every row the log wrote): a snapshot
    /// decodes a key per row. Rebuilt in bulk from rows in key order, so
    /// the tree's nodes are full, as a snapshot's are read (`bulk_map`).
    pub(crate) fn share_keys<T>(&self, rows: Rows<T>) -> Rows<T> {
        // A node's rows come together: one lookup per node, not per row.
        let mut last: Option<NodeKey> = None;
        rows.into_iter()
            .map(|((node, id), row)| {
                let shared = match last.take() {
                    Some(last) if *last == *node => last,
                    _ => self.key_of(&node).cloned().unwrap_or(node),
                };
                last = Some(shared.clone());
                ((shared, id), row)
            })
            .collect()
    }

    /// All nodes, ordered by key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Node> {
        self.rows.values()
    }

    /// Creates or updates the node `r` names, keyed `node_key`; says what
    /// changed ([`NodeUpsert`]). With `skip_node_update` an existing node
    /// is left alone, and an empty address keeps the one it has; the
    /// caller has checked that an address is given when one is needed.
    /// Two searches of the tree at most: with 100,000 nodes each is a few
    /// dozen string comparisons, most of them cache misses
    /// (`cluster_vs_etcd`, 64 clients registering new nodes: the four this
    /// took, and the caller's fifth for the key, were 6 % of the servers'
    /// CPU).
    pub(crate) fn upsert(
        &mut self,
        index: Index,
        node_key: &str,
        r: &Registration,
    ) -> NodeUpsert<'_> {
        let unchanged = |key: &NodeKey| NodeUpsert {
            key: key.clone(),
            changed: None,
            created: false,
        };
        let (key, address, create_index) = match self.rows.get_key_value(node_key) {
            Some((key, _)) if r.skip_node_update => return unchanged(key),
            Some((key, old)) => {
                let address = if r.address.is_empty() {
                    &old.address
                } else {
                    &r.address
                };
                // Compared in place: most registrations of a node's
                // instances leave the node as it is.
                if old.name == r.node
                    && old.id == r.id
                    && old.address == *address
                    && old.datacenter == r.datacenter
                    && old.tagged_addresses == r.tagged_addresses
                    && old.meta == r.node_meta
                {
                    return unchanged(key);
                }
                (key.clone(), address.clone(), old.create_index)
            }
            None => (NodeKey::new(node_key), r.address.clone(), index),
        };
        let next = Node {
            name: r.node.clone(),
            id: r.id.clone(),
            address,
            datacenter: r.datacenter.clone(),
            tagged_addresses: r.tagged_addresses.clone(),
            meta: r.node_meta.clone(),
            create_index,
            modify_index: index,
        };
        self.index = index;
        // An existing node keeps its key, which its rows share: `key` is
        // that key.
        let (old, row) = self.rows.insert_get(key.clone(), next);
        NodeUpsert {
            key,
            changed: Some(row),
            created: old.is_none(),
        }
    }

    /// Removes a node's row.
    pub(crate) fn remove(&mut self, index: Index, node_key: &str) -> Option<Node> {
        let old = self.rows.remove(node_key)?;
        self.index = index;
        Some(old)
    }
}
