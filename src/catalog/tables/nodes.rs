//! The nodes table: one row per machine, keyed by lowercased name.

use std::collections::BTreeMap;
use std::sync::Arc;

use compact_str::CompactString;

use super::{Capture, CapturedMap};
use crate::catalog::types::{Index, Node, Registration};

/// Nodes, and the index of the last change to any of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Nodes {
    /// Nodes by lowercased name, inline when short, as a row's key is
    /// (`RowKey`).
    rows: CapturedMap<CompactString, Node>,
    /// Index of the last change to any node.
    index: Index,
}

impl Nodes {
    /// Opens `capture` on the persisted maps: from now on they can be read
    /// as they are at this moment (`tables::CapturedMap`).
    pub(crate) fn open_capture(&mut self, capture: &Arc<Capture>) {
        self.rows.open(capture);
    }

    /// The table as a snapshot held it.
    pub(crate) fn from_rows(rows: BTreeMap<CompactString, Node>, index: Index) -> Self {
        Self {
            rows: rows.into(),
            index,
        }
    }

    /// The rows, for a snapshot.
    pub(crate) fn rows(&self) -> &CapturedMap<CompactString, Node> {
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

    /// All nodes, ordered by key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Node> {
        self.rows.values()
    }

    /// Creates or updates the node `r` names, keyed `node_key`; returns the
    /// row when it changed. With `skip_node_update` an existing node is left
    /// alone, and an empty address keeps the one it has; the caller has
    /// checked that an address is given when one is needed.
    pub(crate) fn upsert(
        &mut self,
        index: Index,
        node_key: &str,
        r: &Registration,
    ) -> Option<&Node> {
        let next = match self.rows.get(node_key) {
            Some(_) if r.skip_node_update => return None,
            Some(old) => {
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
                    return None;
                }
                Node {
                    name: r.node.clone(),
                    id: r.id.clone(),
                    address: address.clone(),
                    datacenter: r.datacenter.clone(),
                    tagged_addresses: r.tagged_addresses.clone(),
                    meta: r.node_meta.clone(),
                    create_index: old.create_index,
                    modify_index: index,
                }
            }
            None => Node {
                name: r.node.clone(),
                id: r.id.clone(),
                address: r.address.clone(),
                datacenter: r.datacenter.clone(),
                tagged_addresses: r.tagged_addresses.clone(),
                meta: r.node_meta.clone(),
                create_index: index,
                modify_index: index,
            },
        };
        self.index = index;
        self.rows.insert(CompactString::new(node_key), next);
        self.rows.get(node_key)
    }

    /// Removes a node's row.
    pub(crate) fn remove(&mut self, index: Index, node_key: &str) -> Option<Node> {
        let old = self.rows.remove(node_key)?;
        self.index = index;
        Some(old)
    }
}
