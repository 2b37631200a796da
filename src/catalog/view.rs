//! The health-filtered answer index that DNS reads without locks.
//!
//! A [`View`] is immutable. The [`super::Replica`] builds a new one after each
//! applied write by copying the previous maps (pointer copies) and rebuilding
//! only the entries the write touched, then publishes it through an `ArcSwap`.
//! A DNS query loads the current `Arc<View>` and never waits for a writer.

use std::net::IpAddr;
use std::sync::Arc;

use super::shards::ShardedMap;

use super::state::State;
use super::types::{HealthStatus, Index, Meta, Weights};

/// A node as DNS sees it. Node lookups answer regardless of health, as Consul's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The node's name as registered.
    pub name: String,
    /// The node's address as registered (an IP, or a host name).
    pub address: String,
    /// `address` parsed, when it is an IP.
    pub ip: Option<IpAddr>,
    /// The node's datacenter.
    pub datacenter: String,
    /// Node metadata, for TXT answers.
    pub meta: Meta,
    /// Worst status of the node-level checks.
    pub health: HealthStatus,
}

/// One answerable (not critical) instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// The node the instance runs on.
    pub node: Arc<NodeView>,
    /// Instance ID.
    pub id: String,
    /// The address to answer with: the instance's own, else the node's.
    pub address: String,
    /// `address` parsed, when it is an IP.
    pub ip: Option<IpAddr>,
    /// Port for SRV.
    pub port: u16,
    /// Tags, lowercased, for tag filtering.
    pub tags: Vec<String>,
    /// SRV weights.
    pub weights: Weights,
    /// Worst status of node and instance checks: passing or warning, never critical.
    pub health: HealthStatus,
}

impl InstanceView {
    /// Whether the instance carries `tag` (compared case-insensitively).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }

    /// The SRV weight for the instance's current health.
    pub fn weight(&self) -> u32 {
        match self.health {
            HealthStatus::Passing => self.weights.passing,
            _ => self.weights.warning,
        }
    }
}

/// The answerable instances of one service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// The service name as its first instance (by node, then ID) spells it.
    pub name: String,
    /// Instances without a critical check, ordered by node then ID.
    pub instances: Vec<InstanceView>,
    /// Whether the name has any instance at all, healthy or not. A name with
    /// instances but none healthy is still NXDOMAIN (as Consul), but callers
    /// may want to tell the two apart in logs.
    pub registered: usize,
}

/// An immutable snapshot of everything DNS answers from. Two views are equal
/// when they answer every query the same (instance order included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Index of the last change to nodes, services or checks this view
    /// reflects (the SOA serial); KV and session writes do not move it.
    pub index: Index,
    /// Nodes by lowercased name, sharded so that the next view copies only
    /// the shards a write touched.
    nodes: ShardedMap<Arc<NodeView>>,
    /// Services by lowercased name; only names with at least one instance.
    services: ShardedMap<Arc<ServiceView>>,
}

impl View {
    /// A node by name, case-insensitively.
    pub fn node(&self, name: &str) -> Option<&Arc<NodeView>> {
        self.nodes.get(name.to_ascii_lowercase().as_str())
    }

    /// A service by name, case-insensitively.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceView>> {
        self.services.get(name.to_ascii_lowercase().as_str())
    }

    /// Every node, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<NodeView>> {
        self.nodes.values()
    }

    /// Every service, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceView>> {
        self.services.values()
    }

    /// Builds the whole view from the state (start-up, snapshot install).
    pub fn build(state: &State) -> Self {
        let mut v = Self::default();
        let nodes: Vec<String> = state.nodes().map(|n| n.name.to_ascii_lowercase()).collect();
        let services: Vec<String> = state
            .services()
            .keys()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        v.refresh(state, nodes.iter(), services.iter());
        v
    }

    /// Returns a copy with the given nodes and services rebuilt from `state`.
    /// Untouched entries are shared with `self`.
    pub fn updated<'a>(
        &self,
        state: &State,
        nodes: impl Iterator<Item = &'a String>,
        services: impl Iterator<Item = &'a String>,
    ) -> Self {
        let mut v = self.clone();
        v.refresh(state, nodes, services);
        v
    }

    fn refresh<'a>(
        &mut self,
        state: &State,
        nodes: impl Iterator<Item = &'a String>,
        services: impl Iterator<Item = &'a String>,
    ) {
        self.index = state.catalog_index();
        for key in nodes {
            match state.node(key) {
                Some(n) => {
                    let view = Arc::new(NodeView {
                        name: n.name.clone(),
                        address: n.address.clone(),
                        ip: n.address.parse().ok(),
                        datacenter: n.datacenter.clone(),
                        meta: n.meta.clone(),
                        health: state.node_health(&n.name),
                    });
                    self.nodes.insert(Arc::from(key.as_str()), view);
                }
                None => {
                    self.nodes.remove(key.as_str());
                }
            }
        }
        for key in services {
            match self.build_service(state, key) {
                Some(s) => {
                    self.services.insert(Arc::from(key.as_str()), Arc::new(s));
                }
                None => {
                    self.services.remove(key.as_str());
                }
            }
        }
    }

    /// Builds one service's entry; reuses this view's node entries, which
    /// `refresh` updates before services.
    fn build_service(&self, state: &State, key: &str) -> Option<ServiceView> {
        let entries = state.health_service(key, &[], false);
        let first = entries.first()?;
        let name = first.service.service.clone();
        let registered = entries.len();
        let instances = entries
            .iter()
            .filter(|e| e.status() != HealthStatus::Critical)
            .filter_map(|e| {
                let node = self
                    .nodes
                    .get(e.node.name.to_ascii_lowercase().as_str())?
                    .clone();
                let address = if e.service.address.is_empty() {
                    e.node.address.clone()
                } else {
                    e.service.address.clone()
                };
                Some(InstanceView {
                    node,
                    id: e.service.id.clone(),
                    ip: address.parse().ok(),
                    address,
                    port: e.service.port,
                    tags: e
                        .service
                        .tags
                        .iter()
                        .map(|t| t.to_ascii_lowercase())
                        .collect(),
                    weights: e.service.weights,
                    health: e.status(),
                })
            })
            .collect();
        Some(ServiceView {
            name,
            instances,
            registered,
        })
    }
}
