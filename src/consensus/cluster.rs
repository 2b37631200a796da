//! How servers find each other, change the Raft configuration and list it.
//!
//! Discovery runs in the background on every server. While a server belongs
//! to no cluster it says [`Hello`] to the servers the gossip pool shows (and
//! any RPC join addresses it was given) and to every server it has heard of,
//! learning their views transitively. Then:
//! - if some peer already belongs to a cluster, it asks to join it (any
//!   server forwards a join to the leader);
//! - otherwise, once `bootstrap_expect` servers know each other, exactly one
//!   of them (the one with the lowest Raft id) bootstraps the cluster with
//!   all of them as voters; the others receive it from the new leader.
//!
//! A server in a cluster whose configuration entry is missing or out of date
//! (a new address, a wiped data dir and so a new id) asks the leader to fix
//! it. The leader handles joins one at a time: a new server first becomes a
//! learner and catches up (by snapshot if need be), then is promoted to
//! voter in the same change that drops any stale entry with its name or
//! address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use tokio_util::sync::CancellationToken;

use super::{Consensus, Route};
use crate::rpc::cluster::{ClusterRequest, ClusterResponse};
use crate::rpc::types::{RaftId, RaftMember};
use crate::rpc::{
    Configuration, Hello, MembershipError, RaftServer, Request, Response, RpcError, ServerEntry,
};

/// The server RPC port a join address without one is assumed to use.
const DEFAULT_RPC_PORT: u16 = 8300;
/// How often a server looks for its cluster until it is settled in it.
const SEEK_PERIOD: Duration = Duration::from_millis(200);
/// How often a settled server checks that its entry is still right.
const SETTLED_PERIOD: Duration = Duration::from_secs(2);
/// How long a hello may take.
const HELLO_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a join may take: a learner catching up by snapshot included.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Discovery state and the lock that serializes membership changes.
#[derive(Debug)]
pub(super) struct Cluster {
    bootstrap_expect: usize,
    retry_join: Vec<String>,
    /// Servers heard of (this one included once discovery starts).
    known: Mutex<BTreeMap<RaftId, RaftMember>>,
    /// Server RPC addresses learned from outside Raft (the gossip pool).
    peers: Mutex<BTreeSet<SocketAddr>>,
    /// One membership change at a time on the leader.
    changes: tokio::sync::Mutex<()>,
    /// Set once this server left: it no longer asks to be put back.
    left: std::sync::atomic::AtomicBool,
}

