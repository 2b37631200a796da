//! `?consistent` reads: the leader confirms its leadership with a quorum
//! (openraft's read index) and names the index a reader must have applied;
//! a follower asks its leader for that index and waits to apply it.

use openraft::error::RaftError;
use tokio::time::Instant;

use super::{Consensus, Route};
use crate::rpc::cluster::{ClusterRequest, ClusterResponse};
use crate::rpc::{ReadError, Request, Response, RpcError};

impl Consensus {
    /// For a follower's `?consistent` read: confirms leadership with a
    /// quorum (openraft's read-index) and returns the index the reader must
    /// have applied.
    pub async fn read_index_as_leader(&self) -> Result<u64, ReadError> {
        match self.route() {
            Route::Local => {}
            _ => return Err(ReadError::NoLeader),
        }
        let result =
            tokio::time::timeout(self.tuning.request_timeout, self.raft.ensure_linearizable())
                .await
                .map_err(|_| ReadError::Timeout)?;
        match result {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(_)) => Err(ReadError::NoLeader),
            Err(RaftError::Fatal(e)) => Err(ReadError::Fatal(e.to_string())),
        }
    }

    /// Confirms that a leader still leads and that this server has applied
    /// everything committed before the call, for `?consistent` reads: on the
    /// leader through openraft's read-index, on a follower by asking the
    /// leader for that index and waiting to apply it.
    pub async fn linearizable_read(&self) -> Result<(), ReadError> {
        let deadline = Instant::now() + self.tuning.request_timeout;
        let mut leaderless_since: Option<Instant> = None;
        let index = loop {
            let (attempt, leader) = match self.route() {
                Route::Local => (self.read_index_as_leader().await, Some(self.raft_id)),
                Route::Remote(id, addr) => {
                    let req = Request::Cluster(ClusterRequest::ReadIndexAsLeader);
                    let answer = match self.forward(addr, req, deadline).await {
                        Ok(Response::Cluster(ClusterResponse::ReadIndex(r))) => r,
                        Ok(_) => Err(ReadError::Fatal(
                            "leader answered a read-index request with something else".into(),
                        )),
                        Err(e) => Err(forward_failed(e)),
                    };
                    (answer, Some(id))
                }
                Route::Nowhere => (Err(ReadError::NoLeader), None),
            };
            match attempt {
                Ok(index) => break index,
                Err(ReadError::NoLeader) => {
                    let since = *leaderless_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.tuning.leader_wait || Instant::now() >= deadline {
                        return Err(ReadError::NoLeader);
                    }
                    self.leader_change(leader).await;
                }
                Err(e) => return Err(e),
            }
        };
        if self.replica.wait_applied(index, deadline).await {
            Ok(())
        } else {
            Err(ReadError::Timeout)
        }
    }
}

/// How a read-index request to the leader failed on the way: one that never
/// left, or was lost in flight, is asked again wherever the leader is now
/// (nothing was written).
fn forward_failed(e: RpcError) -> ReadError {
    match e {
        e if e.not_sent() => ReadError::NoLeader,
        RpcError::Timeout(_) => ReadError::Timeout,
        RpcError::Lost(_) => ReadError::NoLeader,
        e => ReadError::Fatal(e.to_string()),
    }
}
