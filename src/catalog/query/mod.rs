//! The read queries of the state store: borrowed rows, joined across tables
//! as the HTTP API and the DNS view ask for them, and the index each kind of
//! answer last changed at (what a blocking query waits on). The catalog's
//! reads are here; the KV store's in `kv.rs`, sessions' in `sessions.rs`,
//! prepared queries' in `prepared_queries.rs`.

mod acl;
mod kv;
mod prepared_queries;
mod sessions;

use std::collections::{BTreeMap, BTreeSet};

use super::state::State;
use super::tables::key;
use super::types::{Check, HealthStatus, Index, Node, Service};

/// A service instance with the node it runs on.
#[derive(Debug, Clone, Copy)]
pub struct Instance<'a> {
    /// The node.
    pub node: &'a Node,
    /// The instance.
    pub service: &'a Service,
}

/// A service instance with its node and every check that covers it (the
/// node's own checks first, then the instance's).
#[derive(Debug, Clone)]
pub struct HealthEntry<'a> {
    /// The node.
    pub node: &'a Node,
    /// The instance.
    pub service: &'a Service,
    /// Node-level and service-level checks.
    pub checks: Vec<&'a Check>,
}

impl HealthEntry<'_> {
    /// The worst status of all checks; passing when there are none.
    pub fn status(&self) -> HealthStatus {
        HealthStatus::worst(self.checks.iter().map(|c| c.status))
    }
}

/// A node with the health of everything on it: what a whole DNS view is
/// built from in one pass over the tables.
#[derive(Debug, Clone)]
pub struct NodeHealth<'a> {
    /// The node.
    pub node: &'a Node,
    /// Worst status of its node-level checks; passing when there are none.
    pub health: HealthStatus,
    /// Its instances in ID order, each with the worst status of every
    /// check that covers it (the node's own included), as
    /// [`HealthEntry::status`] gives it.
    pub instances: Vec<(&'a Service, HealthStatus)>,
}

