//! The Raft family: openraft's own calls between servers (replicate entries
//! or heartbeat, send a snapshot chunk, ask for a vote), each addressed to
//! the Raft id the sender means, and the handler a server answers them with.

use std::future::Future;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::types::{RaftId, TypeConfig};

/// A Raft call from one server to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Replicate entries, or a heartbeat, to server `to`.
    AppendEntries {
        /// The Raft id the sender means: a server whose data dir was wiped
        /// comes back at the same address with a new id, and must not
        /// answer for the old one.
        to: RaftId,
        /// The request.
        rpc: AppendEntriesRequest<TypeConfig>,
    },
    /// One chunk of a snapshot, to server `to`.
    InstallSnapshot {
        /// The Raft id the sender means.
        to: RaftId,
        /// The request.
        rpc: InstallSnapshotRequest<TypeConfig>,
    },
    /// A vote request, to server `to`.
    Vote {
        /// The Raft id the sender means.
        to: RaftId,
        /// The request.
        rpc: VoteRequest<RaftId>,
    },
}

/// The answer to a [`RaftRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    /// To [`RaftRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>),
    /// To [`RaftRequest::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>,
    ),
    /// To [`RaftRequest::Vote`].
    Vote(Result<VoteResponse<RaftId>, RaftError<RaftId>>),
    /// The request was for another id than this server's: the server the
    /// sender means is no longer at this address.
    NotHere {
        /// This server's id.
        is: RaftId,
    },
}

impl RaftRequest {
    /// The request's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AppendEntries { .. } => "append-entries",
            Self::InstallSnapshot { .. } => "install-snapshot",
            Self::Vote { .. } => "vote",
        }
    }

    /// The Raft id the sender means.
    fn to(&self) -> RaftId {
        match self {
            Self::AppendEntries { to, .. }
            | Self::InstallSnapshot { to, .. }
            | Self::Vote { to, .. } => *to,
        }
    }
}

impl RaftResponse {
    /// The response's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AppendEntries(_) => "append-entries",
            Self::InstallSnapshot(_) => "install-snapshot",
            Self::Vote(_) => "vote",
            Self::NotHere { .. } => "not-here",
        }
    }
}

/// What a server's Raft member answers Raft calls with (consensus implements
/// it).
pub trait RaftHandler: Send + Sync {
    /// This server's Raft id.
    fn raft_id(&self) -> RaftId;

    /// Takes entries (or a heartbeat) from a leader.
    fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> impl Future<Output = Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>> + Send;

    /// Takes one chunk of a snapshot from a leader.
    fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> impl Future<
        Output = Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>,
    > + Send;

    /// Answers a candidate's vote request.
    fn vote(
        &self,
        rpc: VoteRequest<RaftId>,
    ) -> impl Future<Output = Result<VoteResponse<RaftId>, RaftError<RaftId>>> + Send;
}

/// Carries out one Raft call, unless it is meant for another server.
pub(super) async fn handle(handler: &impl RaftHandler, req: RaftRequest) -> RaftResponse {
    let me = handler.raft_id();
    if req.to() != me {
        return RaftResponse::NotHere { is: me };
    }
    match req {
        RaftRequest::AppendEntries { rpc, .. } => {
            RaftResponse::AppendEntries(handler.append_entries(rpc).await)
        }
        RaftRequest::InstallSnapshot { rpc, .. } => {
            RaftResponse::InstallSnapshot(handler.install_snapshot(rpc).await)
        }
        RaftRequest::Vote { rpc, .. } => RaftResponse::Vote(handler.vote(rpc).await),
    }
}
