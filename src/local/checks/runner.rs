//! The loop one interval check (HTTP, TCP, script) runs in: probe on a
//! fixed cadence, count results, record them, flush batched output, and
//! remove the service when the check stayed critical too long.
//!
//! Each check has its own task, so a slow or hung target delays only its own
//! next run (by at most its timeout); nothing here waits on another check.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::Recorded;
use super::state::{CriticalClock, Thresholds};
use crate::catalog::HealthStatus;
use crate::local::LocalError;

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What the probe found.
    pub status: HealthStatus,
    /// What it said, capped at [`MAX_OUTPUT`](crate::definition::MAX_OUTPUT).
    pub output: String,
}

/// Something that can be probed: an HTTP URL, a TCP address, a script.
pub(crate) trait Probe: Send + Sync + 'static {
    /// Runs the probe once, within its own timeout.
    fn run(&self) -> impl Future<Output = CheckResult> + Send;
}

/// Where a check's results go; the agent's
/// [`LocalAgent`](crate::local::LocalAgent) (its registry implements this),
/// a recorder in tests.
pub trait Sink: Send + Sync + 'static {
    /// Records one result (see [`LocalAgent::record`](crate::local::LocalAgent::record)).
    fn record(
        &self,
        service_id: &str,
        check_id: &str,
        status: HealthStatus,
        output: String,
    ) -> impl Future<Output = Result<Recorded, LocalError>> + Send;

    /// Writes batched output now (see [`LocalAgent::flush`](crate::local::LocalAgent::flush)).
    fn flush(
        &self,
        service_id: &str,
        check_id: &str,
    ) -> impl Future<Output = Result<(), LocalError>> + Send;

    /// Removes the check's service (`DeregisterCriticalServiceAfter`).
    fn deregister_service(
        &self,
        service_id: &str,
    ) -> impl Future<Output = Result<(), LocalError>> + Send;
}

/// What a check's loop needs to know besides its probe.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The service the check belongs to ("" for a node check).
    pub service_id: String,
    /// The check.
    pub check_id: String,
    /// Time between the starts of two runs.
    pub interval: Duration,
    /// Delay before the first run, to spread many checks over the interval.
    pub first_run: Duration,
    /// Consecutive-result thresholds.
    pub thresholds: Thresholds,
    /// `DeregisterCriticalServiceAfter` (service checks only).
    pub deregister_after: Option<Duration>,
    /// The check's status when the loop starts.
    pub status: HealthStatus,
}

/// Timers shared by the interval and TTL loops: a batched-output flush and
/// the deregister-after deadline.
#[derive(Debug)]
pub(crate) struct Timers {
    /// When batched output is due.
    pub flush_at: Option<Instant>,
    /// How long the check has been critical.
    pub critical: CriticalClock,
}

impl Timers {
    /// Timers for a check with `status` now.
    pub(crate) fn new(plan: &Plan) -> Self {
        let after = plan
            .deregister_after
            .filter(|_| !plan.service_id.is_empty());
        Self {
            flush_at: None,
            critical: CriticalClock::new(after, plan.status, Instant::now()),
        }
    }

    /// Applies what recording a result with `status` did. Returns false when
    /// the check is gone and its loop should end.
    pub(crate) fn recorded(
        &mut self,
        plan: &Plan,
        status: HealthStatus,
        r: Result<Recorded, LocalError>,
    ) -> bool {
        match r {
            Ok(Recorded::Gone) => return false,
            Ok(Recorded::Deferred(at)) => {
                self.flush_at.get_or_insert(at);
            }
            Ok(Recorded::Written) => self.flush_at = None,
            Ok(Recorded::Unchanged) => {}
            Err(e) => {
                tracing::warn!(check = %plan.check_id, error = %e, "recording a check result failed");
                return true;
            }
        }
        self.critical.observe(status, Instant::now());
        true
    }

