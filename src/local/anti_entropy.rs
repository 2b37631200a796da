//! Anti-entropy: makes this node's entries in the catalog match the local
//! state, which is the source of truth for them.
//!
//! Every change is written when it is made; this repairs what drifted
//! since: a service removed from the catalog behind the agent's back comes
//! back, one the agent no longer has is removed, a check whose status the
//! catalog lost is written again. [`plan`] compares the two and is pure;
//! [`LocalAgent::sync`] runs it against a replica made current first, with
//! every other local write held off, so the comparison sees a settled state.
//!
//! The node's `serfHealth` check belongs to the leader's reconciler (see
//! `reconcile`), so it is neither compared nor removed here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::maintenance::{node_maintenance_check, service_maintenance_check};
use super::{LocalAgent, LocalError};
use crate::catalog::{
    CheckRegistration, Command, Deregistration, Registration, Replica, ServiceRegistration, State,
};
use crate::reconcile::SERF_CHECK_ID;

/// What this node should look like in the catalog.
#[derive(Debug, Clone)]
pub(crate) struct Desired {
    /// The node alone: no service, no checks.
    pub(crate) node: Registration,
    /// Services by ID.
    pub(crate) services: BTreeMap<String, ServiceRegistration>,
    /// Checks by ID, node and service checks alike.
    pub(crate) checks: BTreeMap<String, CheckRegistration>,
}

/// The commands that bring `catalog` to `desired` for the node.
pub(crate) fn plan(desired: &Desired, catalog: &State) -> Vec<Command> {
    let name = desired.node.node.as_str();
    let mut cmds = Vec::new();
    let node_ok = catalog.node(name).is_some_and(|n| {
        n.id == desired.node.id
            && n.address == desired.node.address
            && n.tagged_addresses == desired.node.tagged_addresses
            && n.meta == desired.node.node_meta
    });
    if !node_ok {
        cmds.push(Command::register(desired.node.clone()));
    }

    let present: BTreeMap<&str, _> = catalog.node_services(name).map(|s| (&*s.id, s)).collect();
    // Services written whole (with their checks) below.
    let mut rewritten = BTreeSet::new();
    for (id, want) in &desired.services {
        let same = present.get(id.as_str()).is_some_and(|have| {
            *have.service == *want.service
                && (want.enable_tag_override || have.tags.same_as(&want.tags))
                && *have.address == *want.address
                && *have.tagged_addresses == want.tagged_addresses
                && have.meta == want.meta
                && have.port == want.port
                && have.weights == want.weights.unwrap_or_default()
                && have.enable_tag_override == want.enable_tag_override
        });
        if !same {
            rewritten.insert(id.as_str());
            let checks = desired
                .checks
                .values()
                .filter(|c| c.service_id == *id)
                .cloned()
                .collect();
            cmds.push(Command::register(Registration {
                service: Some(want.clone()),
                checks,
                skip_node_update: true,
                ..desired.node.clone()
            }));
        }
    }
    let mut removed = BTreeSet::new();
    for id in present.keys() {
        if !desired.services.contains_key(*id) {
            removed.insert(*id);
            cmds.push(Command::deregister(Deregistration {
                node: name.into(),
                service_id: (*id).into(),
                check_id: String::new(),
            }));
        }
    }

    let have_checks: BTreeMap<&str, _> = catalog
        .node_checks(name)
        .map(|c| (&*c.check_id, c))
        .collect();
    let stale: Vec<CheckRegistration> = desired
        .checks
        .values()
        .filter(|want| !rewritten.contains(want.service_id.as_str()))
        .filter(|want| {
            !have_checks.get(want.check_id.as_str()).is_some_and(|have| {
                *have.name == *want.name
                    && have.status == want.status
                    && *have.notes == *want.notes
                    && *have.output == *want.output
                    && *have.service_id == *want.service_id
                    && *have.kind == *want.kind
            })
        })
        .cloned()
        .collect();
    if !stale.is_empty() {
        cmds.push(Command::register(Registration {
            checks: stale,
            skip_node_update: true,
            ..desired.node.clone()
        }));
    }
    for (id, have) in &have_checks {
        let owned_elsewhere = *id == SERF_CHECK_ID || removed.contains(&*have.service_id);
        if !owned_elsewhere && !desired.checks.contains_key(*id) {
            cmds.push(Command::deregister(Deregistration {
                node: name.into(),
                service_id: String::new(),
                check_id: (*id).into(),
            }));
        }
    }
    cmds
}

