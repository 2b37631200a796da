//! Format version 1, frozen: the shapes data dirs were written in before
//! formats were versioned, to read them once and upgrade them.
//!
//! Never change this file. postcard encodes by position, so these types are
//! the v1 format itself: every field in its place, every enum's variants in
//! their order, exactly as the main before versioning declared them. Only
//! serde's derives and std types are used (plus openraft's `LogId`, pinned at
//! 0.9.25, whose encoding the golden-bytes tests of `META` pin), so nothing
//! that changes elsewhere can change them.
//!
//! What version 1 stored: a log entry is postcard of [`Entry`], whose normal
//! payload is a bare `Vec<Command>`; the `snapshot` value is postcard of
//! [`StoredSnapshot`], whose `data` is postcard of [`Tables`]; the other
//! `META` values are openraft's `Vote`/`LogId` and a `u64`, as today.

#![allow(
    missing_docs,
    reason = "each type is a field-for-field copy of a documented one, named above it"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub type LogId = openraft::LogId<u64>;

/// Metadata as Consul stores it.
pub type Meta = BTreeMap<String, String>;

// ---- the log: openraft's entry over the flat commands ----

/// openraft 0.9's `Entry<C>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log_id: LogId,
    pub payload: EntryPayload,
}

/// openraft 0.9's `EntryPayload<C>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    Blank,
    Normal(Vec<Command>),
    Membership(Membership),
}

/// openraft 0.9's `Membership<u64, Node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub configs: Vec<BTreeSet<u64>>,
    pub nodes: BTreeMap<u64, RaftNode>,
}

/// A server as Raft's membership knew it (`rpc::types::RaftMember` today).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftNode {
    pub name: String,
    pub addr: SocketAddr,
}

/// The command: one flat enum, no domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "decoded once per entry at upgrade; boxing would not change the encoding but \
              would make this copy differ from the type it froze"
)]
pub enum Command {
    Register(Registration),
    Deregister(Deregistration),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub node: String,
    pub id: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: Meta,
    pub skip_node_update: bool,
    pub service: Option<ServiceRegistration>,
    pub checks: Vec<CheckRegistration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRegistration {
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: Meta,
    pub port: u16,
    pub weights: Option<Weights>,
    pub enable_tag_override: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRegistration {
    pub check_id: String,
    pub name: String,
    pub status: HealthStatus,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deregistration {
    pub node: String,
    pub service_id: String,
    pub check_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthStatus {
    Passing,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAddress {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

// ---- the snapshot ----

/// The `snapshot` value in `META`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    /// postcard of [`Tables`], with no version before it.
    pub data: Vec<u8>,
}

/// openraft 0.9's `SnapshotMeta<u64, Node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_log_id: Option<LogId>,
    pub last_membership: StoredMembership,
    pub snapshot_id: String,
}

/// openraft 0.9's `StoredMembership<u64, Node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMembership {
    pub log_id: Option<LogId>,
    pub membership: Membership,
}

/// The catalog's persisted tables, in the order its snapshot wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<(String, String), Service>,
    pub checks: BTreeMap<(String, String), Check>,
    pub nodes_index: u64,
    pub services_index: u64,
    pub checks_index: u64,
    pub service_indexes: BTreeMap<String, u64>,
    pub last_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub id: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: Meta,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: Meta,
    pub port: u16,
    pub weights: Weights,
    pub enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub node: String,
    pub check_id: String,
    pub name: String,
    pub status: HealthStatus,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub kind: String,
    pub create_index: u64,
    pub modify_index: u64,
}
