//! Timing profiles: the numbers that decide how fast a dead member is found
//! and how hard it is to accuse a live one, with the arithmetic behind them.
//!
//! # The LAN profile
//!
//! Goal: a member killed outright is declared failed by the others in a
//! median of at most 1.0 s and at most 1.5 s, while no live member is
//! declared failed under a CPU hog and 5% packet loss. memberlist's LAN
//! defaults (probe every 1 s, ack within 500 ms, suspicion at least 4 s)
//! take 5 to 6.6 s.
//!
//! Detection of a dead member X is the sum of four waits:
//!
//! 1. Until some member probes X. Each of the k = N − 1 others probes one
//!    member per period P, going round a shuffled list, so each probes X
//!    once per k periods at a random point: P(wait > t) ≈ (1 − t/kP)^k.
//!    For 6 members (k = 5) the median is 0.64 P, the 90th percentile 1.85 P
//!    and the 99th 3.0 P; for large pools it tends to an exponential with
//!    median 0.69 P, 90th percentile 2.3 P, 99th 4.6 P.
//! 2. P again: foca turns a probe into a suspicion at the prober's next tick.
//! 3. The suspicion timeout S, the time X has to refute.
//! 4. Spreading the verdict: the driver gossips a member's failure to
//!    [`Profile::indirect_probes`] members the moment it learns it, and each
//!    of them does the same, so every member knows within a few network
//!    hops (milliseconds on a LAN).
//!
//! With P = 200 ms and S = 300 ms: for 6 members the median is
//! 0.13 + 0.2 + 0.3 ≈ 0.63 s, the 90th percentile ≈ 0.87 s and the 99th
//! ≈ 1.1 s; for large pools 0.64 s, 0.96 s and 1.42 s. Measured in-process
//! (6 members on loopback, `DETECT_TRIALS=20` in the bench, two runs of 20
//! kills): medians 0.71 s and 0.70 s, maxima 1.21 s and 0.91 s. The test pools start together and tick in
//! step, so the wait for the first probe there comes in whole periods.
//!
//! A live member is declared failed only if two things go wrong together:
//!
//! * A probe of it fails: the ping or its ack is lost (1 − 0.95² ≈ 9.8% at
//!   5% loss) and so are all three indirect probes, four hops each
//!   ((1 − 0.95⁴)³ ≈ 0.63%): 6.2 · 10⁻⁴ per probe. Six members probing five
//!   times a second raise about 5.6 suspicions in five minutes. A starved
//!   process must miss the direct window (80 ms) and the indirect one
//!   (120 ms) before it is even suspected.
//! * The refutation fails for S. The suspecter sends the suspect a
//!   suspicion notice at once and every 50 ms while the suspicion stands
//!   (6 notices in S); the suspect answers each by raising its incarnation
//!   and announcing itself straight to the suspecter. One exchange is lost
//!   with probability 1 − 0.95² ≈ 9.8%, six with 9 · 10⁻⁷, before counting
//!   the ordinary rumour path. So at 5% loss a false failure is a
//!   once-in-a-million-five-minutes event; what remains is a process
//!   unresponsive for half a second (200 ms of probe window, then 300 ms
//!   of notices). Measured with the bench's soak (6 members, encrypted, 4
//!   busy threads competing for the 2 cores, loss simulated on send): 5%
//!   loss for 300 s showed 6 suspicions and no failure; 20% loss for 60 s
//!   showed 72 suspicions and no failure (suspicions refuted within
//!   milliseconds are often not seen at all, so these are lower bounds).
//!
//! Without the notice, the suspect would learn of the suspicion only when
//! the rumour reached it by random gossip (hundreds of milliseconds), and
//! its refutation would need as long to come back: too slow for S.
//!
//! Local health (Lifeguard's idea, which foca lacks): a member that sees its
//! own timers fire late, its own probes fail, or others suspect it, is more
//! likely the slow party than its targets. Its score (0 to
//! [`Profile::max_health_score`]) stretches its probe period and direct-ack
//! wait by (1 + score), so it probes less and waits longer before accusing;
//! each successful probe lowers the score again. The suspicion timeout is
//! not stretched: a truly dead member's failed probe raises the score too,
//! and detection must not slow down for it. Only the member whose own probe
//! failed counts it: the others hear of the suspicion too (foca schedules
//! the same timer in each), and when they counted it every failure slowed
//! the whole pool's probing, which pushed the next detection in real
//! processes past 1.5 s.
//!
//! Bandwidth: P = 200 ms is five probes a second where memberlist sends one,
//! so a member sends and receives about 20 datagrams a second. The compact
//! codec (`codec.rs`) keeps a ping or ack to 35 bytes (64 sealed): about
//! 0.7 kB/s per member in the clear and 1.3 kB/s encrypted, sent plus
//! received, flat in the pool size. `benches/gossip_bandwidth.rs` measures
//! it and sets it against memberlist.

