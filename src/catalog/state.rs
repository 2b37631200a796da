//! The catalog tables and the deterministic `apply`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::{CatalogError, CatalogOp, Command, Outcome};
use super::types::*;

/// Nodes, services and checks, keyed case-insensitively by node name as Consul
/// does. A snapshot is this struct serialized; derived lookup indexes are left
/// out of it and rebuilt when it is read back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Tables")]
pub struct Catalog {
    /// Nodes by lowercased name.
    nodes: BTreeMap<String, Node>,
    /// Service instances by (lowercased node name, instance ID).
    services: BTreeMap<(String, String), Service>,
    /// Checks by (lowercased node name, check ID).
    checks: BTreeMap<(String, String), Check>,
    /// Index of the last change to any node.
    nodes_index: Index,
    /// Index of the last change to any service instance.
    services_index: Index,
    /// Index of the last change to any check.
    checks_index: Index,
    /// Index of the last change that affects a service name's answers
    /// (instances, their checks, their nodes), by lowercased service name.
    /// Kept after the last instance goes so blocking queries see the removal.
    service_indexes: BTreeMap<String, Index>,
    /// Index of the last applied entry, including refused commands and no-ops.
    last_index: Index,
    /// Keys of `services` by lowercased service name, so that a service's
    /// instances are found without scanning every instance (DNS rebuilds a
    /// service's view entry on every write that touches it). Derived from
    /// `services`; must stay the last field (see [`Tables`]).
    #[serde(skip)]
    by_service: BTreeMap<String, BTreeSet<(String, String)>>,
}

/// The persisted fields of [`Catalog`], in the same order, for reading a
/// snapshot back: postcard is positional, so the order must match the
/// derived `Serialize` of `Catalog` (a round-trip test guards it).
#[derive(Deserialize)]
struct Tables {
    nodes: BTreeMap<String, Node>,
    services: BTreeMap<(String, String), Service>,
    checks: BTreeMap<(String, String), Check>,
    nodes_index: Index,
    services_index: Index,
    checks_index: Index,
    service_indexes: BTreeMap<String, Index>,
    last_index: Index,
}

impl From<Tables> for Catalog {
    fn from(t: Tables) -> Self {
        let mut by_service: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for (k, s) in &t.services {
            by_service
                .entry(key(&s.service))
                .or_default()
                .insert(k.clone());
        }
        Self {
            nodes: t.nodes,
            services: t.services,
            checks: t.checks,
            nodes_index: t.nodes_index,
            services_index: t.services_index,
            checks_index: t.checks_index,
            service_indexes: t.service_indexes,
            last_index: t.last_index,
            by_service,
        }
    }
}

