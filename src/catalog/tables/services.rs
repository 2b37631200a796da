//! The services table: service instances keyed by (lowercased node name,
//! instance ID), with a lookup by service name and the index each service
//! name's answers last changed at.

use std::collections::BTreeMap;
use std::sync::Arc;

use compact_str::CompactString;

use super::{Capture, CapturedMap, NodeKey, Nodes, RowKey, Rows, TableRows, key, on_node, row_key};
use crate::catalog::tags::TagLists;
use crate::catalog::types::{Index, Service, ServiceRegistration};

/// Service instances, their lookup by name, and their indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Services {
    /// Instances by (lowercased node name, instance ID).
    rows: TableRows<Service>,
    /// Index of the last change to any instance.
    index: Index,
    /// Index of the last change that affects a service name's answers
    /// (instances, their checks, their nodes), by lowercased service name.
    /// Kept after the last instance goes so blocking queries see the removal.
    name_indexes: CapturedMap<CompactString, Index>,
    /// Keys of `rows` by lowercased service name, so that a service's
    /// instances are found without scanning every instance (DNS rebuilds a
    /// service's view entry on every write that touches it). Derived from
    /// `rows`, so a snapshot leaves it out. A sorted `Vec` rather than a
    /// set: a service has a handful of instances, and a B-tree node for
    /// three keys takes eleven slots (~350 bytes per instance at 100,000
    /// instances, measured by `benches/scale`).
    by_name: BTreeMap<CompactString, Vec<RowKey>>,
    /// The rows' distinct lists of tags, so that equal lists are one.
    tag_lists: TagLists,
}

/// What an upsert changed: the row, and the name it had if that was another.
#[derive(Debug)]
pub(crate) struct ServiceChange<'a> {
    /// The instance as it now is.
    pub(crate) row: &'a Service,
    /// Its former service name, when the update renamed it.
    pub(crate) renamed_from: Option<String>,
    /// Whether the instance is new: no check can name it yet.
    pub(crate) created: bool,
}

/// The instance ID a registration upserts: its ID, else its service name.
pub(crate) fn instance_id(s: &ServiceRegistration) -> &str {
    if s.id.is_empty() { &s.service } else { &s.id }
}

impl Services {
    /// Opens `capture` on the persisted maps: from now on they can be read
    /// as they are at this moment (`tables::CapturedMap`).
    pub(crate) fn open_capture(&mut self, capture: &Arc<Capture>) {
        self.rows.open(capture);
        self.name_indexes.open(capture);
    }

    /// The table as a snapshot held it, its keys sharing their nodes' in
    /// `nodes`, with its lookup by name rebuilt.
    pub(crate) fn from_rows(
        rows: Rows<Service>,
        index: Index,
        name_indexes: BTreeMap<CompactString, Index>,
        nodes: &Nodes,
    ) -> Self {
        let mut rows = nodes.share_keys(rows);
        let by_name = index_by_name(&rows);
        // A snapshot decodes a list per row: equal ones become one again.
        let mut tag_lists = TagLists::default();
        for row in rows.values_mut() {
            row.tags = tag_lists.share(&row.tags);
        }
        Self {
            rows: rows.into(),
            index,
            name_indexes: name_indexes.into(),
            by_name,
            tag_lists,
        }
    }

    /// The rows, for a snapshot.
    pub(crate) fn rows(&self) -> &TableRows<Service> {
        &self.rows
    }

    /// The per-name indexes, for a snapshot.
    pub(crate) fn name_indexes(&self) -> &CapturedMap<CompactString, Index> {
        &self.name_indexes
    }

    /// Index of the last change to any instance.
    pub(crate) fn index(&self) -> Index {
        self.index
    }

    /// Index of the last change to a service name's answers, if it ever had any.
    pub(crate) fn name_index(&self, name_key: &str) -> Option<Index> {
        self.name_indexes.get(name_key).copied()
    }

    /// Records that `name_key`'s answers changed at `index`.
    pub(crate) fn mark_changed(&mut self, name_key: &str, index: Index) {
        match self.name_indexes.get_mut(name_key) {
            Some(at) => *at = index,
            None => {
                self.name_indexes
                    .insert(CompactString::new(name_key), index);
            }
        }
    }

    /// One instance.
    pub(crate) fn get(&self, k: &RowKey) -> Option<&Service> {
        self.rows.get(k).map(|s| &**s)
    }

