//! Why a request to the cluster failed, one error per kind of request: a
//! write, a consistent read, a look at or a change of the Raft
//! configuration. Answers carry them from the server that failed to the one
//! that asked, so they live with the wire types; consensus produces them and
//! the client link passes them on. The texts are what HTTP clients read
//! (`http::error` maps them to Consul's status codes).

use serde::{Deserialize, Serialize};

/// Why a catalog write did not commit.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum WriteError {
    /// No leader is known (election in progress, or quorum lost). Retryable.
    #[error("No cluster leader")]
    NoLeader,
    /// The write did not commit in time. It may still commit later.
    #[error("timed out waiting for the write to commit")]
    Timeout,
    /// The leader was lost after the write reached it: it may or may not
    /// have committed. Retryable for idempotent writes.
    #[error("leader lost before answering; the write may or may not have been applied")]
    Interrupted,
    /// Raft or storage failed; the server is shutting down or broken, or
    /// its disk is full and it refuses writes until space is freed (the
    /// text says which).
    #[error("raft: {0}")]
    Fatal(String),
    /// A client agent knows no server to send the write to, or none
    /// answered. Retryable.
    #[error("No known Consul servers")]
    NoServers,
}

/// Why a consistent (`?consistent`) read could not be confirmed: nothing was
/// written, so every failure may be retried.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ReadError {
    /// No leader is known to confirm the read with.
    #[error("No cluster leader")]
    NoLeader,
    /// The leader did not confirm in time, or this agent did not apply the
    /// confirmed index in time.
    #[error("timed out waiting for a consistent read to be confirmed")]
    Timeout,
    /// Raft or storage failed; the server is shutting down or broken.
    #[error("raft: {0}")]
    Fatal(String),
    /// A client agent knows no server to ask, or none answered.
    #[error("No known Consul servers")]
    NoServers,
}

/// Why the Raft configuration could not be listed or changed (a join, a
/// removal, a leave).
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum MembershipError {
    /// No leader is known to make the change.
    #[error("No cluster leader")]
    NoLeader,
    /// The change did not commit in time. It may still commit later.
    #[error("timed out waiting for the configuration change to commit")]
    Timeout,
    /// The leader was lost after the change reached it: it may or may not
    /// have been made.
    #[error("leader lost before answering; the change may or may not have been made")]
    Interrupted,
    /// The cluster refused the change (an unknown server, the last voter);
    /// the text says why.
    #[error("{0}")]
    Refused(String),
    /// Raft or storage failed; the server is shutting down or broken.
    #[error("raft: {0}")]
    Fatal(String),
    /// A client agent knows no server to ask, or none answered.
    #[error("No known Consul servers")]
    NoServers,
    /// The caller's ACL token may not make the change; Consul's words.
    #[error("{0}")]
    PermissionDenied(String),
}