//! # The WAN profile
//!
//! The servers of every datacenter form a second pool (`Profile::wan`).
//! Goal: a dead remote server is declared failed within about 10 s at the
//! 99th percentile, while a live one across a 300 ms round trip with 5%
//! loss is never declared failed. memberlist's WAN defaults (probe every
//! 5 s, ack within 3 s, suspicion 6 · max(1, log10 N) · 5 s, up to six
//! times more under Lifeguard) take 30 s to 3 minutes: the research calls
//! that pain, since the route to a dead server stays in use meanwhile.
//!
//! The same four waits as on the LAN, with RTT = 300 ms:
//!
//! * The direct ack needs one round trip: `probe_rtt` = 450 ms = 1.5 RTT,
//!   the half round trip spare for queueing. The indirect probe travels
//!   four hops (two round trips, 600 ms when the helper is as far), so the
//!   rest of the period must hold 2 RTT and some: P = 1.2 s leaves 750 ms.
//! * S = 3 s: the suspect has ten round trips to refute. Notices go out
//!   every 400 ms (seven in S), each answered within one round trip; at 5%
//!   loss one exchange fails with probability 9.8%, seven with 5 · 10⁻⁸.
//!   A false failure further needs the probe to fail first: the direct
//!   ping or ack lost (9.8%) and all three indirect probes
//!   ((1 − 0.95⁴)³ ≈ 0.63%), 6.2 · 10⁻⁴ per probe.
//! * Detection, for 6 servers (k = 5): median 0.64 P + P + S ≈ 5.0 s,
//!   99th percentile 3.0 P + P + S ≈ 7.8 s; for large pools the 99th
//!   percentile tends to 4.6 P + P + S ≈ 9.7 s.
//! * Gossip every 500 ms to 3 members (memberlist's WAN interval; Consul's
//!   effective fan-out), each update piggybacked up to 8 times (more than
//!   the LAN's 6, for the loss a WAN link has).
//!
//! Measured in-process on loopback (`WAN=1 DETECT_TRIALS=5` in
//! `benches/gossip_bandwidth.rs`, 6 servers of 2 datacenters): from a kill
//! to failed on every other member, median 4.9 s, max 5.6 s; real agents
//! in `tests/integration/wan.rs` take 4.4 to 6.6 s. The bench's soak
//! (`WAN=1 SOAK_SECS`, 6 encrypted servers, 4 busy threads on the 2 cores,
//! loss simulated on send): 5% loss for 120 s showed no suspicion and no
//! failure; 20% loss for 60 s showed 40 suspicions and no failure. Loopback
//! has no 300 ms round trip to add (no netem here): that margin rests on
//! the arithmetic above.
//!
//! Bandwidth: 0.83 probes a second per server instead of the LAN's 5. The
//! same bench measures, per member, sent plus received at steady state:
//! 126 B/s (3.6 datagrams a second; 230 B/s encrypted) for 2 datacenters
//! of 3 servers, 138 B/s (233 B/s encrypted) for 5 of 5, flat in the pool
//! size.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{Config, PeriodicParams};

/// Largest foca packet, before framing and sealing: below a 1500-byte
/// Ethernet MTU with room for IP, UDP, the frame byte and the seal.
pub const MAX_PACKET_SIZE: usize = 1400;

