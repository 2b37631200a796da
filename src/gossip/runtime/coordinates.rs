//! Coordinate pings: one random live member per probe period (at least a
//! second apart: [`MIN_PING_INTERVAL`]), timed from
//! send to pong; a pong's round trip moves our Vivaldi coordinate
//! (`coordinate::Client`), and every ping and pong leaves its sender's
//! coordinate in the published map (`gossip::coordinates`).
//!
//! Under the cargo feature `test-delay` (never in a release build), pings
//! to members of other datacenters wait before they go out, by the sum of
//! both datacenters' delays in `TRELLIS_TEST_DELAY` (`dc2=20ms,dc3=80ms`):
//! a round trip between dc1 and dc2 then measures 20 ms more, dc2 to dc3
//! 100 ms more, within a datacenter nothing, so tests can order
//! datacenters on one machine with no netem.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::seq::IteratorRandom as _;

use super::{Driver, Event};
use crate::coordinate::client::MAX_RTT;
use crate::gossip::identity::MemberId;
use crate::gossip::wire::{self, CoordinateProbe};

/// The shortest time between two coordinate pings of one member: the LAN
/// profile probes every 200 ms, and a ping (about 90 bytes, 120 sealed)
/// and its pong five times a second would be five times what Consul's
/// serf spends (its coordinates ride on the probe acks, once a second);
/// Vivaldi's filter and step need no more than one sample a second.
pub(super) const MIN_PING_INTERVAL: Duration = Duration::from_secs(1);

/// How many pings may await their pong; one goes out a probe period and
/// a pong is useless after [`MAX_RTT`], so a few are plenty.
const PENDING: usize = 16;

/// A ping awaiting its pong.
#[derive(Debug)]
pub(super) struct PendingPing {
    /// The exchange's number.
    seq: u64,
    /// Who was pinged: the pong must come from there.
    to: MemberId,
    /// When the ping was handed to the socket (or to the test delay).
    sent: Instant,
}

/// The pings in flight.
#[derive(Debug, Default)]
pub(super) struct Pings {
    /// Oldest first.
    pending: VecDeque<PendingPing>,
    /// The next exchange's number.
    next_seq: u64,
}

impl Driver {
    /// Pings one random live member and schedules the next round.
    pub(super) fn coordinate_round(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.timers
            .schedule(now, self.coordinate_interval(), Event::CoordinatePing);
        let Some(target) = self
            .foca
            .iter_members()
            .map(|m| m.id().clone())
            .choose(&mut rand::rng())
        else {
            return;
        };
        let addr = target.addr();
        let dc = target.dc().to_owned();
        let probe = CoordinateProbe {
            seq: self.pings.next_seq,
            coordinate: self.vivaldi.coordinate().clone(),
        };
        wire::encode_coordinate(&probe, false, &mut self.frame_buf);
        let pings = &mut self.pings;
        pings.next_seq = pings.next_seq.wrapping_add(1);
        while pings
            .pending
            .front()
            .is_some_and(|p| now.duration_since(p.sent) > MAX_RTT || pings.pending.len() >= PENDING)
        {
            pings.pending.pop_front();
        }
        pings.pending.push_back(PendingPing {
            seq: probe.seq,
            to: target,
            sent: now,
        });
        self.send_ping(addr, &dc, now);
    }

    /// The time between two of our coordinate pings: a probe period, and
    /// at least [`MIN_PING_INTERVAL`].
    pub(super) fn coordinate_interval(&self) -> Duration {
        self.profile.probe_period.max(MIN_PING_INTERVAL)
    }

    /// A member pinged us: keep its coordinate and answer with ours.
    pub(super) fn on_coordinate_ping(&mut self, probe: CoordinateProbe, from: SocketAddr) {
        if self.left {
            return;
        }
        if let Some(name) = self.member_at(from) {
            self.keep_coordinate(&name, probe.coordinate);
        }
        let pong = CoordinateProbe {
            seq: probe.seq,
            coordinate: self.vivaldi.coordinate().clone(),
        };
        wire::encode_coordinate(&pong, true, &mut self.frame_buf);
        self.send_frame(from);
    }

