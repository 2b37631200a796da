//! openraft's type configuration for trellis: what a log entry carries, how
//! a server is named in Raft, and short names for the openraft types and
//! errors that consensus and the Raft request family spell out often. It
//! lives with the wire types because Raft's messages carry it: consensus
//! builds on it, and server RPC needs nothing from consensus to encode it.

use std::io::Cursor;

use crate::catalog::{Command, Outcome};

/// What one log entry carries: the commands proposed together while the
/// previous entry was being committed.
///
/// openraft 0.9 appends one entry at a time on the leader and waits for it
/// to be flushed before appending the next, so group commit has to happen
/// before Raft: one entry, one fsync, many commands. The commands apply in
/// order at the entry's index.
pub type Batch = Vec<Command>;

/// What applying a [`Batch`] produced: one [`Outcome`] per command, in order.
pub type Outcomes = Vec<Outcome>;

openraft::declare_raft_types!(
    /// Raft over the catalog: entries carry [`Batch`]es of commands, applying
    /// one yields their [`Outcomes`], servers are `u64` ids whose node record
    /// is the server RPC address.
    pub TypeConfig:
        D = Batch,
        R = Outcomes,
        NodeId = RaftId,
        Node = RaftMember,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A server's Raft id: random, chosen at first start and kept in storage.
pub type RaftId = u64;

/// What Raft knows about a server (openraft's node record), kept in the
/// membership configuration so that every server can name its peers and
/// reach them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RaftMember {
    /// The server's node name (`--node`).
    pub name: String,
    /// Its server RPC address.
    pub addr: std::net::SocketAddr,
}

/// openraft asks for a default node; it is never a real server's.
impl Default for RaftMember {
    fn default() -> Self {
        Self {
            name: String::new(),
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

impl RaftMember {
    /// A server named `name` reachable at `addr`.
    pub fn new(name: impl Into<String>, addr: std::net::SocketAddr) -> Self {
        Self {
            name: name.into(),
            addr,
        }
    }
}

impl std::fmt::Display for RaftMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;

/// A log id (term, leader, index).
pub type LogId = openraft::LogId<RaftId>;

/// A vote.
pub type Vote = openraft::Vote<RaftId>;

/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<RaftId, RaftMember>;

/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// The membership config last applied, with the log id that carried it.
pub type StoredMembership = openraft::StoredMembership<RaftId, RaftMember>;

/// openraft's error types instantiated for [`TypeConfig`].
pub mod typ {
    use super::{RaftId, RaftMember};

    /// A storage failure as openraft reports it.
    pub type StorageError = openraft::StorageError<RaftId>;
    /// A failed Raft API call carrying `E`.
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<RaftId, E>;
    /// A failed RPC to another server.
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<RaftId, RaftMember, RaftError<E>>;
    /// Why a client write was refused.
    pub type ClientWriteError = openraft::error::ClientWriteError<RaftId, RaftMember>;
    /// Why a linearizable read could not be confirmed.
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<RaftId, RaftMember>;
    /// Why initialization was refused.
    pub type InitializeError = openraft::error::InitializeError<RaftId, RaftMember>;
    /// Where a write or read should go instead.
    pub type ForwardToLeader = openraft::error::ForwardToLeader<RaftId, RaftMember>;
    /// Why a snapshot install failed.
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    /// The reply to a committed client write.
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<super::TypeConfig>;
}