    /// Waits for the next timer; returns which fired.
    pub(crate) async fn next(&self) -> Timer {
        let far = || Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            () = sleep_until(self.flush_at.unwrap_or_else(far)), if self.flush_at.is_some() => Timer::Flush,
            () = sleep_until(self.critical.deadline().unwrap_or_else(far)), if self.critical.deadline().is_some() => Timer::Deregister,
            else => std::future::pending().await,
        }
    }

    /// Runs a fired timer. Returns false when the loop should end.
    pub(crate) async fn fire<S: Sink>(&mut self, sink: &S, plan: &Plan, timer: Timer) -> bool {
        match timer {
            Timer::Flush => {
                self.flush_at = None;
                if let Err(e) = sink.flush(&plan.service_id, &plan.check_id).await {
                    tracing::warn!(check = %plan.check_id, error = %e, "writing batched check output failed");
                }
                true
            }
            Timer::Deregister => {
                tracing::info!(
                    check = %plan.check_id,
                    service = %plan.service_id,
                    "check critical for longer than DeregisterCriticalServiceAfter; deregistering the service"
                );
                match sink.deregister_service(&plan.service_id).await {
                    Ok(()) | Err(LocalError::UnknownService(_)) => false,
                    Err(e) => {
                        tracing::warn!(service = %plan.service_id, error = %e, "deregistering a critical service failed");
                        // Try again a little later rather than spin.
                        self.critical = CriticalClock::new(
                            Some(Duration::from_secs(10)),
                            HealthStatus::Critical,
                            Instant::now(),
                        );
                        true
                    }
                }
            }
        }
    }
}

/// A timer of [`Timers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Batched output is due.
    Flush,
    /// The service should be deregistered.
    Deregister,
}

