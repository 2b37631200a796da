//! Finding the pool again while foca is not connected.
//!
//! foca runs its probe and announce timers only while it is connected. It
//! stops them when every member it knows is down (`Idle`), and when it
//! rejoins under a new generation (`Rejoin`: `change_identity` resets it to
//! disconnected, and only a packet it accepts afterwards connects it
//! again). Its one attempt to be heard after a rejoin is a gossip to the
//! identities it believes alive; if those have renewed too, their new
//! identities drop packets addressed to the old ones unread. When every
//! member of a healed partition rejoins at once (they all declared each
//! other down and each told the other so), all of them end up disconnected
//! with nothing scheduled, and the pool stays apart for good.
//!
//! So while disconnected the driver announces itself to a few known
//! addresses: foca accepts an announcement by address whatever generation
//! the receiver now has, learns our identity from it, and answers with its
//! member list, which connects us. It retries with a doubling interval
//! (from `join_retry` up to `announce_to_down_interval`) until foca says it
//! is active again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::seq::IteratorRandom as _;

use super::{Driver, Event};

/// Known addresses announced to per round: a few, so that one dead or
/// renewed-away address does not stall the round, and few enough that a
/// member alone for long sends next to nothing.
const ANNOUNCE_TARGETS: usize = 3;

impl Driver {
    /// foca stopped its timers: start announcing, unless already at it.
    pub(super) fn start_reconnect(&mut self, now: Instant) {
        if self.left || self.reconnect_interval.is_some() {
            return;
        }
        self.reconnect_interval = Some(self.profile.join_retry);
        self.reconnect_spell += 1;
        self.timers
            .schedule(now, Duration::ZERO, Event::Reconnect(self.reconnect_spell));
    }

    /// foca is connected again.
    pub(super) fn reconnected(&mut self) {
        self.reconnect_interval = None;
    }

    /// Announces to a few known addresses, and schedules the next round.
    pub(super) fn reconnect_round(&mut self, spell: u64, now: Instant) {
        let Some(interval) = self.reconnect_interval else {
            return; // connected meanwhile
        };
        if spell != self.reconnect_spell {
            return; // a round of an earlier spell, connected since
        }
        if self.left {
            self.reconnect_interval = None;
            return;
        }
        let addrs: HashSet<SocketAddr> = self
            .foca
            .iter_membership_state()
            .map(|m| m.id().addr())
            .filter(|addr| *addr != self.local_addr)
            .collect();
        let chosen = addrs
            .into_iter()
            .choose_multiple(&mut rand::rng(), ANNOUNCE_TARGETS);
        tracing::debug!(targets = chosen.len(), "not connected; announcing");
        for addr in chosen {
            self.announce_to(addr);
            if self.reconnect_interval.is_none() {
                return; // the answer connected us already
            }
        }
        self.reconnect_interval = Some((interval * 2).min(self.profile.announce_to_down_interval));
        self.timers
            .schedule(now, interval, Event::Reconnect(self.reconnect_spell));
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::Duration;

    use foca::{Member, State};
    use tokio::net::UdpSocket;
    use tokio::sync::{mpsc, watch};

    use super::super::{Counters, Driver, MemberList};
    use crate::gossip::identity::{MemberId, Role};
    use crate::gossip::membership::MemberStatus;
    use crate::gossip::profile::Profile;

    async fn driver(host: u8, name: &str) -> (Driver, watch::Receiver<MemberList>) {
        let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 1, host), 0))
            .await
            .expect("bind loopback");
        let addr = socket.local_addr().expect("local address");
        let id = MemberId::new(addr, name, uuid::Uuid::new_v4(), Role::Client, "dc1", None)
            .expect("identity");
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        let counters = Arc::new(Counters::default());
        let (refusal_tx, _) = watch::channel(None);
        let driver = Driver::new(id, socket, None, Profile::lan(), counters, tx, refusal_tx);
        (driver, rx)
    }

    /// What a healed partition can leave behind: each of two members
    /// believes the other's identity alive, then both are declared down and
    /// rejoin before hearing from each other, and their rejoin gossip is
    /// lost. Each then probes the other's previous identity, which the
    /// other no longer answers to, declares it down, and foca, with no
    /// active member left, stops every timer: neither would ever learn the
    /// other's new generation. Only the driver's announcements bring them
    /// together.
    #[tokio::test]
    async fn members_that_rejoin_at_once_find_each_other_again() {
        let (mut a, a_view) = driver(41, "a").await;
        let (mut b, b_view) = driver(42, "b").await;
        let (a_old, b_old) = (a.foca.identity().clone(), b.foca.identity().clone());
        for (me, other) in [(&mut a, &b_old), (&mut b, &a_old)] {
            let alive = Member::new(other.clone(), 0, State::Alive);
            me.foca
                .apply_many(std::iter::once(alive), false, &mut me.rt)
                .expect("learn the other");
            me.drain();
        }
        for me in [&mut a, &mut b] {
            let down = Member::new(me.foca.identity().clone(), 0, State::Down);
            me.foca
                .apply_many(std::iter::once(down), false, &mut me.rt)
                .expect("declared down");
            // The rejoin gossip crosses the other's own rejoin, or is lost.
            while me.rt.to_send().is_some() {}
            me.drain();
        }
        let (a_new, b_new) = (a.foca.identity().clone(), b.foca.identity().clone());
        assert!(a_new.generation() > a_old.generation());
        assert!(b_new.generation() > b_old.generation());

        let (a_ctl, a_rx) = mpsc::channel(1);
        let (b_ctl, b_rx) = mpsc::channel(1);
        let tasks = [tokio::spawn(a.run(a_rx)), tokio::spawn(b.run(b_rx))];
        for (mut view, other) in [(a_view, &b_new), (b_view, &a_new)] {
            let sees_other = view.wait_for(|ms| {
                ms.iter().any(|m| {
                    m.name == other.name()
                        && m.generation == other.generation()
                        && m.status == MemberStatus::Alive
                })
            });
            let seen = tokio::time::timeout(Duration::from_secs(10), sees_other)
                .await
                .is_ok_and(|r| r.is_ok());
            assert!(
                seen,
                "never saw {}'s new generation alive: {:?}",
                other.name(),
                view.borrow()
            );
        }
        drop((a_ctl, b_ctl));
        for task in tasks {
            task.await.expect("driver task");
        }
    }
}
