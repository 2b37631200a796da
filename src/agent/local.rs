//! This node's identity and its own services and checks: the source of truth
//! for what the agent registers in the catalog.
//!
//! Every change is validated first, then written through [`Consensus::write`]
//! as a catalog command on behalf of this node, and recorded in the local map
//! only once the write was applied: a refused or failed write leaves both the
//! map and the catalog as they were. Check runners and anti-entropy (later)
//! read and update the same map.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::catalog::{
    CatalogError, CheckRegistration, Command, Deregistration, HealthStatus, Meta, Outcome,
    Registration, ServiceAddress, ServiceRegistration, Weights,
};
use crate::consensus::{Consensus, WriteError};

/// The check ID of the agent's own liveness check, as Consul names it.
pub const SERF_CHECK_ID: &str = "serfHealth";
/// The service ID and name servers register themselves under.
pub const CONSUL_SERVICE: &str = "consul";
/// Prefix of the critical check that puts a service into maintenance.
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// Notes of a maintenance check enabled without a reason (Consul's wording).
pub const DEFAULT_MAINTENANCE_REASON: &str = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

/// Who this agent is: what it registers its node with and reports in `/v1/agent/self`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Node name, unique in the datacenter.
    pub node_name: String,
    /// Node UUID.
    pub node_id: String,
    /// Datacenter name.
    pub datacenter: String,
    /// The address other nodes and DNS answers use for this node.
    pub advertise_addr: String,
    /// Whether this agent is a server (runs Raft, registers the `consul` service).
    pub server: bool,
    /// The agent's version string.
    pub version: String,
    /// Extra node addresses by kind (`lan`, `wan`, ...).
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    pub meta: Meta,
    /// Server RPC port (8300), the `consul` service's port.
    pub server_port: u16,
    /// LAN gossip port (8301), reported as the member's port.
    pub serf_lan_port: u16,
}

/// A service as an agent receives it (HTTP register or a config file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceDefinition {
    /// Instance ID; empty means "the name".
    pub id: String,
    /// Service name; required.
    pub name: String,
    /// Tags in the given order.
    pub tags: Vec<String>,
    /// Address; empty means the node's.
    pub address: String,
    /// Tagged addresses.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Metadata.
    pub meta: Meta,
    /// Port.
    pub port: u16,
    /// SRV weights; `None` for Consul's default of 1/1.
    pub weights: Option<Weights>,
    /// Whether anti-entropy leaves catalog tag changes alone.
    pub enable_tag_override: bool,
    /// The service's checks (`Check` and `Checks` together).
    pub checks: Vec<CheckDefinition>,
}

/// A check as an agent receives it. The runner fields are kept for the check
/// runners; only the identity and status reach the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckDefinition {
    /// Check ID; empty means a default derived from the service ID.
    pub id: String,
    /// Name; empty means a default derived from the service name.
    pub name: String,
    /// Initial status; `None` keeps a re-registered check's status, else critical.
    pub status: Option<HealthStatus>,
    /// Operator notes.
    pub notes: String,
    /// TTL for a TTL check.
    pub ttl: Option<Duration>,
    /// How often an interval check runs.
    pub interval: Option<Duration>,
    /// How long one run may take.
    pub timeout: Option<Duration>,
    /// URL for an HTTP check.
    pub http: String,
    /// HTTP method for an HTTP check.
    pub method: String,
    /// HTTP headers for an HTTP check.
    pub header: BTreeMap<String, Vec<String>>,
    /// Skip TLS verification for an HTTP check.
    pub tls_skip_verify: bool,
    /// `host:port` for a TCP check.
    pub tcp: String,
    /// Command and arguments for a script check.
    pub args: Vec<String>,
    /// Deregister the service when the check stays critical this long.
    pub deregister_critical_service_after: Option<Duration>,
}

