//! This node's identity and its own services and checks: the source of truth
//! for what the agent registers in the catalog.
//!
//! Every change is validated first, then written through [`Delegate::write`]
//! as a catalog command on behalf of this node, and recorded in the local map
//! only once the write was applied: a refused or failed write leaves both the
//! map and the catalog as they were. The check runners (`agent::checks`)
//! follow the map through [`LocalAgent::subscribe`] and report results back
//! through [`LocalAgent::record`], which writes status changes at once and
//! batches output-only changes (see `checks::state::decide`).
//!
//! Registrations and removals hold the write side of one lock; check results
//! hold its read side plus a lock for their check, so results of different
//! checks go to Raft concurrently (and share group commits) while a result
//! never interleaves with a registration that replaces its check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::checks::state::{Decision, decide};
use super::checks::ttl::{SavedTtl, TtlTouch};
use super::checks::{CheckSettings, MIN_DEREGISTER_AFTER, MIN_INTERVAL, Origin, Recorded};

use super::Delegate;
use crate::catalog::{
    CatalogError, CheckRegistration, Command, Deregistration, HealthStatus, Meta, Outcome,
    Registration, ServiceAddress, ServiceRegistration, Weights,
};
use crate::rpc::{ReadError, WriteError};

mod anti_entropy;

pub use crate::reconcile::SERF_CHECK_ID;
pub use anti_entropy::{DEFAULT_AE_INTERVAL, run as run_anti_entropy};
/// The service ID and name servers register themselves under.
pub const CONSUL_SERVICE: &str = "consul";
/// Prefix of the critical check that puts a service into maintenance.
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The check ID of the node's maintenance check, as Consul names it.
pub const NODE_MAINTENANCE_CHECK: &str = "_node_maintenance";
/// Notes of a node maintenance check enabled without a reason.
pub const DEFAULT_NODE_MAINTENANCE_REASON: &str = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
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

#[cfg(test)]
impl NodeIdentity {
    /// An identity with the defaults tests do not care about.
    pub(crate) fn for_tests(node_name: &str, advertise_addr: &str, server: bool) -> Self {
        Self {
            node_name: node_name.into(),
            node_id: "00000000-0000-4000-8000-000000000001".into(),
            datacenter: "dc1".into(),
            advertise_addr: advertise_addr.into(),
            server,
            version: "0.1.0".into(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::new(),
            server_port: 8300,
            serf_lan_port: 8301,
        }
    }
}

/// A service as an agent receives it (HTTP register or a config file).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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
    /// The service this check belongs to; empty for a node check. Only
    /// `/v1/agent/check/register` sets it; a service's own checks get the
    /// service's ID.
    pub service_id: String,
    /// Request body for an HTTP check.
    pub body: String,
    /// Consecutive passing results before the status turns passing.
    pub success_before_passing: u32,
    /// Consecutive failures before the status turns warning; 0 means the
    /// same as `failures_before_critical`.
    pub failures_before_warning: u32,
    /// Consecutive failures before the status turns critical.
    pub failures_before_critical: u32,
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

