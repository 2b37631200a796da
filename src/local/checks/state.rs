//! The decisions a check makes with its results, as pure functions of the
//! results and the time: whether a result reaches the catalog now, later or
//! not at all ([`decide`]), when consecutive results change the status
//! ([`Thresholds`]) and when a critical check removes its service
//! ([`CriticalClock`]). No I/O, no clock reads: callers pass `now`.

use std::time::Duration;

use tokio::time::Instant;

use crate::catalog::HealthStatus;

/// What to do with one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write it to the catalog now.
    Write,
    /// Keep the output locally and write it at the given time, unless a
    /// status change writes it first.
    Defer(Instant),
    /// Nothing changed.
    Nothing,
}

/// Decides how a result reaches the catalog: status changes at once, so DNS
/// follows health without delay; output-only changes at most once per
/// `update_interval` since the last write, so a check whose output carries a
/// timestamp does not write to the Raft log on every run.
pub fn decide(
    old_status: HealthStatus,
    old_output: &str,
    status: HealthStatus,
    output: &str,
    written_at: Option<Instant>,
    now: Instant,
    update_interval: Duration,
) -> Decision {
    if status != old_status {
        return Decision::Write;
    }
    if output == old_output {
        return Decision::Nothing;
    }
    match written_at {
        Some(at) if now < at + update_interval => Decision::Defer(at + update_interval),
        _ => Decision::Write,
    }
}

/// Consecutive-result counters (`SuccessBeforePassing`,
/// `FailuresBeforeWarning`, `FailuresBeforeCritical`), as Consul counts them:
/// a warning result counts as a success, and below a threshold a result is
/// not reported at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    /// Successes needed before passing (0 and 1 both mean "at once").
    success_before_passing: u32,
    /// Failures needed before warning.
    failures_before_warning: u32,
    /// Failures needed before critical.
    failures_before_critical: u32,
    /// Consecutive successes so far.
    successes: u32,
    /// Consecutive failures so far.
    failures: u32,
}

impl Thresholds {
    /// Counters for the given thresholds; `failures_before_warning` of 0
    /// means the same as `failures_before_critical`, as in Consul.
    pub fn new(
        success_before_passing: u32,
        failures_before_warning: u32,
        failures_before_critical: u32,
    ) -> Self {
        let failures_before_warning = if failures_before_warning == 0 {
            failures_before_critical
        } else {
            failures_before_warning
        };
        Self {
            success_before_passing,
            failures_before_warning,
            failures_before_critical,
            successes: 0,
            failures: 0,
        }
    }

    /// Counts one result; returns the status to report, or `None` while a
    /// threshold is not reached yet.
    pub fn observe(&mut self, result: HealthStatus) -> Option<HealthStatus> {
        if result == HealthStatus::Critical {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.failures_before_critical {
                Some(HealthStatus::Critical)
            } else if self.failures >= self.failures_before_warning {
                Some(HealthStatus::Warning)
            } else {
                None
            }
        } else {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (self.successes >= self.success_before_passing).then_some(result)
        }
    }
}

/// How long a check has been critical, for `DeregisterCriticalServiceAfter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriticalClock {
    /// The setting; `None` never deregisters.
    after: Option<Duration>,
    /// Since when the check has been critical without a break.
    since: Option<Instant>,
}

impl CriticalClock {
    /// A clock for a check whose status is `status` at `now`.
    pub fn new(after: Option<Duration>, status: HealthStatus, now: Instant) -> Self {
        let mut c = Self { after, since: None };
        c.observe(status, now);
        c
    }

    /// Notes the check's status at `now`.
    pub fn observe(&mut self, status: HealthStatus, now: Instant) {
        if status == HealthStatus::Critical {
            self.since.get_or_insert(now);
        } else {
            self.since = None;
        }
    }

    /// When the service should be deregistered if nothing changes.
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.since? + self.after?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Critical, Passing, Warning};

    const MIN5: Duration = Duration::from_secs(300);

    #[test]
    fn status_changes_are_written_at_once() {
        let t0 = Instant::now();
        let d = decide(Critical, "x", Passing, "x", Some(t0), t0, MIN5);
        assert_eq!(d, Decision::Write);
    }

    #[test]
    fn output_changes_wait_for_the_update_interval() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            decide(Passing, "a", Passing, "b", Some(t0), later, MIN5),
            Decision::Defer(t0 + MIN5)
        );
        assert_eq!(
            decide(Passing, "a", Passing, "b", Some(t0), t0 + MIN5, MIN5),
            Decision::Write
        );
        assert_eq!(
            decide(Passing, "a", Passing, "b", None, later, MIN5),
            Decision::Write
        );
        assert_eq!(
            decide(Passing, "a", Passing, "a", Some(t0), later, MIN5),
            Decision::Nothing
        );
    }

    #[test]
    fn zero_thresholds_report_every_result() {
        let mut t = Thresholds::new(0, 0, 0);
        assert_eq!(t.observe(Critical), Some(Critical));
        assert_eq!(t.observe(Warning), Some(Warning));
        assert_eq!(t.observe(Passing), Some(Passing));
    }

    #[test]
    fn success_before_passing_counts_consecutive_successes() {
        let mut t = Thresholds::new(3, 0, 0);
        assert_eq!(t.observe(Passing), None);
        assert_eq!(t.observe(Passing), None);
        assert_eq!(t.observe(Critical), Some(Critical));
        assert_eq!(t.observe(Passing), None);
        assert_eq!(t.observe(Warning), None);
        assert_eq!(t.observe(Passing), Some(Passing));
    }

    #[test]
    fn failures_turn_warning_then_critical() {
        let mut t = Thresholds::new(0, 2, 4);
        assert_eq!(t.observe(Critical), None);
        assert_eq!(t.observe(Critical), Some(Warning));
        assert_eq!(t.observe(Critical), Some(Warning));
        assert_eq!(t.observe(Critical), Some(Critical));
        // A success resets the count.
        assert_eq!(t.observe(Passing), Some(Passing));
        assert_eq!(t.observe(Critical), None);
    }

    #[test]
    fn failures_before_warning_defaults_to_critical_threshold() {
        let mut t = Thresholds::new(0, 0, 2);
        assert_eq!(t.observe(Critical), None);
        assert_eq!(t.observe(Critical), Some(Critical));
    }

    #[test]
    fn the_critical_clock_runs_only_while_critical() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut c = CriticalClock::new(Some(Duration::from_secs(60)), Passing, t0);
        assert_eq!(c.deadline(), None);
        c.observe(Critical, s(10));
        c.observe(Critical, s(20));
        assert_eq!(c.deadline(), Some(s(70)));
        c.observe(Warning, s(30));
        assert_eq!(c.deadline(), None);
        c.observe(Critical, s(40));
        assert_eq!(c.deadline(), Some(s(100)));
        let never = CriticalClock::new(None, Critical, t0);
        assert_eq!(never.deadline(), None);
    }
}
