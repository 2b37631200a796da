//! openraft glue: the state-machine adapter that applies entries to the
//! [`Replica`], the redb-backed log store, snapshots, the network to other
//! servers, and membership changes; plus the handle the rest of the agent
//! uses to write, read consistently and ask who leads. openraft's type
//! configuration and the errors answers carry live in `rpc` (`rpc::types`,
//! `rpc::errors`), which this module builds on and never the other way.
//!
//! [`Consensus::start`] (`open`) opens the server's redb database
//! (`store`), restores the latest snapshot into the replica, and starts
//! openraft over:
//! - `log_store`: the log and vote, durable through group commits;
//! - `state_machine`: applies entries to the replica, builds and installs
//!   snapshots, which also bound the log through compaction;
//! - `network`: Raft's calls to other servers, over server RPC (`rpc`);
//! - `proposer`: group commit in front of Raft;
//! - `contact`: when the leader and the followers were last heard from;
//! - `cluster`: finding the other servers and bootstrapping;
//! - `membership`: joins, removals and leaves through the leader (never one
//!   that would leave fewer answering voters than a quorum), and the
//!   configuration as `/v1/operator/raft/configuration` lists it;
//! - `recovery`: a lost quorum recovered from `peers.json`, as Consul's.
//!
//! Writes go to the leader (`write`): [`Consensus::write`] proposes locally
//! when this server leads and forwards over server RPC otherwise, retrying
//! across an election for a bounded time. `?consistent` reads confirm the
//! leader through its read index (`read`). Leadership questions are answered
//! from openraft's metrics and `contact` without waiting on Raft. `serve`
//! answers other servers and client agents: it implements server RPC's
//! handlers.

mod cluster;
mod contact;
mod early;
mod log_store;
mod log_upgrade;
mod membership;
mod network;
mod open;
mod proposer;
mod read;
mod recovery;
mod serve;
mod snapshot_due;
mod state_machine;
mod wan;
mod write;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::Replica;
use crate::config::RaftSettings;
use crate::rpc::catchup::SnapshotCache;
use crate::rpc::types::{self, Raft, RaftId, RaftMember};
use crate::rpc::{Pool, Request, Response, RpcError};
use crate::store::Writer;
use contact::Contact;
pub use log_store::LogInMemory;
pub use open::StartError;
use proposer::Proposer;
/// The leader's clock as log entries carry it; the leader's timers compare
/// the replicated deadlines with it.
pub(crate) use proposer::now_ms;
pub use wan::WanFacts;

/// Where the Raft log and snapshots live.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In memory (`--dev`): gone when the process exits.
    Memory,
    /// A redb database in this directory, durable across restarts.
    Dir(PathBuf),
}

/// What Raft needs to know to start on this server.
#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    /// This server's node name. Its Raft node ID is chosen at random on the
    /// first start and kept in storage, so a renamed server keeps its identity.
    pub node_name: String,
    /// This server's datacenter; servers of other datacenters are ignored.
    pub datacenter: String,
    /// Address other servers reach this one at (port 8300).
    pub rpc_addr: SocketAddr,
    /// Where to keep the log.
    pub storage: Storage,
    /// The user's Raft settings, as the configuration resolved them:
    /// `bootstrap_expect` (1: bootstrap alone at once; 0: never bootstrap,
    /// only join an existing cluster), and the snapshot threshold and
    /// trailing logs that openraft's snapshot policy is built from.
    pub raft: RaftSettings,
    /// Other servers' RPC addresses (`host[:port]`, port 8300 by default) to
    /// find the cluster through, beyond those the gossip pool reports
    /// ([`Consensus::set_peer_addrs`]).
    pub retry_join: Vec<String>,
    /// How this server reaches the others: TLS, and the cluster key it
    /// proves it holds before any RPC frame.
    pub credentials: crate::rpc::Credentials,
}