impl Cluster {
    pub(super) fn new(bootstrap_expect: usize, retry_join: Vec<String>) -> Self {
        Self {
            bootstrap_expect,
            retry_join,
            known: Mutex::new(BTreeMap::new()),
            peers: Mutex::new(BTreeSet::new()),
            changes: tokio::sync::Mutex::new(()),
            left: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeMap<RaftId, RaftMember>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A membership change, made by the leader.
enum Change {
    /// Add this server (or update its entry).
    Join(RaftServer),
    /// Remove the server with this id.
    Remove(RaftId),
}

/// The background discovery loop; ends with `stop` or when the server goes.
pub(super) async fn discover(consensus: Weak<Consensus>, stop: CancellationToken) {
    loop {
        let settled = match consensus.upgrade() {
            Some(c) => c.discovery_round().await,
            None => return,
        };
        let period = if settled { SETTLED_PERIOD } else { SEEK_PERIOD };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

impl Consensus {
    fn as_raft_server(&self) -> RaftServer {
        RaftServer {
            id: self.raft_id,
            member: self.me.clone(),
        }
    }

    /// Whether this server's log holds a cluster configuration.
    fn in_cluster(&self) -> bool {
        self.metrics
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_some()
    }

    fn my_hello(&self) -> Hello {
        let mut known = self.cluster.known().clone();
        known.insert(self.raft_id, self.me.clone());
        Hello {
            from: self.as_raft_server(),
            datacenter: self.datacenter.clone(),
            in_cluster: self.in_cluster(),
            leader: self.leader(),
            known: known
                .into_iter()
                .map(|(id, member)| RaftServer { id, member })
                .collect(),
        }
    }

    fn learn(&self, hello: &Hello) {
        if hello.datacenter != self.datacenter {
            return;
        }
        let mut known = self.cluster.known();
        for m in &hello.known {
            // A server that was wiped comes back with a new id at the same
            // address: the newest word about an address wins.
            if m.id != self.raft_id {
                known.retain(|id, n| *id == m.id || n.addr != m.member.addr);
            }
            known.insert(m.id, m.member.clone());
        }
    }

    /// Tells discovery where the other servers of this datacenter answer
    /// RPC, as the gossip pool sees them.
    pub fn set_peer_addrs(&self, addrs: BTreeSet<SocketAddr>) {
        *self.cluster.peers.lock().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    /// Answers another server's [`Hello`] and learns from it.
    pub fn hello(&self, hello: Hello) -> Hello {
        if hello.datacenter != self.datacenter {
            tracing::warn!(
                peer = %hello.from.member,
                theirs = %hello.datacenter,
                ours = %self.datacenter,
                "ignoring a server of another datacenter"
            );
        }
        self.learn(&hello);
        self.my_hello()
    }

    /// One round of discovery; returns whether this server is settled (in a
    /// cluster, with its entry right, and a leader known).
    async fn discovery_round(&self) -> bool {
        if self.cluster.left.load(Ordering::Acquire) {
            return true;
        }
        let entry_right = {
            let m = self.metrics.borrow();
            let membership = m.membership_config.membership();
            membership.get_node(&self.raft_id) == Some(&self.me)
                && membership.voter_ids().any(|id| id == self.raft_id)
        };
        if self.in_cluster() {
            if entry_right {
                return self.leader().is_some();
            }
            // Our entry is missing or stale: ask the leader (or anyone who
            // knows it) to fix it.
            if let Err(e) = self.join(self.as_raft_server()).await {
                tracing::debug!(error = %e, "asking to be added to the configuration");
            }
            return false;
        }

        let mut targets: BTreeSet<SocketAddr> = BTreeSet::new();
        for a in &self.cluster.retry_join {
            targets.extend(crate::config::join::resolve(a, DEFAULT_RPC_PORT).await);
        }
        targets.extend(self.cluster.known().values().map(|n| n.addr));
        targets.extend(
            self.cluster
                .peers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .copied(),
        );
        targets.remove(&self.me.addr);
        let mut calls = tokio::task::JoinSet::new();
        for addr in targets {
            let hello = Request::Cluster(ClusterRequest::Hello(self.my_hello()));
            let pool = self.pool.clone();
            calls.spawn(async move { (addr, pool.call(addr, &hello, HELLO_TIMEOUT).await) });
        }
        let mut in_cluster = Vec::new();
        while let Some(done) = calls.join_next().await {
            let Ok((addr, answer)) = done else { continue };
            match answer {
                Ok(Response::Cluster(ClusterResponse::Hello(h))) => {
                    self.learn(&h);
                    if h.in_cluster && h.datacenter == self.datacenter {
                        in_cluster.push(addr);
                    }
                }
                Ok(_) => tracing::debug!(%addr, "unexpected answer to hello"),
                Err(e) => tracing::debug!(%addr, error = %e, "hello failed"),
            }
        }

        if let Some(&peer) = in_cluster.first() {
            match self
                .pool
                .call(
                    peer,
                    &Request::Cluster(ClusterRequest::Join(self.as_raft_server())),
                    JOIN_TIMEOUT,
                )
                .await
            {
                Ok(Response::Cluster(ClusterResponse::Done(Ok(())))) => {
                    tracing::info!(via = %peer, "joined the cluster")
                }
                Ok(Response::Cluster(ClusterResponse::Done(Err(e)))) => {
                    tracing::info!(via = %peer, error = %e, "join refused; will retry")
                }
                Ok(_) => tracing::debug!(via = %peer, "unexpected answer to join"),
                Err(e) => tracing::debug!(via = %peer, error = %e, "join failed; will retry"),
            }
            return false;
        }

        let expect = self.cluster.bootstrap_expect;
        if expect > 1 {
            let mut members = self.cluster.known().clone();
            members.insert(self.raft_id, self.me.clone());
            if members.len() >= expect && members.keys().next() == Some(&self.raft_id) {
                tracing::info!(
                    servers = members.len(),
                    "found the expected servers; bootstrapping the cluster"
                );
                match self.raft.initialize(members).await {
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "bootstrap failed"),
                }
            }
        }
        false
    }

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

    /// Removes the server at RPC address `addr`, via the leader.
    pub async fn remove_address(&self, addr: SocketAddr) -> Result<(), MembershipError> {
        let id = self.configuration().id_at(addr)?;
        self.remove_server(id).await
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
        if current.is_none() {
            tracing::info!(id = m.id, node = %m.member, "adding a server as a learner");
            tokio::time::timeout(
                JOIN_TIMEOUT,
                self.raft.add_learner(m.id, m.member.clone(), true),
            )
            .await
            .map_err(|_| MembershipError::Timeout)?
            .map_err(membership_refused)?;
        } else if current.as_ref() != Some(&m.member) {
            self.set_member(&m).await?;
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
