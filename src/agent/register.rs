//! Registering at start: the services and checks of the configuration
//! files and those saved from the API, then anti-entropy for as long as
//! the agent serves.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AgentError;
use crate::catalog::Replica;
use crate::config::ServiceSettings;
use crate::definition::{CheckDefinition, Origin, ServiceDefinition};
use crate::local;

/// Registering (a cluster member or a client serves its local state at
/// once and registers once the cluster has a leader, retrying until it
/// does), then anti-entropy. Not one of the serving tasks: its ending is
/// not a server stopping.
pub(super) fn upkeep(
    definitions: Definitions,
    local: Arc<local::LocalAgent>,
    replica: Arc<Replica>,
    lone: bool,
    every: Duration,
    token: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !lone {
            // Each new reason is logged once, so a wait that turns from
            // "no servers" into a refusal says so.
            let mut last = String::new();
            loop {
                let registered = tokio::select! {
                    () = token.cancelled() => return,
                    r = definitions.register(&local) => r,
                };
                match registered {
                    Ok(()) => break,
                    Err(e) => {
                        let why = e.to_string();
                        if why != last {
                            tracing::info!(
                                "registering this node once the cluster has a leader ({why})"
                            );
                            last = why;
                        }
                    }
                }
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            local.restored().await;
        }
        local::run_anti_entropy(local, replica, every, token).await;
    })
}

/// The services and checks to register at start: those of the configuration
/// files, validated before anything is registered, then those registered
/// over the API in an earlier run. Each with what it is called in errors.
pub(super) struct Definitions {
    services: Vec<(String, ServiceDefinition, Origin)>,
    checks: Vec<(String, CheckDefinition, Origin)>,
}

impl Definitions {
    pub(super) fn load(
        settings: &ServiceSettings,
        saved: Option<&std::path::Path>,
    ) -> Result<Self, AgentError> {
        let mut services = Vec::new();
        for def in &settings.services {
            let what = format!("service {:?} from the configuration", def.name);
            services.push((what, def.clone(), Origin::Config));
        }
        let mut checks = Vec::new();
        for def in &settings.checks {
            let name = if def.id.is_empty() {
                &def.name
            } else {
                &def.id
            };
            let what = format!("check {name:?} from the configuration");
            checks.push((what, def.clone(), Origin::Config));
        }
        if let Some(path) = saved {
            let saved = local::saved_definitions(path).map_err(|message| AgentError::Register {
                what: "the saved registrations".into(),
                message,
            })?;
            for def in saved.services {
                let what = format!("saved service {:?}", def.id);
                services.push((what, def, Origin::Api));
            }
            for def in saved.checks {
                let what = format!("saved check {:?}", def.id);
                checks.push((what, def, Origin::Api));
            }
        }
        Ok(Self { services, checks })
    }

    /// Registers this node, then the configured services and checks.
    pub(super) async fn register(&self, local: &local::LocalAgent) -> Result<(), AgentError> {
        let err = |what: &str, e: local::LocalError| AgentError::Register {
            what: what.to_string(),
            message: e.to_string(),
        };
        local
            .register_self()
            .await
            .map_err(|e| err("this node", e))?;
        // A saved registration this run no longer accepts (script checks
        // now disabled) is dropped with a warning; a configured one stops
        // the agent, as at first start. Failed writes are retried.
        let judge = |what: &str, origin: Origin, r: Result<(), local::LocalError>| match r {
            Err(e @ local::LocalError::Write(_)) => Err(err(what, e)),
            Err(e) if origin == Origin::Api => {
                tracing::warn!("{what} is not registered again: {e}");
                Ok(())
            }
            other => other.map_err(|e| err(what, e)),
        };
        for (what, def, origin) in &self.services {
            let r = local
                .register_service_from(def.clone(), false, *origin)
                .await;
            judge(what, *origin, r)?;
        }
        for (what, def, origin) in &self.checks {
            let r = local.register_check(def.clone(), *origin).await;
            judge(what, *origin, r)?;
        }
        Ok(())
    }
}
