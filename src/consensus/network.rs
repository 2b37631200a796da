//! Raft's view of the other servers: each openraft call becomes one server
//! RPC call (see `rpc`) on the pooled connection to the target. Successful
//! replication calls are recorded in [`Contact`], from which the leader knows
//! it still has a quorum.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::contact::Contact;
use crate::rpc::raft::{RaftRequest, RaftResponse};
use crate::rpc::types::{RaftId, RaftMember, TypeConfig};
use crate::rpc::{Pool, Request, Response, RpcError};

/// Creates a [`Peer`] per target server.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub(crate) pool: Arc<Pool>,
    pub(crate) contact: Arc<Contact>,
    /// How long to wait before calling an unreachable peer again.
    pub(crate) retry: Duration,
}

/// A client for one other server.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    target: RaftId,
    member: RaftMember,
    pool: Arc<Pool>,
    contact: Arc<Contact>,
    retry: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: RaftId, member: &RaftMember) -> Peer {
        Peer {
            target,
            member: member.clone(),
            pool: self.pool.clone(),
            contact: self.contact.clone(),
            retry: self.retry,
        }
    }
}

/// The reply was not the one the request calls for.
#[derive(Debug, thiserror::Error)]
#[error("{peer} answered a {asked} request with something else")]
struct WrongAnswer {
    peer: RaftMember,
    asked: &'static str,
}

impl Peer {
    async fn call<E: std::error::Error>(
        &self,
        req: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftResponse, RPCError<RaftId, RaftMember, E>> {
        let kind = req.kind();
        let answer = self
            .pool
            .call(self.member.addr, &Request::Raft(req), option.hard_ttl())
            .await;
        let failure = match answer {
            Ok(Response::Malformed(message)) => RpcError::Refused {
                addr: self.member.addr,
                message,
            },
            // Another server lives at that address now (a wiped data dir):
            // the one Raft means is unreachable, and the join that replaces
            // it is on its way.
            Ok(Response::Raft(RaftResponse::NotHere { is })) => {
                let e = RpcError::Refused {
                    addr: self.member.addr,
                    message: format!("server {is:016x} is there, not {:016x}", self.target),
                };
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Response::Raft(r)) => return Ok(r),
            Ok(_) => return Err(self.wrong(kind)),
            Err(e) => e,
        };
        tracing::trace!(peer = %self.member, kind, error = %failure, "raft rpc failed");
        Err(match failure {
            // Nothing listens there (yet): openraft backs off.
            // Or it speaks another protocol version: no use calling sooner.
            RpcError::Connect { .. } | RpcError::Preface { .. } => {
                RPCError::Unreachable(Unreachable::new(&failure))
            }
            _ => RPCError::Network(NetworkError::new(&failure)),
        })
    }

    fn wrong<E: std::error::Error>(&self, asked: &'static str) -> RPCError<RaftId, RaftMember, E> {
        RPCError::Network(NetworkError::new(&WrongAnswer {
            peer: self.member.clone(),
            asked,
        }))
    }
}

fn remote<E: std::error::Error>(
    target: RaftId,
    member: &RaftMember,
    e: RaftError<RaftId, E>,
) -> RPCError<RaftId, RaftMember, RaftError<RaftId, E>> {
    RPCError::RemoteError(openraft::error::RemoteError::new_with_node(
        target,
        member.clone(),
        e,
    ))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, RaftMember, RaftError<RaftId>>>
    {
        match self
            .call(
                RaftRequest::AppendEntries {
                    to: self.target,
                    rpc,
                },
                &option,
            )
            .await?
        {
            RaftResponse::AppendEntries(Ok(r)) => {
                if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                    self.contact.acked_by(self.target);
                }
                Ok(r)
            }
            RaftResponse::AppendEntries(Err(e)) => Err(remote(self.target, &self.member, e)),
            _ => Err(self.wrong("append-entries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, RaftMember, RaftError<RaftId, InstallSnapshotError>>,
    > {
        match self
            .call(
                RaftRequest::InstallSnapshot {
                    to: self.target,
                    rpc,
                },
                &option,
            )
            .await?
        {
            RaftResponse::InstallSnapshot(Ok(r)) => {
                self.contact.acked_by(self.target);
                Ok(r)
            }
            RaftResponse::InstallSnapshot(Err(e)) => Err(remote(self.target, &self.member, e)),
            _ => Err(self.wrong("install-snapshot")),
        }
    }

    /// After an unreachable peer, openraft waits this long before trying
    /// again. Its default (500 ms) would leave a restarted server without
    /// heartbeats for longer than its election timeout, so it would start
    /// elections it cannot win; one heartbeat interval is cheap on a LAN
    /// (a refused connection costs one SYN).
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.retry))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, RaftMember, RaftError<RaftId>>> {
        match self
            .call(
                RaftRequest::Vote {
                    to: self.target,
                    rpc,
                },
                &option,
            )
            .await?
        {
            RaftResponse::Vote(Ok(r)) => Ok(r),
            RaftResponse::Vote(Err(e)) => Err(remote(self.target, &self.member, e)),
            _ => Err(self.wrong("vote")),
        }
    }
}
