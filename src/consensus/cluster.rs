//! How servers find each other, and what they remember of each other.
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
//! it (`membership`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Consensus;
use super::membership::JOIN_TIMEOUT;
use crate::rpc::cluster::{ClusterRequest, ClusterResponse};
use crate::rpc::types::{RaftId, RaftMember};
use crate::rpc::{Hello, RaftServer, Request, Response};

/// The server RPC port a join address without one is assumed to use.
const DEFAULT_RPC_PORT: u16 = crate::config::defaults::SERVER_PORT;
/// How often a server looks for its cluster until it is settled in it.
const SEEK_PERIOD: Duration = Duration::from_millis(200);
/// How often a settled server checks that its entry is still right.
const SETTLED_PERIOD: Duration = Duration::from_secs(2);
/// How long a hello may take.
const HELLO_TIMEOUT: Duration = Duration::from_millis(500);

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
    pub(super) changes: tokio::sync::Mutex<()>,
    /// Set once this server left: it no longer asks to be put back.
    pub(super) left: std::sync::atomic::AtomicBool,
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
    pub(super) fn in_cluster(&self) -> bool {
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
}