    /// Consul's rules for a check type, with its wording, plus what a runner
    /// needs to run it (a floor on the interval, a usable target). Every
    /// message names the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        let has_target = !self.http.is_empty() || !self.tcp.is_empty() || !self.args.is_empty();
        let has_interval = self.interval.is_some_and(|d| !d.is_zero());
        let has_ttl = self.ttl.is_some_and(|d| !d.is_zero());
        if has_interval && has_ttl {
            return Err("Interval and TTL cannot both be specified".into());
        }
        if has_interval && !has_target {
            return Err("Interval needs a target: one of HTTP, TCP or Args".into());
        }
        if has_target && !has_interval {
            return Err("Interval must be > 0 for Script, HTTP, or TCP checks".into());
        }
        if !has_target && !has_ttl {
            return Err("TTL must be > 0 for TTL checks".into());
        }
        if let Some(i) = self.interval
            && has_interval
            && i < MIN_INTERVAL
        {
            return Err(format!(
                "Interval must be at least {MIN_INTERVAL:?} (got {i:?})"
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err("Timeout must be > 0".into());
        }
        match self.kind() {
            "http" => {
                let url = reqwest::Url::parse(&self.http)
                    .map_err(|e| format!("HTTP: invalid URL {:?}: {e}", self.http))?;
                if url.scheme() != "http" && url.scheme() != "https" {
                    return Err(format!(
                        "HTTP: scheme {:?} is not supported (http or https)",
                        url.scheme()
                    ));
                }
                if !self.method.is_empty()
                    && reqwest::Method::from_bytes(self.method.as_bytes()).is_err()
                {
                    return Err(format!("Method: invalid HTTP method {:?}", self.method));
                }
                for (name, values) in &self.header {
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(format!("Header: invalid header name {name:?}"));
                    }
                    if values
                        .iter()
                        .any(|v| reqwest::header::HeaderValue::from_str(v).is_err())
                    {
                        return Err(format!("Header: invalid value for {name:?}"));
                    }
                }
            }
            "tcp" => {
                let port = self
                    .tcp
                    .rsplit_once(':')
                    .map(|(h, p)| (h, p.parse::<u16>()));
                if !matches!(port, Some((h, Ok(p))) if !h.is_empty() && p != 0) {
                    return Err(format!("TCP: {:?} is not host:port", self.tcp));
                }
            }
            "script" if self.args[0].is_empty() => {
                return Err("Args: the command (first element) is empty".into());
            }
            _ => {}
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
    /// Output of the last run, which may be newer than the catalog's copy
    /// (see `dirty`).
    pub output: String,
    /// When this check was last written to the catalog; `None` before the
    /// first write.
    pub written_at: Option<Instant>,
    /// The output here is newer than the catalog's, waiting for its batch.
    pub dirty: bool,
    /// Where the check was registered from.
    pub origin: Origin,
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
    /// Where the service was registered from: API registrations are saved
    /// in the data dir and restored on restart, configured ones come from
    /// the configuration again.
    pub origin: Origin,
}

/// What [`LocalAgent::with_definitions_file`] saves: the services (with
/// their checks) and the checks registered over the API.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedDefinitions {
    /// Services, each with its checks' definitions in `checks`.
    pub services: Vec<ServiceDefinition>,
    /// Checks registered on their own: node checks, and checks added to a
    /// configured service.
    pub checks: Vec<CheckDefinition>,
}

/// Reads what an earlier run saved in `path`; nothing if there is no file.
/// An unreadable file is an error naming it, not an empty state: starting
/// without its services would deregister them.
pub fn saved_definitions(path: &Path) -> Result<SavedDefinitions, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: unreadable saved registrations: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedDefinitions::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
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
    /// No local check has that ID.
    #[error("Unknown check ID {0:?}")]
    UnknownCheck(String),
    /// A script check from a source that may not register one.
    #[error(
        "Scripts are disabled on this agent; script checks are refused from the HTTP API unless the agent runs with --enable-script-checks (--enable-local-script-checks allows them from configuration files only), because a script check registered over the API runs any command on this machine"
    )]
    ScriptsDisabled,
    /// The catalog refused the command.
    #[error("{0}")]
    Refused(CatalogError),
    /// The write did not commit.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The consistent read before a sync could not be confirmed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// This agent's node and services.
#[derive(Debug)]
pub struct LocalAgent {
    /// Who this node is; fixed for the life of the process.
    identity: NodeIdentity,
    /// Where writes go.
    delegate: Delegate,
    /// Services by ID and node checks: the source of truth for this node's
    /// registrations.
    state: RwLock<LocalState>,
    /// Registrations take the write side, check results the read side, so
    /// the catalog sees registrations in the order the map does.
    writes: tokio::sync::RwLock<()>,
    /// Per-check ordering of results (a check hashes to one stripe), so two
    /// results of one check cannot reach the catalog out of order.
    stripes: Box<[tokio::sync::Mutex<()>]>,
    /// Bumped whenever a check definition may have changed; runners follow it.
    changes: watch::Sender<u64>,
    /// Check runner settings (script permissions, output batching).
    settings: CheckSettings,
    /// Per TTL check: the last update, for its runner's timer.
    ttl_touches: Mutex<HashMap<String, watch::Sender<TtlTouch>>>,
    /// TTL check states saved by the previous run, taken when the check is
    /// registered again.
    saved_ttls: Mutex<HashMap<String, SavedTtl>>,
    /// Serializes saving TTL states and definitions, so each file always
    /// holds the newest.
    saving: tokio::sync::Mutex<()>,
    /// Where services and checks registered over the API are saved, so a
    /// restarted agent has them again (none in dev mode).
    definitions_file: Option<PathBuf>,
    /// Whether the saved registrations have been registered again; until
    /// then saving would overwrite them with a partial list.
    restored: std::sync::atomic::AtomicBool,
    /// Whether this agent writes its own `serfHealth` check. Not when the
    /// leader derives it from gossip (`reconcile`): an agent restarting
    /// after a failure would otherwise mark itself passing while the
    /// leader's pool still says failed, and the two would flap.
    writes_serf_health: bool,
}

