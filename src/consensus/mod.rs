//! openraft glue: the type configuration, the redb-backed log store, the
//! state-machine adapter that applies entries to the [`Replica`], snapshots,
//! and the handle the rest of the agent uses to write and to ask who leads.
//!
//! [`Consensus::start`] opens the server's redb database (`store`), restores
//! the latest snapshot into the replica, and starts openraft over:
//! - `log_store`: the log and vote, durable through group commits;
//! - `state_machine`: applies entries to the replica, builds and installs
//!   snapshots, which also bound the log through compaction;
//! - `network`: the seam for server RPC (single-server for now).
//!
//! Everything else in the agent goes through [`Consensus`]: writes become log
//! entries, and leadership questions are answered from openraft's metrics
//! without waiting on Raft.

mod log_store;
mod network;
mod proposer;
mod state_machine;
pub mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, Config, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use crate::catalog::{Command, Outcome, Replica};
use crate::store::{self, Op, StoreError, Writer, WriterStats, keys};
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
    /// Address other servers reach this one at (port 8300).
    pub rpc_addr: SocketAddr,
    /// Where to keep the log.
    pub storage: Storage,
    /// How many servers to wait for before bootstrapping (1: bootstrap alone at once).
    pub bootstrap_expect: usize,
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
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
            snapshot_every: 5000,
            keep_after_snapshot: 1000,
            request_timeout: Duration::from_secs(5),
            writer_queue: 1024,
            write_queue: 4096,
            max_batch: 512,
        }
    }
}

/// Why a write did not commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// No leader is known (election in progress, or quorum lost). Retryable.
    #[error("No cluster leader")]
    NoLeader,
    /// The write did not commit in time. It may still commit later.
    #[error("timed out waiting for the write to commit")]
    Timeout,
    /// Raft or storage failed; the server is shutting down or broken.
    #[error("raft: {0}")]
    Fatal(String),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        Self::Fatal(e.to_string())
    }
}

/// A running Raft member: the only way catalog writes enter the log.
pub struct Consensus {
    /// The openraft handle.
    raft: Raft,
    /// Batches writes into log entries.
    proposer: Proposer,
    /// This server's Raft id.
    node_id: NodeId,
    /// openraft's metrics, borrowed for the cheap leadership questions.
    metrics: watch::Receiver<RaftMetrics<NodeId, Node>>,
    /// The storage writer, stopped last on shutdown.
    writer: Writer,
    /// How long writes and reads wait.
    request_timeout: Duration,
    /// When this member started: a follower that never heard from a leader
    /// reports its whole uptime as the time since last contact.
    started: Instant,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus")
            .field("node_id", &self.node_id)
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
                rpc_addr: SocketAddr::from(([127, 0, 0, 1], 8300)),
                storage: Storage::Memory,
                bootstrap_expect: 1,
            },
            replica,
        )
        .await
        .expect("in-memory consensus starts");
        consensus
            .wait_for_leader(Duration::from_secs(10))
            .await
            .expect("a one-server cluster elects itself");
        Arc::new(consensus)
    }

    /// Opens storage, restores the last snapshot and log into `replica`, and
    /// starts Raft (bootstrapping a single-node cluster when `bootstrap_expect == 1`
    /// and storage is empty).
    pub async fn start(cfg: ConsensusConfig, replica: Arc<Replica>) -> Result<Self, WriteError> {
        Self::start_tuned(cfg, Tuning::default(), replica).await
    }

    /// [`Consensus::start`] with explicit tuning.
    pub async fn start_tuned(
        cfg: ConsensusConfig,
        tuning: Tuning,
        replica: Arc<Replica>,
    ) -> Result<Self, WriteError> {
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
        let state_machine = StateMachine::open(&contents, replica, writer.clone())?;
        drop(contents);

        let config = Config {
            cluster_name: "trellis".into(),
            heartbeat_interval: millis(tuning.heartbeat),
            election_timeout_min: millis(tuning.election_timeout.0),
            election_timeout_max: millis(tuning.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
            max_in_snapshot_log_to_keep: tuning.keep_after_snapshot,
            ..Config::default()
        }
        .validate()
        .map_err(|e| WriteError::Fatal(format!("raft config: {e}")))?;
        let raft = Raft::new(node_id, Arc::new(config), Network, log_store, state_machine)
            .await
            .map_err(|e| WriteError::Fatal(e.to_string()))?;

        if cfg.bootstrap_expect == 1 {
            let members = BTreeMap::from([(node_id, BasicNode::new(cfg.rpc_addr))]);
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
        Ok(Self {
            raft,
            proposer,
            node_id,
            metrics,
            writer,
            request_timeout: tuning.request_timeout,
            started: Instant::now(),
        })
    }

    /// Proposes a command and waits until it is committed and applied here.
    /// Concurrent writes share log entries (see `proposer`).
    pub async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        tokio::time::timeout(self.request_timeout, self.proposer.propose(cmd))
            .await
            .map_err(|_| WriteError::Timeout)?
    }

    /// This server's Raft node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The leader's RPC address, if one is known.
    pub fn leader(&self) -> Option<SocketAddr> {
        let metrics = self.metrics.borrow();
        let leader = metrics.current_leader?;
        node_addr(&metrics, leader)
    }

    /// Whether this server currently leads.
    pub fn is_leader(&self) -> bool {
        self.metrics.borrow().state == ServerState::Leader
    }

    /// Time since this server last heard from the leader; zero on the leader.
    ///
    /// Followers learn of contact only through server RPC, which arrives with
    /// multi-server clusters; until then a follower reports its uptime.
    pub fn last_contact(&self) -> Duration {
        if self.is_leader() {
            Duration::ZERO
        } else {
            self.started.elapsed()
        }
    }

    /// RPC addresses of the voters in the current configuration.
    pub fn peers(&self) -> Vec<SocketAddr> {
        let metrics = self.metrics.borrow();
        metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter_map(|id| node_addr(&metrics, id))
            .collect()
    }

    /// Confirms this server still leads and has applied everything committed
    /// before the call (openraft's read-index), for `?consistent` reads.
    pub async fn linearizable_read(&self) -> Result<(), WriteError> {
        let result = tokio::time::timeout(self.request_timeout, self.raft.ensure_linearizable())
            .await
            .map_err(|_| WriteError::Timeout)?;
        match result {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(_)) => Err(WriteError::NoLeader),
            Err(RaftError::Fatal(e)) => Err(WriteError::Fatal(e.to_string())),
        }
    }

    /// Waits until a leader is known (used at start-up before self-registration).
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

    /// Stops Raft and closes storage. Called last in the shutdown order.
    pub async fn shutdown(&self) {
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

    /// The openraft handle, for tests and the future RPC server.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn node_addr(metrics: &RaftMetrics<NodeId, Node>, id: NodeId) -> Option<SocketAddr> {
    metrics
        .membership_config
        .membership()
        .get_node(&id)
        .and_then(|node| node.addr.parse().ok())
}

#[cfg(test)]
mod tests;