/// Raft's timing and queue sizes. Not user settings, so they are not in
/// [`RaftSettings`] and have no defaults in the configuration: they are
/// fixed for a LAN and chosen together with openraft's behaviour (its
/// leader lease, its election tick), which is why they are this module's
/// own type; tests change them to reach a timeout sooner.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// A follower starts an election after a random timeout in this range.
    pub election_timeout: (Duration, Duration),
    /// How long [`Consensus::write`] and [`Consensus::linearizable_read`] wait.
    pub request_timeout: Duration,
    /// How long a write keeps looking for a leader before failing with
    /// [`WriteError::NoLeader`](crate::rpc::WriteError::NoLeader): long
    /// enough to ride out one election.
    pub leader_wait: Duration,
    /// A leader that has not heard from a quorum for this long stops
    /// accepting writes; a follower that has not heard from its leader for
    /// this long stops serving default reads.
    pub lease: Duration,
    /// Capacity of the storage writer's queue, in operations.
    pub writer_queue: usize,
    /// Writes waiting to be proposed; beyond this, writers wait (and time out).
    pub write_queue: usize,
    /// Most commands carried by one log entry.
    pub max_batch: usize,
    /// How much of the log behind the commit index stays in memory.
    pub log_in_memory: LogInMemory,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            // A follower elects at its first tick (every 1.5 heartbeats)
            // after hearing nothing for openraft's leader lease (the longest
            // election timeout) plus its own election timeout: 170–200 ms of
            // silence, 3–4 missed heartbeats, then up to 75 ms more. A dead
            // leader is replaced in ~250 ms; a briefly slow one is not.
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(70), Duration::from_millis(100)),
            request_timeout: Duration::from_secs(5),
            // Several elections' worth (each ~250 ms after the leader went
            // quiet), yet well under the request timeout: without a quorum a
            // write fails in about a second instead of hanging.
            leader_wait: Duration::from_millis(1000),
            // Six heartbeats: a leader that heard from no quorum for this
            // long (the majority has elected another by then) stops taking
            // writes, and a follower stops serving default reads.
            lease: Duration::from_millis(300),
            writer_queue: 1024,
            write_queue: 4096,
            max_batch: 512,
            log_in_memory: LogInMemory::USUAL,
        }
    }
}

/// Where a request for the leader goes.
enum Route {
    /// This server leads and has a quorum.
    Local,
    /// Another server leads.
    Remote(RaftId, SocketAddr),
    /// Nobody, as far as this server knows.
    Nowhere,
}

/// A running Raft member: the only way catalog writes enter the log.
pub struct Consensus {
    /// The openraft handle.
    raft: Raft,
    /// Batches writes into log entries (used while leading).
    proposer: Proposer,
    /// This server's Raft id.
    raft_id: RaftId,
    /// This server's name and RPC address.
    me: RaftMember,
    /// Its datacenter.
    datacenter: String,
    /// openraft's metrics, borrowed for the cheap leadership questions.
    metrics: watch::Receiver<RaftMetrics<RaftId, RaftMember>>,
    /// Connections to the other servers.
    pool: Arc<Pool>,
    /// When the leader and followers were last heard from.
    contact: Arc<Contact>,
    /// The applied state, for reads that wait for an index.
    replica: Arc<Replica>,
    /// The encoded state kept for client agents behind the replica's history.
    snapshot_cache: SnapshotCache,
    /// Servers heard of through discovery, and membership changes in progress.
    cluster: cluster::Cluster,
    /// The storage writer, stopped last on shutdown.
    writer: Writer,
    /// Timeouts and leases.
    tuning: Tuning,
    /// Stops background tasks (discovery, snapshots due) on shutdown.
    stop: CancellationToken,
    /// Background tasks, joined on shutdown.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The WAN pool as this server tells others of it, set by the agent
    /// once the pool runs (after server RPC already answers).
    wan: std::sync::OnceLock<WanFacts>,
    /// Sends this leader's entries to the followers during its own fsync
    /// (the log store holds it); here for tests to read its counters.
    #[cfg(test)]
    early: Arc<early::Early>,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus")
            .field("raft_id", &self.raft_id)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Consensus {
    /// Where a request for the leader should go now. Every read and write
    /// asks, and every answer's `X-Consul-KnownLeader`: one look at the
    /// metrics, and nothing allocated.
    fn route(&self) -> Route {
        let m = self.metrics.borrow();
        let membership = m.membership_config.membership();
        match m.current_leader {
            Some(id) if id == self.raft_id => {
                let leading = m.state == ServerState::Leader;
                if leading
                    && self
                        .contact
                        .has_quorum(id, membership.voter_ids(), self.tuning.lease)
                {
                    Route::Local
                } else {
                    Route::Nowhere
                }
            }
            Some(id) => match membership.get_node(&id) {
                Some(member) => Route::Remote(id, member.addr),
                None => Route::Nowhere,
            },
            None => Route::Nowhere,
        }
    }

    /// Waits until the known leader changes (or a little while passes), so
    /// a retry goes where the cluster now points.
    async fn leader_change(&self, from: Option<RaftId>) {
        let mut metrics = self.metrics.clone();
        let _ = tokio::time::timeout(
            self.tuning.heartbeat,
            metrics.wait_for(|m| m.current_leader != from),
        )
        .await;
    }

    /// Sends a request to the leader at `addr` within `deadline`.
    async fn forward(
        &self,
        addr: SocketAddr,
        req: Request,
        deadline: Instant,
    ) -> Result<Response, RpcError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.pool.call(addr, &req, timeout).await
    }

