//! What travels over server RPC. Every frame is an [`Envelope`]: a call id
//! chosen by the caller and the body. Calls on one connection are pipelined
//! and may be answered in any order; the id pairs each [`Response`] with its
//! [`Request`].
//!
//! Servers call each other with every request; client agents use the ones
//! marked as theirs: forwarded writes, consistent reads, the change stream
//! ([`Request::Follow`]) and the Raft configuration.

use std::net::SocketAddr;
use std::sync::Arc;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::types::{Node, NodeId, TypeConfig};
use crate::catalog::{Catalog, Command, Index, Outcome};
use crate::consensus::{Configuration, WriteError};

/// One frame's content.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The caller's id for this call, echoed in the answer.
    pub id: u64,
    /// The request or response.
    pub body: T,
}

/// A server's Raft id and its node record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft node id.
    pub id: NodeId,
    /// Name and RPC address.
    pub node: Node,
}

/// What servers tell each other while finding their cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The sender.
    pub from: Member,
    /// The sender's datacenter: servers of different datacenters never
    /// form one cluster.
    pub datacenter: String,
    /// Whether the sender already belongs to a cluster (its log holds a
    /// membership configuration).
    pub in_cluster: bool,
    /// The leader the sender knows, if any.
    pub leader: Option<SocketAddr>,
    /// Every server the sender has heard of, itself included, so discovery
    /// spreads transitively from one join address.
    pub known: Vec<Member>,
}

/// A call from one server to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Raft: replicate entries, or a heartbeat, to server `to`.
    AppendEntries {
        /// The Raft id the sender means: a server whose data dir was wiped
        /// comes back at the same address with a new id, and must not
        /// answer for the old one.
        to: NodeId,
        /// The request.
        rpc: AppendEntriesRequest<TypeConfig>,
    },
    /// Raft: one chunk of a snapshot, to server `to`.
    InstallSnapshot {
        /// The Raft id the sender means.
        to: NodeId,
        /// The request.
        rpc: InstallSnapshotRequest<TypeConfig>,
    },
    /// Raft: a vote request, to server `to`.
    Vote {
        /// The Raft id the sender means.
        to: NodeId,
        /// The request.
        rpc: VoteRequest<NodeId>,
    },
    /// A client write forwarded to the leader.
    Write(Command),
    /// Asks the leader to confirm its leadership and name the index a
    /// linearizable read must wait for (`?consistent` on a follower).
    ReadIndex,
    /// Discovery: introduce yourself and learn the peer's view.
    Hello(Hello),
    /// Add this server to the cluster (as a learner, then a voter), or
    /// update its address. Any server forwards it to the leader.
    Join(Member),
    /// Remove this server from the configuration. Forwarded to the leader.
    Remove(NodeId),
    /// From a client agent: a write for the server to route to the leader.
    Forward(Command),
    /// From a client agent: the index a `?consistent` read must wait for.
    /// The server confirms a leader and applies that index before answering.
    ConsistentIndex,
    /// From a client agent: what was applied after `after`, once there is
    /// something, or nothing after `wait_ms` (a long poll).
    Follow {
        /// The last index the client applied.
        after: Index,
        /// How long to wait for a change, in milliseconds.
        wait_ms: u32,
    },
    /// From a client agent: the Raft configuration as this server has it.
    Configuration,
}

/// A server's answer to [`Request::Follow`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Follow {
    /// What to apply.
    pub changes: Changes,
    /// The server's view of the cluster when it answered.
    pub status: ServerStatus,
}

/// What a following client applies to catch up.
#[derive(Debug, Serialize, Deserialize)]
pub enum Changes {
    /// The applied entries after the client's index, in order; empty when
    /// nothing changed before the poll ended.
    Entries(Vec<(Index, Arc<[Command]>)>),
    /// The client is behind the server's history: the whole state.
    Snapshot(Catalog),
}

/// What a server knows of its cluster, for a client's headers and
/// `/v1/status/*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The leader's RPC address, if one is known and live.
    pub leader: Option<SocketAddr>,
    /// Whether the server may serve default-consistency reads.
    pub leader_live: bool,
    /// Milliseconds since the server last heard from its leader.
    pub last_contact_ms: u64,
    /// The voters' RPC addresses.
    pub peers: Vec<SocketAddr>,
}

/// The answer to a [`Request`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// To [`Request::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Write`] and [`Request::Forward`].
    Write(Result<Outcome, WriteError>),
    /// To [`Request::ReadIndex`] and [`Request::ConsistentIndex`]: the log
    /// index to have applied.
    ReadIndex(Result<u64, WriteError>),
    /// To [`Request::Hello`].
    Hello(Hello),
    /// To [`Request::Join`] and [`Request::Remove`].
    Done(Result<(), WriteError>),
    /// A Raft request for another id than this server's: the server the
    /// sender means is no longer at this address.
    NotHere {
        /// This server's id.
        is: NodeId,
    },
    /// To [`Request::Follow`].
    Follow(Follow),
    /// To [`Request::Configuration`].
    Configuration(Configuration),
    /// The request could not be decoded; the text says why.
    Malformed(String),
}

impl Request {
    /// The request's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AppendEntries { .. } => "append-entries",
            Self::InstallSnapshot { .. } => "install-snapshot",
            Self::Vote { .. } => "vote",
            Self::Write(_) => "write",
            Self::ReadIndex => "read-index",
            Self::Hello(_) => "hello",
            Self::Join(_) => "join",
            Self::Remove(_) => "remove",
            Self::Forward(_) => "forward",
            Self::ConsistentIndex => "consistent-index",
            Self::Follow { .. } => "follow",
            Self::Configuration => "configuration",
        }
    }
}

impl Response {
    /// The response's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AppendEntries(_) => "append-entries",
            Self::InstallSnapshot(_) => "install-snapshot",
            Self::Vote(_) => "vote",
            Self::Write(_) => "a write result",
            Self::ReadIndex(_) => "a read index",
            Self::Hello(_) => "hello",
            Self::Done(_) => "done",
            Self::NotHere { .. } => "not-here",
            Self::Follow(_) => "changes",
            Self::Configuration(_) => "a configuration",
            Self::Malformed(_) => "malformed",
        }
    }
}
