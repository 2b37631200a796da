//! openraft's type configuration for trellis, and short names for the
//! openraft types and errors the rest of consensus spells out often.

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
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A server's Raft id: random, chosen at first start and kept in storage.
pub type NodeId = u64;

/// What Raft knows about a server, kept in the membership configuration so
/// that every server can name its peers and reach them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// The server's node name (`--node`).
    pub name: String,
    /// Its server RPC address.
    pub addr: std::net::SocketAddr,
}

/// openraft asks for a default node; it is never a real server's.
impl Default for Node {
    fn default() -> Self {
        Self {
            name: String::new(),
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

impl Node {
    /// A server named `name` reachable at `addr`.
    pub fn new(name: impl Into<String>, addr: std::net::SocketAddr) -> Self {
        Self {
            name: name.into(),
            addr,
        }
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;

/// A log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;

/// A vote.
pub type Vote = openraft::Vote<NodeId>;

/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;

/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// The membership config last applied, with the log id that carried it.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;

/// openraft's error types instantiated for [`TypeConfig`].
pub mod typ {
    use super::{Node, NodeId};

    /// A storage failure as openraft reports it.
    pub type StorageError = openraft::StorageError<NodeId>;
    /// A failed Raft API call carrying `E`.
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    /// A failed RPC to another server.
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, Node, RaftError<E>>;
    /// Why a client write was refused.
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
    /// Why a linearizable read could not be confirmed.
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
    /// Why initialization was refused.
    pub type InitializeError = openraft::error::InitializeError<NodeId, Node>;
    /// Where a write or read should go instead.
    pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, Node>;
    /// Why a snapshot install failed.
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    /// The reply to a committed client write.
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<super::TypeConfig>;
}
