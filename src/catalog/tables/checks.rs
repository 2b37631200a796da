//! The checks table: health checks keyed by (lowercased node name, check
//! ID). A check carries its node's name and its instance's service name and
//! tags as Consul denormalizes them; the rules keep those copies current.

use std::sync::Arc;

use super::{Capture, NodeKey, Nodes, RowKey, Rows, Services, TableRows, on_node, row_key};
use crate::catalog::types::{Check, CheckRegistration, Index, Service};

/// Checks, and the index of the last change to any of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checks {
    /// Checks by (lowercased node name, check ID).
    rows: TableRows<Check>,
    /// Index of the last change to any check.
    index: Index,
}

/// What an upsert changed, for the caller to mark what it touches.
#[derive(Debug)]
pub(crate) struct CheckChange {
    /// The service name the check covers now; empty for a node check.
    pub(crate) covers: String,
    /// The service name it covered before, when it moved to another
    /// instance (empty when it was a node check).
    pub(crate) left: Option<String>,
}

/// The check ID a registration upserts: its ID, else its name.
pub(crate) fn check_id(c: &CheckRegistration) -> &str {
    if c.check_id.is_empty() {
        &c.name
    } else {
        &c.check_id
    }
}

impl Checks {
    /// Opens `capture` on the persisted maps: from now on they can be read
    /// as they are at this moment (`tables::CapturedMap`).
    pub(crate) fn open_capture(&mut self, capture: &Arc<Capture>) {
        self.rows.open(capture);
    }

    /// The table as a snapshot held it, as applying the log leaves it
    /// (a snapshot decodes a key and a list for every row): its keys
    /// sharing their nodes' in `nodes`, and each check its instance's list
    /// of tags in `services` where the two are equal.
    pub(crate) fn from_rows(
        rows: Rows<Check>,
        index: Index,
        services: &Services,
        nodes: &Nodes,
    ) -> Self {
        let mut rows = nodes.share_keys(rows);
        for ((node_key, _), c) in &mut rows {
            if c.service_tags.is_empty() {
                continue;
            }
            // The node's shared key, not a copy of its own per check.
            let instance = (node_key.clone(), c.service_id.clone());
            if let Some(s) = services.get(&instance)
                && s.tags == c.service_tags
            {
                c.service_tags = s.tags.clone();
            }
        }
        Self {
            rows: rows.into(),
            index,
        }
    }

    /// The rows, for a snapshot.
    pub(crate) fn rows(&self) -> &TableRows<Check> {
        &self.rows
    }

    /// Index of the last change to any check.
    pub(crate) fn index(&self) -> Index {
        self.index
    }

    /// One check.
    pub(crate) fn get(&self, k: &RowKey) -> Option<&Check> {
        self.rows.get(k).map(|c| &**c)
    }

    /// Every check, ordered by node then ID.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Check> {
        self.rows.values().map(|c| &**c)
    }

    /// The checks on one node (node-level and service-level), ordered by ID.
    pub(crate) fn on_node(&self, node_key: &str) -> impl Iterator<Item = &Check> + use<'_> {
        on_node(&self.rows, node_key)
    }

    /// Creates or replaces the check `c` registers on the node keyed
    /// `node_key` (the nodes table's key, which the row's key shares),
    /// named `node` there, covering `service` (looked up by the caller from
    /// `c.service_id`); `None` when the row is as it was.
    pub(crate) fn upsert(
        &mut self,
        index: Index,
        node_key: &NodeKey,
        node: &str,
        c: &CheckRegistration,
        service: Option<&Service>,
    ) -> Option<CheckChange> {
        let id = check_id(c);
        let k: RowKey = (node_key.clone(), id.into());
        let (service_name, service_tags) =
            service.map_or_else(Default::default, |s| (s.service.clone(), s.tags.clone()));
        let mut next = Check {
            node: node.into(),
            check_id: id.into(),
            name: if c.name.is_empty() {
                c.check_id.as_str().into()
            } else {
                c.name.as_str().into()
            },
            status: c.status,
            notes: c.notes.as_str().into(),
            output: c.output.as_str().into(),
            service_id: c.service_id.as_str().into(),
            service_name,
            service_tags,
            kind: c.kind.as_str().into(),
            create_index: index,
            modify_index: index,
        };
        let mut left = None;
        if let Some(old) = self.rows.get(&k) {
            next.create_index = old.create_index;
            next.modify_index = old.modify_index;
            if next == **old {
                return None;
            }
            next.modify_index = index;
            if old.service_id != next.service_id {
                left = Some(old.service_name.to_string());
            }
        }
        let covers = next.service_name.to_string();
        self.rows.insert(k, Box::new(next));
        self.index = index;
        Some(CheckChange { covers, left })
    }

    /// Gives every check on a node the node's name as now registered.
    pub(crate) fn rename_node(&mut self, index: Index, node_key: &str, name: &str) {
        let renamed = self.keys_on_node_where(node_key, |c| *c.node != *name);
        for k in &renamed {
            if let Some(c) = self.rows.get_mut(k) {
                c.node = name.into();
                c.modify_index = index;
                self.index = index;
            }
        }
    }

    /// Gives the checks of an instance its service name and tags as now registered.
    pub(crate) fn follow_service(&mut self, index: Index, node_key: &str, s: &Service) {
        let behind = self.keys_on_node_where(node_key, |c| {
            *c.service_id == *s.id && (c.service_name != s.service || c.service_tags != s.tags)
        });
        for k in &behind {
            if let Some(c) = self.rows.get_mut(k) {
                c.service_name = s.service.clone();
                c.service_tags = s.tags.clone();
                c.modify_index = index;
                self.index = index;
            }
        }
    }

    /// Removes one check.
    pub(crate) fn remove(&mut self, index: Index, k: &RowKey) -> Option<Check> {
        let old = self.rows.remove(k)?;
        self.index = index;
        Some(*old)
    }

    /// The keys of the checks on a node that `pick` selects, in ID order.
    fn keys_on_node_where(&self, node_key: &str, pick: impl Fn(&Check) -> bool) -> Vec<RowKey> {
        self.on_node(node_key)
            .filter(|c| pick(c))
            .map(|c| row_key(node_key, &c.check_id))
            .collect()
    }

    /// Removes the checks on a node that `doomed` selects.
    pub(crate) fn remove_on_node(
        &mut self,
        index: Index,
        node_key: &str,
        doomed: impl Fn(&Check) -> bool,
    ) {
        for k in &self.keys_on_node_where(node_key, doomed) {
            self.remove(index, k);
        }
    }
}
