//! Early replication: a leader's new entries leave for its followers while
//! its own fsync of them runs, not after it.
//!
//! openraft 0.9 runs a leader's append inside its command loop and waits for
//! the log store to report the entries flushed before it runs the next
//! command, which is the one that tells the replication streams to send
//! them (`RaftCore::append_to_log`). The leader's fsync and then a
//! follower's ran one after the other: two fsyncs on the road of every
//! commit, where etcd's leader writes its WAL while its messages are on the
//! way, one fsync deep.
//!
//! So the log store, as it takes entries the leader itself made, hands them
//! here, and each follower gets at once the AppendEntries openraft would send
//! it next: the leader's vote, the log id before the entries, the entries,
//! the commit index the log store last saved. The follower appends and
//! flushes them and answers; the answer is dropped. When openraft's own
//! AppendEntries with the same entries arrives, after the leader's fsync,
//! the follower already holds them durably and answers without a second
//! fsync.
//!
//! Nothing here counts towards a commit: openraft still commits only on the
//! answers to its own requests, and the leader's entries still count only
//! once its store reports them flushed, so a write is acknowledged exactly
//! when it was before: durable on a quorum. Raft is built for a leader's
//! messages arriving twice, late or out of order; this message is one the
//! leader may send at any time (entries of its own log, after the log id
//! that precedes them, with a commit index no later than its own), so a
//! follower treats it as any other: a stale leader's is refused by vote,
//! entries it already holds are skipped, and one that does not follow its
//! log is answered with a conflict and changes nothing of the leader's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{RaftMetrics, ServerState, Vote};
use tokio::sync::watch;

use super::types::{Entry, LogId};
use crate::rpc::raft::{RaftRequest, RaftResponse};
use crate::rpc::types::{RaftId, RaftMember, TypeConfig};
use crate::rpc::{Pool, Request, Response};

/// How long an early AppendEntries may take; openraft's own carries the
/// entries anyway if it does not arrive.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a follower that failed an early call gets none: its own
/// replication stream backs off from an unreachable peer, and so do we.
const FAILED_PAUSE: Duration = Duration::from_secs(1);

/// Sends a leader's entries to its followers ahead of openraft.
#[derive(Debug)]
pub(crate) struct Early {
    /// This server's Raft id: entries whose leader it is are its own.
    me: RaftId,
    /// The connections to the other servers, shared with openraft's network.
    pool: Arc<Pool>,
    /// Who leads in which term, and the members to send to.
    metrics: watch::Receiver<RaftMetrics<RaftId, RaftMember>>,
    /// Per follower: one early call at a time, so that a slow follower gets
    /// no queue of them (openraft's own requests carry what it misses).
    peers: Mutex<HashMap<RaftId, PeerState>>,
    /// Early calls a follower accepted (answered with success), for tests.
    accepted: AtomicU64,
}

#[derive(Debug, Default)]
struct PeerState {
    /// An early call to it has not answered yet.
    busy: bool,
    /// It failed the last one: none until then.
    paused_until: Option<Instant>,
}

impl Early {
    pub(crate) fn new(
        me: RaftId,
        pool: Arc<Pool>,
        metrics: watch::Receiver<RaftMetrics<RaftId, RaftMember>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            me,
            pool,
            metrics,
            peers: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
        })
    }

    /// Early calls a follower answered with success so far.
    #[cfg(test)]
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Whether entries whose log id names `leader` were made by this server
    /// as the current leader of that term: the only ones it sends early.
    pub(crate) fn leads(&self, leader: &openraft::CommittedLeaderId<RaftId>) -> bool {
        if leader.node_id != self.me {
            return false;
        }
        let m = self.metrics.borrow();
        m.state == ServerState::Leader && m.current_term == leader.term
    }

    /// Sends `entries`, which follow `prev` in this leader's log, to every
    /// other member that is not already busy with an early call. Returns at
    /// once; the calls run on their own tasks.
    pub(crate) fn send(
        self: &Arc<Self>,
        prev: Option<LogId>,
        entries: &[Entry],
        committed: Option<LogId>,
    ) {
        let Some(first) = entries.first() else {
            return;
        };
        let leader = first.log_id.leader_id;
        let targets: Vec<(RaftId, RaftMember)> = {
            let m = self.metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.me)
                .map(|(id, member)| (*id, member.clone()))
                .collect()
        };
        let now = Instant::now();
        for (target, member) in targets {
            if !self.claim(target, now) {
                continue;
            }
            let rpc = AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(leader.term, leader.node_id),
                prev_log_id: prev,
                entries: entries.to_vec(),
                leader_commit: committed,
            };
            let early = self.clone();
            tokio::spawn(async move {
                let req = Request::Raft(RaftRequest::AppendEntries { to: target, rpc });
                let answer = early.pool.call(member.addr, &req, CALL_TIMEOUT).await;
                if let Ok(Response::Raft(RaftResponse::AppendEntries(Ok(
                    AppendEntriesResponse::Success,
                )))) = &answer
                {
                    early.accepted.fetch_add(1, Ordering::Relaxed);
                }
                early.release(target, answer.is_ok());
            });
        }
    }

    /// Marks `target` busy if it may take an early call now.
    fn claim(&self, target: RaftId, now: Instant) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let peer = peers.entry(target).or_default();
        if peer.busy || peer.paused_until.is_some_and(|until| now < until) {
            return false;
        }
        peer.busy = true;
        peer.paused_until = None;
        true
    }

    fn release(&self, target: RaftId, ok: bool) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let peer = peers.entry(target).or_default();
        peer.busy = false;
        if !ok {
            peer.paused_until = Some(Instant::now() + FAILED_PAUSE);
        }
    }
}
