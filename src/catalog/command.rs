//! What the Raft log carries: a [`Command`] per write, one variant per
//! domain, each domain with its own operations; and what applying one
//! produced ([`Outcome`]).
//!
//! Commands are deterministic to apply: anything time- or randomness-dependent
//! is decided by the proposer and carried here as data. A new domain (KV,
//! sessions, transactions) is a new variant here with its ops in its own type,
//! and a new arm in [`super::State::apply`].
//!
//! These types are encoded into the log by position (postcard); the encoding
//! is versioned as a whole in `store::format`, and a change to any type here
//! is a new format version (the golden-bytes tests of the log's encoding,
//! beside `rpc::types`, fail until it is).

use serde::{Deserialize, Serialize};

use super::types::{Deregistration, Index, Registration};

/// A change to the replicated state, by domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Nodes, services and checks.
    Catalog(CatalogOp),
}

/// A change to nodes, services and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "an op is built once per write and moved, never stored in bulk"
)]
pub enum CatalogOp {
    /// Upsert a node, a service and checks.
    Register(Registration),
    /// Remove a node, a service or a check.
    Deregister(Deregistration),
}

impl Command {
    /// Consul's catalog register.
    pub fn register(r: Registration) -> Self {
        Self::Catalog(CatalogOp::Register(r))
    }

    /// Consul's catalog deregister.
    pub fn deregister(d: Deregistration) -> Self {
        Self::Catalog(CatalogOp::Deregister(d))
    }

    /// Whether applying the command twice leaves the same state as once, so
    /// a write whose answer was lost with its leader can be sent again.
    /// Registrations are upserts and deregistrations removals: both are.
    pub fn idempotent(&self) -> bool {
        match self {
            Self::Catalog(CatalogOp::Register(_) | CatalogOp::Deregister(_)) => true,
        }
    }
}

/// Why the state machine refused a command. Refusals are replicated results:
/// every server refuses the same command the same way and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CatalogError {
    /// A required field is empty.
    #[error("missing {0}")]
    Missing(String),
    /// A check names a service instance the node does not have.
    #[error("unknown service ID {service_id:?} for check {check_id:?}")]
    UnknownServiceForCheck {
        /// The check being registered.
        check_id: String,
        /// The service it named.
        service_id: String,
    },
    /// `skip_node_update` on a node that does not exist and no address given.
    #[error("node {0:?} does not exist and no address was given")]
    NoNodeAddress(String),
}

/// What applying one log entry produced; returned to the writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A membership or blank entry: nothing for the catalog.
    Noop,
    /// The command was applied at the given index.
    Applied(Index),
    /// The command was refused and changed nothing.
    Refused(CatalogError),
}
