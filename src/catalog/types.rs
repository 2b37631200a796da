//! The catalog's data model: what a node, a service instance and a check are,
//! and what a registration and a deregistration carry.
//!
//! These types travel through the Raft log and snapshots (postcard, so no
//! `skip_serializing_if` here) and are converted to Consul's JSON shapes by the
//! HTTP layer. Field names follow Rust; `http/` owns Consul's spelling.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A Raft log index; Consul calls it `CreateIndex`, `ModifyIndex`, `X-Consul-Index`.
pub type Index = u64;

pub use super::meta::Meta;
pub use super::tags::Tags;
pub use super::thin_str::ThinStr;

/// The health of one check, ordered from best to worst so that the worst of a
/// set is its `max()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    /// The check succeeds.
    Passing,
    /// The check reports a problem that should not remove the instance.
    Warning,
    /// The check fails: the instance (or the whole node) leaves DNS.
    Critical,
}

impl HealthStatus {
    /// Consul's spelling: `passing`, `warning`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The worst of `statuses`; passing when there are none, as an
    /// instance or node without checks is.
    pub fn worst(statuses: impl IntoIterator<Item = Self>) -> Self {
        statuses.into_iter().max().unwrap_or(Self::Passing)
    }

    /// Parses Consul's spelling, case-insensitively. `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "passing" => Some(Self::Passing),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// A machine in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's name, unique in the datacenter (`Node`).
    pub name: String,
    /// The node's UUID (`ID`); may be empty for externally registered nodes.
    pub id: String,
    /// The address DNS answers with for the node and, by default, its services.
    pub address: String,
    /// The datacenter the node belongs to.
    pub datacenter: String,
    /// Extra addresses by kind (`lan`, `wan`, `lan_ipv4`, ...).
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata; served as TXT records.
    pub meta: Meta,
    /// Log index that created the node.
    pub create_index: Index,
    /// Log index of the last change to the node itself.
    pub modify_index: Index,
}

/// An address and port for a service's tagged address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAddress {
    /// IP address or host name.
    pub address: String,
    /// Port number.
    pub port: u16,
}

/// A service instance's tagged addresses (`TaggedAddresses`), by kind:
/// one word in its row, as most instances have none (a `BTreeMap` is
/// three, see [`ROW_SIZES`]). Reads as the map; written as a map, so a
/// stored snapshot or log entry reads back unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(
    clippy::box_collection,
    reason = "the box is the point: one word, not three"
)]
pub struct ServiceAddresses(Option<Box<BTreeMap<String, ServiceAddress>>>);

/// What an instance without tagged addresses reads as.
static NO_SERVICE_ADDRESSES: BTreeMap<String, ServiceAddress> = BTreeMap::new();

impl std::ops::Deref for ServiceAddresses {
    type Target = BTreeMap<String, ServiceAddress>;

    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or(&NO_SERVICE_ADDRESSES)
    }
}

impl From<BTreeMap<String, ServiceAddress>> for ServiceAddresses {
    fn from(map: BTreeMap<String, ServiceAddress>) -> Self {
        Self((!map.is_empty()).then(|| Box::new(map)))
    }
}

impl Serialize for ServiceAddresses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ServiceAddresses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(Self::from)
    }
}

/// SRV weights by health, as Consul's `Weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    /// Weight while every check passes.
    pub passing: u32,
    /// Weight while some check warns.
    pub warning: u32,
}

impl Weights {
    /// The SRV weight in force for an instance whose checks' worst status
    /// is `health`, as Consul's `findWeight` picks it for service and
    /// prepared-query answers alike: `passing`, `warning` while a check
    /// warns, 0 while one is critical (only a prepared query that ignores
    /// that check answers with such an instance). Clamped to SRV's 16 bits.
    pub fn in_force(self, health: HealthStatus) -> u16 {
        let weight = match health {
            HealthStatus::Passing => self.passing,
            HealthStatus::Warning => self.warning,
            HealthStatus::Critical => 0,
        };
        u16::try_from(weight).unwrap_or(u16::MAX)
    }
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            passing: 1,
            warning: 1,
        }
    }
}

/// One service instance on one node.
///
/// Its strings but the address are `CompactString`s, as a check row's
/// are (see [`Check`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Instance ID, unique on its node (`ID`); defaults to the service name.
    pub id: CompactString,
    /// The service name (`Service`), what DNS looks up.
    pub service: CompactString,
    /// Tags, in registration order.
    pub tags: Tags,
    /// The instance's address; empty means "the node's address", as it
    /// mostly is. Boxed, not inline: 8 bytes less keeps the row in
    /// jemalloc's 128-byte size class (see [`ROW_SIZES`]).
    pub address: Box<str>,
    /// Extra addresses by kind.
    pub tagged_addresses: ServiceAddresses,
    /// Service metadata.
    pub meta: Meta,
    /// The port SRV answers carry.
    pub port: u16,
    /// SRV weights by health.
    pub weights: Weights,
    /// Whether anti-entropy leaves tags changed in the catalog alone.
    pub enable_tag_override: bool,
    /// Log index that created the instance.
    pub create_index: Index,
    /// Log index of the last change to the instance.
    pub modify_index: Index,
}

