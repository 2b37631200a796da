//! What the Raft log carries: a [`Command`] per write, one variant per
//! domain, each domain with its own operations; and what applying one
//! produced ([`Outcome`]).
//!
//! Commands are deterministic to apply: anything time- or randomness-dependent
//! is decided before and carried as data (a session's ID by the agent that
//! creates it; the time by the leader, for the whole log entry). A new domain
//! is a new variant at the end here with its ops in its own type, and a new
//! arm in [`super::State::apply`].
//!
//! These types are encoded into the log by position (postcard); the encoding
//! is versioned as a whole in `store::format`, and a change to any type here
//! is a new format version (the golden-bytes tests of the log's encoding,
//! beside `rpc::types`, fail until it is).

use serde::{Deserialize, Serialize};

use super::acl_types::{AclError, AclOp};
use super::kv_types::{KvOp, SessionOp, TxnError, TxnOp, TxnResult};
use super::prepared_query::{PreparedQueryError, PreparedQueryOp};
use super::types::{Deregistration, Index, Registration};

/// A change to the replicated state, by domain. New variants go at the end:
/// postcard names a variant by its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Nodes, services and checks.
    Catalog(CatalogOp),
    /// One KV operation (`PUT` or `DELETE /v1/kv`).
    Kv(KvOp),
    /// Sessions.
    Session(SessionOp),
    /// KV operations applied in order, all or none (`/v1/txn`).
    Txn(Vec<TxnOp>),
    /// Forget KV tombstones: those deleted before the given time.
    ReapTombstones {
        /// Tombstones of deletes proposed before this are reaped.
        deleted_before: super::kv_types::Time,
    },
    /// ACL tokens and policies (since format 4).
    Acl(AclOp),
    /// Prepared queries (since format 5).
    PreparedQuery(PreparedQueryOp),
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

    /// Whether the command may be sent again when its answer was lost with
    /// its leader (it may have been applied already): applying it a second
    /// time, after others' writes, must not undo them.
    ///
    /// Registrations and deregistrations are: they restate this agent's own
    /// node and services, which anti-entropy restates anyway. A destroy of
    /// a session (its ID is never reused), a renew (it extends from the
    /// later time) and the leader's expiry and reaping are too. No KV write
    /// is: a resent set or delete could undo another client's write
    /// acknowledged in between, so a lost answer is reported, not retried.
    pub fn idempotent(&self) -> bool {
        match self {
            Self::Catalog(CatalogOp::Register(_) | CatalogOp::Deregister(_))
            | Self::ReapTombstones { .. }
            | Self::Session(
                SessionOp::Destroy { .. } | SessionOp::Renew { .. } | SessionOp::Expire { .. },
            ) => true,
            Self::Kv(op) => op.verb.is_read(),
            // A set restates the whole token or policy; a delete of one
            // already gone is refused, never harmful. A bootstrap is not: a
            // resend after it succeeded is refused, losing the secret.
            Self::Acl(op) => !matches!(op, AclOp::Bootstrap(_)),
            // An update restates the whole query; a create resent after it
            // succeeded is refused (its ID is taken), never doubled; a
            // delete of one already gone is refused.
            Self::PreparedQuery(_) => true,
            Self::Session(SessionOp::Create(_)) | Self::Txn(_) => false,
        }
    }

    /// Whether only the leader itself may propose the command: session
    /// expiry and reaping are decided by the leader's clock, never asked
    /// for by a client or another server.
    pub fn leader_only(&self) -> bool {
        matches!(
            self,
            Self::ReapTombstones { .. } | Self::Session(SessionOp::Expire { .. })
        )
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
    /// A KV operation's condition did not hold.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A session operation was refused.
    #[error(transparent)]
    Session(#[from] SessionError),
    // Appended last: refusals travel between servers by variant index.
    /// Another node ID asked for the name of a node that is healthy (see
    /// `rules/identity.rs`); Consul's words, which clients may match.
    #[error(
        "Node name {node} is reserved by node {holder_id} with name {holder_name} ({holder_address})"
    )]
    NodeNameReserved {
        /// The name asked for.
        node: String,
        /// The node ID that holds it.
        holder_id: String,
        /// The holder's name as registered (its spelling may differ).
        holder_name: String,
        /// The holder's address.
        holder_address: String,
    },
    /// An ACL write was refused.
    #[error(transparent)]
    Acl(#[from] AclError),
    /// A prepared query write was refused.
    #[error(transparent)]
    PreparedQuery(#[from] PreparedQueryError),
}

/// Why a KV operation was refused, in Consul's words (a transaction's
/// errors carry these messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    /// A `cas` found another ModifyIndex.
    #[error("failed to set key {0:?}, index is stale")]
    SetStale(String),
    /// A `delete-cas` found another ModifyIndex.
    #[error("failed to delete key {0:?}, index is stale")]
    DeleteStale(String),
    /// A `lock` found the key held by another session.
    #[error("failed to lock key {0:?}, lock is already held")]
    LockHeld(String),
    /// A `lock` came within the lock-delay of the key's last holder.
    #[error("failed to lock key {0:?} due to lock delay")]
    LockDelay(String),
    /// An `unlock` by a session that does not hold the key.
    #[error("failed to unlock key {0:?}, lock isn't held, or is held by another session")]
    NotHolder(String),
    /// A `get` on a missing key.
    #[error("key {0:?} doesn't exist")]
    Missing(String),
    /// A `check-not-exists` on a present key.
    #[error("key {0:?} exists")]
    Exists(String),
    /// A `check-index` found another ModifyIndex.
    #[error("failed index check for key {key:?}, current modify index {current} != {wanted}")]
    IndexCheck {
        /// The key.
        key: String,
        /// Its ModifyIndex.
        current: Index,
        /// The index the op named.
        wanted: Index,
    },
    /// A `check-session` found another holder.
    #[error("failed session check for key {key:?}, current session {current:?} != {wanted:?}")]
    SessionCheck {
        /// The key.
        key: String,
        /// Its holder, empty when none.
        current: String,
        /// The session the op named.
        wanted: String,
    },
    /// A `lock` or `unlock` without a session.
    #[error("missing session")]
    MissingSession,
    /// A `lock` or `unlock` naming a session that does not exist.
    #[error("invalid session {0:?}")]
    InvalidSession(String),
    /// A `check-index` on a missing key (Consul's `kvsCheckIndexTxn`).
    #[error("failed to check index, key {0:?} doesn't exist")]
    CheckIndexMissing(String),
    /// A `check-session` on a missing key (Consul's `kvsCheckSessionTxn`).
    #[error("failed to check session, key {0:?} doesn't exist")]
    CheckSessionMissing(String),
}

/// Why a session operation was refused, in Consul's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SessionError {
    /// The session's node is not registered.
    #[error("Missing node registration")]
    NoNode,
    /// A check the session names is not registered on its node.
    #[error("Missing check '{0}' registration")]
    NoCheck(String),
    /// A check the session names is critical.
    #[error("Check '{0}' is in critical state")]
    CheckCritical(String),
    /// The session does not exist (renew).
    #[error("Session id '{0}' not found")]
    NotFound(String),
    /// A session with this ID exists already.
    #[error("Session id '{0}' already exists")]
    Duplicate(String),
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
    /// A transaction (or one KV operation) was applied at `index`; its
    /// results in order.
    Txn {
        /// The entry's index.
        index: Index,
        /// What each operation returned (deletes return nothing).
        results: Vec<TxnResult>,
    },
    /// A transaction failed and changed nothing: every operation's error.
    TxnRefused(Vec<TxnError>),
}
