//! How this agent reaches the replicated catalog: a server through its own
//! Raft member, a client agent through a server over RPC. Everything that
//! writes or asks about the cluster (the HTTP API, the local state) goes
//! through here and works the same on both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Command, Outcome};
use crate::consensus::Consensus;
use crate::rpc::types::RaftId;
use crate::rpc::{Configuration, MembershipError, ReadError, ServerLink, WriteError};

/// The agent's way to the catalog's consensus. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Delegate {
    /// This agent is a server: its own Raft member.
    Server(Arc<Consensus>),
    /// This agent is a client: its link to the servers.
    Client(Arc<ServerLink>),
}

impl Delegate {
    /// Commits a catalog command (through the leader) and returns what
    /// applying it did.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        match self {
            Self::Server(c) => c.write(cmd).await,
            Self::Client(l) => l.write(cmd).await,
        }
    }

    /// Waits until this agent's replica holds everything committed before
    /// the call (`?consistent`).
    pub async fn linearizable_read(&self) -> Result<(), ReadError> {
        match self {
            Self::Server(c) => c.linearizable_read().await,
            Self::Client(l) => l.linearizable_read().await,
        }
    }

    /// The leader's RPC address, if one is known and live.
    pub fn leader(&self) -> Option<SocketAddr> {
        match self {
            Self::Server(c) => c.leader(),
            Self::Client(l) => l.leader(),
        }
    }

    /// The voters' RPC addresses.
    pub fn peers(&self) -> Vec<SocketAddr> {
        match self {
            Self::Server(c) => c.peers(),
            Self::Client(l) => l.peers(),
        }
    }

    /// Whether default-consistency reads may be served from this replica.
    pub fn leader_live(&self) -> bool {
        match self {
            Self::Server(c) => c.leader_live(),
            Self::Client(l) => l.leader_live(),
        }
    }

    /// How stale this agent's replica may be (`X-Consul-LastContact`).
    pub fn last_contact(&self) -> Duration {
        match self {
            Self::Server(c) => c.last_contact(),
            Self::Client(l) => l.last_contact(),
        }
    }

    /// The Raft configuration.
    pub async fn configuration(&self) -> Result<Configuration, MembershipError> {
        match self {
            Self::Server(c) => Ok(c.configuration()),
            Self::Client(l) => l.configuration().await,
        }
    }

    /// Removes server `id` from the Raft configuration for an operator
    /// holding `token` (checked by this agent already; a client agent's
    /// server checks it again).
    pub async fn remove_server(
        &self,
        id: RaftId,
        token: Option<String>,
    ) -> Result<(), MembershipError> {
        match self {
            Self::Server(c) => c.remove_server(id).await,
            Self::Client(l) => l.remove_server(id, token).await,
        }
    }

    /// Removes the server at RPC address `addr` from the Raft configuration.
    pub async fn remove_address(
        &self,
        addr: SocketAddr,
        token: Option<String>,
    ) -> Result<(), MembershipError> {
        let id = self.configuration().await?.id_at(addr)?;
        self.remove_server(id, token).await
    }

    /// Takes a server out of the Raft configuration for a graceful leave;
    /// a client has no part in it.
    pub async fn leave(&self) -> Result<(), MembershipError> {
        match self {
            Self::Server(c) => c.leave().await,
            Self::Client(_) => Ok(()),
        }
    }
}