    /// Resolves with the reason if Raft stops on a fatal error (storage
    /// failure, a panic in its core); never on a healthy server.
    pub async fn failed(&self) -> String {
        let mut metrics = self.metrics.clone();
        let reason = match metrics.wait_for(|m| m.running_state.is_err()).await {
            Ok(m) => m.running_state.as_ref().err().map(ToString::to_string),
            Err(_) => Some("raft metrics closed".to_string()),
        };
        reason.unwrap_or_default()
    }

    /// The applied catalog this server's state machine writes.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// This server's Raft id (the RPC server asks through `RaftHandler`).
    #[cfg(test)]
    pub(crate) fn raft_id(&self) -> RaftId {
        self.raft_id
    }

    /// The leader's RPC address, if one is known and live: a leader that has
    /// lost its quorum does not count itself.
    pub fn leader(&self) -> Option<SocketAddr> {
        match self.route() {
            Route::Local => Some(self.me.addr),
            Route::Remote(_, addr) => Some(addr),
            Route::Nowhere => None,
        }
    }

    /// Whether this server currently leads with a quorum behind it.
    pub fn is_leader(&self) -> bool {
        matches!(self.route(), Route::Local)
    }

    /// Whether this server may serve a default-consistency read: it leads
    /// with a quorum, or it heard from its leader within the lease.
    pub fn leader_live(&self) -> bool {
        match self.route() {
            Route::Local => true,
            Route::Remote(id, _) => self.contact.since_leader(id) <= self.tuning.lease,
            Route::Nowhere => false,
        }
    }

    /// Time since this server last heard from the leader; zero on the leader,
    /// the whole uptime when it never has.
    pub fn last_contact(&self) -> Duration {
        let leader = self.metrics.borrow().current_leader;
        match leader {
            Some(id) if id == self.raft_id => Duration::ZERO,
            Some(id) => self.contact.since_leader(id),
            None => self.contact.since_leader(self.raft_id),
        }
    }

    /// RPC addresses of the voters in the current configuration.
    pub fn peers(&self) -> Vec<SocketAddr> {
        let metrics = self.metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| n.addr))
            .collect()
    }

    /// Stops discovery and Raft and closes storage. Called last in the
    /// shutdown order.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        self.proposer.stop().await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core ended abnormally");
        }
        // Raft has stopped issuing writes; commit what is queued and close
        // the database.
        self.writer.stop().await;
    }

    /// The storage writer's commit counters, for the group-commit tests.
    #[cfg(test)]
    pub(crate) fn storage_stats(&self) -> Arc<crate::store::WriterStats> {
        self.writer.stats()
    }

    /// The openraft handle, for tests that drive Raft directly.
    #[cfg(test)]
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;