    /// The answer to one of our pings: time it and learn from it.
    pub(super) fn on_coordinate_pong(&mut self, probe: CoordinateProbe, from: SocketAddr) {
        let Some(at) = self
            .pings
            .pending
            .iter()
            .position(|p| p.seq == probe.seq && p.to.addr() == from)
        else {
            return;
        };
        let Some(ping) = self.pings.pending.remove(at) else {
            return;
        };
        let rtt = super::now().saturating_duration_since(ping.sent);
        let name = ping.to.name().to_owned();
        match self.vivaldi.update(&name, &probe.coordinate, rtt) {
            Ok(own) => {
                let own = own.clone();
                let me = self.foca.identity().name().to_owned();
                self.coordinates.modify(|c| {
                    c.by_name.insert(me, own.clone());
                    c.own = own;
                });
            }
            Err(error) => {
                tracing::debug!(peer = %name, %error, "coordinate sample refused");
                return;
            }
        }
        self.keep_coordinate(&name, probe.coordinate);
    }

    /// Drops what we keep of members that left the membership.
    pub(super) fn prune_coordinates(&mut self, names: &[&str]) {
        let me = self.foca.identity().name().to_owned();
        let current = self.coordinates.get();
        let gone: Vec<String> = current
            .by_name
            .keys()
            .filter(|n| **n != me && !names.contains(&n.as_str()))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        for name in &gone {
            self.vivaldi.forget(name);
        }
        self.coordinates.modify(|c| {
            for name in &gone {
                c.by_name.remove(name);
            }
        });
    }

    fn keep_coordinate(&self, name: &str, coordinate: crate::coordinate::Coordinate) {
        if let Err(error) = self.coordinates.insert(name, coordinate) {
            tracing::debug!(peer = %name, %error, "peer coordinate refused");
        }
    }

    /// The name of the live member at `addr`, if it is one.
    fn member_at(&self, addr: SocketAddr) -> Option<String> {
        self.foca
            .iter_members()
            .find(|m| m.id().addr() == addr)
            .map(|m| m.id().name().to_owned())
    }

    /// Sends the ping framed in `frame_buf` to `to`.
    #[cfg(not(feature = "test-delay"))]
    fn send_ping(&mut self, to: SocketAddr, _dc: &str, _now: Instant) {
        self.send_frame(to);
    }

    /// Sends the ping framed in `frame_buf` to `to`, in datacenter `dc`,
    /// after the test delay between our datacenter and `dc` (the sum of
    /// both delays; none within a datacenter).
    #[cfg(feature = "test-delay")]
    fn send_ping(&mut self, to: SocketAddr, dc: &str, now: Instant) {
        let own = self.foca.identity().dc();
        let of = |dc: &str| self.test_delay.get(dc).copied().unwrap_or_default();
        let delay = if dc == own {
            Duration::ZERO
        } else {
            of(own) + of(dc)
        };
        if delay.is_zero() {
            self.send_frame(to);
            return;
        }
        let frame = self.frame_buf.clone();
        self.timers
            .schedule(now, delay, Event::DelayedSend { to, frame });
    }
}

/// Parses `TRELLIS_TEST_DELAY` (`dc2=20ms,dc3=80ms`); a malformed entry is
/// logged and skipped.
#[cfg(feature = "test-delay")]
pub(super) fn test_delays() -> std::collections::BTreeMap<String, Duration> {
    let Ok(spec) = std::env::var("TRELLIS_TEST_DELAY") else {
        return Default::default();
    };
    parse_delays(&spec)
        .inspect_err(|error| tracing::error!(%spec, %error, "TRELLIS_TEST_DELAY ignored"))
        .unwrap_or_default()
}

/// `dc=duration` pairs separated by commas.
#[cfg(any(feature = "test-delay", test))]
pub(super) fn parse_delays(
    spec: &str,
) -> Result<std::collections::BTreeMap<String, Duration>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (dc, delay) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not dc=duration"))?;
            let delay =
                humantime::parse_duration(delay.trim()).map_err(|e| format!("{pair:?}: {e}"))?;
            Ok((dc.trim().to_owned(), delay))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_per_datacenter_and_bad_entries_say_which() {
        let d = parse_delays("dc2=20ms, dc3=80ms").unwrap();
        assert_eq!(d["dc2"], Duration::from_millis(20));
        assert_eq!(d["dc3"], Duration::from_millis(80));
        assert!(parse_delays("").unwrap().is_empty());
        assert!(parse_delays("dc2").unwrap_err().contains("dc2"));
        assert!(parse_delays("dc2=soon").unwrap_err().contains("dc2=soon"));
    }
}