impl CheckDefinition {
    /// Consul's check type: `http`, `tcp`, `script` or `ttl`.
    pub fn kind(&self) -> &'static str {
        if !self.http.is_empty() {
            "http"
        } else if !self.tcp.is_empty() {
            "tcp"
        } else if !self.args.is_empty() {
            "script"
        } else {
            "ttl"
        }
    }

    /// Consul's rules for a check type, with its wording.
    pub fn validate(&self) -> Result<(), String> {
        let interval_check = self.kind() != "ttl";
        let has_interval = self.interval.is_some_and(|d| !d.is_zero());
        let has_ttl = self.ttl.is_some_and(|d| !d.is_zero());
        if has_interval && has_ttl {
            return Err("Interval and TTL cannot both be specified".into());
        }
        if interval_check && !has_interval {
            return Err("Interval must be > 0 for Script, HTTP, or TCP checks".into());
        }
        if !interval_check && !has_ttl {
            return Err("TTL must be > 0 for TTL checks".into());
        }
        Ok(())
    }
}

/// One check of a local service, with its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCheck {
    /// The definition, with `id` and `name` filled in.
    pub definition: CheckDefinition,
    /// Current status.
    pub status: HealthStatus,
    /// Output of the last run.
    pub output: String,
}

/// One service of this agent, as recorded here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    /// The definition, with `id` filled in; its `checks` are in `checks`.
    pub definition: ServiceDefinition,
    /// The service's checks by check ID.
    pub checks: BTreeMap<String, LocalCheck>,
    /// The maintenance reason while the service is in maintenance.
    pub maintenance: Option<String>,
}

/// Why a local change was not made. Every variant leaves the map and the
/// catalog unchanged.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The definition is invalid (the message is Consul's wording).
    #[error("{0}")]
    Invalid(String),
    /// No local service has that ID.
    #[error(
        "Unknown service ID {0:?}. Ensure that the service ID is passed, not the service name."
    )]
    UnknownService(String),
    /// The catalog refused the command.
    #[error("{0}")]
    Refused(CatalogError),
    /// The write did not commit.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// This agent's node and services.
#[derive(Debug)]
pub struct LocalAgent {
    /// Who this node is; fixed for the life of the process.
    identity: NodeIdentity,
    /// Where writes go.
    consensus: Arc<Consensus>,
    /// Services by ID: the source of truth for this node's registrations.
    services: RwLock<BTreeMap<String, LocalService>>,
    /// Serializes changes so the catalog sees them in the order the map does.
    writes: tokio::sync::Mutex<()>,
}

