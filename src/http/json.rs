//! Consul's JSON response shapes, built from catalog records.
//!
//! Field names are Consul's exactly. Maps and lists are always present (`{}`,
//! `[]`), never `null`, so clients that index into them do not trip.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{Check, Index, Meta, Node, Service, ServiceAddress, Tags, Weights};
use crate::local::LocalService;

/// `Weights`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WeightsJson {
    /// Weight while passing.
    pub passing: u32,
    /// Weight while warning.
    pub warning: u32,
}

impl From<Weights> for WeightsJson {
    fn from(w: Weights) -> Self {
        Self {
            passing: w.passing,
            warning: w.warning,
        }
    }
}

/// A service tagged address.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceAddressJson {
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
}

fn service_addresses(m: &BTreeMap<String, ServiceAddress>) -> BTreeMap<String, ServiceAddressJson> {
    m.iter()
        .map(|(k, a)| {
            (
                k.clone(),
                ServiceAddressJson {
                    address: a.address.clone(),
                    port: a.port,
                },
            )
        })
        .collect()
}

/// A node, as `/v1/catalog/nodes` and `/v1/health/service` show it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeJson {
    /// Node UUID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    #[serde(rename = "Node")]
    pub node: String,
    /// Address.
    #[serde(rename = "Address")]
    pub address: String,
    /// Datacenter.
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
    /// Tagged addresses.
    #[serde(rename = "TaggedAddresses")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(rename = "Meta")]
    pub meta: Meta,
    /// Creation index.
    #[serde(rename = "CreateIndex")]
    pub create_index: Index,
    /// Last modification index.
    #[serde(rename = "ModifyIndex")]
    pub modify_index: Index,
}

impl From<&Node> for NodeJson {
    fn from(n: &Node) -> Self {
        Self {
            id: n.id.clone(),
            node: n.name.clone(),
            address: n.address.clone(),
            datacenter: n.datacenter.clone(),
            tagged_addresses: n.tagged_addresses.clone(),
            meta: n.meta.clone(),
            create_index: n.create_index,
            modify_index: n.modify_index,
        }
    }
}

/// A service instance in the catalog (`/v1/health/service` `Service`,
/// `/v1/catalog/node` `Services`).
#[derive(Debug, Clone, Serialize)]
pub struct ServiceJson {
    /// Instance ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    #[serde(rename = "Service")]
    pub service: String,
    /// Tags.
    #[serde(rename = "Tags")]
    pub tags: Tags,
    /// The instance's own address (may be empty).
    #[serde(rename = "Address")]
    pub address: String,
    /// Tagged addresses.
    #[serde(rename = "TaggedAddresses")]
    pub tagged_addresses: BTreeMap<String, ServiceAddressJson>,
    /// Metadata.
    #[serde(rename = "Meta")]
    pub meta: Meta,
    /// Port.
    #[serde(rename = "Port")]
    pub port: u16,
    /// SRV weights.
    #[serde(rename = "Weights")]
    pub weights: WeightsJson,
    /// Tag override flag.
    #[serde(rename = "EnableTagOverride")]
    pub enable_tag_override: bool,
    /// Creation index.
    #[serde(rename = "CreateIndex")]
    pub create_index: Index,
    /// Last modification index.
    #[serde(rename = "ModifyIndex")]
    pub modify_index: Index,
}

