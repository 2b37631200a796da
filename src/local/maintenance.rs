//! Maintenance: a service or the whole node taken out of every answer by a
//! critical check of Consul's naming, with the operator's reason as its
//! notes. The reason is kept in the map, so anti-entropy writes the check
//! again if the catalog loses it and a re-registration keeps it.

use crate::catalog::{CheckRegistration, Command, Deregistration, HealthStatus};

use super::{LocalAgent, LocalError};

/// Prefix of the critical check that puts a service into maintenance.
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The check ID of the node's maintenance check, as Consul names it.
pub const NODE_MAINTENANCE_CHECK: &str = "_node_maintenance";
/// Notes of a node maintenance check enabled without a reason.
const DEFAULT_NODE_MAINTENANCE_REASON: &str = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
/// Notes of a maintenance check enabled without a reason (Consul's wording).
const DEFAULT_MAINTENANCE_REASON: &str = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

impl LocalAgent {
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
}

/// The critical check that keeps service `id` in maintenance.
pub(super) fn service_maintenance_check(id: &str, notes: String) -> CheckRegistration {
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
pub(super) fn node_maintenance_check(notes: String) -> CheckRegistration {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ServiceDefinition;
    use crate::local::testing::{agent, ttl_check};

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
                .filter(|ch| &*ch.check_id == "_service_maintenance:web")
                .collect();
            assert_eq!(maint.len(), 1);
            assert_eq!(&*maint[0].notes, "first");
            assert!(c.health_service("web", &[], true).is_empty());
        }
        a.set_maintenance("web", false, None).await.unwrap();
        a.set_maintenance("web", false, None).await.unwrap();
        assert_eq!(a.service("web").unwrap().maintenance, None);
        assert_eq!(replica.read().health_service("web", &[], true).len(), 1);
    }
}