impl LocalAgent {
    /// An agent with no services yet.
    pub fn new(identity: NodeIdentity, consensus: Arc<Consensus>) -> Self {
        Self {
            identity,
            consensus,
            services: RwLock::new(BTreeMap::new()),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// This node's identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// A copy of every local service, by ID.
    pub fn services(&self) -> BTreeMap<String, LocalService> {
        self.read().clone()
    }

    /// A copy of one local service.
    pub fn service(&self, id: &str) -> Option<LocalService> {
        self.read().get(id).cloned()
    }

    /// Registers the node with a passing `serfHealth` check and, on a server,
    /// the `consul` service. Called once the cluster has a leader.
    pub async fn register_self(&self) -> Result<(), LocalError> {
        let _serial = self.writes.lock().await;
        let service = self.identity.server.then(|| ServiceRegistration {
            id: CONSUL_SERVICE.into(),
            service: CONSUL_SERVICE.into(),
            tags: Vec::new(),
            address: String::new(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::from([("version".to_string(), self.identity.version.clone())]),
            port: self.identity.server_port,
            weights: None,
            enable_tag_override: false,
        });
        let check = CheckRegistration {
            check_id: SERF_CHECK_ID.into(),
            name: "Serf Health Status".into(),
            status: HealthStatus::Passing,
            notes: String::new(),
            output: "Agent alive and reachable".into(),
            service_id: String::new(),
            kind: String::new(),
        };
        self.write(Command::Register(self.registration(service, vec![check])))
            .await
    }

    /// Registers (or replaces) a service and its checks. Checks of an earlier
    /// registration that the new one does not name are kept, as Consul does,
    /// unless `replace_existing_checks`.
    pub async fn register_service(
        &self,
        mut def: ServiceDefinition,
        replace_existing_checks: bool,
    ) -> Result<(), LocalError> {
        if def.name.is_empty() {
            return Err(LocalError::Invalid("Missing service name".into()));
        }
        if def.id.is_empty() {
            def.id = def.name.clone();
        }
        if let Some(w) = def.weights
            && w.passing < 1
        {
            return Err(LocalError::Invalid("Passing must be greater than 0".into()));
        }
        let checks = std::mem::take(&mut def.checks);
        let numbered = checks.len() > 1;
        let mut ids = BTreeSet::new();
        let mut new_checks = Vec::with_capacity(checks.len());
        for (i, mut c) in checks.into_iter().enumerate() {
            c.validate()
                .map_err(|e| LocalError::Invalid(format!("Invalid check: {e}")))?;
            if c.id.is_empty() {
                c.id = if numbered {
                    format!("service:{}:{}", def.id, i + 1)
                } else {
                    format!("service:{}", def.id)
                };
            }
            if c.name.is_empty() {
                c.name = format!("Service '{}' check", def.name);
            }
            if !ids.insert(c.id.clone()) {
                return Err(LocalError::Invalid(format!(
                    "Duplicate check ID {:?}",
                    c.id
                )));
            }
            new_checks.push(c);
        }

        let _serial = self.writes.lock().await;
        let old = self.service(&def.id);
        let mut checks = BTreeMap::new();
        for c in new_checks {
            let previous = old.as_ref().and_then(|o| o.checks.get(&c.id));
            let status = c
                .status
                .or(previous.map(|p| p.status))
                .unwrap_or(HealthStatus::Critical);
            let output = previous.map(|p| p.output.clone()).unwrap_or_default();
            checks.insert(
                c.id.clone(),
                LocalCheck {
                    definition: c,
                    status,
                    output,
                },
            );
        }
        let stale: Vec<String> = match &old {
            Some(o) if replace_existing_checks => o
                .checks
                .keys()
                .filter(|id| !checks.contains_key(*id))
                .cloned()
                .collect(),
            Some(o) => {
                // Kept checks stay recorded here as they are in the catalog.
                for (id, c) in &o.checks {
                    checks.entry(id.clone()).or_insert_with(|| c.clone());
                }
                Vec::new()
            }
            None => Vec::new(),
        };

        let regs = checks
            .values()
            .map(|c| self.check_registration(&def.id, c))
            .collect();
        self.write(Command::Register(
            self.registration(Some(service_registration(&def)), regs),
        ))
        .await?;
        let maintenance = old.and_then(|o| o.maintenance);
        let id = def.id.clone();
        self.services_mut().insert(
            id,
            LocalService {
                definition: def,
                checks,
                maintenance,
            },
        );
        // The service is registered and recorded; a check left behind by a
        // failure here is one the map no longer has, for anti-entropy to remove.
        for check_id in stale {
            self.write(Command::Deregister(Deregistration {
                node: self.identity.node_name.clone(),
                service_id: String::new(),
                check_id,
            }))
            .await?;
        }
        Ok(())
    }

    /// Removes a service and its checks.
    pub async fn deregister_service(&self, id: &str) -> Result<(), LocalError> {
        let _serial = self.writes.lock().await;
        if self.service(id).is_none() {
            return Err(LocalError::UnknownService(id.into()));
        }
        self.write(Command::Deregister(Deregistration {
            node: self.identity.node_name.clone(),
            service_id: id.into(),
            check_id: String::new(),
        }))
        .await?;
        self.services_mut().remove(id);
        Ok(())
    }

    /// Puts a service into maintenance (a critical check that removes it from
    /// DNS) or takes it out. Enabling twice keeps the first reason.
    pub async fn set_maintenance(
        &self,
        id: &str,
        enable: bool,
        reason: Option<String>,
    ) -> Result<(), LocalError> {
        let _serial = self.writes.lock().await;
        let service = self
            .service(id)
            .ok_or_else(|| LocalError::UnknownService(id.into()))?;
        let check_id = format!("{SERVICE_MAINTENANCE_PREFIX}{id}");
        match (enable, service.maintenance.is_some()) {
            (true, false) => {
                let notes = reason
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| DEFAULT_MAINTENANCE_REASON.into());
                let check = CheckRegistration {
                    check_id,
                    name: "Service Maintenance Mode".into(),
                    status: HealthStatus::Critical,
                    notes: notes.clone(),
                    output: String::new(),
                    service_id: id.into(),
                    kind: "maintenance".into(),
                };
                let mut reg = self.registration(None, vec![check]);
                reg.skip_node_update = true;
                self.write(Command::Register(reg)).await?;
                self.set_maintenance_flag(id, Some(notes));
            }
            (false, true) => {
                self.write(Command::Deregister(Deregistration {
                    node: self.identity.node_name.clone(),
                    service_id: String::new(),
                    check_id,
                }))
                .await?;
                self.set_maintenance_flag(id, None);
            }
            _ => {}
        }
        Ok(())
    }

    fn set_maintenance_flag(&self, id: &str, reason: Option<String>) {
        if let Some(s) = self.services_mut().get_mut(id) {
            s.maintenance = reason;
        }
    }

    /// A registration of this node with the given service and checks.
    fn registration(
        &self,
        service: Option<ServiceRegistration>,
        checks: Vec<CheckRegistration>,
    ) -> Registration {
        let id = &self.identity;
        Registration {
            node: id.node_name.clone(),
            id: id.node_id.clone(),
            address: id.advertise_addr.clone(),
            datacenter: id.datacenter.clone(),
            tagged_addresses: id.tagged_addresses.clone(),
            node_meta: id.meta.clone(),
            skip_node_update: false,
            service,
            checks,
        }
    }

    fn check_registration(&self, service_id: &str, c: &LocalCheck) -> CheckRegistration {
        CheckRegistration {
            check_id: c.definition.id.clone(),
            name: c.definition.name.clone(),
            status: c.status,
            notes: c.definition.notes.clone(),
            output: c.output.clone(),
            service_id: service_id.into(),
            kind: c.definition.kind().into(),
        }
    }

    async fn write(&self, cmd: Command) -> Result<(), LocalError> {
        match self.consensus.write(cmd).await? {
            Outcome::Refused(e) => Err(LocalError::Refused(e)),
            Outcome::Applied(_) | Outcome::Noop => Ok(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, LocalService>> {
        // The map is only replaced whole-entry, so a panic elsewhere cannot
        // leave an entry half-written.
        self.services.read().unwrap_or_else(|e| e.into_inner())
    }

    fn services_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, LocalService>> {
        self.services.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn service_registration(def: &ServiceDefinition) -> ServiceRegistration {
    ServiceRegistration {
        id: def.id.clone(),
        service: def.name.clone(),
        tags: def.tags.clone(),
        address: def.address.clone(),
        tagged_addresses: def.tagged_addresses.clone(),
        meta: def.meta.clone(),
        port: def.port,
        weights: def.weights,
        enable_tag_override: def.enable_tag_override,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Replica;
    use crate::consensus::{ConsensusConfig, Storage};

    async fn agent(server: bool) -> (Arc<Replica>, LocalAgent) {
        let replica = Arc::new(Replica::new());
        let consensus = Consensus::start(
            ConsensusConfig {
                node_name: "n1".into(),
                rpc_addr: "127.0.0.1:0".parse().unwrap(),
                storage: Storage::Memory,
                bootstrap_expect: 1,
            },
            replica.clone(),
        )
        .await
        .unwrap();
        consensus
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        let identity = NodeIdentity {
            node_name: "n1".into(),
            node_id: "id".into(),
            datacenter: "dc1".into(),
            advertise_addr: "10.0.0.1".into(),
            server,
            version: "0.1.0".into(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::new(),
            server_port: 8300,
            serf_lan_port: 8301,
        };
        (
            replica.clone(),
            LocalAgent::new(identity, Arc::new(consensus)),
        )
    }

    fn ttl_check(status: Option<HealthStatus>) -> CheckDefinition {
        CheckDefinition {
            ttl: Some(Duration::from_secs(10)),
            status,
            ..CheckDefinition::default()
        }
    }

    #[tokio::test]
    async fn clients_register_their_node_without_the_consul_service() {
        let (replica, client) = agent(false).await;
        client.register_self().await.unwrap();
        {
            let c = replica.read();
            assert_eq!(c.node("n1").unwrap().address, "10.0.0.1");
            assert_eq!(c.node_services("n1").count(), 0);
            let serf: Vec<_> = c.node_checks("n1").collect();
            assert_eq!(serf[0].check_id, SERF_CHECK_ID);
            assert_eq!(serf[0].status, HealthStatus::Passing);
        }

        let (replica, server) = agent(true).await;
        server.register_self().await.unwrap();
        let c = replica.read();
        let consul: Vec<_> = c.node_services("n1").collect();
        assert_eq!(
            (consul[0].id.as_str(), consul[0].port),
            (CONSUL_SERVICE, 8300)
        );
        // The consul service is not one of the agent's own registrations.
        assert!(server.services().is_empty());
    }

    #[tokio::test]
    async fn invalid_definitions_change_nothing() {
        let (replica, a) = agent(false).await;
        let before = replica.snapshot();
        let nameless = ServiceDefinition::default();
        assert!(matches!(
            a.register_service(nameless, false).await,
            Err(LocalError::Invalid(m)) if m == "Missing service name"
        ));
        let bad_check = ServiceDefinition {
            name: "web".into(),
            checks: vec![CheckDefinition::default()],
            ..ServiceDefinition::default()
        };
        assert!(matches!(
            a.register_service(bad_check, false).await,
            Err(LocalError::Invalid(m)) if m.contains("TTL must be > 0")
        ));
        let dup = ServiceDefinition {
            name: "web".into(),
            checks: vec![
                CheckDefinition {
                    id: "c".into(),
                    ..ttl_check(None)
                },
                CheckDefinition {
                    id: "c".into(),
                    ..ttl_check(None)
                },
            ],
            ..ServiceDefinition::default()
        };
        assert!(matches!(
            a.register_service(dup, false).await,
            Err(LocalError::Invalid(_))
        ));
        assert!(matches!(
            a.deregister_service("ghost").await,
            Err(LocalError::UnknownService(_))
        ));
        assert!(matches!(
            a.set_maintenance("ghost", true, None).await,
            Err(LocalError::UnknownService(_))
        ));
        assert_eq!(replica.snapshot(), before);
        assert!(a.services().is_empty());
    }

    #[tokio::test]
    async fn maintenance_is_idempotent_and_survives_reregistration() {
        let (replica, a) = agent(false).await;
        let def = ServiceDefinition {
            name: "web".into(),
            checks: vec![ttl_check(Some(HealthStatus::Passing))],
            ..ServiceDefinition::default()
        };
        a.register_service(def.clone(), false).await.unwrap();
        a.set_maintenance("web", true, Some("first".into()))
            .await
            .unwrap();
        a.set_maintenance("web", true, Some("second".into()))
            .await
            .unwrap();
        a.register_service(def, false).await.unwrap();
        assert_eq!(
            a.service("web").unwrap().maintenance.as_deref(),
            Some("first")
        );
        {
            let c = replica.read();
            let maint: Vec<_> = c
                .node_checks("n1")
                .filter(|ch| ch.check_id == "_service_maintenance:web")
                .collect();
            assert_eq!(maint.len(), 1);
            assert_eq!(maint[0].notes, "first");
            assert!(c.health_service("web", &[], true).is_empty());
        }
        a.set_maintenance("web", false, None).await.unwrap();
        a.set_maintenance("web", false, None).await.unwrap();
        assert_eq!(a.service("web").unwrap().maintenance, None);
        assert_eq!(replica.read().health_service("web", &[], true).len(), 1);
    }
}