impl From<&Service> for ServiceJson {
    fn from(s: &Service) -> Self {
        Self {
            id: s.id.to_string(),
            service: s.service.to_string(),
            tags: s.tags.clone(),
            address: s.address.to_string(),
            tagged_addresses: service_addresses(&s.tagged_addresses),
            meta: s.meta.clone(),
            port: s.port,
            weights: s.weights.into(),
            enable_tag_override: s.enable_tag_override,
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// One row of `/v1/catalog/service/:name`: the instance with its node's fields.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogServiceJson {
    /// Node UUID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    #[serde(rename = "Node")]
    pub node: String,
    /// Node address.
    #[serde(rename = "Address")]
    pub address: String,
    /// Datacenter.
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
    /// Node tagged addresses.
    #[serde(rename = "TaggedAddresses")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(rename = "NodeMeta")]
    pub node_meta: Meta,
    /// Instance ID.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Service name.
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    /// Tags.
    #[serde(rename = "ServiceTags")]
    pub service_tags: Tags,
    /// Instance address (may be empty).
    #[serde(rename = "ServiceAddress")]
    pub service_address: String,
    /// Instance tagged addresses.
    #[serde(rename = "ServiceTaggedAddresses")]
    pub service_tagged_addresses: BTreeMap<String, ServiceAddressJson>,
    /// SRV weights.
    #[serde(rename = "ServiceWeights")]
    pub service_weights: WeightsJson,
    /// Instance metadata.
    #[serde(rename = "ServiceMeta")]
    pub service_meta: Meta,
    /// Port.
    #[serde(rename = "ServicePort")]
    pub service_port: u16,
    /// Tag override flag.
    #[serde(rename = "ServiceEnableTagOverride")]
    pub service_enable_tag_override: bool,
    /// Instance creation index.
    #[serde(rename = "CreateIndex")]
    pub create_index: Index,
    /// Instance modification index.
    #[serde(rename = "ModifyIndex")]
    pub modify_index: Index,
}

impl CatalogServiceJson {
    /// Joins an instance with its node.
    pub fn new(n: &Node, s: &Service) -> Self {
        Self {
            id: n.id.clone(),
            node: n.name.clone(),
            address: n.address.clone(),
            datacenter: n.datacenter.clone(),
            tagged_addresses: n.tagged_addresses.clone(),
            node_meta: n.meta.clone(),
            service_id: s.id.to_string(),
            service_name: s.service.to_string(),
            service_tags: s.tags.clone(),
            service_address: s.address.to_string(),
            service_tagged_addresses: service_addresses(&s.tagged_addresses),
            service_weights: s.weights.into(),
            service_meta: s.meta.clone(),
            service_port: s.port,
            service_enable_tag_override: s.enable_tag_override,
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// A health check (`HealthCheck`).
#[derive(Debug, Clone, Serialize)]
pub struct CheckJson {
    /// Node name.
    #[serde(rename = "Node")]
    pub node: String,
    /// Check ID.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Name.
    #[serde(rename = "Name")]
    pub name: String,
    /// `passing`, `warning` or `critical`.
    #[serde(rename = "Status")]
    pub status: &'static str,
    /// Notes.
    #[serde(rename = "Notes")]
    pub notes: String,
    /// Output of the last run.
    #[serde(rename = "Output")]
    pub output: String,
    /// Covered instance, or empty.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// That instance's service name.
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    /// That instance's tags.
    #[serde(rename = "ServiceTags")]
    pub service_tags: Vec<String>,
    /// Check type.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Runner definition; empty: definitions are not replicated.
    #[serde(rename = "Definition")]
    pub definition: BTreeMap<String, String>,
    /// Creation index.
    #[serde(rename = "CreateIndex")]
    pub create_index: Index,
    /// Last modification index.
    #[serde(rename = "ModifyIndex")]
    pub modify_index: Index,
}

impl From<&Check> for CheckJson {
    fn from(c: &Check) -> Self {
        Self {
            node: c.node.to_string(),
            check_id: c.check_id.to_string(),
            name: c.name.to_string(),
            status: c.status.as_str(),
            notes: c.notes.to_string(),
            output: c.output.to_string(),
            service_id: c.service_id.to_string(),
            service_name: c.service_name.to_string(),
            service_tags: c.service_tags.iter().map(|t| t.to_string()).collect(),
            kind: c.kind.to_string(),
            definition: BTreeMap::new(),
            create_index: c.create_index,
            modify_index: c.modify_index,
        }
    }
}

/// One row of `/v1/health/service/:name`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthServiceJson {
    /// The node.
    #[serde(rename = "Node")]
    pub node: NodeJson,
    /// The instance.
    #[serde(rename = "Service")]
    pub service: ServiceJson,
    /// Node and instance checks.
    #[serde(rename = "Checks")]
    pub checks: Vec<CheckJson>,
}

/// `/v1/catalog/node/:node`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeServicesJson {
    /// The node.
    #[serde(rename = "Node")]
    pub node: NodeJson,
    /// Its instances by ID.
    #[serde(rename = "Services")]
    pub services: BTreeMap<String, ServiceJson>,
}

/// A service as the local agent holds it (`/v1/agent/services`).
#[derive(Debug, Clone, Serialize)]
pub struct AgentServiceJson {
    /// Instance ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    #[serde(rename = "Service")]
    pub service: String,
    /// Tags.
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    /// Metadata.
    #[serde(rename = "Meta")]
    pub meta: Meta,
    /// Port.
    #[serde(rename = "Port")]
    pub port: u16,
    /// The instance's own address (may be empty).
    #[serde(rename = "Address")]
    pub address: String,
    /// Tagged addresses.
    #[serde(rename = "TaggedAddresses")]
    pub tagged_addresses: BTreeMap<String, ServiceAddressJson>,
    /// SRV weights.
    #[serde(rename = "Weights")]
    pub weights: WeightsJson,
    /// Tag override flag.
    #[serde(rename = "EnableTagOverride")]
    pub enable_tag_override: bool,
    /// The agent's datacenter.
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
}

impl AgentServiceJson {
    /// A local service as the agent reports it.
    pub fn new(s: &LocalService, datacenter: &str) -> Self {
        let d = &s.definition;
        Self {
            id: d.id.clone(),
            service: d.name.clone(),
            tags: d.tags.clone(),
            meta: d.meta.clone(),
            port: d.port,
            address: d.address.clone(),
            tagged_addresses: service_addresses(&d.tagged_addresses),
            weights: d.weights.unwrap_or_default().into(),
            enable_tag_override: d.enable_tag_override,
            datacenter: datacenter.to_string(),
        }
    }
}
