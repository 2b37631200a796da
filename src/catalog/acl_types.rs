//! The records of the ACL system (Consul's `ACLToken` and `ACLPolicy`) and
//! what a write to them carries.
//!
//! Like every replicated record these travel through the Raft log and
//! snapshots by position (postcard); the HTTP layer owns Consul's JSON.
//!
//! A token is found by the SHA-256 of its secret, never by the secret
//! itself: the hash is what a client agent's replica receives (servers blank
//! the secret before a token leaves for a client agent, see
//! [`AclToken::redacted`]), and it is all that resolving a request's token
//! needs.

use serde::{Deserialize, Serialize};

use super::kv_types::Time;
use super::types::Index;

/// The built-in policy that grants everything (Consul's
/// `global-management`); a token linking it is a management token.
pub const MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";

/// The built-in policy's name.
pub const MANAGEMENT_POLICY_NAME: &str = "global-management";

/// The anonymous token's AccessorID: what a request without a token (and
/// without `acl.tokens.default`) acts as.
pub const ANONYMOUS_ACCESSOR_ID: &str = "00000000-0000-0000-0000-000000000002";

/// The anonymous token's SecretID.
pub const ANONYMOUS_SECRET_ID: &str = "anonymous";

/// SHA-256 of a token's secret: the key tokens are found by.
pub type SecretHash = [u8; 32];

/// The hash a secret is found by.
pub fn secret_hash(secret: &str) -> SecretHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// One ACL token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclToken {
    /// The public ID that names the token in the API and in logs.
    pub accessor_id: String,
    /// The secret a client presents; empty in a client agent's replica.
    pub secret_id: String,
    /// SHA-256 of the secret.
    pub secret_hash: SecretHash,
    /// Free text.
    pub description: String,
    /// The IDs of the policies linked, in the order given.
    pub policies: Vec<String>,
    /// Whether the token is local to its datacenter (never replicated to
    /// others).
    pub local: bool,
    /// When it was created (the leader's clock).
    pub create_time: Time,
    /// Index of the write that created it.
    pub create_index: Index,
    /// Index of the last write that changed it.
    pub modify_index: Index,
}

impl AclToken {
    /// Whether the token links the built-in management policy.
    pub fn is_management(&self) -> bool {
        self.policies.iter().any(|p| p == MANAGEMENT_POLICY_ID)
    }

    /// The token without its secret, as a client agent's replica holds it.
    pub fn redacted(&self) -> Self {
        Self {
            secret_id: String::new(),
            ..self.clone()
        }
    }
}

/// One ACL policy: a name and rules in Consul's rules language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclPolicy {
    /// Its ID (a UUID).
    pub id: String,
    /// Its name, unique among policies.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The rules, HCL or JSON, as written.
    pub rules: String,
    /// The datacenters it applies in; empty is all.
    pub datacenters: Vec<String>,
    /// Index of the write that created it.
    pub create_index: Index,
    /// Index of the last write that changed it.
    pub modify_index: Index,
}

/// A change to tokens and policies. New variants go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclOp {
    /// `PUT /v1/acl/bootstrap`: create the first management token, once.
    Bootstrap(AclToken),
    /// `acl.tokens.initial_management` on the leader: create this
    /// management token unless a token with its secret exists. Ends
    /// bootstrapping as `Bootstrap` does.
    InitialManagement(AclToken),
    /// Create or update a token (by AccessorID).
    SetToken(AclToken),
    /// Delete a token by AccessorID.
    DeleteToken(String),
    /// Create or update a policy (by ID).
    SetPolicy(AclPolicy),
    /// Delete a policy by ID.
    DeletePolicy(String),
}

impl AclOp {
    /// The operation as a client agent receives it: a token it carries
    /// without its secret. `None` when there is no secret to blank, so the
    /// caller keeps the command it has instead of copying it.
    pub fn redacted(&self) -> Option<Self> {
        match self {
            Self::Bootstrap(t) if !t.secret_id.is_empty() => Some(Self::Bootstrap(t.redacted())),
            Self::InitialManagement(t) if !t.secret_id.is_empty() => {
                Some(Self::InitialManagement(t.redacted()))
            }
            Self::SetToken(t) if !t.secret_id.is_empty() => Some(Self::SetToken(t.redacted())),
            _ => None,
        }
    }
}

/// Why an ACL write was refused, in Consul's words where Consul has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AclError {
    /// Bootstrap after it was done.
    #[error("ACL bootstrap no longer allowed (reset index: {0})")]
    BootstrapDone(Index),
    /// A token names a policy ID that does not exist.
    #[error("cannot find policy {0}")]
    UnknownPolicy(String),
    /// Another token has the same secret.
    #[error("Invalid Token: SecretID is already in use")]
    SecretInUse,
    /// An update changed a token's secret.
    #[error("Cannot change a token's SecretID")]
    SecretChanged,
    /// Another policy has the name.
    #[error("Invalid Policy: A Policy with Name {0:?} already exists")]
    PolicyNameInUse(String),
    /// The rules do not parse.
    #[error("Invalid Policy: {0}")]
    InvalidRules(String),
    /// The built-in policy may not be deleted or given rules; the
    /// anonymous token may not be deleted.
    #[error("{0}")]
    Builtin(String),
}
