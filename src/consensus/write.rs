//! The write path: a catalog command proposed here when this server leads,
//! forwarded to the leader otherwise, retried across an election for a
//! bounded time; and the leader's side of a forwarded write.

use openraft::ServerState;
use openraft::error::{ClientWriteError, RaftError};
use tokio::time::Instant;

use super::{Consensus, Route};
use crate::catalog::{Command, Outcome};
use crate::rpc::cluster::{ClusterRequest, ClusterResponse};
use crate::rpc::types::{RaftId, RaftMember};
use crate::rpc::{Request, Response, RpcError, WriteError};

impl Consensus {
    /// Proposes a command and waits until it is committed and applied on
    /// the leader. Concurrent writes share log entries (see `proposer`).
    /// On a follower the write is forwarded to the leader; while no leader is
    /// known it retries for [`super::Tuning::leader_wait`], then fails with
    /// [`WriteError::NoLeader`].
    pub async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        if self.stop.is_cancelled() {
            return Err(WriteError::Fatal("consensus is shut down".into()));
        }
        let deadline = Instant::now() + self.tuning.request_timeout;
        let mut leaderless_since: Option<Instant> = None;
        loop {
            let (attempt, leader) = match self.route() {
                Route::Local => (
                    self.propose_while_leading(cmd.clone(), deadline).await,
                    Some(self.raft_id),
                ),
                Route::Remote(id, addr) => {
                    let req = Request::Cluster(ClusterRequest::WriteAsLeader(cmd.clone()));
                    let call = self.forward(addr, req, deadline);
                    let answer = tokio::select! {
                        r = call => match r {
                            Ok(Response::Cluster(ClusterResponse::Write(r))) => r,
                            Ok(_) => Err(WriteError::Fatal("leader answered a write with something else".into())),
                            Err(e) => Err(forward_failed(e)),
                        },
                        // The leader changed while we waited: it can no
                        // longer commit; go to the new one.
                        () = self.leader_moved_from(id) => Err(WriteError::NoLeader),
                    };
                    (answer, Some(id))
                }
                Route::Nowhere => (Err(WriteError::NoLeader), None),
            };
            match attempt {
                Err(WriteError::NoLeader) => {}
                // The leader died with the write in flight: sending it again
                // is safe only when applying it twice changes nothing.
                Err(WriteError::Interrupted) if cmd.idempotent() => {}
                other => return other,
            }
            let since = *leaderless_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.tuning.leader_wait || Instant::now() >= deadline {
                return Err(attempt.err().unwrap_or(WriteError::NoLeader));
            }
            self.leader_change(leader).await;
        }
    }

    /// Resolves when the metrics name a leader other than `id`.
    async fn leader_moved_from(&self, id: RaftId) {
        let mut metrics = self.metrics.clone();
        let moved = metrics
            .wait_for(|m| match m.current_leader {
                Some(leader) => leader != id,
                None => m.state == ServerState::Candidate,
            })
            .await
            .is_ok();
        if !moved {
            // Raft stopped: never resolve; the call's own deadline ends the wait.
            std::future::pending::<()>().await;
        }
    }

    /// Proposes on this server, which leads, until the write commits or the
    /// deadline passes, or until this server no longer leads with a quorum:
    /// then the write is [`WriteError::Interrupted`] (it may still commit if
    /// the quorum returns) rather than left hanging until the deadline.
    async fn propose_while_leading(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<Outcome, WriteError> {
        let lost = async {
            loop {
                tokio::time::sleep(self.tuning.heartbeat).await;
                if !matches!(self.route(), Route::Local) {
                    return;
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout_at(deadline, self.proposer.propose(cmd)) => {
                r.map_err(|_| WriteError::Timeout)?
            }
            () = lost => Err(WriteError::Interrupted),
        }
    }

    /// A write forwarded by another server: carried out only while this
    /// server leads with a quorum, never forwarded again (the sender retries
    /// where its own view of the leader points).
    pub async fn write_as_leader(&self, cmd: Command) -> Result<Outcome, WriteError> {
        match self.route() {
            Route::Local => {
                self.propose_while_leading(cmd, Instant::now() + self.tuning.request_timeout)
                    .await
            }
            _ => Err(WriteError::NoLeader),
        }
    }
}

/// How a write that was forwarded to the leader failed on the way: one that
/// never left may be retried elsewhere (`NoLeader`), one that was lost in
/// flight may have been carried out (`Interrupted`).
pub(super) fn forward_failed(e: RpcError) -> WriteError {
    match e {
        e if e.not_sent() => WriteError::NoLeader,
        RpcError::Timeout(_) => WriteError::Timeout,
        RpcError::Lost(_) => WriteError::Interrupted,
        e => WriteError::Fatal(e.to_string()),
    }
}

/// How openraft refuses a write.
pub(super) fn write_refused(
    e: RaftError<RaftId, ClientWriteError<RaftId, RaftMember>>,
) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => WriteError::NoLeader,
        // Only membership changes are refused this way, and a write is none.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            WriteError::Fatal(e.to_string())
        }
        RaftError::Fatal(e) => WriteError::Fatal(e.to_string()),
    }
}
