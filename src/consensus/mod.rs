//! openraft glue: the type configuration, the redb-backed log store, the
//! state-machine adapter that applies entries to the [`Replica`], snapshots,
//! the network to other servers, and membership changes; plus the handle the
//! rest of the agent uses to write, read consistently and ask who leads.
//!
//! [`Consensus::start`] opens the server's redb database (`store`), restores
//! the latest snapshot into the replica, and starts openraft over:
//! - `log_store`: the log and vote, durable through group commits;
//! - `state_machine`: applies entries to the replica, builds and installs
//!   snapshots, which also bound the log through compaction;
//! - `network`: Raft's calls to other servers, over server RPC (`rpc`);
//! - `proposer`: group commit in front of Raft;
//! - `contact`: when the leader and the followers were last heard from;
//! - `cluster`: finding the other servers, bootstrapping, joins, removals.
//!
//! Writes go to the leader: [`Consensus::write`] proposes locally when this
//! server leads and forwards over server RPC otherwise, retrying across an
//! election for a bounded time. Leadership questions are answered from
//! openraft's metrics and [`contact`] without waiting on Raft.

mod cluster;
mod contact;
mod log_store;
mod network;
mod proposer;
mod state_machine;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{Config, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Command, Outcome, Replica};
use crate::rpc::types;
use crate::rpc::{Pool, Request, Response, RpcError};
use crate::store::{self, Op, StoreError, Writer, WriterStats, keys};
pub use cluster::{Configuration, ServerEntry};
use contact::Contact;
use log_store::LogStore;
use network::Network;
use proposer::Proposer;
use state_machine::StateMachine;
use types::{Node, NodeId, Raft};

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
    /// How many servers to wait for before bootstrapping (1: bootstrap alone
    /// at once; 0: never bootstrap, only join an existing cluster).
    pub bootstrap_expect: usize,
    /// Other servers' RPC addresses (`host[:port]`, port 8300 by default) to
    /// find the cluster through, beyond those the gossip pool reports
    /// ([`Consensus::set_peer_addrs`]).
    pub retry_join: Vec<String>,
}

/// Knobs with good defaults for a LAN; tests lower the snapshot threshold.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// A follower starts an election after a random timeout in this range.
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging
    /// followers catch up from the log rather than a whole snapshot.
    pub keep_after_snapshot: u64,
    /// How long [`Consensus::write`] and [`Consensus::linearizable_read`] wait.
    pub request_timeout: Duration,
    /// How long a write keeps looking for a leader before failing with
    /// [`WriteError::NoLeader`]: long enough to ride out one election.
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
            // Consul's defaults. A snapshot copies, encodes and commits the
            // whole catalog, and log appends wait behind its commit, so
            // taking one less often keeps that pause rare.
            snapshot_every: 16384,
            keep_after_snapshot: 10240,
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
        }
    }
}

/// Why a write did not commit.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteError {
    /// No leader is known (election in progress, or quorum lost). Retryable.
    #[error("No cluster leader")]
    NoLeader,
    /// The write did not commit in time. It may still commit later.
    #[error("timed out waiting for the write to commit")]
    Timeout,
    /// The leader was lost after the write reached it: it may or may not
    /// have committed. Retryable for idempotent writes.
    #[error("leader lost before answering; the write may or may not have been applied")]
    Interrupted,
    /// The cluster refused a membership change (unknown server, the last
    /// voter); the text says why.
    #[error("{0}")]
    Refused(String),
    /// Raft or storage failed; the server is shutting down or broken.
    #[error("raft: {0}")]
    Fatal(String),
    /// A client agent knows no server to send the request to, or none
    /// answered. Retryable.
    #[error("No known Consul servers")]
    NoServers,
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        Self::Fatal(e.to_string())
    }
}

/// How openraft refuses a write or a membership change.
impl From<RaftError<NodeId, openraft::error::ClientWriteError<NodeId, Node>>> for WriteError {
    fn from(e: RaftError<NodeId, openraft::error::ClientWriteError<NodeId, Node>>) -> Self {
        use openraft::error::ClientWriteError;
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Self::NoLeader,
            // Only membership changes can be refused this way.
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                Self::Refused(e.to_string())
            }
            RaftError::Fatal(e) => Self::Fatal(e.to_string()),
        }
    }
}

