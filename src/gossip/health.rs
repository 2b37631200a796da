//! Local health: how much this member trusts its own sense of time, and the
//! pacing of its probes that follows (the reasoning is in `profile.rs`).
//!
//! foca asks for its probe timers at fixed delays; the driver passes them
//! through [`Pacer`], which stretches them while this member looks unhealthy
//! and makes sure the indirect-probe window is never cut short because the
//! member itself ran late. Pure: instants come in as arguments.

use std::time::{Duration, Instant};

/// The timers the pacer treats specially; everything else passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeTimer {
    /// foca's `ProbeRandomMember`: ends one probe, starts the next.
    Probe,
    /// foca's `SendIndirectProbe`: the direct-ack wait is over.
    Indirect,
    /// Any other timer.
    Other,
}

/// What to do with a timer that came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Hand it to foca now.
    Deliver,
    /// Put it back until then: delaying is always safe for foca, losing is
    /// not.
    Postpone(Instant),
}

/// The local-health score and the probe pacing built on it.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// 0 when healthy, up to `max_score`.
    score: u32,
    /// The cap on `score`.
    max_score: u32,
    /// A timer later than this counts against health.
    late_timer: Duration,
    /// The probe period, as configured in foca.
    probe_period: Duration,
    /// The direct-ack wait, as configured in foca.
    probe_rtt: Duration,
    /// When the current probe's indirect phase really began (the
    /// `SendIndirectProbe` delivery), if it has.
    indirect_began: Option<Instant>,
    /// The score when the current probe began, which sized its windows.
    probe_multiplier: u32,
}

impl Pacer {
    /// A healthy pacer for foca's probe period and direct-ack wait.
    pub fn new(
        probe_period: Duration,
        probe_rtt: Duration,
        max_score: u32,
        late_timer: Duration,
    ) -> Self {
        Self {
            score: 0,
            max_score,
            late_timer,
            probe_period,
            probe_rtt,
            indirect_began: None,
            probe_multiplier: 1,
        }
    }

    /// The current score: 0 is healthy.
    pub fn score(&self) -> u32 {
        self.score
    }

    /// How many times longer than configured the probe timers run now.
    pub fn multiplier(&self) -> u32 {
        1 + self.score
    }

    fn raise(&mut self) {
        self.score = (self.score + 1).min(self.max_score);
    }

    /// One of this member's probes got no ack, direct or indirect.
    pub fn probe_failed(&mut self) {
        self.raise();
    }

    /// One of this member's probes was acked.
    pub fn probe_succeeded(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    /// Another member told this one it is suspected: this member was slow
    /// to answer, so it is likely slow to judge too.
    pub fn suspected(&mut self) {
        self.raise();
    }

    /// The delay to schedule for a timer foca asked for `requested` from
    /// now. Probe timers stretch with the score; the two of one probe
    /// stretch alike, so the indirect timer still comes first.
    pub fn delay(&mut self, timer: ProbeTimer, requested: Duration) -> Duration {
        match timer {
            // foca asks for the indirect timer first when it starts a probe,
            // then for the next probe timer, in one call: both see one score.
            ProbeTimer::Indirect => {
                self.probe_multiplier = self.multiplier();
                self.indirect_began = None;
                requested * self.probe_multiplier
            }
            ProbeTimer::Probe => requested * self.multiplier(),
            ProbeTimer::Other => requested,
        }
    }

    /// Decides about a timer that came due `lateness` after its deadline.
    pub fn on_due(&mut self, timer: ProbeTimer, now: Instant, lateness: Duration) -> Decision {
        if lateness > self.late_timer {
            self.raise();
        }
        match timer {
            ProbeTimer::Indirect => {
                self.indirect_began = Some(now);
                Decision::Deliver
            }
            ProbeTimer::Probe => {
                // If this member delivered the indirect timer late, the
                // indirect probes went out late: give them their whole
                // window before judging the target.
                let window =
                    self.probe_period.saturating_sub(self.probe_rtt) * self.probe_multiplier;
                match self.indirect_began {
                    Some(began) if now < began + window => Decision::Postpone(began + window),
                    _ => {
                        self.indirect_began = None;
                        Decision::Deliver
                    }
                }
            }
            ProbeTimer::Other => Decision::Deliver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(200);
    const RTT: Duration = Duration::from_millis(80);

    fn pacer() -> Pacer {
        Pacer::new(P, RTT, 8, Duration::from_millis(40))
    }

    #[test]
    fn healthy_member_keeps_the_configured_pace() {
        let mut p = pacer();
        assert_eq!(p.delay(ProbeTimer::Probe, P), P);
        assert_eq!(p.delay(ProbeTimer::Indirect, RTT), RTT);
        assert_eq!(
            p.delay(ProbeTimer::Other, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn failed_probes_stretch_the_probe_timers_and_successes_shrink_them() {
        let mut p = pacer();
        p.probe_failed();
        p.probe_failed();
        assert_eq!(p.delay(ProbeTimer::Probe, P), P * 3);
        assert_eq!(p.delay(ProbeTimer::Indirect, RTT), RTT * 3);
        p.probe_succeeded();
        p.probe_succeeded();
        p.probe_succeeded();
        assert_eq!(p.score(), 0);
        assert_eq!(p.delay(ProbeTimer::Probe, P), P);
    }

    #[test]
    fn the_score_is_capped() {
        let mut p = pacer();
        for _ in 0..100 {
            p.suspected();
        }
        assert_eq!(p.score(), 8);
        assert_eq!(p.multiplier(), 9);
    }

    #[test]
    fn late_timers_count_against_health() {
        let mut p = pacer();
        let now = Instant::now();
        p.on_due(ProbeTimer::Other, now, Duration::from_millis(10));
        assert_eq!(p.score(), 0);
        p.on_due(ProbeTimer::Other, now, Duration::from_millis(100));
        assert_eq!(p.score(), 1);
    }

    #[test]
    fn a_late_indirect_phase_still_gets_its_whole_window() {
        let mut p = pacer();
        let t0 = Instant::now();
        p.delay(ProbeTimer::Indirect, RTT);
        p.delay(ProbeTimer::Probe, P);
        // The indirect timer was due at t0 + 80 ms but ran at t0 + 190 ms.
        let began = t0 + Duration::from_millis(190);
        assert_eq!(
            p.on_due(ProbeTimer::Indirect, began, Duration::from_millis(10)),
            Decision::Deliver
        );
        // The probe timer at t0 + 200 ms must wait until 190 + 120 ms.
        let at = t0 + P;
        assert_eq!(
            p.on_due(ProbeTimer::Probe, at, Duration::ZERO),
            Decision::Postpone(began + (P - RTT))
        );
        assert_eq!(
            p.on_due(ProbeTimer::Probe, began + (P - RTT), Duration::ZERO),
            Decision::Deliver
        );
    }

    #[test]
    fn a_punctual_probe_cycle_is_not_postponed() {
        let mut p = pacer();
        let t0 = Instant::now();
        p.delay(ProbeTimer::Probe, P);
        p.on_due(ProbeTimer::Indirect, t0 + RTT, Duration::ZERO);
        assert_eq!(
            p.on_due(ProbeTimer::Probe, t0 + P, Duration::ZERO),
            Decision::Deliver
        );
    }
}