impl LocalAgent {
    /// This node as the local state says it should be in the catalog.
    fn desired(&self) -> Desired {
        let state = self.read();
        let mut services: BTreeMap<String, ServiceRegistration> = state
            .services
            .values()
            .map(|s| (s.definition.id.clone(), s.definition.registration()))
            .collect();
        if let Some(consul) = self.consul_service() {
            services.insert(consul.id.clone(), consul);
        }
        let mut checks: BTreeMap<String, CheckRegistration> = state
            .all_checks()
            .map(|(service_id, c)| {
                (
                    c.definition.id.clone(),
                    self.check_registration(service_id, c),
                )
            })
            .collect();
        for (id, s) in &state.services {
            if let Some(reason) = &s.maintenance {
                let c = service_maintenance_check(id, reason.clone());
                checks.insert(c.check_id.clone(), c);
            }
        }
        if let Some(reason) = &state.node_maintenance {
            let c = node_maintenance_check(reason.clone());
            checks.insert(c.check_id.clone(), c);
        }
        Desired {
            node: self.registration(None, Vec::new()),
            services,
            checks,
        }
    }

    /// Compares this node in the catalog with the local state and writes
    /// what differs. Returns how many commands that took.
    pub async fn sync(&self, replica: &Replica) -> Result<usize, LocalError> {
        let _serial = self.writes.write().await;
        // Everything committed so far, this agent's own writes included,
        // must be in the replica, or a write in flight would read as drift.
        self.delegate.linearizable_read().await?;
        let cmds = plan(&self.desired(), &replica.read());
        let repairs = cmds.len();
        for cmd in cmds {
            match self.write(cmd).await {
                Ok(()) => {}
                // The catalog refuses what it cannot take (a name another
                // node holds); the rest is still worth repairing.
                Err(LocalError::Refused(e)) => {
                    tracing::warn!("anti-entropy: the catalog refused a repair: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(repairs)
    }
}

/// Syncs at once, then every `every` (with up to 10% jitter, so agents
/// restarted together do not sync together), until `stop`.
pub async fn run(
    local: Arc<LocalAgent>,
    replica: Arc<Replica>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        let synced = tokio::select! {
            () = stop.cancelled() => return,
            r = local.sync(&replica) => r,
        };
        match synced {
            Ok(0) => tracing::debug!("anti-entropy: in sync"),
            Ok(n) => tracing::info!(repairs = n, "anti-entropy: repaired the catalog"),
            Err(e) => tracing::info!("anti-entropy: sync failed, next round retries: {e}"),
        }
        let jitter = every.mul_f64(rand::random::<f64>() * 0.1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every + jitter) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::HealthStatus;
    use crate::definition::{CheckDefinition, Origin, ServiceDefinition};
    use crate::delegate::Delegate;
    use crate::local::testing::InProcess;

    /// A server agent over an in-memory one-server cluster, with one
    /// service (`web`, with a TTL check), one node check and `web` in
    /// maintenance.
    async fn agent() -> (Arc<Replica>, Delegate, Arc<LocalAgent>) {
        let InProcess {
            replica,
            delegate,
            local,
        } = InProcess::node(true).await;
        local.register_self().await.unwrap();
        let ttl = |id: &str| CheckDefinition {
            id: id.into(),
            ttl: Some(Duration::from_secs(30)),
            status: Some(HealthStatus::Passing),
            ..CheckDefinition::default()
        };
        let web = ServiceDefinition {
            name: "web".into(),
            port: 80,
            tags: vec!["a".into()],
            checks: vec![ttl("web-alive")],
            ..ServiceDefinition::default()
        };
        local.register_service(web, false).await.unwrap();
        local
            .register_check(ttl("disk"), Origin::Api)
            .await
            .unwrap();
        local.set_maintenance("web", true, None).await.unwrap();
        (replica, delegate, local)
    }

    fn deregister(service_id: &str, check_id: &str) -> Command {
        Command::deregister(Deregistration {
            node: "n1".into(),
            service_id: service_id.into(),
            check_id: check_id.into(),
        })
    }

    #[tokio::test]
    async fn an_agent_in_step_with_the_catalog_writes_nothing() {
        let (replica, _, local) = agent().await;
        assert_eq!(plan(&local.desired(), &replica.read()), Vec::new());
        assert_eq!(local.sync(&replica).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn what_was_removed_behind_the_agents_back_comes_back() {
        let (replica, delegate, local) = agent().await;
        let before = replica.read().clone();
        delegate.write(deregister("web", "")).await.unwrap();
        delegate.write(deregister("", "disk")).await.unwrap();
        assert_eq!(local.sync(&replica).await.unwrap(), 2);
        let after = replica.read().clone();
        let ids = |c: &State| -> Vec<String> {
            c.node_checks("n1")
                .map(|c| c.check_id.to_string())
                .collect()
        };
        assert_eq!(ids(&after), ids(&before));
        assert_eq!(
            after
                .node_services("n1")
                .map(|s| s.tags.clone())
                .collect::<Vec<_>>(),
            before
                .node_services("n1")
                .map(|s| s.tags.clone())
                .collect::<Vec<_>>()
        );
        assert_eq!(local.sync(&replica).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn what_the_agent_does_not_have_is_removed_and_changed_fields_restored() {
        let (replica, delegate, local) = agent().await;
        // Another writer adds a service and a check to this node, changes
        // the node's address and a check's status.
        let mut foreign = local.registration(
            Some(ServiceRegistration {
                port: 9,
                ..ServiceDefinition {
                    name: "ghost".into(),
                    id: "ghost".into(),
                    ..ServiceDefinition::default()
                }
                .registration()
            }),
            vec![CheckRegistration {
                check_id: "stray".into(),
                name: "stray".into(),
                status: HealthStatus::Passing,
                notes: String::new(),
                output: String::new(),
                service_id: String::new(),
                kind: "ttl".into(),
            }],
        );
        foreign.address = "10.9.9.9".into();
        delegate.write(Command::register(foreign)).await.unwrap();
        let mut flipped = local.registration(None, Vec::new());
        flipped.skip_node_update = true;
        flipped.checks = vec![CheckRegistration {
            check_id: "disk".into(),
            name: "disk".into(),
            status: HealthStatus::Critical,
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            kind: "ttl".into(),
        }];
        delegate.write(Command::register(flipped)).await.unwrap();

        // Node, the ghost service (its check goes with it... it has none),
        // the stray check, and the disk check's status.
        assert_eq!(local.sync(&replica).await.unwrap(), 4);
        let catalog = replica.read();
        assert_eq!(catalog.node("n1").unwrap().address, "10.0.0.1");
        let services: Vec<_> = catalog.node_services("n1").map(|s| &*s.id).collect();
        assert_eq!(services, ["consul", "web"]);
        let disk = catalog
            .node_checks("n1")
            .find(|c| &*c.check_id == "disk")
            .unwrap();
        assert_eq!(disk.status, HealthStatus::Passing);
        assert!(catalog.node_checks("n1").all(|c| &*c.check_id != "stray"));
    }

    #[tokio::test]
    async fn the_leaders_serf_health_check_is_left_alone() {
        let (replica, delegate, local) = agent().await;
        let mut serf = local.registration(None, Vec::new());
        serf.checks = vec![crate::reconcile::serf_check(
            crate::reconcile::Liveness::Failed,
        )];
        serf.skip_node_update = true;
        delegate.write(Command::register(serf)).await.unwrap();
        // The agent's own serfHealth (passing, as a lone server writes it)
        // is not in its desired set: the leader's word stands.
        let cmds = plan(&local.desired(), &replica.read());
        assert!(
            cmds.iter()
                .all(|c| !format!("{c:?}").contains(SERF_CHECK_ID)),
            "{cmds:?}"
        );
    }
}
