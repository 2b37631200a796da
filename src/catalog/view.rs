//! The health-filtered answer index that DNS reads without locks.
//!
//! A [`View`] is immutable. The [`super::Replica`] builds a new one after each
//! applied write by copying the previous maps (pointer copies) and rebuilding
//! only the entries the write touched, then publishes it through an `ArcSwap`.
//! A DNS query loads the current `Arc<View>` and never waits for a writer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use compact_str::CompactString;

use super::shards::{Named, ShardedMap};

use super::state::State;
use super::types::{HealthStatus, Index, Meta, Node, Service, Tags};

/// A node as DNS sees it. Node lookups answer regardless of health, as Consul's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The node's name as registered, inline when short ([`Named`]).
    pub name: CompactString,
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
    /// The node's name as DNS wire labels (length-prefixed, no terminator),
    /// as `hickory` reads it; `None` when the name is not a valid DNS name
    /// (no SRV target names it). DNS's fast path writes these bytes, then
    /// `node.<dc>` and a pointer to the domain, instead of building a name.
    pub labels: Option<Box<[u8]>>,
}

/// One answerable (not critical) instance of a service. Its strings are
/// `CompactString`s, as a catalog row's are (see [`super::types::Check`]):
/// an ID, an address or a tag mostly fits inline, so building the entry
/// allocates less and an answer reads the address where the entry is
/// (`benches/dns_answer` at 100,000 instances: `View::build` 95-100 ms
/// against 110-114 with boxed strings, the fast path 1,008-1,033 ns a
/// query against 1,049-1,097, three interleaved runs each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// The node the instance runs on.
    pub node: Arc<NodeView>,
    /// Instance ID.
    pub id: CompactString,
    /// The address to answer with: the instance's own, else the node's.
    pub address: InstanceAddress,
    /// Whether that is the node's address, as registered (compared as
    /// strings, as Consul does): SRV names the node then.
    pub at_node: bool,
    /// Port for SRV.
    pub port: u16,
    /// Tags as registered, the row's own list, for tag filtering
    /// ([`Self::has_tag`] ignores case).
    pub tags: Tags,
    /// The SRV weight for its health ([`in_force`](super::types::Weights::in_force): Consul's
    /// `Weights.Passing`, or `Weights.Warning` when a check warns).
    /// Only the one in force is kept, and at 16 bits (see the size below).
    pub weight: u16,
    /// Worst status of node and instance checks: passing or warning, never critical.
    pub health: HealthStatus,
    /// This instance's address among its service's distinct addresses
    /// (equal keys: equal address strings), for deduplicating A answers.
    pub addr_key: u32,
    /// This instance's SRV target among its service's distinct targets
    /// (the node, or the `addr` name of its own IP), for deduplicating the
    /// additional records of SRV answers.
    pub target_key: u32,
}

// A service's entries are one allocation, rounded up to jemalloc's size
// classes (256, 320, 384 bytes here): at 80 bytes three take 256, where
// at 96 (the address as a string and as an IP both) they took 320, and at
// 104 (both SRV weights kept) 320 too.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<InstanceView>() <= 80);

/// Where an instance is answered: an IP (A or AAAA records), or a host
/// name (a CNAME). One or the other, in 24 bytes: a view entry keeps no
/// spelling of an IP, so instances at one IP spelled two ways are one
/// address, in every answer path alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InstanceAddress {
    /// The address is this IP.
    Ip(IpAddr),
    /// The address is no IP: a host name, or empty.
    Host(CompactString),
}

impl InstanceAddress {
    /// `address` as an IP when it parses as one, else as a host name.
    fn of(address: &str) -> Self {
        address
            .parse()
            .map_or_else(|_| Self::Host(address.into()), Self::Ip)
    }
}

impl InstanceView {
    /// The instance's IP, when its address is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.address {
            InstanceAddress::Ip(ip) => Some(ip),
            InstanceAddress::Host(_) => None,
        }
    }

    /// Whether the instance carries `tag` (compared case-insensitively).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }
}

/// The answerable instances of one service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// The service name as its first instance (by node, then ID) spells
    /// it, inline when short ([`Named`]).
    pub name: CompactString,
    /// Instances without a critical check, ordered by node then ID.
    pub instances: Vec<InstanceView>,
    /// Whether the name has any instance at all, healthy or not. A name with
    /// instances but none healthy is still NXDOMAIN (as Consul), but callers
    /// may want to tell the two apart in logs.
    pub registered: usize,
    /// Whether DNS's fast path (`dns/wire`) may answer for this service:
    /// every instance has an IP address, and each one at its node's
    /// address has a node name that is a DNS name. Others (host names) go
    /// through the full responder.
    pub wire_ready: bool,
}

impl Named for NodeView {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for ServiceView {
    fn name(&self) -> &str {
        &self.name
    }
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
    /// A node by name, case-insensitively (ASCII).
    pub fn node(&self, name: &str) -> Option<&Arc<NodeView>> {
        self.nodes.get(name)
    }

    /// A service by name, case-insensitively (ASCII).
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceView>> {
        self.services.get(name)
    }

    /// Every node, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<NodeView>> {
        self.nodes.values()
    }

