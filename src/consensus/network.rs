//! The seam where Raft talks to other servers.
//!
//! Server RPC (TCP on port 8300) arrives with multi-server clusters. Until
//! then every call reports the target unreachable. A one-voter cluster never
//! calls these: a lone leader has nobody to replicate to or ask for votes.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::types::{Node, NodeId, TypeConfig};

/// Why a call to another server failed.
#[derive(Debug, thiserror::Error)]
#[error("server RPC not available yet (cannot reach node {target} at {addr})")]
pub(crate) struct RpcUnavailable {
    /// The server Raft wanted to reach.
    target: NodeId,
    /// Its RPC address.
    addr: String,
}

/// Creates a [`Peer`] per target server.
#[derive(Debug, Clone, Default)]
pub(crate) struct Network;

/// A client for one other server.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    target: NodeId,
    addr: String,
}

impl Peer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, Node, E> {
        RPCError::Unreachable(Unreachable::new(&RpcUnavailable {
            target: self.target,
            addr: self.addr.clone(),
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