/// Where a request for the leader goes.
enum Route {
    /// This server leads and has a quorum.
    Local,
    /// Another server leads.
    Remote(NodeId, SocketAddr),
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
    node_id: NodeId,
    /// This server's name and RPC address.
    me: Node,
    /// Its datacenter.
    datacenter: String,
    /// openraft's metrics, borrowed for the cheap leadership questions.
    metrics: watch::Receiver<RaftMetrics<NodeId, Node>>,
    /// Connections to the other servers.
    pool: Arc<Pool>,
    /// When the leader and followers were last heard from.
    contact: Arc<Contact>,
    /// The applied state, for reads that wait for an index.
    replica: Arc<Replica>,
    /// Servers heard of through discovery, and membership changes in progress.
    cluster: cluster::Cluster,
    /// The storage writer, stopped last on shutdown.
    writer: Writer,
    /// Timeouts and leases.
    tuning: Tuning,
    /// Stops background tasks (discovery) on shutdown.
    stop: CancellationToken,
    /// Background tasks, joined on shutdown.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus")
            .field("node_id", &self.node_id)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Consensus {
    /// A one-server, in-memory cluster that already has its leader: what
    /// tests across the crate write through.
    #[cfg(test)]
    pub(crate) async fn single_in_memory(node_name: &str, replica: Arc<Replica>) -> Arc<Self> {
        let consensus = Self::start(
            ConsensusConfig {
                node_name: node_name.into(),
                datacenter: "dc1".into(),
                rpc_addr: SocketAddr::from(([127, 0, 0, 1], 8300)),
                storage: Storage::Memory,
                bootstrap_expect: 1,
                retry_join: Vec::new(),
            },
            replica,
        )
        .await
        .expect("in-memory consensus starts");
        consensus
            .wait_for_leader(Duration::from_secs(10))
            .await
            .expect("a one-server cluster elects itself");
        consensus
    }

    /// Opens storage, restores the last snapshot and log into `replica`, and
    /// starts Raft: bootstrapping a single-node cluster at once when
    /// `bootstrap_expect == 1` and storage is empty, and otherwise looking
    /// for the other servers in the background (see `cluster`).
    pub async fn start(
        cfg: ConsensusConfig,
        replica: Arc<Replica>,
    ) -> Result<Arc<Self>, WriteError> {
        Self::start_tuned(cfg, Tuning::default(), replica).await
    }

    /// [`Consensus::start`] with explicit tuning.
    pub async fn start_tuned(
        cfg: ConsensusConfig,
        tuning: Tuning,
        replica: Arc<Replica>,
    ) -> Result<Arc<Self>, WriteError> {
        let dir = match &cfg.storage {
            Storage::Memory => None,
            Storage::Dir(dir) => Some(dir.clone()),
        };
        // Opening and reading block on the disk; do it off the runtime.
        let (db, contents) = tokio::task::spawn_blocking(move || {
            let db = store::open(dir.as_deref())?;
            let contents = store::load(&db)?;
            Ok::<_, StoreError>((db, contents))
        })
        .await
        .map_err(|e| WriteError::Fatal(format!("opening storage: {e}")))??;
        let writer = Writer::spawn(db, tuning.writer_queue)?;

        let node_id = match contents.meta::<NodeId>(keys::NODE_ID)? {
            Some(id) => id,
            None => {
                let id = rand::random::<NodeId>();
                writer
                    .write(Op::Put(keys::NODE_ID, store::encode(&id)?))
                    .await?;
                id
            }
        };
        let log_store = LogStore::open(&contents, writer.clone())?;
        let state_machine = StateMachine::open(&contents, replica.clone(), writer.clone())?;
        drop(contents);

        let config = Config {
            cluster_name: "trellis".into(),
            heartbeat_interval: millis(tuning.heartbeat),
            election_timeout_min: millis(tuning.election_timeout.0),
            election_timeout_max: millis(tuning.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
            max_in_snapshot_log_to_keep: tuning.keep_after_snapshot,
            // Bounded frames: entries are batches of up to `max_batch`
            // commands, so a handful per message keeps far below the frame
            // limit; snapshots travel in 1 MiB chunks.
            max_payload_entries: 16,
            snapshot_max_chunk_size: 1 << 20,
            // Per chunk; the last one also installs the snapshot, which
            // rebuilds the catalog and takes longer than a network hop.
            install_snapshot_timeout: 5000,
            ..Config::default()
        }
        .validate()
        .map_err(|e| WriteError::Fatal(format!("raft config: {e}")))?;
        let pool = Arc::new(Pool::new(tuning.election_timeout.0));
        let contact = Arc::new(Contact::new());
        let network = Network {
            pool: pool.clone(),
            contact: contact.clone(),
            retry: tuning.heartbeat,
        };
        let raft = Raft::new(node_id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(|e| WriteError::Fatal(e.to_string()))?;

        let me = Node::new(cfg.node_name.clone(), cfg.rpc_addr);
        if cfg.bootstrap_expect == 1 {
            let members = BTreeMap::from([(node_id, me.clone())]);
            match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(node_id, node = %cfg.node_name, "bootstrapped a one-server cluster")
                }
                // Restarting on storage that already holds a cluster.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => {
                    let _ = raft.shutdown().await;
                    writer.stop().await;
                    return Err(WriteError::Fatal(e.to_string()));
                }
            }
        }
        let metrics = raft.metrics();
        let proposer = Proposer::spawn(
            raft.clone(),
            tuning.write_queue,
            tuning.max_batch,
            tuning.request_timeout,
        );
        let consensus = Arc::new(Self {
            raft,
            proposer,
            node_id,
            me,
            datacenter: cfg.datacenter.clone(),
            metrics,
            pool,
            contact,
            replica,
            cluster: cluster::Cluster::new(cfg.bootstrap_expect, cfg.retry_join.clone()),
            writer,
            tuning,
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(cluster::discover(
            Arc::downgrade(&consensus),
            consensus.stop.clone(),
        ));
        consensus
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(consensus)
    }

    /// Where a request for the leader should go now.
    fn route(&self) -> Route {
        let (leader, voters) = {
            let m = self.metrics.borrow();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            (m.current_leader, voters)
        };
        match leader {
            Some(id) if id == self.node_id => {
                let leading = self.metrics.borrow().state == ServerState::Leader;
                if leading && self.contact.has_quorum(id, voters, self.tuning.lease) {
                    Route::Local
                } else {
                    Route::Nowhere
                }
            }
            Some(id) => match self.node(id) {
                Some(node) => Route::Remote(id, node.addr),
                None => Route::Nowhere,
            },
            None => Route::Nowhere,
        }
    }

    /// The node record of `id` in the current membership.
    fn node(&self, id: NodeId) -> Option<Node> {
        self.metrics
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// Waits until the known leader changes (or a little while passes), so
    /// a retry goes where the cluster now points.
    async fn leader_change(&self, from: Option<NodeId>) {
        let mut metrics = self.metrics.clone();
        let _ = tokio::time::timeout(
            self.tuning.heartbeat,
            metrics.wait_for(|m| m.current_leader != from),
        )
        .await;
    }

    /// Proposes a command and waits until it is committed and applied on
    /// the leader. Concurrent writes share log entries (see `proposer`).
    /// On a follower the write is forwarded to the leader; while no leader is
    /// known it retries for [`Tuning::leader_wait`], then fails with
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
                    Some(self.node_id),
                ),
                Route::Remote(id, addr) => {
                    let call = self.forward(addr, Request::Write(cmd.clone()), deadline);
                    let answer = tokio::select! {
                        r = call => match r {
                            Ok(Response::Write(r)) => r,
                            Ok(_) => Err(WriteError::Fatal("leader answered a write with something else".into())),
                            Err(e) => Err(e),
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
    async fn leader_moved_from(&self, id: NodeId) {
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

    /// Sends a request to the leader at `addr`, mapping transport failures:
    /// a request that never left may be retried elsewhere (`NoLeader`), one
    /// that was lost in flight may have been carried out (`Interrupted`).
    async fn forward(
        &self,
        addr: SocketAddr,
        req: Request,
        deadline: Instant,
    ) -> Result<Response, WriteError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.pool.call(addr, &req, timeout).await {
            Ok(r) => Ok(r),
            Err(e) if e.not_sent() => Err(WriteError::NoLeader),
            Err(RpcError::Timeout(_)) => Err(WriteError::Timeout),
            Err(RpcError::Lost(_)) => Err(WriteError::Interrupted),
            Err(e) => Err(WriteError::Fatal(e.to_string())),
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

    /// For a follower's `?consistent` read: confirms leadership with a
    /// quorum (openraft's read-index) and returns the index the reader must
    /// have applied.
    pub async fn read_index_as_leader(&self) -> Result<u64, WriteError> {
        match self.route() {
            Route::Local => {}
            _ => return Err(WriteError::NoLeader),
        }
        let result =
            tokio::time::timeout(self.tuning.request_timeout, self.raft.ensure_linearizable())
                .await
                .map_err(|_| WriteError::Timeout)?;
        match result {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(_)) => Err(WriteError::NoLeader),
            Err(RaftError::Fatal(e)) => Err(WriteError::Fatal(e.to_string())),
        }
    }

    /// Confirms that a leader still leads and that this server has applied
    /// everything committed before the call, for `?consistent` reads: on the
    /// leader through openraft's read-index, on a follower by asking the
    /// leader for that index and waiting to apply it.
    pub async fn linearizable_read(&self) -> Result<(), WriteError> {
        let deadline = Instant::now() + self.tuning.request_timeout;
        let mut leaderless_since: Option<Instant> = None;
        let index = loop {
            let (attempt, leader) = match self.route() {
                Route::Local => (self.read_index_as_leader().await, Some(self.node_id)),
                Route::Remote(id, addr) => {
                    let answer = match self.forward(addr, Request::ReadIndex, deadline).await {
                        Ok(Response::ReadIndex(r)) => r,
                        Ok(_) => Err(WriteError::Fatal(
                            "leader answered a read-index request with something else".into(),
                        )),
                        Err(WriteError::Interrupted) => Err(WriteError::NoLeader),
                        Err(e) => Err(e),
                    };
                    (answer, Some(id))
                }
                Route::Nowhere => (Err(WriteError::NoLeader), None),
            };
            match attempt {
                Ok(index) => break index,
                Err(WriteError::NoLeader) => {
                    let since = *leaderless_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.tuning.leader_wait || Instant::now() >= deadline {
                        return Err(WriteError::NoLeader);
                    }
                    self.leader_change(leader).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut applied = self.replica.subscribe();
        match tokio::time::timeout_at(deadline, applied.wait_for(|&i| i >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Fatal("the replica is gone".into())),
            Err(_) => Err(WriteError::Timeout),
        }
    }

    /// The applied catalog this server's state machine writes.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// This server's Raft node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
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

    /// This server heard from `leader` (its entries were accepted).
    pub fn heard_from_leader(&self, leader: NodeId) {
        self.contact.heard_from(leader);
    }

    /// Time since this server last heard from the leader; zero on the leader,
    /// the whole uptime when it never has.
    pub fn last_contact(&self) -> Duration {
        let leader = self.metrics.borrow().current_leader;
        match leader {
            Some(id) if id == self.node_id => Duration::ZERO,
            Some(id) => self.contact.since_leader(id),
            None => self.contact.since_leader(self.node_id),
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

    /// Waits until a leader is known.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<(), WriteError> {
        match self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
        {
            Ok(_) => Ok(()),
            Err(WaitError::Timeout(..)) => Err(WriteError::NoLeader),
            Err(WaitError::ShuttingDown) => Err(WriteError::Fatal("raft is shutting down".into())),
        }
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

    /// The storage writer's commit counters.
    pub fn storage_stats(&self) -> Arc<WriterStats> {
        self.writer.stats()
    }

    /// The openraft handle, for tests and the RPC server.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;