/// What the agent holds: its services and its node-level checks.
#[derive(Debug, Default)]
struct LocalState {
    /// Services by ID.
    services: BTreeMap<String, LocalService>,
    /// Checks not bound to a service, by check ID.
    node_checks: BTreeMap<String, LocalCheck>,
    /// The node maintenance reason while the node is in maintenance.
    node_maintenance: Option<String>,
}

impl LocalState {
    fn check(&self, service_id: &str, check_id: &str) -> Option<&LocalCheck> {
        if service_id.is_empty() {
            self.node_checks.get(check_id)
        } else {
            self.services.get(service_id)?.checks.get(check_id)
        }
    }

    fn check_mut(&mut self, service_id: &str, check_id: &str) -> Option<&mut LocalCheck> {
        if service_id.is_empty() {
            self.node_checks.get_mut(check_id)
        } else {
            self.services.get_mut(service_id)?.checks.get_mut(check_id)
        }
    }

    /// Every check with the ID of the service it belongs to ("" for node checks).
    fn all_checks(&self) -> impl Iterator<Item = (&str, &LocalCheck)> {
        self.node_checks.values().map(|c| ("", c)).chain(
            self.services
                .iter()
                .flat_map(|(id, s)| s.checks.values().map(move |c| (id.as_str(), c))),
        )
    }

    /// The service that owns a check ID ("" for a node check).
    fn owner(&self, check_id: &str) -> Option<&str> {
        self.all_checks()
            .find(|(_, c)| c.definition.id == check_id)
            .map(|(s, _)| s)
    }
}

/// Number of per-check lock stripes.
const STRIPES: usize = 256;

impl LocalAgent {
    /// An agent with no services yet and default check settings.
    pub fn new(identity: NodeIdentity, delegate: Delegate) -> Self {
        Self {
            identity,
            delegate,
            state: RwLock::new(LocalState::default()),
            writes: tokio::sync::RwLock::new(()),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            changes: watch::channel(0).0,
            settings: CheckSettings::default(),
            ttl_touches: Mutex::new(HashMap::new()),
            saved_ttls: Mutex::new(HashMap::new()),
            saving: tokio::sync::Mutex::new(()),
            definitions_file: None,
            restored: std::sync::atomic::AtomicBool::new(true),
            writes_serf_health: true,
        }
    }

    /// The same agent with these check settings; TTL states saved in their
    /// state directory are restored as their checks are registered.
    #[must_use]
    /// Leaves the node's `serfHealth` check to the leader's reconciler.
    pub fn with_serf_health_from_gossip(mut self) -> Self {
        self.writes_serf_health = false;
        self
    }

    /// Saves the services and checks registered over the API in `path`
    /// after every change (read back with [`saved_definitions`]).
    /// Saving starts once [`Self::restored`] says the registrations saved
    /// by the previous run are back.
    pub fn with_definitions_file(mut self, path: PathBuf) -> Self {
        self.definitions_file = Some(path);
        self.restored = false.into();
        self
    }

    /// The registrations saved by the previous run are registered again:
    /// from now on every change is saved.
    pub async fn restored(&self) {
        self.restored
            .store(true, std::sync::atomic::Ordering::Release);
        self.save_definitions().await;
    }

    /// Check runner settings.
    pub fn with_check_settings(mut self, settings: CheckSettings) -> Self {
        if let Some(dir) = &settings.state_dir {
            let saved = super::checks::ttl::load_states(dir);
            self.saved_ttls = Mutex::new(saved.into_iter().filter(|(_, s)| s.fresh()).collect());
        }
        self.settings = settings;
        self
    }

