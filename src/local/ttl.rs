//! TTL checks on the agent's side: the application's updates
//! (`/v1/agent/check/pass|warn|fail|update`) are recorded like any result,
//! then "touch" the check's channel so its runner restarts its timer; and
//! each TTL check's last status is kept in the data dir, so an agent restart
//! does not turn a healthy application critical until its next update.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::checks::Recorded;
use super::checks::ttl::TtlTouch;
use super::{LocalAgent, LocalError};
use crate::catalog::HealthStatus;
use crate::definition::CheckKind;

/// The file TTL states are kept in, under the checks state directory.
const STATE_FILE: &str = "ttl-state.json";

/// The TTL checks' channels and the states saved by the previous run.
#[derive(Debug, Default)]
pub(super) struct TtlState {
    /// Per TTL check: the last update, for its runner's timer.
    touches: Mutex<HashMap<String, watch::Sender<TtlTouch>>>,
    /// TTL check states saved by the previous run, taken when the check is
    /// registered again.
    saved: Mutex<HashMap<String, SavedTtl>>,
}

impl TtlState {
    /// The states saved in `dir` that are still within their TTL.
    pub(super) fn restore(dir: &Path) -> Self {
        let saved = load_states(dir);
        Self {
            touches: Mutex::default(),
            saved: Mutex::new(saved.into_iter().filter(|(_, s)| s.fresh()).collect()),
        }
    }

    /// The saved state of a check registered again, once.
    pub(super) fn take_saved(&self, check_id: &str) -> Option<SavedTtl> {
        // Entries are inserted and removed whole, so a panic elsewhere
        // cannot leave the map half-written.
        self.saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(check_id)
    }

    fn sender(&self, check_id: &str) -> watch::Sender<TtlTouch> {
        let mut touches = self.touches.lock().unwrap_or_else(|e| e.into_inner());
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

    /// The channel a TTL check's runner watches for updates.
    pub(super) fn watch(&self, check_id: &str) -> watch::Receiver<TtlTouch> {
        self.sender(check_id).subscribe()
    }

    /// Drops the channels of removed checks.
    pub(super) fn forget<S: AsRef<str>>(&self, ids: impl IntoIterator<Item = S>) {
        let mut touches = self.touches.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            touches.remove(id.as_ref());
        }
    }
}

impl LocalAgent {
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
            let kind = state.check(owner, check_id).map(|c| c.definition.kind());
            (owner.to_string(), kind)
        };
        if kind != Some(CheckKind::Ttl) {
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
        self.ttl.sender(check_id).send_replace(touch);
        Ok(())
    }

    /// Saves every TTL check's state to the state directory, if there is one.
    pub(super) async fn save_ttls(&self) {
        let Some(dir) = &self.check_state_dir else {
            return;
        };
        let _one_at_a_time = self.saving.lock().await;
        let states: HashMap<String, SavedTtl> = self
            .read()
            .all_checks()
            .filter(|(_, c)| c.definition.kind() == CheckKind::Ttl)
            .map(|(_, c)| {
                let ttl = c.definition.ttl.unwrap_or_default();
                (
                    c.definition.id.clone(),
                    SavedTtl::new(c.status, c.output.clone(), ttl),
                )
            })
            .collect();
        if let Err(e) = save_states(dir, &states).await {
            tracing::warn!(dir = %dir.display(), "saving TTL check states failed: {e}");
        }
    }
}

/// A TTL check's last status as kept in the data directory. Kept only as
/// long as the TTL would have kept it alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedTtl {
    /// The status.
    #[serde(rename = "Status")]
    pub(super) status: HealthStatus,
    /// The output.
    #[serde(rename = "Output")]
    pub(super) output: String,
    /// Wall-clock milliseconds since the epoch after which the state is stale.
    #[serde(rename = "ExpiresUnixMs")]
    pub(super) expires_unix_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SavedTtl {
    /// A state saved now for a check with this TTL.
    fn new(status: HealthStatus, output: String, ttl: Duration) -> Self {
        Self {
            status,
            output,
            expires_unix_ms: unix_ms(SystemTime::now() + ttl),
        }
    }

    /// Whether the state is still within its TTL.
    fn fresh(&self) -> bool {
        unix_ms(SystemTime::now()) < self.expires_unix_ms
    }
}

/// Reads saved TTL states; a missing or unreadable file is no state (with a
/// warning for the latter: the agent still starts).
pub(super) fn load_states(dir: &Path) -> HashMap<String, SavedTtl> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), "ignoring unreadable TTL check state: {e}");
            HashMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), "ignoring unreadable TTL check state: {e}");
            HashMap::new()
        }
    }
}

/// Replaces the saved TTL states, atomically (write, sync, rename).
pub(super) async fn save_states(
    dir: &Path,
    states: &HashMap<String, SavedTtl>,
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(states).map_err(std::io::Error::other)?;
    super::saved::write_atomic(&dir.join(STATE_FILE), bytes).await
}
