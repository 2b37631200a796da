//! A deliberately naive model of Consul's catalog semantics: plain maps, no
//! indexes, no denormalization, no change tracking. The property tests mirror
//! every command into it and compare what the queries return.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

#[derive(Debug, Clone)]
pub(super) struct MNode {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) meta: Meta,
}

#[derive(Debug, Clone)]
pub(super) struct MService {
    pub(super) name: String,
    pub(super) tags: Vec<String>,
    pub(super) port: u16,
}

#[derive(Debug, Clone)]
pub(super) struct MCheck {
    pub(super) service_id: String,
    pub(super) status: HealthStatus,
}

/// Keys are (lowercased node name, ID); IDs are case-sensitive.
#[derive(Debug, Clone, Default)]
pub(super) struct Model {
    pub(super) nodes: BTreeMap<String, MNode>,
    pub(super) services: BTreeMap<(String, String), MService>,
    pub(super) checks: BTreeMap<(String, String), MCheck>,
}

fn or<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

impl Model {
    /// Applies a command; `false` when Consul would refuse it.
    pub(super) fn apply(&mut self, cmd: &Command) -> bool {
        match cmd {
            Command::Catalog(CatalogOp::Register(r)) => self.register(r),
            Command::Catalog(CatalogOp::Deregister(d)) => self.deregister(d),
            other => panic!("the catalog model knows only catalog ops, not {other:?}"),
        }
    }

    fn register(&mut self, r: &Registration) -> bool {
        let nk = r.node.to_lowercase();
        let exists = self.nodes.contains_key(&nk);
        if r.node.is_empty() || (r.address.is_empty() && !(exists && r.skip_node_update)) {
            return false;
        }
        if r.service.as_ref().is_some_and(|s| s.service.is_empty()) {
            return false;
        }
        let new_sid = r
            .service
            .as_ref()
            .map(|s| or(&s.id, &s.service).to_string());
        for c in &r.checks {
            if c.name.is_empty() && c.check_id.is_empty() {
                return false;
            }
            if !c.service_id.is_empty()
                && new_sid.as_deref() != Some(c.service_id.as_str())
                && !self
                    .services
                    .contains_key(&(nk.clone(), c.service_id.clone()))
            {
                return false;
            }
        }
        if !(exists && r.skip_node_update) {
            self.nodes.insert(
                nk.clone(),
                MNode {
                    name: r.node.clone(),
                    address: r.address.clone(),
                    meta: r.node_meta.clone(),
                },
            );
        }
        if let Some(s) = &r.service {
            self.services.insert(
                (nk.clone(), or(&s.id, &s.service).to_string()),
                MService {
                    name: s.service.clone(),
                    tags: s.tags.clone(),
                    port: s.port,
                },
            );
        }
        for c in &r.checks {
            self.checks.insert(
                (nk.clone(), or(&c.check_id, &c.name).to_string()),
                MCheck {
                    service_id: c.service_id.clone(),
                    status: c.status,
                },
            );
        }
        true
    }

    fn deregister(&mut self, d: &Deregistration) -> bool {
        if d.node.is_empty() {
            return false;
        }
        let nk = d.node.to_lowercase();
        if !self.nodes.contains_key(&nk) {
            return true;
        }
        if d.service_id.is_empty() && d.check_id.is_empty() {
            self.nodes.remove(&nk);
            self.services.retain(|(n, _), _| *n != nk);
            self.checks.retain(|(n, _), _| *n != nk);
            return true;
        }
        if !d.service_id.is_empty()
            && self
                .services
                .remove(&(nk.clone(), d.service_id.clone()))
                .is_some()
        {
            self.checks
                .retain(|(n, _), c| !(*n == nk && c.service_id == d.service_id));
        }
        if !d.check_id.is_empty() {
            self.checks.remove(&(nk, d.check_id.clone()));
        }
        true
    }

    // ---- queries, in the shapes the tests compare ----

    /// (node name, address) by key order.
    pub(super) fn nodes(&self) -> Vec<(String, String)> {
        self.nodes
            .values()
            .map(|n| (n.name.clone(), n.address.clone()))
            .collect()
    }

    /// For a node: (check ID, status, service ID, service name, service tags, node name).
    pub(super) fn node_checks(
        &self,
        nk: &str,
    ) -> Vec<(String, HealthStatus, String, String, Vec<String>, String)> {
        self.checks
            .iter()
            .filter(|((n, _), _)| n == nk)
            .map(|((n, id), c)| {
                let (name, tags) = match self.services.get(&(n.clone(), c.service_id.clone())) {
                    Some(s) if !c.service_id.is_empty() => (s.name.clone(), s.tags.clone()),
                    _ => (String::new(), Vec::new()),
                };
                (
                    id.clone(),
                    c.status,
                    c.service_id.clone(),
                    name,
                    tags,
                    self.nodes[n].name.clone(),
                )
            })
            .collect()
    }

    /// Worst node-level check of a node.
    pub(super) fn node_health(&self, nk: &str) -> HealthStatus {
        self.checks
            .iter()
            .filter(|((n, _), c)| n == nk && c.service_id.is_empty())
            .map(|(_, c)| c.status)
            .max()
            .unwrap_or(HealthStatus::Passing)
    }

    /// Worst of node-level and own checks of one instance.
    fn instance_health(&self, nk: &str, id: &str) -> HealthStatus {
        self.checks
            .iter()
            .filter(|((n, _), c)| n == nk && (c.service_id.is_empty() || c.service_id == id))
            .map(|(_, c)| c.status)
            .max()
            .unwrap_or(HealthStatus::Passing)
    }

    /// Instances of a service carrying all `tags`: (node name, ID, port, health),
    /// by node key then ID.
    pub(super) fn health_service(
        &self,
        service: &str,
        tags: &[String],
    ) -> Vec<(String, String, u16, HealthStatus)> {
        self.services
            .iter()
            .filter(|(_, s)| s.name.to_lowercase() == service.to_lowercase())
            .filter(|(_, s)| {
                tags.iter().all(|t| {
                    s.tags
                        .iter()
                        .any(|st| st.to_lowercase() == t.to_lowercase())
                })
            })
            .map(|((n, id), s)| {
                (
                    self.nodes[n].name.clone(),
                    id.clone(),
                    s.port,
                    self.instance_health(n, id),
                )
            })
            .collect()
    }

    /// (node name, check ID) of the checks of every instance of a service.
    pub(super) fn service_checks(&self, service: &str) -> Vec<(String, String)> {
        self.checks
            .iter()
            .filter(|((n, _), c)| {
                self.services
                    .get(&(n.clone(), c.service_id.clone()))
                    .is_some_and(|s| {
                        !c.service_id.is_empty() && s.name.to_lowercase() == service.to_lowercase()
                    })
            })
            .map(|((n, id), _)| (self.nodes[n].name.clone(), id.clone()))
            .collect()
    }

    /// Service names with the union of their tags.
    pub(super) fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in self.services.values() {
            out.entry(s.name.clone())
                .or_default()
                .extend(s.tags.iter().cloned());
        }
        out.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect()
    }
}
