//! When this server last heard from the others: on a follower, from the
//! leader (for `X-Consul-LastContact` and to serve default reads without
//! asking it); on the leader, from each follower (to know it still has a
//! quorum, since openraft 0.9's leader does not step down on its own when
//! the followers go silent).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::types::RaftId;

/// Contact times, shared by the RPC server and Raft's network.
#[derive(Debug)]
pub(crate) struct Contact {
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The leader this follower last accepted entries from, and when.
    leader: Option<(RaftId, Instant)>,
    /// When each follower last accepted this leader's entries.
    acks: HashMap<RaftId, Instant>,
}

impl Contact {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A leader's entries (or heartbeat) were accepted here.
    pub(crate) fn heard_from(&self, leader: RaftId) {
        self.lock().leader = Some((leader, Instant::now()));
    }

    /// A follower accepted our entries.
    pub(crate) fn acked_by(&self, follower: RaftId) {
        self.lock().acks.insert(follower, Instant::now());
    }

    /// Time since `leader` was last heard from here; the whole uptime if
    /// never (or if another leader was).
    pub(crate) fn since_leader(&self, leader: RaftId) -> Duration {
        match self.lock().leader {
            Some((id, at)) if id == leader => at.elapsed(),
            _ => self.started.elapsed(),
        }
    }

    /// Whether, counting this server, a majority of `voters` acknowledged
    /// this leader within `lease`.
    pub(crate) fn has_quorum(
        &self,
        me: RaftId,
        voters: impl IntoIterator<Item = RaftId>,
        lease: Duration,
    ) -> bool {
        let state = self.lock();
        let (mut total, mut live) = (0usize, 0usize);
        for id in voters {
            total += 1;
            if id == me || state.acks.get(&id).is_some_and(|at| at.elapsed() <= lease) {
                live += 1;
            }
        }
        live * 2 > total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_counts_self_and_recent_acks() {
        let c = Contact::new();
        let lease = Duration::from_secs(60);
        assert!(
            c.has_quorum(1, [1], lease),
            "a lone voter is its own quorum"
        );
        assert!(!c.has_quorum(1, [1, 2, 3], lease));
        c.acked_by(2);
        assert!(c.has_quorum(1, [1, 2, 3], lease));
        assert!(!c.has_quorum(1, [1, 2, 3, 4, 5], lease));
        c.acked_by(3);
        assert!(c.has_quorum(1, [1, 2, 3, 4, 5], lease));
    }

    #[test]
    fn contact_with_another_leader_does_not_count() {
        let c = Contact::new();
        c.heard_from(7);
        assert!(c.since_leader(7) < Duration::from_secs(1));
        assert!(c.since_leader(8) >= c.since_leader(7));
    }
}