/// A health check on a node, or on one service instance of it.
///
/// Its strings but the notes and the kind are `CompactString`s: 24 bytes
/// each, holding up to 24 bytes of text without an allocation of their
/// own, as node names, IDs, check names and service names mostly are.
/// Against boxed strings (16 bytes and an allocation each) that took the
/// same memory in jemalloc's size classes, but reading a short string no
/// longer follows a pointer, and decoding one allocates nothing. The
/// notes and the kind, mostly empty or a few bytes, are a word each
/// ([`ThinStr`]) to keep the row in its size class ([`ROW_SIZES`]). serde
/// reads and writes each as a string, so the snapshot's bytes are the
/// same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The node the check belongs to.
    pub node: CompactString,
    /// Check ID, unique on its node (`CheckID`).
    pub check_id: CompactString,
    /// Human-readable name.
    pub name: CompactString,
    /// Current status as the writer reported it.
    pub status: HealthStatus,
    /// Operator notes, mostly none.
    pub notes: ThinStr,
    /// Output of the last run.
    pub output: CompactString,
    /// The service instance this check covers; empty for a node check.
    pub service_id: CompactString,
    /// That instance's service name (denormalized as Consul does).
    pub service_name: CompactString,
    /// That instance's tags (denormalized as Consul does): the instance
    /// row's own list, shared.
    pub service_tags: Tags,
    /// Kind of check (`http`, `tcp`, `ttl`, `script`, `serf`, or empty).
    pub kind: ThinStr,
    /// Log index that created the check.
    pub create_index: Index,
    /// Log index of the last change to the check.
    pub modify_index: Index,
}

/// The most bytes a [`Service`] and a [`Check`] may take: each row is
/// boxed, and jemalloc rounds an allocation up to its size class (128,
/// 160, 192, 224, 256 bytes here), so a row 8 bytes over a class costs 32
/// more. A service row was 155 bytes (160 allocated) with its tags a
/// `std` `Arc<[_]>`, its metadata a `Vec` and its tagged addresses a
/// `BTreeMap`; a thin tags list, boxed metadata and boxed tagged addresses
/// make it 123 (128). A check row was 217 (224) with its notes boxed and
/// its kind inline; both as a [`ThinStr`] and its tags thin, 185 (192).
pub(crate) const ROW_SIZES: (usize, usize) = (128, 192);

#[cfg(target_pointer_width = "64")]
const _: () = assert!(
    size_of::<Service>() <= ROW_SIZES.0 && size_of::<Check>() <= ROW_SIZES.1,
    "a catalog row outgrew its allocator size class: see ROW_SIZES"
);

/// The service part of a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRegistration {
    /// Instance ID; empty means "use the service name".
    pub id: String,
    /// Service name; required.
    pub service: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address; empty means the node's.
    pub address: String,
    /// Tagged addresses.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Metadata.
    pub meta: Meta,
    /// Port.
    pub port: u16,
    /// SRV weights; `None` keeps Consul's default (1/1).
    pub weights: Option<Weights>,
    /// Tag override flag.
    pub enable_tag_override: bool,
}

/// The check part of a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRegistration {
    /// Check ID; empty means "use the name".
    pub check_id: String,
    /// Name; required.
    pub name: String,
    /// Status to record.
    pub status: HealthStatus,
    /// Notes.
    pub notes: String,
    /// Output.
    pub output: String,
    /// Service instance on the same node this check covers; empty for a node check.
    pub service_id: String,
    /// Kind of check.
    pub kind: String,
}

/// Consul's catalog register: upsert a node and, optionally, one service and
/// some checks on it, atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Node name; required.
    pub node: String,
    /// Node UUID.
    pub id: String,
    /// Node address; required unless `skip_node_update` and the node exists.
    pub address: String,
    /// Datacenter.
    pub datacenter: String,
    /// Node tagged addresses.
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    pub node_meta: Meta,
    /// Leave the node's own fields alone if it already exists.
    pub skip_node_update: bool,
    /// A service instance to upsert on the node.
    pub service: Option<ServiceRegistration>,
    /// Checks to upsert on the node.
    pub checks: Vec<CheckRegistration>,
}

/// Consul's catalog deregister: remove a node (with everything on it), or one
/// service instance (with its checks), or one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deregistration {
    /// Node name; required.
    pub node: String,
    /// Service instance to remove; empty for none.
    pub service_id: String,
    /// Check to remove; empty for none.
    pub check_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::written_as;

    #[test]
    fn service_addresses_are_one_word_and_written_as_the_map_was() {
        assert_eq!(size_of::<ServiceAddresses>(), size_of::<usize>());
        let some = BTreeMap::from([(
            "lan".to_owned(),
            ServiceAddress {
                address: "10.0.0.1".into(),
                port: 80,
            },
        )]);
        for map in [BTreeMap::new(), some] {
            let boxed = ServiceAddresses::from(map.clone());
            assert_eq!(boxed.0.is_none(), map.is_empty());
            assert_eq!(*boxed, map);
            written_as(&boxed, &map);
        }
    }

    #[test]
    fn the_worst_status_is_passing_without_any() {
        use HealthStatus::{Critical, Passing, Warning};
        assert_eq!(HealthStatus::worst([]), Passing);
        assert_eq!(HealthStatus::worst([Passing, Warning, Passing]), Warning);
        assert_eq!(HealthStatus::worst([Critical, Warning]), Critical);
    }

    #[test]
    fn the_weight_in_force_follows_the_worst_check() {
        let w = Weights {
            passing: 10,
            warning: 70_000,
        };
        assert_eq!(w.in_force(HealthStatus::Passing), 10);
        assert_eq!(w.in_force(HealthStatus::Warning), u16::MAX);
        assert_eq!(w.in_force(HealthStatus::Critical), 0);
    }
}