    /// The status and output a new check starts with: given, kept from its
    /// previous registration, saved by the previous run (TTL checks), or
    /// critical.
    fn initial_state(
        &self,
        c: &CheckDefinition,
        previous: Option<&LocalCheck>,
    ) -> (HealthStatus, String) {
        if let Some(p) = previous {
            return (c.status.unwrap_or(p.status), p.output.clone());
        }
        if c.kind() == "ttl"
            && let Some(saved) = self
                .saved_ttls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&c.id)
        {
            return (saved.status, saved.output);
        }
        (c.status.unwrap_or(HealthStatus::Critical), String::new())
    }

    /// Saves every TTL check's state to the state directory, if there is one.
    async fn save_ttls(&self) {
        let Some(dir) = &self.settings.state_dir else {
            return;
        };
        let _one_at_a_time = self.saving.lock().await;
        let states: HashMap<String, SavedTtl> = self
            .read()
            .all_checks()
            .filter(|(_, c)| c.definition.kind() == "ttl")
            .map(|(_, c)| {
                let ttl = c.definition.ttl.unwrap_or_default();
                (
                    c.definition.id.clone(),
                    SavedTtl::new(c.status, c.output.clone(), ttl),
                )
            })
            .collect();
        if let Err(e) = super::checks::ttl::save_states(dir, &states).await {
            tracing::warn!(dir = %dir.display(), "saving TTL check states failed: {e}");
        }
    }

    /// Saves the services and checks registered over the API, if there is a
    /// file for them. A failure is logged: the registration itself stands.
    async fn save_definitions(&self) {
        let Some(path) = &self.definitions_file else {
            return;
        };
        if !self.restored.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let _one_at_a_time = self.saving.lock().await;
        let saved = {
            let state = self.read();
            SavedDefinitions {
                services: state
                    .services
                    .values()
                    .filter(|s| s.origin == Origin::Api)
                    .map(|s| ServiceDefinition {
                        checks: s.checks.values().map(|c| c.definition.clone()).collect(),
                        ..s.definition.clone()
                    })
                    .collect(),
                checks: state
                    .node_checks
                    .values()
                    .chain(
                        state
                            .services
                            .values()
                            .filter(|s| s.origin != Origin::Api)
                            .flat_map(|s| s.checks.values()),
                    )
                    .filter(|c| c.origin == Origin::Api)
                    .map(|c| c.definition.clone())
                    .collect(),
            }
        };
        let write = async {
            let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
            super::persist::write_atomic(path, bytes).await
        };
        if let Err(e) = write.await {
            tracing::warn!(file = %path.display(), "saving the registered services failed: {e}");
        }
    }

    /// The check settings.
    pub fn check_settings(&self) -> &CheckSettings {
        &self.settings
    }

    /// A receiver that changes whenever a check may have been added, changed
    /// or removed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// This node's identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// A copy of every local service, by ID.
    pub fn services(&self) -> BTreeMap<String, LocalService> {
        self.read().services.clone()
    }

    /// A copy of one local service.
    pub fn service(&self, id: &str) -> Option<LocalService> {
        self.read().services.get(id).cloned()
    }

    /// A copy of every local check (service and node checks), by check ID.
    pub fn checks(&self) -> BTreeMap<String, LocalCheck> {
        self.read()
            .all_checks()
            .map(|(_, c)| (c.definition.id.clone(), c.clone()))
            .collect()
    }

    /// A copy of one check, by check ID.
    pub fn check(&self, check_id: &str) -> Option<LocalCheck> {
        let state = self.read();
        let owner = state.owner(check_id)?;
        state.check(owner, check_id).cloned()
    }

    /// Registers the node (with a passing `serfHealth` check unless the
    /// leader owns it) and, on a server, the `consul` service. Called once
    /// the cluster has a leader.
    pub async fn register_self(&self) -> Result<(), LocalError> {
        let _serial = self.writes.write().await;
        let service = self.consul_service();
        let checks = if self.writes_serf_health {
            vec![crate::reconcile::serf_check(
                crate::reconcile::Liveness::Alive,
            )]
        } else {
            Vec::new()
        };
        self.write(Command::register(self.registration(service, checks)))
            .await
    }

    /// The `consul` service a server registers on its node; none on a client.
    fn consul_service(&self) -> Option<ServiceRegistration> {
        self.identity.server.then(|| ServiceRegistration {
            id: CONSUL_SERVICE.into(),
            service: CONSUL_SERVICE.into(),
            tags: Vec::new(),
            address: String::new(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::from([("version".to_string(), self.identity.version.clone())]),
            port: self.identity.server_port,
            weights: None,
            enable_tag_override: false,
        })
    }

    /// Registers (or replaces) a service and its checks, as the HTTP API
    /// asks. Checks of an earlier registration that the new one does not
    /// name are kept, as Consul does, unless `replace_existing_checks`.
    pub async fn register_service(
        &self,
        def: ServiceDefinition,
        replace_existing_checks: bool,
    ) -> Result<(), LocalError> {
        self.register_service_from(def, replace_existing_checks, Origin::Api)
            .await
    }

    /// [`Self::register_service`] for a definition from `origin`, which
    /// decides whether script checks are allowed.
    pub async fn register_service_from(
        &self,
        mut def: ServiceDefinition,
        replace_existing_checks: bool,
        origin: Origin,
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
            self.admit(&mut c, origin)?;
            c.service_id = def.id.clone();
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

        let _serial = self.writes.write().await;
        {
            let state = self.read();
            for id in &ids {
                match state.owner(id) {
                    Some(owner) if owner != def.id => {
                        return Err(LocalError::Invalid(format!(
                            "Check ID {id:?} is already used by {}",
                            if owner.is_empty() {
                                "a node check".to_string()
                            } else {
                                format!("service {owner:?}")
                            }
                        )));
                    }
                    _ => {}
                }
            }
        }
        let old = self.service(&def.id);
        let now = Instant::now();
        let mut checks = BTreeMap::new();
        for c in new_checks {
            let previous = old.as_ref().and_then(|o| o.checks.get(&c.id));
            let (status, output) = self.initial_state(&c, previous);
            checks.insert(
                c.id.clone(),
                LocalCheck {
                    definition: c,
                    status,
                    output,
                    written_at: Some(now),
                    dirty: false,
                    origin,
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
        self.write(Command::register(
            self.registration(Some(service_registration(&def)), regs),
        ))
        .await?;
        let maintenance = old.and_then(|o| o.maintenance);
        let id = def.id.clone();
        self.state_mut().services.insert(
            id,
            LocalService {
                definition: def,
                checks,
                maintenance,
                origin,
            },
        );
        self.changed();
        self.save_definitions().await;
        // The service is registered and recorded; a check left behind by a
        // failure here is one the map no longer has, for anti-entropy to remove.
        for check_id in stale {
            self.write(Command::deregister(Deregistration {
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
        let _serial = self.writes.write().await;
        if self.service(id).is_none() {
            return Err(LocalError::UnknownService(id.into()));
        }
        self.write(Command::deregister(Deregistration {
            node: self.identity.node_name.clone(),
            service_id: id.into(),
            check_id: String::new(),
        }))
        .await?;
        if let Some(s) = self.state_mut().services.remove(id) {
            self.forget_touches(s.checks.keys());
        }
        self.changed();
        self.save_definitions().await;
        Ok(())
    }

    /// Checks a definition a caller gives and fills in what it may leave out.
    fn admit(&self, c: &mut CheckDefinition, origin: Origin) -> Result<(), LocalError> {
        c.validate()
            .map_err(|e| LocalError::Invalid(format!("Invalid check: {e}")))?;
        if c.kind() == "script" && !self.settings.scripts_allowed(origin) {
            return Err(LocalError::ScriptsDisabled);
        }
        // Consul's reaper runs every 30 s; below a minute the setting cannot
        // be honoured, so it is raised to the minimum as Consul does.
        if let Some(d) = c.deregister_critical_service_after.as_mut()
            && *d < MIN_DEREGISTER_AFTER
        {
            *d = MIN_DEREGISTER_AFTER;
        }
        Ok(())
    }

    /// Registers (or replaces) one check (`/v1/agent/check/register`). A
    /// check with a `service_id` belongs to that local service; otherwise it
    /// is a node check. A replaced check keeps its status unless `Status` is
    /// given.
    pub async fn register_check(
        &self,
        mut def: CheckDefinition,
        origin: Origin,
    ) -> Result<(), LocalError> {
        self.admit(&mut def, origin)?;
        if def.id.is_empty() {
            def.id = def.name.clone();
        }
        if def.id.is_empty() {
            return Err(LocalError::Invalid("Missing check name".into()));
        }
        let _serial = self.writes.write().await;
        let previous = {
            let state = self.read();
            if !def.service_id.is_empty() && !state.services.contains_key(&def.service_id) {
                return Err(LocalError::Invalid(format!(
                    "ServiceID {:?} does not exist",
                    def.service_id
                )));
            }
            match state.owner(&def.id) {
                Some(owner) if owner != def.service_id => {
                    return Err(LocalError::Invalid(format!(
                        "Check ID {:?} is already used by another service or node check",
                        def.id
                    )));
                }
                Some(owner) => state.check(owner, &def.id).cloned(),
                None => None,
            }
        };
        if def.name.is_empty() {
            def.name = def.id.clone();
        }
        let (status, output) = self.initial_state(&def, previous.as_ref());
        let check = LocalCheck {
            status,
            output,
            written_at: Some(Instant::now()),
            dirty: false,
            definition: def,
            origin,
        };
        let mut reg = self.registration(
            None,
            vec![self.check_registration(&check.definition.service_id, &check)],
        );
        reg.skip_node_update = true;
        self.write(Command::register(reg)).await?;
        {
            let mut state = self.state_mut();
            let service_id = check.definition.service_id.clone();
            let id = check.definition.id.clone();
            if service_id.is_empty() {
                state.node_checks.insert(id, check);
            } else if let Some(s) = state.services.get_mut(&service_id) {
                s.checks.insert(id, check);
            }
        }
        self.changed();
        self.save_definitions().await;
        Ok(())
    }

    /// Removes one check (`/v1/agent/check/deregister/:id`).
    pub async fn deregister_check(&self, check_id: &str) -> Result<(), LocalError> {
        let _serial = self.writes.write().await;
        let owner = self
            .read()
            .owner(check_id)
            .map(str::to_string)
            .ok_or_else(|| LocalError::UnknownCheck(check_id.into()))?;
        self.write(Command::deregister(Deregistration {
            node: self.identity.node_name.clone(),
            service_id: String::new(),
            check_id: check_id.into(),
        }))
        .await?;
        {
            let mut state = self.state_mut();
            if owner.is_empty() {
                state.node_checks.remove(check_id);
            } else if let Some(s) = state.services.get_mut(&owner) {
                s.checks.remove(check_id);
            }
        }
        self.forget_touches([check_id]);
        self.changed();
        self.save_definitions().await;
        Ok(())
    }

    /// Records a check's result: a status change is written at once; an
    /// output-only change is kept here and written at most once per
    /// `check_update_interval` (the caller flushes it at the returned time).
    pub async fn record(
        &self,
        service_id: &str,
        check_id: &str,
        status: HealthStatus,
        output: String,
    ) -> Result<Recorded, LocalError> {
        let _shared = self.writes.read().await;
        let _ordered = self.stripe(check_id).lock().await;
        let now = Instant::now();
        let decision = {
            let mut state = self.state_mut();
            let Some(c) = state.check_mut(service_id, check_id) else {
                return Ok(Recorded::Gone);
            };
            let d = decide(
                c.status,
                &c.output,
                status,
                &output,
                c.written_at,
                now,
                self.settings.update_interval,
            );
            if let Decision::Defer(_) = d {
                c.output = output.clone();
                c.dirty = true;
            }
            d
        };
        match decision {
            Decision::Nothing => Ok(Recorded::Unchanged),
            Decision::Defer(at) => Ok(Recorded::Deferred(at)),
            Decision::Write => {
                self.write_check(service_id, check_id, status, output, now)
                    .await?;
                Ok(Recorded::Written)
            }
        }
    }

    /// Writes a check's batched output if it is still waiting.
    pub async fn flush(&self, service_id: &str, check_id: &str) -> Result<(), LocalError> {
        let _shared = self.writes.read().await;
        let _ordered = self.stripe(check_id).lock().await;
        let pending = self
            .read()
            .check(service_id, check_id)
            .filter(|c| c.dirty)
            .map(|c| (c.status, c.output.clone()));
        if let Some((status, output)) = pending {
            self.write_check(service_id, check_id, status, output, Instant::now())
                .await?;
        }
        Ok(())
    }

    /// Writes one check's status and output (node left alone), then records
    /// them here.
    async fn write_check(
        &self,
        service_id: &str,
        check_id: &str,
        status: HealthStatus,
        output: String,
        now: Instant,
    ) -> Result<(), LocalError> {
        let reg = {
            let state = self.read();
            let Some(c) = state.check(service_id, check_id) else {
                return Ok(());
            };
            let mut c = c.clone();
            c.status = status;
            c.output = output.clone();
            let mut reg = self.registration(None, vec![self.check_registration(service_id, &c)]);
            reg.skip_node_update = true;
            reg
        };
        self.write(Command::register(reg)).await?;
        let ttl = {
            let mut state = self.state_mut();
            let Some(c) = state.check_mut(service_id, check_id) else {
                return Ok(());
            };
            c.status = status;
            c.output = output;
            c.written_at = Some(now);
            c.dirty = false;
            c.definition.kind() == "ttl"
        };
        if ttl {
            self.save_ttls().await;
        }
        Ok(())
    }

    /// A TTL check's update from its application (`/v1/agent/check/pass` and
    /// friends): recorded like any result, then the check's timer restarts.
    pub async fn ttl_update(
        &self,
        check_id: &str,
        status: HealthStatus,
        output: String,
    ) -> Result<(), LocalError> {
        let (owner, kind) = {
            let state = self.read();
            let owner = state
                .owner(check_id)
                .ok_or_else(|| LocalError::UnknownCheck(check_id.into()))?;
            let kind = state
                .check(owner, check_id)
                .map_or("", |c| c.definition.kind());
            (owner.to_string(), kind)
        };
        if kind != "ttl" {
            return Err(LocalError::Invalid(format!(
                "CheckID {check_id:?} does not have an associated TTL"
            )));
        }
        let recorded = self.record(&owner, check_id, status, output).await?;
        let flush_at = match recorded {
            Recorded::Deferred(at) => Some(at),
            _ => None,
        };
        let touch = TtlTouch {
            at: Instant::now(),
            status,
            flush_at,
        };
        self.ttl_sender(check_id).send_replace(touch);
        Ok(())
    }

    /// The channel a TTL check's runner watches for updates.
    pub fn ttl_watch(&self, check_id: &str) -> watch::Receiver<TtlTouch> {
        self.ttl_sender(check_id).subscribe()
    }

    fn ttl_sender(&self, check_id: &str) -> watch::Sender<TtlTouch> {
        let mut touches = self.ttl_touches.lock().unwrap_or_else(|e| e.into_inner());
        touches
            .entry(check_id.to_string())
            .or_insert_with(|| {
                watch::channel(TtlTouch {
                    at: Instant::now(),
                    status: HealthStatus::Critical,
                    flush_at: None,
                })
                .0
            })
            .clone()
    }

    fn forget_touches<S: AsRef<str>>(&self, ids: impl IntoIterator<Item = S>) {
        let mut touches = self.ttl_touches.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            touches.remove(id.as_ref());
        }
    }

    fn stripe(&self, check_id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        check_id.hash(&mut h);
        // The modulo keeps the index below the stripe count.
        &self.stripes[(h.finish() % self.stripes.len() as u64) as usize]
    }

    /// Puts a service into maintenance (a critical check that removes it from
    /// DNS) or takes it out. Enabling twice keeps the first reason.
    pub async fn set_maintenance(
        &self,
        id: &str,
        enable: bool,
        reason: Option<String>,
    ) -> Result<(), LocalError> {
        let _serial = self.writes.write().await;
        let service = self
            .service(id)
            .ok_or_else(|| LocalError::UnknownService(id.into()))?;
        match (enable, service.maintenance.is_some()) {
            (true, false) => {
                let notes = reason
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| DEFAULT_MAINTENANCE_REASON.into());
                let check = service_maintenance_check(id, notes.clone());
                let mut reg = self.registration(None, vec![check]);
                reg.skip_node_update = true;
                self.write(Command::register(reg)).await?;
                self.set_maintenance_flag(id, Some(notes));
            }
            (false, true) => {
                self.write(Command::deregister(Deregistration {
                    node: self.identity.node_name.clone(),
                    service_id: String::new(),
                    check_id: format!("{SERVICE_MAINTENANCE_PREFIX}{id}"),
                }))
                .await?;
                self.set_maintenance_flag(id, None);
            }
            _ => {}
        }
        Ok(())
    }

    /// The node maintenance reason, while the node is in maintenance.
    pub fn node_maintenance(&self) -> Option<String> {
        self.read().node_maintenance.clone()
    }

    /// Puts the whole node into maintenance (a critical node check that
    /// removes every service of the node from DNS) or takes it out.
    /// Enabling twice keeps the first reason.
    pub async fn set_node_maintenance(
        &self,
        enable: bool,
        reason: Option<String>,
    ) -> Result<(), LocalError> {
        let _serial = self.writes.write().await;
        match (enable, self.node_maintenance().is_some()) {
            (true, false) => {
                let notes = reason
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| DEFAULT_NODE_MAINTENANCE_REASON.into());
                let check = node_maintenance_check(notes.clone());
                let mut reg = self.registration(None, vec![check]);
                reg.skip_node_update = true;
                self.write(Command::register(reg)).await?;
                self.state_mut().node_maintenance = Some(notes);
            }
            (false, true) => {
                self.write(Command::deregister(Deregistration {
                    node: self.identity.node_name.clone(),
                    service_id: String::new(),
                    check_id: NODE_MAINTENANCE_CHECK.into(),
                }))
                .await?;
                self.state_mut().node_maintenance = None;
            }
            _ => {}
        }
        Ok(())
    }

    fn set_maintenance_flag(&self, id: &str, reason: Option<String>) {
        if let Some(s) = self.state_mut().services.get_mut(id) {
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
        match self.delegate.write(cmd).await? {
            Outcome::Refused(e) => Err(LocalError::Refused(e)),
            Outcome::Applied(_) | Outcome::Noop => Ok(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LocalState> {
        // Entries are replaced whole or have plain fields set, so a panic
        // elsewhere cannot leave an entry half-written.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, LocalState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The critical check that keeps service `id` in maintenance.
fn service_maintenance_check(id: &str, notes: String) -> CheckRegistration {
    CheckRegistration {
        check_id: format!("{SERVICE_MAINTENANCE_PREFIX}{id}"),
        name: "Service Maintenance Mode".into(),
        status: HealthStatus::Critical,
        notes,
        output: String::new(),
        service_id: id.into(),
        kind: "maintenance".into(),
    }
}

/// The critical check that keeps the whole node in maintenance.
fn node_maintenance_check(notes: String) -> CheckRegistration {
    CheckRegistration {
        check_id: NODE_MAINTENANCE_CHECK.into(),
        name: "Node Maintenance Mode".into(),
        status: HealthStatus::Critical,
        notes,
        output: String::new(),
        service_id: String::new(),
        kind: "maintenance".into(),
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
    use crate::consensus::Consensus;
    use std::sync::Arc;

    async fn agent(server: bool) -> (Arc<Replica>, LocalAgent) {
        let replica = Arc::new(Replica::new());
        let consensus = Consensus::single_in_memory("n1", replica.clone()).await;
        let identity = NodeIdentity::for_tests("n1", "10.0.0.1", server);
        (
            replica,
            LocalAgent::new(identity, Delegate::Server(consensus)),
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
    async fn api_registrations_are_saved_once_the_saved_ones_are_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local").join("definitions.json");
        let replica = Arc::new(Replica::new());
        let consensus = Consensus::single_in_memory("n1", replica.clone()).await;
        let identity = NodeIdentity::for_tests("n1", "10.0.0.1", false);
        let local = LocalAgent::new(identity, Delegate::Server(consensus))
            .with_definitions_file(path.clone());
        let def = |name: &str| ServiceDefinition {
            name: name.into(),
            port: 80,
            checks: vec![ttl_check(None)],
            ..ServiceDefinition::default()
        };
        // Before the restore nothing is written: it would drop what the
        // previous run saved.
        local.register_service(def("web"), false).await.unwrap();
        assert!(!path.exists());
        local.restored().await;
        local
            .register_service_from(def("configured"), false, Origin::Config)
            .await
            .unwrap();
        let saved = saved_definitions(&path).unwrap();
        let names: Vec<_> = saved.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["web"],
            "configured services come from the configuration"
        );
        assert_eq!(saved.services[0].checks.len(), 1);
        local.deregister_service("web").await.unwrap();
        assert!(saved_definitions(&path).unwrap().services.is_empty());

        std::fs::write(&path, b"{not json").unwrap();
        let e = saved_definitions(&path).unwrap_err();
        assert!(e.contains("definitions.json"), "{e}");
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
