//! What travels over server RPC after the preface. Every frame is an
//! [`Envelope`]: a call id chosen by the caller and the body. Calls on one
//! connection are pipelined and may be answered in any order; the id pairs
//! each [`Response`] with its [`Request`].
//!
//! Requests come in families, one per audience, each with its types and its
//! handler in a file of its own: Raft between servers (`raft`), running the
//! cluster (`cluster`: discovery, joins and removals, a follower's calls to
//! its leader), and client agents (`client`: writes, `?consistent` reads,
//! the change stream), and servers of other datacenters (`datacenter`:
//! requests their clients sent with `?dc=` or a name of this datacenter).

use serde::{Deserialize, Serialize};

use super::client::{ClientRequest, ClientResponse};
use super::cluster::{ClusterRequest, ClusterResponse};
use super::datacenter::{DatacenterRequest, DatacenterResponse};
use super::raft::{RaftRequest, RaftResponse};

/// One frame's content.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The caller's id for this call, echoed in the answer.
    pub id: u64,
    /// The request or response.
    pub body: T,
}

/// A call to a server, by family. Families are appended, never
/// reordered: postcard numbers the variants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Raft between servers.
    Raft(RaftRequest),
    /// Running the cluster: discovery, membership, calls to the leader.
    Cluster(ClusterRequest),
    /// A client agent's calls.
    Client(ClientRequest),
    /// A server of another datacenter's calls.
    Datacenter(DatacenterRequest),
}

/// The answer to a [`Request`], in the request's family.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Raft`].
    Raft(RaftResponse),
    /// To [`Request::Cluster`].
    Cluster(ClusterResponse),
    /// To [`Request::Client`].
    Client(ClientResponse),
    /// The answer could not be encoded; the text says why.
    Malformed(String),
    /// To [`Request::Datacenter`].
    Datacenter(DatacenterResponse),
}

impl Request {
    /// The request's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Raft(r) => r.kind(),
            Self::Cluster(r) => r.kind(),
            Self::Client(r) => r.kind(),
            Self::Datacenter(r) => r.kind(),
        }
    }
}

impl Response {
    /// The response's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Raft(r) => r.kind(),
            Self::Cluster(r) => r.kind(),
            Self::Client(r) => r.kind(),
            Self::Malformed(_) => "malformed",
            Self::Datacenter(r) => r.kind(),
        }
    }
}
