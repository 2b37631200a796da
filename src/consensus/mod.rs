//! openraft glue: the type configuration, the redb-backed log store, the
//! state-machine adapter that applies entries to the [`Replica`], snapshots,
//! and the handle the rest of the agent uses to write and to ask who leads.
//!
//! INTERFACE STUB: the bodies below are placeholders to be replaced by the
//! real implementation; the signatures are what `http/` and `agent/` call.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Command, Outcome, Replica};

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
    /// This server's node name; its Raft node ID is derived from it and kept in storage.
    pub node_name: String,
    /// Address other servers reach this one at (port 8300).
    pub rpc_addr: SocketAddr,
    /// Where to keep the log.
    pub storage: Storage,
    /// How many servers to wait for before bootstrapping (1: bootstrap alone at once).
    pub bootstrap_expect: usize,
}

/// Why a write did not commit.
#[derive(Debug, thiserror::Error)]
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

/// A running Raft member: the only way catalog writes enter the log.
#[derive(Debug)]
pub struct Consensus {
    replica: Arc<Replica>,
}

impl Consensus {
    /// Opens storage, restores the last snapshot and log into `replica`, and
    /// starts Raft (bootstrapping a single-node cluster when `bootstrap_expect == 1`
    /// and storage is empty).
    pub async fn start(_cfg: ConsensusConfig, replica: Arc<Replica>) -> Result<Self, WriteError> {
        Ok(Self { replica })
    }

    /// Proposes a command and waits until it is committed and applied here.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        let index = self.replica.applied_index() + 1;
        Ok(self.replica.apply(index, &cmd))
    }

    /// The leader's RPC address, if one is known.
    pub fn leader(&self) -> Option<SocketAddr> {
        None
    }

    /// Whether this server currently leads.
    pub fn is_leader(&self) -> bool {
        true
    }

    /// Time since this server last heard from the leader; zero on the leader.
    pub fn last_contact(&self) -> Duration {
        Duration::ZERO
    }

    /// RPC addresses of the voters in the current configuration.
    pub fn peers(&self) -> Vec<SocketAddr> {
        Vec::new()
    }

    /// Confirms this server still leads and has applied everything committed
    /// before the call (openraft's read-index), for `?consistent` reads.
    pub async fn linearizable_read(&self) -> Result<(), WriteError> {
        Ok(())
    }

    /// Waits until a leader is known (used at start-up before self-registration).
    pub async fn wait_for_leader(&self, _timeout: Duration) -> Result<(), WriteError> {
        Ok(())
    }

    /// Stops Raft and closes storage. Called last in the shutdown order.
    pub async fn shutdown(&self) {}
}
