//! Changes to the Raft configuration, made one at a time by the leader, and
//! the configuration as `/v1/operator/raft/configuration` lists it.
//!
//! Any server takes a join or a removal and hands it to the leader. The
//! leader adds a new server first as a learner, which catches up (by
//! snapshot if need be), then promotes it to voter in the same change that
//! drops any stale entry with its name or address (the same machine with a
//! wiped data dir, and so a new id). A leader removing itself steps down
//! once the change commits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};

use super::{Consensus, Route};
use crate::rpc::cluster::{ClusterRequest, ClusterResponse};
use crate::rpc::types::{RaftId, RaftMember};
use crate::rpc::{
    Configuration, MembershipError, RaftServer, Request, Response, RpcError, ServerEntry,
};

/// How long a join may take: a learner catching up by snapshot included.
pub(super) const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A membership change, made by the leader.
enum Change {
    /// Add this server (or update its entry).
    Join(RaftServer),
    /// Remove the server with this id.
    Remove(RaftId),
}

impl Consensus {
    /// Makes `change` on the leader: here when this server leads, or sent
    /// to it, waiting out an election for [`super::Tuning::leader_wait`].
    async fn to_leader(&self, change: Change) -> Result<(), MembershipError> {
        let started = tokio::time::Instant::now();
        loop {
            let attempt = match self.route() {
                Route::Local => match &change {
                    Change::Join(server) => self.join_as_leader(server.clone()).await,
                    Change::Remove(id) => self.remove_as_leader(*id).await,
                },
                Route::Remote(_, addr) => {
                    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
                    let req = Request::Cluster(match &change {
                        Change::Join(server) => ClusterRequest::Join(server.clone()),
                        Change::Remove(id) => ClusterRequest::Remove(*id),
                    });
                    match self.forward(addr, req, deadline).await {
                        Ok(Response::Cluster(ClusterResponse::Done(r))) => r,
                        Ok(_) => Err(MembershipError::Fatal(
                            "unexpected answer from the leader".into(),
                        )),
                        Err(e) => Err(forward_failed(e)),
                    }
                }
                Route::Nowhere => Err(MembershipError::NoLeader),
            };
            match attempt {
                Err(MembershipError::NoLeader) if started.elapsed() < self.tuning.leader_wait => {
                    self.leader_change(None).await;
                }
                other => return other,
            }
        }
    }

    /// Adds `server` to the configuration (or updates its entry). Any
    /// server accepts this and hands it to the leader.
    pub async fn join(&self, server: RaftServer) -> Result<(), MembershipError> {
        self.to_leader(Change::Join(server)).await
    }

    /// Removes server `id` from the configuration, via the leader.
    pub async fn remove_server(&self, id: RaftId) -> Result<(), MembershipError> {
        self.to_leader(Change::Remove(id)).await
    }

    /// Takes this server out of the configuration, for a graceful leave.
    /// A leader removing itself steps down once the change commits. A lone
    /// server has nobody to hand the configuration to: it just goes.
    pub async fn leave(&self) -> Result<(), MembershipError> {
        let alone = {
            let m = self.metrics.borrow();
            let mut voters = m.membership_config.membership().voter_ids();
            voters.all(|id| id == self.raft_id)
        };
        if !self.in_cluster() || alone {
            return Ok(());
        }
        self.cluster.left.store(true, Ordering::Release);
        self.remove_server(self.raft_id).await
    }