/// The numbers that tune the gossip layer. Build one with [`Profile::lan`].
///
/// Gossip's own type, not a part of the configuration's `GossipSettings`:
/// none of these is a user setting (Consul exposes no such knobs either),
/// and they only make sense together, derived as the module doc shows;
/// benches and soak tests build other profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// How often each member probes one other (P).
    pub probe_period: Duration,
    /// How long a probe waits for a direct ack before asking others to
    /// probe indirectly.
    pub probe_rtt: Duration,
    /// How many members are asked to probe indirectly; also how many the
    /// driver gossips a failure to at once.
    pub indirect_probes: usize,
    /// How long a suspect has to refute before it is declared failed (S).
    pub suspicion_timeout: Duration,
    /// How often a suspicion notice is resent while the suspicion stands.
    pub notice_interval: Duration,
    /// How many notices one suspicion sends at most.
    pub notice_attempts: u32,
    /// How many times each update is piggybacked before it is dropped.
    pub max_transmissions: u8,
    /// How often pending updates are gossiped.
    pub gossip_interval: Duration,
    /// How many members each gossip round reaches.
    pub gossip_fanout: usize,
    /// How often a member asks a random other for its member list, which
    /// repairs views that missed updates (memberlist's push/pull).
    pub announce_interval: Duration,
    /// How often a member announces itself to members it believes failed,
    /// which heals partitions.
    pub announce_to_down_interval: Duration,
    /// How long a failed or left member is remembered.
    pub remove_down_after: Duration,
    /// Highest local-health score; the probe period stretches up to
    /// (1 + this) times.
    pub max_health_score: u32,
    /// A timer that fires this late counts against local health.
    pub late_timer: Duration,
    /// How long `join` keeps announcing before it gives up.
    pub join_timeout: Duration,
    /// How often `join` re-announces while it waits.
    pub join_retry: Duration,
    /// How many times `leave` gossips its departure before stopping.
    pub leave_rounds: u32,
    /// The pause between those rounds.
    pub leave_round_interval: Duration,
    /// Outgoing datagrams dropped on purpose, per thousand: a stand-in for a
    /// lossy network in soak tests, where no netem is at hand. 0 in every
    /// real profile.
    pub simulated_loss_per_mille: u16,
}

impl Default for Profile {
    fn default() -> Self {
        Self::lan()
    }
}

impl Profile {
    /// The LAN profile; the module doc derives its numbers.
    pub fn lan() -> Self {
        Self {
            probe_period: Duration::from_millis(200),
            probe_rtt: Duration::from_millis(80),
            indirect_probes: 3,
            suspicion_timeout: Duration::from_millis(300),
            notice_interval: Duration::from_millis(50),
            notice_attempts: 6,
            max_transmissions: 6,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            announce_interval: Duration::from_secs(30),
            // Serf retries a failed member every 30 s; a partition that
            // heals should be over in seconds. An announce to a member that
            // is really dead costs one small datagram.
            announce_to_down_interval: Duration::from_secs(5),
            remove_down_after: Duration::from_secs(72 * 3600),
            max_health_score: 8,
            late_timer: Duration::from_millis(40),
            join_timeout: Duration::from_secs(3),
            join_retry: Duration::from_millis(200),
            leave_rounds: 3,
            leave_round_interval: Duration::from_millis(50),
            simulated_loss_per_mille: 0,
        }
    }

    /// The WAN profile, for the pool of every datacenter's servers; the
    /// module doc derives its numbers.
    pub fn wan() -> Self {
        Self {
            probe_period: Duration::from_millis(1200),
            probe_rtt: Duration::from_millis(450),
            indirect_probes: 3,
            suspicion_timeout: Duration::from_secs(3),
            notice_interval: Duration::from_millis(400),
            notice_attempts: 7,
            max_transmissions: 8,
            gossip_interval: Duration::from_millis(500),
            gossip_fanout: 3,
            announce_interval: Duration::from_secs(30),
            // A cut WAN link that heals should federate again within the
            // 10 s the issue asks of cross-datacenter calls.
            announce_to_down_interval: Duration::from_secs(5),
            // Consul's reconnect_timeout_wan.
            remove_down_after: Duration::from_secs(72 * 3600),
            max_health_score: 8,
            // The process's own timers, not the network: as on the LAN.
            late_timer: Duration::from_millis(40),
            join_timeout: Duration::from_secs(5),
            join_retry: Duration::from_millis(500),
            leave_rounds: 3,
            leave_round_interval: Duration::from_millis(100),
            simulated_loss_per_mille: 0,
        }
    }