/// Runs an interval check until it is removed (the task is aborted) or its
/// service is deregistered.
pub(crate) async fn run_interval<S: Sink, P: Probe>(sink: Arc<S>, probe: P, plan: Plan) {
    let mut thresholds = plan.thresholds;
    let mut timers = Timers::new(&plan);
    let mut next_run = Instant::now() + plan.first_run;
    loop {
        tokio::select! {
            // Timers first, so a flush and a run due together resolve the
            // same way every time.
            biased;
            timer = timers.next() => {
                if !timers.fire(sink.as_ref(), &plan, timer).await {
                    return;
                }
            }
            () = sleep_until(next_run) => {
                let result = probe.run().await;
                // Runs keep their cadence; one that overran starts the next at once
                // but never queues several.
                next_run += plan.interval;
                let now = Instant::now();
                if next_run < now {
                    next_run = now;
                }
                if let Some(status) = thresholds.observe(result.status) {
                    let r = sink.record(&plan.service_id, &plan.check_id, status, result.output).await;
                    if !timers.recorded(&plan, status, r) {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::local::checks::state::{Decision, decide};
    use HealthStatus::{Critical, Passing};

    /// What a [`RecordingSink`] was asked to do, with the (paused) time.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Event {
        /// A write of status and output.
        Write(HealthStatus, String),
        /// A deregistration.
        Deregister(String),
    }

    /// A sink that keeps one check's state and batches output as the agent
    /// does, logging every catalog write with its time.
    #[derive(Debug)]
    pub(crate) struct RecordingSink {
        pub(crate) state: Mutex<SinkState>,
        pub(crate) update_interval: Duration,
        pub(crate) start: Instant,
    }

    #[derive(Debug)]
    pub(crate) struct SinkState {
        pub(crate) status: HealthStatus,
        pub(crate) output: String,
        pub(crate) written_at: Option<Instant>,
        pub(crate) dirty: bool,
        pub(crate) events: Vec<(Duration, Event)>,
    }

    impl RecordingSink {
        pub(crate) fn new(update_interval: Duration) -> Arc<Self> {
            Arc::new(Self {
                state: Mutex::new(SinkState {
                    status: Critical,
                    output: String::new(),
                    written_at: None,
                    dirty: false,
                    events: Vec::new(),
                }),
                update_interval,
                start: Instant::now(),
            })
        }

        pub(crate) fn events(&self) -> Vec<(Duration, Event)> {
            self.state.lock().unwrap().events.clone()
        }

        /// Lets spawned tasks run until `n` events were logged, advancing the
        /// paused clock as they sleep.
        pub(crate) async fn wait_events(&self, n: usize) -> Vec<(Duration, Event)> {
            for _ in 0..100_000 {
                if self.events().len() >= n {
                    return self.events();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never saw {n} events: {:?}", self.events());
        }
    }

    impl Sink for RecordingSink {
        async fn record(
            &self,
            _: &str,
            _: &str,
            status: HealthStatus,
            output: String,
        ) -> Result<Recorded, LocalError> {
            let now = Instant::now();
            let mut s = self.state.lock().unwrap();
            match decide(
                s.status,
                &s.output,
                status,
                &output,
                s.written_at,
                now,
                self.update_interval,
            ) {
                Decision::Nothing => Ok(Recorded::Unchanged),
                Decision::Defer(at) => {
                    s.output = output;
                    s.dirty = true;
                    Ok(Recorded::Deferred(at))
                }
                Decision::Write => {
                    s.status = status;
                    s.output = output.clone();
                    s.written_at = Some(now);
                    s.dirty = false;
                    s.events
                        .push((now - self.start, Event::Write(status, output)));
                    Ok(Recorded::Written)
                }
            }
        }

        async fn flush(&self, _: &str, _: &str) -> Result<(), LocalError> {
            let now = Instant::now();
            let mut s = self.state.lock().unwrap();
            if s.dirty {
                s.dirty = false;
                s.written_at = Some(now);
                let e = Event::Write(s.status, s.output.clone());
                s.events.push((now - self.start, e));
            }
            Ok(())
        }

        async fn deregister_service(&self, service_id: &str) -> Result<(), LocalError> {
            let now = Instant::now();
            let mut s = self.state.lock().unwrap();
            s.events
                .push((now - self.start, Event::Deregister(service_id.into())));
            Ok(())
        }
    }

    /// A probe that replays scripted results, then repeats the last one.
    struct Scripted(Mutex<VecDeque<CheckResult>>);

    impl Scripted {
        fn new(results: &[(HealthStatus, &str)]) -> Self {
            Self(Mutex::new(
                results
                    .iter()
                    .map(|(s, o)| CheckResult {
                        status: *s,
                        output: o.to_string(),
                    })
                    .collect(),
            ))
        }
    }

    impl Probe for Scripted {
        async fn run(&self) -> CheckResult {
            let mut q = self.0.lock().unwrap();
            if q.len() > 1 {
                q.pop_front().unwrap()
            } else {
                q[0].clone()
            }
        }
    }

    fn plan(interval: u64) -> Plan {
        Plan {
            service_id: "web".into(),
            check_id: "c".into(),
            interval: Duration::from_secs(interval),
            first_run: Duration::ZERO,
            thresholds: Thresholds::default(),
            deregister_after: None,
            status: Critical,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn status_changes_are_written_on_the_run_that_sees_them() {
        let sink = RecordingSink::new(secs(300));
        let probe = Scripted::new(&[(Passing, "ok"), (Passing, "ok"), (Critical, "down")]);
        let task = tokio::spawn(run_interval(sink.clone(), probe, plan(10)));
        let ev = sink.wait_events(2).await;
        task.abort();
        assert_eq!(
            ev,
            vec![
                (secs(0), Event::Write(Passing, "ok".into())),
                (secs(20), Event::Write(Critical, "down".into())),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn output_only_changes_are_batched_per_update_interval() {
        let sink = RecordingSink::new(secs(60));
        // The output changes on every run (every 10 s), the status never.
        let results: Vec<(HealthStatus, String)> =
            (0..20).map(|i| (Passing, format!("run {i}"))).collect();
        let refs: Vec<(HealthStatus, &str)> =
            results.iter().map(|(s, o)| (*s, o.as_str())).collect();
        let task = tokio::spawn(run_interval(sink.clone(), Scripted::new(&refs), plan(10)));
        let ev = sink.wait_events(3).await;
        task.abort();
        // The first result changes the status; the next output is written a
        // full update interval later, carrying the newest output then.
        assert_eq!(
            ev,
            vec![
                (secs(0), Event::Write(Passing, "run 0".into())),
                (secs(60), Event::Write(Passing, "run 5".into())),
                (secs(120), Event::Write(Passing, "run 11".into())),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_delay_status_changes() {
        let sink = RecordingSink::new(secs(300));
        let probe = Scripted::new(&[
            (Passing, "ok"),
            (Passing, "ok"),
            (Critical, "down"),
            (Critical, "down"),
            (Critical, "down"),
        ]);
        let mut p = plan(1);
        p.thresholds = Thresholds::new(2, 0, 3);
        let task = tokio::spawn(run_interval(sink.clone(), probe, p));
        let ev = sink.wait_events(2).await;
        task.abort();
        assert_eq!(
            ev,
            vec![
                (secs(1), Event::Write(Passing, "ok".into())),
                (secs(4), Event::Write(Critical, "down".into())),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_critical_for_too_long_deregisters_its_service() {
        let sink = RecordingSink::new(secs(300));
        let probe = Scripted::new(&[(Passing, "ok"), (Critical, "down")]);
        let mut p = plan(10);
        p.status = Passing;
        p.deregister_after = Some(secs(60));
        let task = tokio::spawn(run_interval(sink.clone(), probe, p));
        let ev = sink.wait_events(3).await;
        // The loop ends by itself after deregistering.
        tokio::time::timeout(secs(1), task).await.unwrap().unwrap();
        assert_eq!(
            ev,
            vec![
                (secs(0), Event::Write(Passing, "ok".into())),
                (secs(10), Event::Write(Critical, "down".into())),
                (secs(70), Event::Deregister("web".into())),
            ]
        );
    }
}