    /// Every service, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceView>> {
        self.services.values()
    }

    /// Builds the whole view from the state (start-up, snapshot install)
    /// in one walk of the tables: each node's entry once, each instance
    /// appended to its service's entry in (node, ID) order, the order
    /// [`Self::updated`] gives.
    pub fn build(state: &State) -> Self {
        /// A service's entry as the walk gathers it.
        struct Gathered {
            name: CompactString,
            instances: Vec<InstanceView>,
            registered: usize,
        }
        let mut v = Self {
            index: state.catalog_index(),
            ..Self::default()
        };
        let mut services: HashMap<String, Gathered> = HashMap::new();
        let mut lowered = String::new();
        for n in state.nodes_with_health() {
            let node = Arc::new(node_view(n.node, n.health));
            v.nodes.insert(node.clone());
            for (s, status) in n.instances {
                lowered.clear();
                lowered.push_str(&s.service);
                lowered.make_ascii_lowercase();
                let entry = match services.get_mut(lowered.as_str()) {
                    Some(entry) => entry,
                    None => services.entry(lowered.clone()).or_insert(Gathered {
                        name: CompactString::new(&s.service),
                        instances: Vec::new(),
                        registered: 0,
                    }),
                };
                entry.registered += 1;
                if status != HealthStatus::Critical {
                    entry.instances.push(instance_view(&node, s, status));
                }
            }
        }
        for mut g in services.into_values() {
            let wire_ready = assign_keys(&mut g.instances);
            // Pushed one by one, the list has room for more (4 for 3);
            // the entry never grows, so the room would be kept for nothing.
            g.instances.shrink_to_fit();
            let entry = ServiceView {
                name: g.name,
                instances: g.instances,
                registered: g.registered,
                wire_ready,
            };
            v.services.insert(Arc::new(entry));
        }
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
                    let view = Arc::new(node_view(n, state.node_health(&n.name)));
                    self.nodes.insert(view);
                }
                None => {
                    self.nodes.remove(key.as_str());
                }
            }
        }
        for key in services {
            match self.build_service(state, key) {
                Some(s) => {
                    self.services.insert(Arc::new(s));
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
        let name = CompactString::new(&first.service.service);
        let registered = entries.len();
        let mut instances: Vec<InstanceView> = entries
            .iter()
            .filter(|e| e.status() != HealthStatus::Critical)
            .filter_map(|e| {
                let node = self.nodes.get(&e.node.name)?;
                Some(instance_view(node, e.service, e.status()))
            })
            .collect();
        let wire_ready = assign_keys(&mut instances);
        instances.shrink_to_fit();
        Some(ServiceView {
            name,
            instances,
            registered,
            wire_ready,
        })
    }
}

/// A node's entry.
fn node_view(n: &Node, health: HealthStatus) -> NodeView {
    NodeView {
        name: CompactString::new(&n.name),
        address: n.address.clone(),
        ip: n.address.parse().ok(),
        datacenter: n.datacenter.clone(),
        meta: n.meta.clone(),
        health,
        labels: wire_labels(&n.name),
    }
}

/// An answerable instance's entry, before [`assign_keys`] numbers it.
fn instance_view(node: &Arc<NodeView>, s: &Service, health: HealthStatus) -> InstanceView {
    let address = if s.address.is_empty() {
        node.address.as_str()
    } else {
        &s.address
    };
    InstanceView {
        node: node.clone(),
        id: s.id.clone(),
        address: InstanceAddress::of(address),
        at_node: *address == *node.address,
        port: s.port,
        tags: s.tags.clone(),
        weight: s.weights.in_force(health),
        health,
        addr_key: 0,
        target_key: 0,
    }
}

/// `name` as DNS wire labels, as hickory reads it (escapes included);
/// `None` when it is no DNS name or has no label.
fn wire_labels(name: &str) -> Option<Box<[u8]>> {
    let parsed = hickory_proto::rr::Name::from_ascii(name).ok()?;
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in parsed.iter() {
        out.push(u8::try_from(label.len()).ok()?);
        out.extend_from_slice(label);
    }
    (!out.is_empty()).then(|| out.into_boxed_slice())
}

/// What an instance's SRV target is: its node's name, or the `addr` name
/// of its own IP.
#[derive(PartialEq, Eq, Hash, Clone, Copy)]
enum Target {
    /// The node, by the address of its entry in this view (one entry per node).
    Node(usize),
    Addr(IpAddr),
}

/// Numbers the distinct addresses and SRV targets of `instances` (see
/// [`InstanceView::addr_key`]) and says whether the service is
/// [`ServiceView::wire_ready`].
fn assign_keys(instances: &mut [InstanceView]) -> bool {
    let mut ready = true;
    let mut addrs = Numbering::default();
    let mut targets = Numbering::default();
    for inst in instances.iter_mut() {
        let Some(ip) = inst.ip() else {
            ready = false;
            continue;
        };
        let at_node = inst.at_node;
        if at_node && inst.node.labels.is_none() {
            ready = false;
        }
        inst.addr_key = addrs.key(Target::Addr(ip));
        inst.target_key = targets.key(if at_node {
            Target::Node(Arc::as_ptr(&inst.node) as usize)
        } else {
            Target::Addr(ip)
        });
    }
    ready
}

/// Dense numbers for distinct values: a list for the usual handful of
/// instances (no hashing, no map per service), a map beyond it.
#[derive(Default)]
struct Numbering {
    seen: Vec<Target>,
    map: HashMap<Target, u32>,
}

impl Numbering {
    fn key(&mut self, t: Target) -> u32 {
        const LINEAR: usize = 16;
        if self.map.is_empty() {
            if let Some(i) = self.seen.iter().position(|s| *s == t) {
                return i as u32;
            }
            if self.seen.len() < LINEAR {
                self.seen.push(t);
                return (self.seen.len() - 1) as u32;
            }
            self.map = self
                .seen
                .iter()
                .enumerate()
                .map(|(i, s)| (*s, i as u32))
                .collect();
        }
        let next = self.map.len() as u32;
        *self.map.entry(t).or_insert(next)
    }
}
