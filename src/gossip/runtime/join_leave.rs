//! Joining, leaving and forcing a failed member out: the requests the
//! handle makes of the pool, each answered when its outcome is known.

use std::net::SocketAddr;
use std::time::Instant;

use foca::State;
use tokio::sync::oneshot;

use super::{Driver, Event, now};
use crate::gossip::GossipError;
use crate::gossip::identity::MemberId;
use crate::gossip::membership::LeaveNotice;

/// How many joins may wait for an answer at once; more are refused as
/// busy rather than queued.
const MAX_PENDING_JOINS: usize = 64;

/// A join waiting for an answer.
#[derive(Debug)]
pub(super) struct PendingJoin {
    id: u64,
    addr: SocketAddr,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), GossipError>>,
}

impl Driver {
    fn knows_active(&self, addr: SocketAddr) -> bool {
        self.foca.iter_members().any(|m| m.id().addr() == addr)
    }

    pub(super) fn start_join(
        &mut self,
        addr: SocketAddr,
        reply: oneshot::Sender<Result<(), GossipError>>,
    ) {
        if self.left {
            let _ = reply.send(Err(GossipError::Stopped));
            return;
        }
        if addr == self.local_addr {
            let _ = reply.send(Err(GossipError::JoinSelf(addr)));
            return;
        }
        if self.knows_active(addr) {
            let _ = reply.send(Ok(()));
            return;
        }
        if self.joins.len() >= MAX_PENDING_JOINS {
            let _ = reply.send(Err(GossipError::Busy));
            return;
        }
        let now = now();
        let id = self.next_join;
        self.next_join += 1;
        self.joins.push(PendingJoin {
            id,
            addr,
            deadline: now + self.profile.join_timeout,
            reply,
        });
        self.announce_to(addr);
        self.timers
            .schedule(now, self.profile.join_retry, Event::JoinRetry(id));
    }

    pub(super) fn announce_to(&mut self, addr: SocketAddr) {
        if let Err(error) = self
            .foca
            .announce(MemberId::placeholder(addr), &mut self.rt)
        {
            tracing::warn!(%addr, %error, "could not announce");
        }
        self.drain();
    }

    pub(super) fn retry_join(&mut self, id: u64, now: Instant) {
        let Some(index) = self.joins.iter().position(|j| j.id == id) else {
            return; // answered already
        };
        if now >= self.joins[index].deadline {
            let join = self.joins.swap_remove(index);
            let _ = join.reply.send(Err(GossipError::JoinTimeout {
                addr: join.addr,
                waited: self.profile.join_timeout,
            }));
            return;
        }
        let addr = self.joins[index].addr;
        self.announce_to(addr);
        self.timers
            .schedule(now, self.profile.join_retry, Event::JoinRetry(id));
    }

    pub(super) fn start_leave(&mut self, reply: oneshot::Sender<()>) {
        if self.left {
            let _ = reply.send(());
            return;
        }
        let me = self.foca.identity().clone();
        if let Err(error) = self.foca.add_broadcast(&LeaveNotice::of(&me).encode()) {
            tracing::warn!(%error, "could not queue the departure notice");
        }
        if let Err(error) = self.foca.leave_cluster(&mut self.rt) {
            tracing::warn!(%error, "could not announce the departure");
        }
        self.left = true;
        self.drain();
        for join in self.joins.drain(..) {
            let _ = join.reply.send(Err(GossipError::Stopped));
        }
        self.leave_reply = Some(reply);
        self.leave_round(1, now());
    }

    /// Spreads a departure notice for the failed member `name` (every
    /// process of it that foca knows down), as its own graceful leave would.
    pub(super) fn force_leave(&mut self, name: &str) -> Result<(), GossipError> {
        let mut down = Vec::new();
        let mut known = false;
        for m in self.foca.iter_membership_state() {
            if m.id().name() == name {
                known = true;
                if m.state() == State::Down {
                    down.push(LeaveNotice::of(m.id()));
                }
            }
        }
        if down.is_empty() {
            return Err(if known || self.foca.identity().name() == name {
                GossipError::NotFailed(name.to_owned())
            } else {
                GossipError::UnknownMember(name.to_owned())
            });
        }
        for notice in down {
            // foca hands the notice to our broadcast handler, which records
            // it here too; only then is it news worth spreading.
            if let Err(error) = self.foca.add_broadcast(&notice.encode()) {
                tracing::warn!(%error, "could not queue the departure notice");
            }
        }
        tracing::info!(member = name, "forced to leave");
        self.publish();
        Ok(())
    }

    /// Gossips the departure again (foca's `leave_cluster` reaches only a
    /// few members, and packets get lost), then stops.
    pub(super) fn leave_round(&mut self, round: u32, now: Instant) {
        if round >= self.profile.leave_rounds || self.foca.num_members() == 0 {
            if let Some(reply) = self.leave_reply.take() {
                let _ = reply.send(());
            }
            self.stop = true;
            return;
        }
        if let Err(error) = self.foca.gossip(&mut self.rt) {
            tracing::warn!(%error, "could not gossip the departure");
        }
        self.drain();
        self.timers.schedule(
            now,
            self.profile.leave_round_interval,
            Event::LeaveRound(round + 1),
        );
    }

    /// Answers the joins whose address is now an active member.
    pub(super) fn answer_joins(&mut self) {
        let mut index = 0;
        while index < self.joins.len() {
            if self.knows_active(self.joins[index].addr) {
                let join = self.joins.swap_remove(index);
                let _ = join.reply.send(Ok(()));
            } else {
                index += 1;
            }
        }
    }
}