impl State {
    /// Every node in key order with its health and its instances' health,
    /// read in one merged walk of the three tables (their rows share the
    /// node key's order), with no lookup per row.
    pub fn nodes_with_health(&self) -> impl Iterator<Item = NodeHealth<'_>> {
        let mut services = self.tables.services.rows().iter().peekable();
        let mut checks = self.tables.checks.rows().iter().peekable();
        // Instance checks of the current node, by instance ID; reused.
        let mut covering: Vec<(&str, HealthStatus)> = Vec::new();
        self.tables.nodes.rows().iter().map(move |(key, node)| {
            // Rows of a node the nodes table lacks (none while the rules
            // hold) belong to no answer.
            while services.next_if(|((n, _), _)| **n < **key).is_some() {}
            while checks.next_if(|((n, _), _)| **n < **key).is_some() {}
            let mut health = HealthStatus::Passing;
            covering.clear();
            while let Some((_, c)) = checks.next_if(|((n, _), _)| **n == **key) {
                if c.service_id.is_empty() {
                    health = health.max(c.status);
                } else {
                    covering.push((&*c.service_id, c.status));
                }
            }
            covering.sort_unstable();
            let mut instances = Vec::new();
            while let Some((_, s)) = services.next_if(|((n, _), _)| **n == **key) {
                let from = covering.partition_point(|(id, _)| *id < &*s.id);
                let worst = covering[from..]
                    .iter()
                    .take_while(|(id, _)| **id == *s.id)
                    .map(|(_, status)| *status)
                    .fold(health, HealthStatus::max);
                instances.push((&**s, worst));
            }
            NodeHealth {
                node,
                health,
                instances,
            }
        })
    }

    /// Index of the last change to nodes, services or checks: what DNS
    /// answers from.
    pub fn catalog_index(&self) -> Index {
        self.nodes_index()
            .max(self.services_index())
            .max(self.checks_index())
    }

    /// Index of the last change to the nodes table.
    pub fn nodes_index(&self) -> Index {
        self.tables.nodes.index()
    }

    /// Index of the last change to the services table.
    pub fn services_index(&self) -> Index {
        self.tables.services.index()
    }

    /// Index of the last change to the checks table.
    pub fn checks_index(&self) -> Index {
        self.tables.checks.index()
    }

    /// Index of the last change that affects `service`'s answers; for a name
    /// never seen, the services table index (as Consul falls back).
    pub fn service_index(&self, service: &str) -> Index {
        self.tables
            .services
            .name_index(&key(service))
            .unwrap_or(self.tables.services.index())
            .max(1)
    }

    /// All nodes, ordered by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.tables.nodes.iter()
    }

    /// One node by name, case-insensitively.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.tables.nodes.get(&key(name))
    }

    /// The service instances on a node, ordered by ID.
    pub fn node_services(&self, name: &str) -> impl Iterator<Item = &Service> {
        self.tables.services.on_node(&key(name))
    }

    /// The checks on a node (node-level and service-level), ordered by ID.
    pub fn node_checks(&self, name: &str) -> impl Iterator<Item = &Check> {
        self.tables.checks.on_node(&key(name))
    }

    /// Every service name with the union of its instances' tags (sorted,
    /// deduplicated), as `/v1/catalog/services` returns.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in self.tables.services.iter() {
            out.entry(s.service.to_string())
                .or_default()
                .extend(s.tags.iter().map(|t| t.to_string()));
        }
        out.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect()
    }

    /// Instances of a service (name case-insensitive) that carry every tag in
    /// `tags` (case-insensitive), ordered by node then ID.
    pub fn service_instances<'a>(
        &'a self,
        service: &'a str,
        tags: &'a [String],
    ) -> impl Iterator<Item = Instance<'a>> + 'a {
        self.tables
            .services
            .keys_named(&key(service))
            .filter_map(move |k| {
                let s = self.tables.services.get(k)?;
                let node = self.tables.nodes.get(&k.0)?;
                has_tags(s, tags).then_some(Instance { node, service: s })
            })
    }

    /// Instances of a service with their checks; with `passing_only`, those
    /// whose worst check is passing.
    pub fn health_service<'a>(
        &'a self,
        service: &'a str,
        tags: &'a [String],
        passing_only: bool,
    ) -> Vec<HealthEntry<'a>> {
        self.service_instances(service, tags)
            .map(|i| {
                // One pass over the node's checks: its node checks first,
                // then the instance's, each in ID order.
                let mut checks = Vec::new();
                let mut mine = Vec::new();
                for c in self.tables.checks.on_node(&key(&i.node.name)) {
                    if c.service_id.is_empty() {
                        checks.push(c);
                    } else if *c.service_id == *i.service.id {
                        mine.push(c);
                    }
                }
                checks.append(&mut mine);
                HealthEntry {
                    node: i.node,
                    service: i.service,
                    checks,
                }
            })
            .filter(|e| !passing_only || e.status() == HealthStatus::Passing)
            .collect()
    }

    /// Checks of every instance of a service, ordered by node then check ID.
    pub fn service_checks<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Check> + 'a {
        let mut out = Vec::new();
        // Instance keys come grouped by node: scan each such node's checks once.
        let mut last_node: Option<&str> = None;
        for (node_key, _) in self.tables.services.keys_named(&key(service)) {
            if last_node == Some(&**node_key) {
                continue;
            }
            last_node = Some(node_key);
            out.extend(self.tables.checks.on_node(node_key).filter(|c| {
                !c.service_id.is_empty() && c.service_name.eq_ignore_ascii_case(service)
            }));
        }
        out.into_iter()
    }

    /// Every check, or those in one state.
    pub fn checks_in_state(&self, state: Option<HealthStatus>) -> impl Iterator<Item = &Check> {
        self.tables
            .checks
            .iter()
            .filter(move |c| state.is_none_or(|s| c.status == s))
    }

    /// Worst status of a node's node-level checks; passing when there are none.
    pub fn node_health(&self, name: &str) -> HealthStatus {
        HealthStatus::worst(
            self.node_checks(name)
                .filter(|c| c.service_id.is_empty())
                .map(|c| c.status),
        )
    }
}

fn has_tags(s: &Service, tags: &[String]) -> bool {
    tags.iter()
        .all(|t| s.tags.iter().any(|st| st.eq_ignore_ascii_case(t)))
}
