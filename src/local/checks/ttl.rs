//! TTL checks: the application reports its own health
//! (`/v1/agent/check/pass|warn|fail|update`); if it stops reporting for
//! longer than the TTL, the check turns critical.
//!
//! Updates are recorded by the HTTP handler through
//! [`LocalAgent::ttl_update`](crate::local::LocalAgent::ttl_update),
//! which then "touches" the check through a [`TtlTouch`] channel, defined
//! here: the loop watches the touches and restarts its timer on each one.

use std::sync::Arc;
use std::time::Duration;

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
    use crate::local::checks::runner::tests::{Event, RecordingSink};
    use crate::local::checks::state::Thresholds;
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
            crate::local::checks::Recorded::Deferred(at) => Some(at),
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
