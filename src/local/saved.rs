//! What the agent keeps in its data dir beside the Raft log: the services
//! and checks registered over the API ([`SavedDefinitions`], so a restarted
//! agent has them again), and the atomic writer every such small file goes
//! through ([`write_atomic`]), so a crash leaves the old file or the new
//! one, never half of either.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::LocalAgent;
use crate::definition::{CheckDefinition, Origin, ServiceDefinition};

/// What [`LocalAgent::with_definitions_file`](super::LocalAgent::with_definitions_file)
/// saves: the services (with their checks) and the checks registered over
/// the API. Its JSON form is the file's format: a data dir written by an
/// earlier release must read back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedDefinitions {
    /// Services, each with its checks' definitions in `checks`.
    pub services: Vec<ServiceDefinition>,
    /// Checks registered on their own: node checks, and checks added to a
    /// configured service.
    pub checks: Vec<CheckDefinition>,
}

impl SavedDefinitions {
    /// Adds what of `earlier` is not in these: services by ID (the name
    /// when the ID is empty), checks by ID (the name when empty).
    fn keep_unregistered(&mut self, earlier: &Self) {
        fn service_key(s: &ServiceDefinition) -> &str {
            if s.id.is_empty() { &s.name } else { &s.id }
        }
        fn check_key(c: &CheckDefinition) -> &str {
            if c.id.is_empty() { &c.name } else { &c.id }
        }
        let services: std::collections::HashSet<String> = self
            .services
            .iter()
            .map(|s| service_key(s).to_owned())
            .collect();
        let checks: std::collections::HashSet<String> = self
            .checks
            .iter()
            .map(|c| check_key(c).to_owned())
            .collect();
        self.services.extend(
            earlier
                .services
                .iter()
                .filter(|s| !services.contains(service_key(s)))
                .cloned(),
        );
        self.checks.extend(
            earlier
                .checks
                .iter()
                .filter(|c| !checks.contains(check_key(c)))
                .cloned(),
        );
    }

    /// Replaces the file at `path` with these definitions.
    async fn write(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        write_atomic(path, bytes).await
    }
}

impl LocalAgent {
    /// Saves the services and checks registered over the API, if there is a
    /// file for them. A failure is logged: the registration itself stands.
    pub(super) async fn save_definitions(&self) {
        let Some(path) = &self.definitions_file else {
            return;
        };
        let _one_at_a_time = self.saving.lock().await;
        let mut saved = {
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
        if !self.restored.load(std::sync::atomic::Ordering::Acquire) {
            // Not restored yet: what the previous run saved and is not
            // registered again stays in the file. Nothing of it can have
            // been deregistered meanwhile: only what is registered can be.
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = pending.as_ref() {
                saved.keep_unregistered(p);
            }
        }
        if let Err(e) = saved.write(path).await {
            tracing::warn!(file = %path.display(), "saving the registered services failed: {e}");
        }
    }

    /// The registrations saved by the previous run are registered again:
    /// from now on every change is saved.
    pub async fn restored(&self) {
        self.restored
            .store(true, std::sync::atomic::Ordering::Release);
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.save_definitions().await;
    }
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

/// Replaces the file at `path` with `bytes`: write a temporary file beside
/// it, sync it, rename it over. Creates the parent directory if needed.
pub(super) async fn write_atomic(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::definition::Origin;
    use crate::local::NodeIdentity;
    use crate::local::testing::{InProcess, ttl_check};

    #[tokio::test]
    async fn api_registrations_are_saved_before_and_after_the_saved_ones_are_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local").join("definitions.json");
        let identity = NodeIdentity::for_tests("n1", "10.0.0.1", false);
        let InProcess { local, .. } =
            InProcess::start(identity, |l| l.with_definitions_file(path.clone())).await;
        let def = |name: &str| ServiceDefinition {
            name: name.into(),
            port: 80,
            checks: vec![ttl_check(None)],
            ..ServiceDefinition::default()
        };
        // Before the restore the registration is written at once (beside
        // whatever the previous run saved: nothing here).
        local.register_service(def("web"), false).await.unwrap();
        let names: Vec<_> = saved_definitions(&path)
            .unwrap()
            .services
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["web"]);
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

    #[test]
    fn definitions_saved_by_a_v1_data_dir_read_back_byte_for_byte() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/datadir-v1/local/definitions.json");
        let saved = saved_definitions(&path).unwrap();
        let ids: Vec<_> = saved.services.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["cache-1", "db-1", "web-1", "web-2"]);
        let ttl = &saved.services[1].checks[0];
        assert_eq!(ttl.kind(), crate::definition::CheckKind::Ttl);
        assert_eq!(ttl.ttl, Some(Duration::from_secs(600)));
        // The definition types are the file's format: written again, the
        // file is the same bytes.
        assert_eq!(
            serde_json::to_vec(&saved).unwrap(),
            std::fs::read(&path).unwrap()
        );
    }

    fn service(id: &str, port: u16) -> ServiceDefinition {
        ServiceDefinition {
            id: id.into(),
            name: "web".into(),
            port,
            ..ServiceDefinition::default()
        }
    }

    fn ids(path: &Path) -> Vec<(String, u16)> {
        let mut v: Vec<_> = saved_definitions(path)
            .expect("read")
            .services
            .into_iter()
            .map(|s| (s.id, s.port))
            .collect();
        v.sort();
        v
    }

    /// An API registration acknowledged before the previous run's
    /// registrations are back is on disk at once, beside them (a kill
    /// right after it lost it before).
    #[tokio::test]
    async fn a_registration_before_the_restore_is_saved_beside_the_earlier_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("definitions.json");
        let earlier = SavedDefinitions {
            services: vec![service("old", 1), service("both", 2)],
            checks: Vec::new(),
        };
        earlier.write(&path).await.expect("write");
        let p = path.clone();
        let node = InProcess::start(NodeIdentity::for_tests("n1", "10.0.0.1", true), |l| {
            l.with_definitions_file(p)
        })
        .await;
        node.local.register_self().await.expect("self");
        node.local
            .register_service(service("new", 3), false)
            .await
            .expect("new");
        node.local
            .register_service(service("both", 4), false)
            .await
            .expect("both");
        // Saved already, the earlier `old` kept, `both` as registered now.
        assert_eq!(
            ids(&path),
            [("both".into(), 4), ("new".into(), 3), ("old".into(), 1)]
        );
        // Once restored, the file is what is registered: `old` was not
        // registered again by this run, so it is gone.
        node.local.restored().await;
        assert_eq!(ids(&path), [("both".into(), 4), ("new".into(), 3)]);
    }
}