    /// foca's configuration for this profile.
    pub(crate) fn foca_config(&self) -> Config {
        let nonzero = |n: usize| NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN);
        Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nonzero(self.indirect_probes),
            max_transmissions: NonZeroU8::new(self.max_transmissions.max(1))
                .unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: self.suspicion_timeout,
            remove_down_after: Some(self.remove_down_after),
            max_packet_size: nonzero(MAX_PACKET_SIZE),
            // A member declared down hears so at once and rejoins with a new
            // generation instead of talking into the void.
            notify_down_members: true,
            periodic_announce: Some(PeriodicParams {
                frequency: self.announce_interval,
                num_members: NonZeroUsize::MIN,
            }),
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: self.announce_to_down_interval,
                num_members: nonzero(2),
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: self.gossip_interval,
                num_members: nonzero(self.gossip_fanout),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_profile_leaves_room_for_the_indirect_cycle() {
        let p = Profile::lan();
        // foca requires rtt < period; the indirect window is the rest.
        assert!(p.probe_rtt < p.probe_period);
        assert!(p.probe_period - p.probe_rtt >= p.probe_rtt);
        // Every notice goes out while the suspicion still stands.
        assert!(p.notice_interval * (p.notice_attempts - 1) < p.suspicion_timeout);
    }

    #[test]
    fn foca_config_carries_the_profile() {
        let p = Profile::lan();
        let c = p.foca_config();
        assert_eq!(c.probe_period, p.probe_period);
        assert_eq!(c.suspect_to_down_after, p.suspicion_timeout);
        assert_eq!(c.max_packet_size.get(), MAX_PACKET_SIZE);
    }

    #[test]
    fn wan_profile_fits_two_round_trips_of_300_ms_in_the_indirect_window() {
        let p = Profile::wan();
        let rtt = Duration::from_millis(300);
        assert!(p.probe_rtt >= rtt + rtt / 2);
        assert!(p.probe_period - p.probe_rtt >= 2 * rtt);
        assert!(p.notice_interval * (p.notice_attempts - 1) < p.suspicion_timeout);
        assert!(
            p.notice_interval > rtt,
            "a notice is answered before the next"
        );
        assert!(p.suspicion_timeout >= 10 * rtt);
    }

    /// The WAN arithmetic of the module doc: a dead server is failed within
    /// 10 s at the 99th percentile, in a pool of 6 and in a large one.
    #[test]
    fn wan_detection_stays_under_ten_seconds() {
        let p = Profile::wan();
        let period = p.probe_period.as_secs_f64();
        let rest = (p.probe_period + p.suspicion_timeout).as_secs_f64();
        let k = 5.0_f64;
        let median = k * (1.0 - 0.5_f64.powf(1.0 / k)) * period + rest;
        let p99 = k * (1.0 - 0.01_f64.powf(1.0 / k)) * period + rest;
        let p99_large = 0.01_f64.ln().abs() * period + rest;
        assert!(median < 5.5, "{median}");
        assert!(p99 < 8.0, "{p99}");
        assert!(p99_large < 10.0, "{p99_large}");
    }

    /// The detection arithmetic of the module doc, recomputed: the median
    /// of the wait for the first probe with k probers each probing X once
    /// per k periods.
    #[test]
    fn documented_median_detection_is_under_a_second() {
        let p = Profile::lan();
        let k = 5.0_f64;
        let first_probe = k * (1.0 - 0.5_f64.powf(1.0 / k)) * p.probe_period.as_secs_f64();
        let median = first_probe + (p.probe_period + p.suspicion_timeout).as_secs_f64();
        assert!(median < 0.8, "{median}");
        let p99 = k * (1.0 - 0.01_f64.powf(1.0 / k)) * p.probe_period.as_secs_f64()
            + (p.probe_period + p.suspicion_timeout).as_secs_f64();
        assert!(p99 < 1.5, "{p99}");
    }
}
