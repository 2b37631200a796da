//! This node's identity and its own services and checks: the source of truth
//! for what the agent registers in the catalog.
//!
//! Every change is validated first (by [`crate::definition`], the rules
//! configuration files pass too), then written through [`Delegate::write`]
//! as a catalog command on behalf of this node, and recorded in the local
//! map only once the write was applied: a refused or failed write leaves
//! both the map and the catalog as they were. The check runners ([`checks`])
//! follow the map through the [`checks::CheckSource`] the registry
//! implements for them, and report results back through
//! [`LocalAgent::record`], which writes status changes at once and batches
//! output-only changes (see `checks::state::decide`).
//!
//! Registrations and removals hold the write side of one lock; check results
//! hold its read side plus a lock for their check, so results of different
//! checks go to Raft concurrently (and share group commits) while a result
//! never interleaves with a registration that replaces its check.
//!
//! The parts, by idea: `registry` (the map and its write-through),
//! `maintenance` (service and node maintenance), `ttl` (TTL checks' updates
//! and their saved state), `saved` (the registrations saved in the data
//! dir and the atomic writer), `anti_entropy` (repairing the catalog from
//! the map), [`checks`] (the runners, which see the map only through the
//! traits they define), and `testing` (an agent in the test process).

mod anti_entropy;
pub mod checks;
mod maintenance;
mod registry;
mod saved;
#[cfg(test)]
pub(crate) mod testing;
mod ttl;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::RwLock;

use tokio::sync::watch;

use crate::catalog::{
    CatalogError, CheckRegistration, Command, Meta, Outcome, Registration, ServiceRegistration,
};
use crate::config::CheckSettings;
use crate::definition::Invalid;
use crate::delegate::Delegate;
use crate::rpc::{ReadError, WriteError};
use registry::LocalState;

pub use anti_entropy::run as run_anti_entropy;
pub use maintenance::{NODE_MAINTENANCE_CHECK, SERVICE_MAINTENANCE_PREFIX};
pub use registry::{LocalCheck, LocalService};
pub use saved::{SavedDefinitions, saved_definitions};

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
    /// Where TTL check states survive restarts; `None` keeps nothing (dev).
    check_state_dir: Option<PathBuf>,
    /// TTL checks' update channels and the states the previous run saved.
    ttl: ttl::TtlState,
    /// Serializes saving TTL states and definitions, so each file always
    /// holds the newest.
    saving: tokio::sync::Mutex<()>,
    /// Where services and checks registered over the API are saved, so a
    /// restarted agent has them again (none in dev mode).
    definitions_file: Option<PathBuf>,
    /// Whether the saved registrations have been registered again.
    restored: std::sync::atomic::AtomicBool,
    /// Until then, what the previous run saved: a save keeps what of it
    /// is not registered yet, so an API registration acknowledged before
    /// the restore is on disk without losing the saved ones.
    pending: std::sync::Mutex<Option<SavedDefinitions>>,
    /// Whether this agent writes its own `serfHealth` check. Not when the
    /// leader derives it from gossip (`reconcile`): an agent restarting
    /// after a failure would otherwise mark itself passing while the
    /// leader's pool still says failed, and the two would flap.
    writes_serf_health: bool,
}

/// Number of per-check lock stripes.
const STRIPES: usize = 256;

impl From<Invalid> for LocalError {
    fn from(e: Invalid) -> Self {
        Self::Invalid(e.message)
    }
}

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
            check_state_dir: None,
            ttl: ttl::TtlState::default(),
            saving: tokio::sync::Mutex::new(()),
            definitions_file: None,
            restored: std::sync::atomic::AtomicBool::new(true),
            pending: std::sync::Mutex::new(None),
            writes_serf_health: true,
        }
    }

    /// Leaves the node's `serfHealth` check to the leader's reconciler.
    #[must_use]
    pub fn with_serf_health_from_gossip(mut self) -> Self {
        self.writes_serf_health = false;
        self
    }

    /// Saves the services and checks registered over the API in `path`
    /// after every change (read back with [`saved_definitions`]). Until
    /// [`Self::restored`] says the registrations saved by the previous run
    /// are back, each save keeps those of them not registered again yet.
    #[must_use]
    pub fn with_definitions_file(mut self, path: PathBuf) -> Self {
        // An unreadable file stops the agent's start with its name
        // (`Definitions::load`), before anything is saved over it.
        self.pending = std::sync::Mutex::new(Some(saved_definitions(&path).unwrap_or_default()));
        self.definitions_file = Some(path);
        self.restored = false.into();
        self
    }

    /// The same agent with these check settings.
    #[must_use]
    pub fn with_check_settings(mut self, settings: CheckSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Keeps TTL check states in `dir` so they survive restarts: the states
    /// the previous run saved there are restored as their checks are
    /// registered.
    #[must_use]
    pub fn with_check_state_dir(mut self, dir: PathBuf) -> Self {
        self.ttl = ttl::TtlState::restore(&dir);
        self.check_state_dir = Some(dir);
        self
    }

    /// The check settings.
    pub fn check_settings(&self) -> &CheckSettings {
        &self.settings
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// This node's identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    fn stripe(&self, check_id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        check_id.hash(&mut h);
        // The modulo keeps the index below the stripe count.
        &self.stripes[(h.finish() % self.stripes.len() as u64) as usize]
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

    /// A check as the catalog registers it, with its current state.
    fn check_registration(&self, service_id: &str, c: &LocalCheck) -> CheckRegistration {
        CheckRegistration {
            check_id: c.definition.id.clone(),
            name: c.definition.name.clone(),
            status: c.status,
            notes: c.definition.notes.clone(),
            output: c.output.clone(),
            service_id: service_id.into(),
            kind: c.definition.kind().as_str().into(),
        }
    }

    async fn write(&self, cmd: Command) -> Result<(), LocalError> {
        match self.delegate.write(cmd).await? {
            Outcome::Refused(e) => Err(LocalError::Refused(e)),
            Outcome::Applied(_) | Outcome::Noop => Ok(()),
            other => Err(LocalError::Refused(CatalogError::Missing(format!(
                "a catalog write answered {other:?}"
            )))),
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
