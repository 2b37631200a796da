//! The registry: this node's services and checks by ID, and their
//! write-through to the catalog. Every registration, removal and check
//! result goes to the catalog first and into the map once applied; the
//! runners ([`super::checks`]) follow the map through the
//! [`CheckSource`] it implements for them.

use std::collections::BTreeMap;
use std::future::Future;

use tokio::sync::watch;
use tokio::time::Instant;

use super::checks::runner::Sink;
use super::checks::state::{Decision, decide};
use super::checks::ttl::TtlTouch;
use super::checks::{self, CheckSource, Recorded, WantedCheck};
use super::{LocalAgent, LocalError};
use crate::catalog::{Command, Deregistration, HealthStatus, Meta, ServiceRegistration};
use crate::definition::{CheckDefinition, CheckKind, Origin, ServiceDefinition};

/// The service ID and name servers register themselves under.
const CONSUL_SERVICE: &str = "consul";

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

/// What the agent holds: its services and its node-level checks.
#[derive(Debug, Default)]
pub(super) struct LocalState {
    /// Services by ID.
    pub(super) services: BTreeMap<String, LocalService>,
    /// Checks not bound to a service, by check ID.
    pub(super) node_checks: BTreeMap<String, LocalCheck>,
    /// The node maintenance reason while the node is in maintenance.
    pub(super) node_maintenance: Option<String>,
}

impl LocalState {
    pub(super) fn check(&self, service_id: &str, check_id: &str) -> Option<&LocalCheck> {
        if service_id.is_empty() {
            self.node_checks.get(check_id)
        } else {
            self.services.get(service_id)?.checks.get(check_id)
        }
    }

    pub(super) fn check_mut(
        &mut self,
        service_id: &str,
        check_id: &str,
    ) -> Option<&mut LocalCheck> {
        if service_id.is_empty() {
            self.node_checks.get_mut(check_id)
        } else {
            self.services.get_mut(service_id)?.checks.get_mut(check_id)
        }
    }

    /// Every check with the ID of the service it belongs to ("" for node checks).
    pub(super) fn all_checks(&self) -> impl Iterator<Item = (&str, &LocalCheck)> {
        self.node_checks.values().map(|c| ("", c)).chain(
            self.services
                .iter()
                .flat_map(|(id, s)| s.checks.values().map(move |c| (id.as_str(), c))),
        )
    }

    /// The service that owns a check ID ("" for a node check).
    pub(super) fn owner(&self, check_id: &str) -> Option<&str> {
        self.all_checks()
            .find(|(_, c)| c.definition.id == check_id)
            .map(|(s, _)| s)
    }
}

impl LocalAgent {
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
    #[cfg(test)]
    pub(crate) fn check(&self, check_id: &str) -> Option<LocalCheck> {
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
    pub(super) fn consul_service(&self) -> Option<ServiceRegistration> {
        self.identity.server.then(|| ServiceRegistration {
            id: CONSUL_SERVICE.into(),
            service: CONSUL_SERVICE.into(),
            tags: Vec::new(),
            address: String::new(),
            tagged_addresses: BTreeMap::new(),
            meta: Meta::from([("version".to_string(), self.identity.version.clone())]),
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
        def: ServiceDefinition,
        replace_existing_checks: bool,
        origin: Origin,
    ) -> Result<(), LocalError> {
        let mut def = def.with_defaults();
        def.validate()?;
        for c in &def.checks {
            self.permit(c, origin)?;
        }
        let new_checks = std::mem::take(&mut def.checks);

        let _serial = self.writes.write().await;
        {
            let state = self.read();
            for c in &new_checks {
                let id = &c.id;
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
            self.registration(Some(def.registration()), regs),
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
            self.ttl.forget(s.checks.keys());
        }
        self.changed();
        self.save_definitions().await;
        Ok(())
    }

    /// Whether a valid check from `origin` may run here: a script check
    /// only where the settings allow scripts from its origin.
    fn permit(&self, c: &CheckDefinition, origin: Origin) -> Result<(), LocalError> {
        if c.kind() == CheckKind::Script && !checks::scripts_allowed(&self.settings, origin) {
            return Err(LocalError::ScriptsDisabled);
        }
        Ok(())
    }

    /// Registers (or replaces) one check (`/v1/agent/check/register`). A
    /// check with a `service_id` belongs to that local service; otherwise it
    /// is a node check. A replaced check keeps its status unless `Status` is
    /// given.
    pub async fn register_check(
        &self,
        def: CheckDefinition,
        origin: Origin,
    ) -> Result<(), LocalError> {
        let def = def.with_defaults();
        def.validate()?;
        self.permit(&def, origin)?;
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
        self.ttl.forget([check_id]);
        self.changed();
        self.save_definitions().await;
        Ok(())
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
        if c.kind() == CheckKind::Ttl
            && let Some(saved) = self.ttl.take_saved(&c.id)
        {
            return (saved.status, saved.output);
        }
        (c.status.unwrap_or(HealthStatus::Critical), String::new())
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
            c.definition.kind() == CheckKind::Ttl
        };
        if ttl {
            self.save_ttls().await;
        }
        Ok(())
    }
}

/// The runners report here: the agent's own record, delegating to its
/// methods.
impl Sink for LocalAgent {
    fn record(
        &self,
        service_id: &str,
        check_id: &str,
        status: HealthStatus,
        output: String,
    ) -> impl Future<Output = Result<Recorded, LocalError>> + Send {
        Self::record(self, service_id, check_id, status, output)
    }

    fn flush(
        &self,
        service_id: &str,
        check_id: &str,
    ) -> impl Future<Output = Result<(), LocalError>> + Send {
        Self::flush(self, service_id, check_id)
    }

    fn deregister_service(
        &self,
        service_id: &str,
    ) -> impl Future<Output = Result<(), LocalError>> + Send {
        Self::deregister_service(self, service_id)
    }
}

/// The runners follow the map: which checks to run, and each TTL check's
/// updates.
impl CheckSource for LocalAgent {
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn wanted(&self) -> BTreeMap<String, WantedCheck> {
        self.read()
            .all_checks()
            .map(|(_, c)| {
                (
                    c.definition.id.clone(),
                    WantedCheck {
                        definition: c.definition.clone(),
                        status: c.status,
                    },
                )
            })
            .collect()
    }

    fn ttl_watch(&self, check_id: &str) -> watch::Receiver<TtlTouch> {
        self.ttl.watch(check_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::testing::{agent, ttl_check};
    use crate::reconcile::SERF_CHECK_ID;

    #[tokio::test]
    async fn clients_register_their_node_without_the_consul_service() {
        let (replica, client) = agent(false).await;
        client.register_self().await.unwrap();
        {
            let c = replica.read();
            assert_eq!(c.node("n1").unwrap().address, "10.0.0.1");
            assert_eq!(c.node_services("n1").count(), 0);
            let serf: Vec<_> = c.node_checks("n1").collect();
            assert_eq!(&*serf[0].check_id, SERF_CHECK_ID);
            assert_eq!(serf[0].status, HealthStatus::Passing);
        }

        let (replica, server) = agent(true).await;
        server.register_self().await.unwrap();
        let c = replica.read();
        let consul: Vec<_> = c.node_services("n1").collect();
        assert_eq!((&*consul[0].id, consul[0].port), (CONSUL_SERVICE, 8300));
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
}