    async fn join_as_leader(&self, m: RaftServer) -> Result<(), MembershipError> {
        let _one_at_a_time = self.cluster.changes.lock().await;
        let membership = self.metrics.borrow().membership_config.membership().clone();
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        let current = membership.get_node(&m.id).cloned();
        if voters.contains(&m.id) {
            if current.as_ref() != Some(&m.member) {
                tracing::info!(id = m.id, node = %m.member, "updating a server's address");
                self.set_member(&m).await?;
            }
            return Ok(());
        }
        if current.as_ref().is_some_and(|c| *c != m.member) {
            self.set_member(&m).await?;
        }
        // Added as a learner, or already one (an earlier join that timed
        // out): either way it is promoted only once it has caught up, so a
        // server that does not exist or does not answer never becomes a
        // voter that a quorum would then wait for.
        tracing::info!(
            id = m.id,
            node = %m.member,
            "adding a server as a learner until it catches up"
        );
        let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
        let added = tokio::time::timeout_at(
            deadline,
            self.raft.add_learner(m.id, m.member.clone(), false),
        )
        .await
        .map_err(|_| MembershipError::Timeout)?
        .map_err(membership_refused)?;
        // Caught up means it acknowledged the entry that added it. (openraft's
        // own blocking wait counts a learner within 5,000 entries of the
        // leader as caught up, which a young log always is, answering or not.)
        let caught_up = self
            .raft
            .wait(Some(
                deadline.saturating_duration_since(tokio::time::Instant::now()),
            ))
            .metrics(
                |metrics| {
                    metrics.replication.as_ref().is_some_and(|r| {
                        r.get(&m.id)
                            .is_some_and(|matched| *matched >= Some(added.log_id))
                    })
                },
                "the learner to acknowledge its addition",
            )
            .await;
        if caught_up.is_err() {
            return Err(MembershipError::Timeout);
        }
        // The same name or address under another id is the same machine
        // with a wiped data dir: its old entry goes in the same change.
        let stale: BTreeSet<RaftId> = membership
            .nodes()
            .filter(|(id, n)| **id != m.id && (n.addr == m.member.addr || n.name == m.member.name))
            .map(|(id, _)| *id)
            .collect();
        let mut new_voters: BTreeSet<RaftId> = voters.difference(&stale).copied().collect();
        new_voters.insert(m.id);
        tracing::info!(id = m.id, node = %m.member, replaced = ?stale, "promoting a server to voter");
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(new_voters), false)
            .await
            .map_err(membership_refused)?;
        Ok(())
    }

    /// Replaces a server's membership record (a new address or name),
    /// keeping its role.
    async fn set_member(&self, m: &RaftServer) -> Result<(), MembershipError> {
        self.raft
            .change_membership(
                ChangeMembers::SetNodes(BTreeMap::from([(m.id, m.member.clone())])),
                true,
            )
            .await
            .map_err(membership_refused)?;
        Ok(())
    }

    async fn remove_as_leader(&self, id: RaftId) -> Result<(), MembershipError> {
        let _one_at_a_time = self.cluster.changes.lock().await;
        let membership = self.metrics.borrow().membership_config.membership().clone();
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(MembershipError::Refused(
                    "cannot remove the last server of the cluster".into(),
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if membership.get_node(&id).is_some() {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(MembershipError::Refused(format!(
                "id {id:016x} was not found in the Raft configuration"
            )));
        };
        tracing::info!(id, "removing a server from the configuration");
        self.raft
            .change_membership(change, false)
            .await
            .map_err(membership_refused)?;
        Ok(())
    }

    /// The current configuration, as this server knows it.
    pub fn configuration(&self) -> Configuration {
        let m = self.metrics.borrow();
        let stored = &m.membership_config;
        let membership = stored.membership();
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        Configuration {
            servers: membership
                .nodes()
                .map(|(id, node)| ServerEntry {
                    id: *id,
                    name: node.name.clone(),
                    addr: node.addr,
                    leader: m.current_leader == Some(*id),
                    voter: voters.contains(id),
                })
                .collect(),
            index: stored.log_id().map_or(0, |l| l.index),
        }
    }
}

/// How a membership change sent to the leader failed on the way: one that
/// never left may be retried elsewhere (`NoLeader`), one that was lost in
/// flight may have been made (`Interrupted`).
fn forward_failed(e: RpcError) -> MembershipError {
    match e {
        e if e.not_sent() => MembershipError::NoLeader,
        RpcError::Timeout(_) => MembershipError::Timeout,
        RpcError::Lost(_) => MembershipError::Interrupted,
        e => MembershipError::Fatal(e.to_string()),
    }
}

/// How openraft refuses a membership change.
fn membership_refused(
    e: RaftError<RaftId, ClientWriteError<RaftId, RaftMember>>,
) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MembershipError::NoLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MembershipError::Refused(e.to_string())
        }
        RaftError::Fatal(e) => MembershipError::Fatal(e.to_string()),
    }
}
