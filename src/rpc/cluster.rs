//! The cluster family: what servers ask each other to run their cluster.
//! Discovery ([`Hello`]), membership changes (join, remove; any server hands
//! them to the leader), and the two calls a follower makes to its leader on
//! a client's behalf: a write, and the read index of a `?consistent` read.
//! A server also tells another of its datacenter where it gossips in the
//! WAN pool ([`ClusterRequest::WanAddress`]), which join flooding asks.
//! A client agent asks for a removal through its own family
//! (`ClientRequest::RemovePeer`, with the operator's token), never through
//! this one, which only a server's certificate may use.

use std::future::Future;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::errors::{MembershipError, ReadError, WriteError};
use super::types::{RaftId, RaftMember};
use crate::catalog::{Command, Outcome};

/// A server as Raft knows it: its id and its membership record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftServer {
    /// Raft id.
    pub id: RaftId,
    /// Name and RPC address.
    pub member: RaftMember,
}

/// What servers tell each other while finding their cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The sender.
    pub from: RaftServer,
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
    pub known: Vec<RaftServer>,
}

/// A cluster call from one server to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterRequest {
    /// Discovery: introduce yourself and learn the peer's view.
    Hello(Hello),
    /// Add this server to the cluster (as a learner, then a voter), or
    /// update its address. Any server forwards it to the leader.
    Join(RaftServer),
    /// Remove this server from the configuration. Forwarded to the leader.
    Remove(RaftId),
    /// A client write forwarded to the leader, carried out only while the
    /// receiver leads (never forwarded again).
    WriteAsLeader(Command),
    /// Asks the leader to confirm its leadership and name the index a
    /// linearizable read must wait for (`?consistent` on a follower).
    ReadIndexAsLeader,
    /// Where the receiver gossips in the WAN pool, so that a server of the
    /// same datacenter can join it there (join flooding).
    WanAddress,
}

/// The answer to a [`ClusterRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ClusterResponse {
    /// To [`ClusterRequest::Hello`].
    Hello(Hello),
    /// To [`ClusterRequest::Join`] and [`ClusterRequest::Remove`].
    Done(Result<(), MembershipError>),
    /// To [`ClusterRequest::WriteAsLeader`].
    Write(Result<Outcome, WriteError>),
    /// To [`ClusterRequest::ReadIndexAsLeader`]: the log index to have
    /// applied.
    ReadIndex(Result<u64, ReadError>),
    /// To [`ClusterRequest::WanAddress`]: the receiver's WAN gossip
    /// address, `None` while it has no WAN pool (not yet, or
    /// `ports.serf_wan = -1`).
    WanAddress(Option<SocketAddr>),
}

impl ClusterRequest {
    /// The request's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Join(_) => "join",
            Self::Remove(_) => "remove",
            Self::WriteAsLeader(_) => "write",
            Self::ReadIndexAsLeader => "read-index",
            Self::WanAddress => "wan-address",
        }
    }
}

impl ClusterResponse {
    /// The response's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Done(_) => "done",
            Self::Write(_) => "a write result",
            Self::ReadIndex(_) => "a read index",
            Self::WanAddress(_) => "a WAN address",
        }
    }
}

/// The Raft configuration as `/v1/operator/raft/configuration` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// Every server in the configuration, voters and learners.
    pub servers: Vec<ServerEntry>,
    /// The log index of the configuration.
    pub index: u64,
}

impl Configuration {
    /// The id of the server at RPC address `addr`.
    pub fn id_at(&self, addr: SocketAddr) -> Result<RaftId, MembershipError> {
        self.servers
            .iter()
            .find(|s| s.addr == addr)
            .map(|s| s.id)
            .ok_or_else(|| {
                MembershipError::Refused(format!(
                    "address {addr:?} was not found in the Raft configuration"
                ))
            })
    }
}

/// One server of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEntry {
    /// Raft id.
    pub id: RaftId,
    /// Node name.
    pub name: String,
    /// Server RPC address.
    pub addr: SocketAddr,
    /// Whether it is the current leader.
    pub leader: bool,
    /// Whether it votes (a learner does not).
    pub voter: bool,
}

/// What a server answers cluster calls with (consensus implements it).
pub trait ClusterHandler: Send + Sync {
    /// Answers another server's [`Hello`] and learns from it.
    fn hello(&self, hello: Hello) -> Hello;

    /// Adds `server` to the configuration (or updates its entry), through
    /// the leader.
    fn join(&self, server: RaftServer) -> impl Future<Output = Result<(), MembershipError>> + Send;

    /// Removes server `id` from the configuration, through the leader.
    fn remove(&self, id: RaftId) -> impl Future<Output = Result<(), MembershipError>> + Send;

    /// Commits a write forwarded by a follower, if this server leads.
    fn write_as_leader(
        &self,
        cmd: Command,
    ) -> impl Future<Output = Result<Outcome, WriteError>> + Send;

    /// Confirms leadership and names the index a follower's `?consistent`
    /// read must wait for, if this server leads.
    fn read_index_as_leader(&self) -> impl Future<Output = Result<u64, ReadError>> + Send;

    /// Where this server gossips in the WAN pool, if it has one.
    fn wan_address(&self) -> Option<SocketAddr>;
}

/// Carries out one cluster call.
pub(super) async fn handle(handler: &impl ClusterHandler, req: ClusterRequest) -> ClusterResponse {
    match req {
        ClusterRequest::Hello(hello) => ClusterResponse::Hello(handler.hello(hello)),
        ClusterRequest::Join(server) => ClusterResponse::Done(handler.join(server).await),
        ClusterRequest::Remove(id) => ClusterResponse::Done(handler.remove(id).await),
        ClusterRequest::WriteAsLeader(cmd) => {
            ClusterResponse::Write(handler.write_as_leader(cmd).await)
        }
        ClusterRequest::ReadIndexAsLeader => {
            ClusterResponse::ReadIndex(handler.read_index_as_leader().await)
        }
        ClusterRequest::WanAddress => ClusterResponse::WanAddress(handler.wan_address()),
    }
}