/// What one `apply` touched, so the DNS view can be rebuilt for just that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Lowercased names of nodes whose own record or node-level checks changed.
    pub nodes: BTreeSet<String>,
    /// Lowercased service names whose instances or health may have changed.
    pub services: BTreeSet<String>,
}

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
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(HealthStatus::Passing)
    }
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one command at log index `index`. A refused command changes
    /// nothing but the last applied index.
    pub fn apply(&mut self, index: Index, cmd: &Command) -> (Outcome, Changes) {
        let mut changes = Changes::default();
        self.last_index = self.last_index.max(index);
        let result = match cmd {
            Command::Catalog(CatalogOp::Register(r)) => self.register(index, r, &mut changes),
            Command::Catalog(CatalogOp::Deregister(d)) => self.deregister(index, d, &mut changes),
        };
        for name in &changes.services {
            self.service_indexes.insert(name.clone(), index);
        }
        let outcome = match result {
            Ok(()) => Outcome::Applied(index),
            Err(e) => Outcome::Refused(e),
        };
        (outcome, changes)
    }

    /// Records that a log entry without a command (blank, membership) was applied.
    pub fn apply_noop(&mut self, index: Index) {
        self.last_index = self.last_index.max(index);
    }

    fn register(
        &mut self,
        index: Index,
        r: &Registration,
        changes: &mut Changes,
    ) -> Result<(), CatalogError> {
        if r.node.is_empty() {
            return Err(CatalogError::Missing("Node".into()));
        }
        let node_key = key(&r.node);
        let exists = self.nodes.contains_key(&node_key);
        // As Consul: an address is required unless the node's own fields are
        // left alone, and that needs a node to leave alone.
        if r.address.is_empty() && !r.skip_node_update {
            return Err(CatalogError::Missing("Address".into()));
        }
        if r.address.is_empty() && !exists {
            return Err(CatalogError::NoNodeAddress(r.node.clone()));
        }
        if let Some(s) = &r.service
            && s.service.is_empty()
        {
            return Err(CatalogError::Missing("Service.Service".into()));
        }
        // Validate every check before touching anything, so a refusal changes nothing.
        let new_service_id = r
            .service
            .as_ref()
            .map(|s| if s.id.is_empty() { &s.service } else { &s.id });
        for c in &r.checks {
            if c.name.is_empty() && c.check_id.is_empty() {
                return Err(CatalogError::Missing("Check.Name".into()));
            }
            if !c.service_id.is_empty()
                && new_service_id != Some(&c.service_id)
                && !self
                    .services
                    .contains_key(&(node_key.clone(), c.service_id.clone()))
            {
                return Err(CatalogError::UnknownServiceForCheck {
                    check_id: check_id(c).to_string(),
                    service_id: c.service_id.clone(),
                });
            }
        }

        self.upsert_node(index, r, exists, changes);
        if let Some(s) = &r.service {
            self.upsert_service(index, &node_key, s, changes);
        }
        for c in &r.checks {
            self.upsert_check(index, &node_key, &r.node, c, changes);
        }
        Ok(())
    }

    fn upsert_node(&mut self, index: Index, r: &Registration, exists: bool, changes: &mut Changes) {
        let node_key = key(&r.node);
        if exists && r.skip_node_update {
            return;
        }
        let datacenter = r.datacenter.clone();
        let next = match self.nodes.get(&node_key) {
            Some(old) => {
                let mut n = old.clone();
                n.name = r.node.clone();
                n.id = r.id.clone();
                if !r.address.is_empty() {
                    n.address = r.address.clone();
                }
                n.datacenter = datacenter;
                n.tagged_addresses = r.tagged_addresses.clone();
                n.meta = r.node_meta.clone();
                if n == *old {
                    return;
                }
                n.modify_index = index;
                n
            }
            None => Node {
                name: r.node.clone(),
                id: r.id.clone(),
                address: r.address.clone(),
                datacenter,
                tagged_addresses: r.tagged_addresses.clone(),
                meta: r.node_meta.clone(),
                create_index: index,
                modify_index: index,
            },
        };
        // Checks carry the node's name as registered; a respelling must reach them.
        let name = next.name.clone();
        self.nodes.insert(node_key.clone(), next);
        self.nodes_index = index;
        for c in node_checks_mut(&mut self.checks, &node_key) {
            if c.node != name {
                c.node = name.clone();
                c.modify_index = index;
                self.checks_index = index;
            }
        }
        self.touch_node(&node_key, changes);
    }

    fn upsert_service(
        &mut self,
        index: Index,
        node_key: &str,
        s: &ServiceRegistration,
        changes: &mut Changes,
    ) {
        let id = if s.id.is_empty() {
            s.service.clone()
        } else {
            s.id.clone()
        };
        let k = (node_key.to_string(), id.clone());
        let mut next = Service {
            id,
            service: s.service.clone(),
            tags: s.tags.clone(),
            address: s.address.clone(),
            tagged_addresses: s.tagged_addresses.clone(),
            meta: s.meta.clone(),
            port: s.port,
            weights: s.weights.unwrap_or_default(),
            enable_tag_override: s.enable_tag_override,
            create_index: index,
            modify_index: index,
        };
        if let Some(old) = self.services.get(&k) {
            next.create_index = old.create_index;
            next.modify_index = old.modify_index;
            if next == *old {
                return;
            }
            next.modify_index = index;
            if !old.service.eq_ignore_ascii_case(&next.service) {
                changes.services.insert(key(&old.service));
            }
        }
        changes.services.insert(key(&next.service));
        // Checks carry the instance's name and tags; keep them current.
        for c in node_checks_mut(&mut self.checks, node_key) {
            if c.service_id == next.id
                && (c.service_name != next.service || c.service_tags != next.tags)
            {
                c.service_name = next.service.clone();
                c.service_tags = next.tags.clone();
                c.modify_index = index;
                self.checks_index = index;
            }
        }
        self.put_service(k, next);
        self.services_index = index;
    }

    fn upsert_check(
        &mut self,
        index: Index,
        node_key: &str,
        node_name: &str,
        c: &CheckRegistration,
        changes: &mut Changes,
    ) {
        let id = check_id(c).to_string();
        let k = (node_key.to_string(), id.clone());
        let (service_name, service_tags) = if c.service_id.is_empty() {
            (String::new(), Vec::new())
        } else {
            // Validated in `register`: the instance exists by now.
            match self
                .services
                .get(&(node_key.to_string(), c.service_id.clone()))
            {
                Some(s) => (s.service.clone(), s.tags.clone()),
                None => (String::new(), Vec::new()),
            }
        };
        let node = self
            .nodes
            .get(node_key)
            .map_or_else(|| node_name.to_string(), |n| n.name.clone());
        let mut next = Check {
            node,
            check_id: id,
            name: if c.name.is_empty() {
                c.check_id.clone()
            } else {
                c.name.clone()
            },
            status: c.status,
            notes: c.notes.clone(),
            output: c.output.clone(),
            service_id: c.service_id.clone(),
            service_name,
            service_tags,
            kind: c.kind.clone(),
            create_index: index,
            modify_index: index,
        };
        let old = self.checks.get(&k);
        if let Some(old) = old {
            next.create_index = old.create_index;
            next.modify_index = old.modify_index;
            if next == *old {
                return;
            }
            next.modify_index = index;
            // A check that moved to another instance affects the old one too.
            if old.service_id != next.service_id {
                self.touch_check_target(node_key, &old.service_name.clone(), changes);
            }
        }
        let service_name = next.service_name.clone();
        self.checks.insert(k, next);
        self.checks_index = index;
        self.touch_check_target(node_key, &service_name, changes);
    }

    /// Marks what a check change affects: one service, or the whole node.
    fn touch_check_target(&self, node_key: &str, service_name: &str, changes: &mut Changes) {
        if service_name.is_empty() {
            self.touch_node(node_key, changes);
        } else {
            changes.services.insert(key(service_name));
        }
    }

    /// Marks a node and every service with an instance on it as changed.
    fn touch_node(&self, node_key: &str, changes: &mut Changes) {
        changes.nodes.insert(node_key.to_string());
        for s in self.node_services_by_key(node_key) {
            changes.services.insert(key(&s.service));
        }
    }

    fn deregister(
        &mut self,
        index: Index,
        d: &Deregistration,
        changes: &mut Changes,
    ) -> Result<(), CatalogError> {
        if d.node.is_empty() {
            return Err(CatalogError::Missing("Node".into()));
        }
        let node_key = key(&d.node);
        if !self.nodes.contains_key(&node_key) {
            // Consul treats removing what is not there as success.
            return Ok(());
        }
        if !d.service_id.is_empty() {
            let k = (node_key.clone(), d.service_id.clone());
            if let Some(s) = self.take_service(&k) {
                changes.services.insert(key(&s.service));
                self.services_index = index;
                let doomed: Vec<_> = self
                    .node_checks_by_key(&node_key)
                    .filter(|c| c.service_id == d.service_id)
                    .map(|c| (node_key.clone(), c.check_id.clone()))
                    .collect();
                for k in &doomed {
                    self.checks.remove(k);
                    self.checks_index = index;
                }
            }
        }
        if !d.check_id.is_empty() {
            let k = (node_key.clone(), d.check_id.clone());
            if let Some(c) = self.checks.remove(&k) {
                self.checks_index = index;
                self.touch_check_target(&node_key, &c.service_name, changes);
            }
        }
        if d.service_id.is_empty() && d.check_id.is_empty() {
            self.touch_node(&node_key, changes);
            self.nodes.remove(&node_key);
            self.nodes_index = index;
            let services: Vec<_> = self
                .node_services_by_key(&node_key)
                .map(|s| (node_key.clone(), s.id.clone()))
                .collect();
            for k in &services {
                self.take_service(k);
                self.services_index = index;
            }
            let checks: Vec<_> = self
                .node_checks_by_key(&node_key)
                .map(|c| (node_key.clone(), c.check_id.clone()))
                .collect();
            for k in &checks {
                self.checks.remove(k);
                self.checks_index = index;
            }
        }
        Ok(())
    }

    /// Inserts or replaces an instance, keeping `by_service` in step.
    fn put_service(&mut self, k: (String, String), s: Service) {
        let name = key(&s.service);
        if let Some(old) = self.services.insert(k.clone(), s) {
            let old_name = key(&old.service);
            if old_name != name {
                self.unindex_service(&old_name, &k);
            }
        }
        self.by_service.entry(name).or_default().insert(k);
    }

    /// Removes an instance, keeping `by_service` in step.
    fn take_service(&mut self, k: &(String, String)) -> Option<Service> {
        let old = self.services.remove(k)?;
        self.unindex_service(&key(&old.service), k);
        Some(old)
    }

    fn unindex_service(&mut self, name: &str, k: &(String, String)) {
        if let Some(keys) = self.by_service.get_mut(name) {
            keys.remove(k);
            if keys.is_empty() {
                self.by_service.remove(name);
            }
        }
    }

    /// Panics unless the derived indexes agree with the tables they index.
    #[cfg(test)]
    pub(super) fn assert_derived_indexes(&self) {
        let mut expected: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for (k, s) in &self.services {
            expected
                .entry(key(&s.service))
                .or_default()
                .insert(k.clone());
        }
        assert_eq!(
            self.by_service, expected,
            "by_service out of step with services"
        );
    }

    // ---- reads ----

    /// Index of the last applied log entry.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// Index of the last change to the nodes table.
    pub fn nodes_index(&self) -> Index {
        self.nodes_index
    }

    /// Index of the last change to the services table.
    pub fn services_index(&self) -> Index {
        self.services_index
    }

    /// Index of the last change to the checks table.
    pub fn checks_index(&self) -> Index {
        self.checks_index
    }

    /// Index of the last change that affects `service`'s answers; for a name
    /// never seen, the services table index (as Consul falls back).
    pub fn service_index(&self, service: &str) -> Index {
        self.service_indexes
            .get(&key(service))
            .copied()
            .unwrap_or(self.services_index)
            .max(1)
    }

    /// All nodes, ordered by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// One node by name, case-insensitively.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(&key(name))
    }

    /// The service instances on a node, ordered by ID.
    pub fn node_services(&self, name: &str) -> impl Iterator<Item = &Service> {
        self.node_services_by_key(&key(name))
    }

    fn node_services_by_key(&self, node_key: &str) -> impl Iterator<Item = &Service> + use<'_> {
        let start = (node_key.to_string(), String::new());
        let node_key = node_key.to_string();
        self.services
            .range(start..)
            .take_while(move |((n, _), _)| *n == node_key)
            .map(|(_, s)| s)
    }

    /// The checks on a node (node-level and service-level), ordered by ID.
    pub fn node_checks(&self, name: &str) -> impl Iterator<Item = &Check> {
        self.node_checks_by_key(&key(name))
    }

    fn node_checks_by_key(&self, node_key: &str) -> impl Iterator<Item = &Check> + use<'_> {
        let start = (node_key.to_string(), String::new());
        let node_key = node_key.to_string();
        self.checks
            .range(start..)
            .take_while(move |((n, _), _)| *n == node_key)
            .map(|(_, c)| c)
    }

    /// Every service name with the union of its instances' tags (sorted,
    /// deduplicated), as `/v1/catalog/services` returns.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in self.services.values() {
            out.entry(s.service.clone())
                .or_default()
                .extend(s.tags.iter().cloned());
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
        self.by_service
            .get(&key(service))
            .into_iter()
            .flatten()
            .filter_map(move |k| {
                let s = self.services.get(k)?;
                let node = self.nodes.get(&k.0)?;
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
                let node_key = key(&i.node.name);
                let checks = self
                    .node_checks_by_key(&node_key)
                    .filter(|c| c.service_id.is_empty())
                    .chain(
                        self.node_checks_by_key(&node_key)
                            .filter(|c| c.service_id == i.service.id),
                    )
                    .collect();
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
        for (node_key, _) in self.by_service.get(&key(service)).into_iter().flatten() {
            if last_node == Some(node_key.as_str()) {
                continue;
            }
            last_node = Some(node_key);
            out.extend(self.node_checks_by_key(node_key).filter(|c| {
                !c.service_id.is_empty() && c.service_name.eq_ignore_ascii_case(service)
            }));
        }
        out.into_iter()
    }

    /// Every check, or those in one state.
    pub fn checks_in_state(&self, state: Option<HealthStatus>) -> impl Iterator<Item = &Check> {
        self.checks
            .values()
            .filter(move |c| state.is_none_or(|s| c.status == s))
    }

    /// Worst status of a node's node-level checks; passing when there are none.
    pub fn node_health(&self, name: &str) -> HealthStatus {
        self.node_checks(name)
            .filter(|c| c.service_id.is_empty())
            .map(|c| c.status)
            .max()
            .unwrap_or(HealthStatus::Passing)
    }
}

/// The checks of one node, mutably; a free function so that the caller can
/// still update the catalog's other fields while iterating.
fn node_checks_mut<'a>(
    checks: &'a mut BTreeMap<(String, String), Check>,
    node_key: &str,
) -> impl Iterator<Item = &'a mut Check> + use<'a> {
    let start = (node_key.to_string(), String::new());
    let node_key = node_key.to_string();
    checks
        .range_mut(start..)
        .take_while(move |((n, _), _)| *n == node_key)
        .map(|(_, c)| c)
}

fn check_id(c: &CheckRegistration) -> &str {
    if c.check_id.is_empty() {
        &c.name
    } else {
        &c.check_id
    }
}

fn has_tags(s: &Service, tags: &[String]) -> bool {
    tags.iter()
        .all(|t| s.tags.iter().any(|st| st.eq_ignore_ascii_case(t)))
}