    /// Every instance, ordered by node then ID.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Service> {
        self.rows.values().map(|s| &**s)
    }

    /// The instances on one node, ordered by ID.
    pub(crate) fn on_node(&self, node_key: &str) -> impl Iterator<Item = &Service> + use<'_> {
        on_node(&self.rows, node_key)
    }

    /// The keys of a service name's instances, ordered by node then ID.
    pub(crate) fn keys_named(&self, name_key: &str) -> impl Iterator<Item = &RowKey> + use<'_> {
        self.by_name.get(name_key).into_iter().flatten()
    }

    /// Creates or replaces the instance `s` registers on the node keyed
    /// `node` (the nodes table's key, which the row's key shares); says
    /// what changed, or `None` when the row is as it was (its indexes do
    /// not move then).
    pub(crate) fn upsert(
        &mut self,
        index: Index,
        node: &NodeKey,
        s: &ServiceRegistration,
    ) -> Option<ServiceChange<'_>> {
        let id = instance_id(s);
        let k: RowKey = (node.clone(), id.into());
        let old = self.rows.get(&k);
        // Unchanged tags stay the list the instance's checks share.
        let tags = match old {
            Some(old) if old.tags.same_as(&s.tags) => old.tags.clone(),
            _ => self.tag_lists.list_of(&s.tags),
        };
        let mut next = Service {
            id: id.into(),
            service: s.service.as_str().into(),
            tags,
            address: s.address.as_str().into(),
            tagged_addresses: s.tagged_addresses.clone().into(),
            meta: s.meta.clone(),
            port: s.port,
            weights: s.weights.unwrap_or_default(),
            enable_tag_override: s.enable_tag_override,
            create_index: index,
            modify_index: index,
        };
        let mut renamed_from = None;
        let mut old_name = None;
        let created = old.is_none();
        if let Some(old) = old {
            next.create_index = old.create_index;
            next.modify_index = old.modify_index;
            if next == **old {
                return None;
            }
            next.modify_index = index;
            if !old.service.eq_ignore_ascii_case(&next.service) {
                renamed_from = Some(old.service.to_string());
            }
            old_name = Some(key(&old.service));
        }
        let name = key(&next.service);
        if let Some(old_name) = old_name.filter(|old| *old != name) {
            self.unindex(&old_name, &k);
        }
        let keys = self.by_name.entry(CompactString::from(name)).or_default();
        if let Err(at) = keys.binary_search(&k) {
            // No spare room, as `index_by_name` builds them: a `Vec` grows
            // from none to four keys (192 bytes) for a service's first
            // instance, and most services have a few.
            keys.reserve_exact(1);
            keys.insert(at, k.clone());
        }
        self.index = index;
        // The row last, in the same search that finds its place.
        let (_, row) = self.rows.insert_get(k, Box::new(next));
        Some(ServiceChange {
            row,
            renamed_from,
            created,
        })
    }

    /// Removes one instance.
    pub(crate) fn remove(&mut self, index: Index, k: &RowKey) -> Option<Service> {
        let old = self.rows.remove(k)?;
        self.unindex(&key(&old.service), k);
        self.index = index;
        Some(*old)
    }

    /// Removes every instance on a node.
    pub(crate) fn remove_on_node(&mut self, index: Index, node_key: &str) {
        let doomed: Vec<RowKey> = self
            .on_node(node_key)
            .map(|s| row_key(node_key, &s.id))
            .collect();
        for k in &doomed {
            self.remove(index, k);
        }
    }

    fn unindex(&mut self, name: &str, k: &RowKey) {
        if let Some(keys) = self.by_name.get_mut(name) {
            if let Ok(at) = keys.binary_search(k) {
                keys.remove(at);
            }
            if keys.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    /// Panics unless the lookup by name agrees with the rows.
    #[cfg(test)]
    pub(crate) fn assert_derived_indexes(&self) {
        assert_eq!(
            self.by_name,
            index_by_name(&self.rows),
            "by_name out of step with the rows"
        );
    }
}

/// The keys of `rows` by lowercased service name, each list sorted (the
/// rows come in key order, and the sort by name is stable) and without
/// spare capacity. Sorted first and built in one pass: one allocation per
/// name rather than one per row, and no search per row.
fn index_by_name(rows: &Rows<Service>) -> BTreeMap<CompactString, Vec<RowKey>> {
    let mut named: Vec<(&str, &RowKey)> = rows.iter().map(|(k, s)| (&*s.service, k)).collect();
    // In the order of the lowercased names, as the map's keys sort.
    named.sort_by(|a, b| {
        let lower = |b: u8| b.to_ascii_lowercase();
        a.0.bytes().map(lower).cmp(b.0.bytes().map(lower))
    });
    named
        .chunk_by(|a, b| a.0.eq_ignore_ascii_case(b.0))
        .map(|group| {
            let keys: Vec<RowKey> = group.iter().map(|(_, k)| (*k).clone()).collect();
            (CompactString::from(key(group[0].0)), keys)
        })
        .collect()
}
