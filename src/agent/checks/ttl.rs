//! TTL checks: the application reports its own health
//! (`/v1/agent/check/pass|warn|fail|update`); if it stops reporting for
//! longer than the TTL, the check turns critical.
//!
//! Updates are recorded by the HTTP handler through
//! [`LocalAgent::ttl_update`](crate::agent::local::LocalAgent::ttl_update),
//! which then "touches" the check: the loop here watches the touches and
//! restarts its timer on each one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::runner::{Plan, Sink, Timers};
use crate::catalog::HealthStatus;

/// The latest update of a TTL check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlTouch {
    /// When it came.
    pub at: Instant,
    /// The status it set.
    pub status: HealthStatus,
    /// When its batched output is due, if it was batched.
    pub flush_at: Option<Instant>,
}

/// The output of an expired TTL check.
pub fn expired_output(ttl: Duration) -> String {
    format!(
        "TTL expired: no update in {}",
        humantime::format_duration(ttl)
    )
}

/// A TTL check's last status as kept in the data directory, so an agent
/// restart does not turn a healthy application critical until its next
/// update. Kept only as long as the TTL would have kept it alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedTtl {
    /// The status.
    #[serde(rename = "Status")]
    pub status: HealthStatus,
    /// The output.
    #[serde(rename = "Output")]
    pub output: String,
    /// Wall-clock milliseconds since the epoch after which the state is stale.
    #[serde(rename = "ExpiresUnixMs")]
    pub expires_unix_ms: u64,
}

/// The file TTL states are kept in, under the checks state directory.
pub const STATE_FILE: &str = "ttl-state.json";

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SavedTtl {
    /// A state saved now for a check with this TTL.
    pub fn new(status: HealthStatus, output: String, ttl: Duration) -> Self {
        Self {
            status,
            output,
            expires_unix_ms: unix_ms(SystemTime::now() + ttl),
        }
    }

    /// Whether the state is still within its TTL.
    pub fn fresh(&self) -> bool {
        unix_ms(SystemTime::now()) < self.expires_unix_ms
    }
}

/// Reads saved TTL states; a missing or unreadable file is no state (with a
/// warning for the latter: the agent still starts).
pub fn load_states(dir: &Path) -> HashMap<String, SavedTtl> {
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
pub async fn save_states(dir: &Path, states: &HashMap<String, SavedTtl>) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(states).map_err(std::io::Error::other)?;
    crate::agent::persist::write_atomic(&dir.join(STATE_FILE), bytes).await
}

/// Runs a TTL check until it is removed (its touch channel closes or the
/// task is aborted) or its service is deregistered. The TTL counts from the
/// start of the loop (registration) and from every update.
pub(crate) async fn run_ttl<S: Sink>(
    sink: Arc<S>,
    plan: Plan,
    ttl: Duration,
    mut touches: watch::Receiver<TtlTouch>,
) {
    touches.borrow_and_update();
    let mut timers = Timers::new(&plan);
    let mut expires = Some(Instant::now() + ttl);
    loop {
        tokio::select! {
            biased;
            changed = touches.changed() => {
                if changed.is_err() {
                    return;
                }
                let touch = *touches.borrow_and_update();
                expires = Some(touch.at + ttl);
                if let Some(at) = touch.flush_at {
                    timers.flush_at.get_or_insert(at);
                }
                timers.critical.observe(touch.status, touch.at);
            }
            timer = timers.next() => {
                if !timers.fire(sink.as_ref(), &plan, timer).await {
                    return;
                }
            }
            () = sleep_until(expires.unwrap_or_else(Instant::now)), if expires.is_some() => {
                expires = None;
                let status = HealthStatus::Critical;
                let r = sink
                    .record(&plan.service_id, &plan.check_id, status, expired_output(ttl))
                    .await;
                if !timers.recorded(&plan, status, r) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::checks::runner::tests::{Event, RecordingSink};
    use crate::agent::checks::state::Thresholds;
    use HealthStatus::{Critical, Passing};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn plan(status: HealthStatus, deregister_after: Option<Duration>) -> Plan {
        Plan {
            service_id: "web".into(),
            check_id: "ttl".into(),
            interval: Duration::ZERO,
            first_run: Duration::ZERO,
            thresholds: Thresholds::default(),
            deregister_after,
            status,
        }
    }

    /// Records an update in the sink and touches the check, as
    /// `LocalAgent::ttl_update` does.
    async fn update(
        sink: &RecordingSink,
        tx: &watch::Sender<TtlTouch>,
        status: HealthStatus,
        output: &str,
    ) {
        let r = sink
            .record("web", "ttl", status, output.into())
            .await
            .unwrap();
        let flush_at = match r {
            crate::agent::checks::Recorded::Deferred(at) => Some(at),
            _ => None,
        };
        tx.send_replace(TtlTouch {
            at: Instant::now(),
            status,
            flush_at,
        });
    }

    fn touch_channel() -> (watch::Sender<TtlTouch>, watch::Receiver<TtlTouch>) {
        watch::channel(TtlTouch {
            at: Instant::now(),
            status: Critical,
            flush_at: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn updates_reset_the_timer_and_silence_expires_it() {
        let sink = RecordingSink::new(secs(300));
        let (tx, rx) = touch_channel();
        let task = tokio::spawn(run_ttl(sink.clone(), plan(Critical, None), secs(30), rx));
        update(&sink, &tx, Passing, "fine").await;
        // Updates every 20 s keep a 30 s TTL alive.
        for _ in 0..3 {
            tokio::time::sleep(secs(20)).await;
            update(&sink, &tx, Passing, "fine").await;
        }
        // Then silence: it expires 30 s after the last update (t = 60 s).
        let ev = sink.wait_events(2).await;
        task.abort();
        assert_eq!(
            ev,
            vec![
                (secs(0), Event::Write(Passing, "fine".into())),
                (secs(90), Event::Write(Critical, expired_output(secs(30)))),
            ]
        );
        assert!(expired_output(secs(30)).contains("TTL expired"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ttl_check_never_updated_expires_after_one_ttl() {
        let sink = RecordingSink::new(secs(300));
        sink.state.lock().unwrap().status = Passing;
        let (_tx, rx) = touch_channel();
        let task = tokio::spawn(run_ttl(sink.clone(), plan(Passing, None), secs(15), rx));
        let ev = sink.wait_events(1).await;
        task.abort();
        assert_eq!(ev[0].0, secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn batched_ttl_output_is_flushed_by_the_loop() {
        let sink = RecordingSink::new(secs(60));
        let (tx, rx) = touch_channel();
        let task = tokio::spawn(run_ttl(sink.clone(), plan(Critical, None), secs(3600), rx));
        update(&sink, &tx, Passing, "v1").await;
        tokio::time::sleep(secs(5)).await;
        update(&sink, &tx, Passing, "v2").await;
        let ev = sink.wait_events(2).await;
        task.abort();
        assert_eq!(ev[1], (secs(60), Event::Write(Passing, "v2".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_ttl_check_deregisters_its_service_after_the_limit() {
        let sink = RecordingSink::new(secs(300));
        let (_tx, rx) = touch_channel();
        let task = tokio::spawn(run_ttl(
            sink.clone(),
            plan(Passing, Some(secs(60))),
            secs(10),
            rx,
        ));
        let ev = sink.wait_events(2).await;
        tokio::time::timeout(secs(1), task).await.unwrap().unwrap();
        assert_eq!(ev[0].0, secs(10));
        assert_eq!(ev[1], (secs(70), Event::Deregister("web".into())));
    }
}
