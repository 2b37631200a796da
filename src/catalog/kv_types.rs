//! The records of the key/value store and of sessions, and what a write to
//! either carries.
//!
//! Like the catalog's records (`types.rs`) these travel through the Raft log
//! and snapshots by position (postcard); the HTTP layer owns Consul's JSON
//! spelling. Times are milliseconds since the Unix epoch on the leader's
//! clock when it proposed the entry ([`Time`]): the state machine never reads
//! a clock.

use serde::{Deserialize, Serialize};

use super::types::Index;

/// Milliseconds since the Unix epoch, as the leader's clock read when it
/// proposed a log entry. 0 for entries written before entries carried time.
pub type Time = u64;

/// One key of the KV store (Consul's `DirEntry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The key: any UTF-8 without a leading `/`.
    pub key: String,
    /// The value; empty is Consul's `null`. Encoded as bytes, which postcard
    /// writes exactly as it wrote the sequence of `u8` before (a length,
    /// then the bytes), but in one copy instead of a call per byte.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Opaque to trellis; clients mark their keys with it (`Flags`).
    pub flags: u64,
    /// The session holding the key's lock, if any.
    pub session: Option<String>,
    /// How many times the lock was acquired by a new session (`LockIndex`).
    pub lock_index: u64,
    /// Index of the write that created the key.
    pub create_index: Index,
    /// Index of the last write that changed it.
    pub modify_index: Index,
}

/// A deleted key, kept so that the index of a listing that held it never
/// goes backwards, until reaped after `tombstone_ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Index of the delete.
    pub index: Index,
    /// When the delete was proposed.
    pub time: Time,
}

/// What the KV store does with an operation, as Consul's transaction verbs
/// name it. `PUT`/`DELETE /v1/kv` are one-operation uses of the same verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvVerb {
    /// Write the value (`set`).
    Set,
    /// Write only if the key's ModifyIndex is `index`; 0 means only if absent (`cas`).
    Cas,
    /// Write and acquire the key's lock for `session` (`lock`, `?acquire`).
    Lock,
    /// Write and release the lock `session` holds (`unlock`, `?release`).
    Unlock,
    /// Read the key; a missing key is an error (`get`).
    Get,
    /// Read the key; a missing key answers with the op as an entry
    /// without a value (`get-or-empty`).
    GetOrEmpty,
    /// Read every key under the prefix (`get-tree`).
    GetTree,
    /// Fail unless the key's ModifyIndex is `index` (`check-index`).
    CheckIndex,
    /// Fail unless the key's lock is held by `session` (`check-session`).
    CheckSession,
    /// Fail if the key exists (`check-not-exists`).
    CheckNotExists,
    /// Delete the key (`delete`).
    Delete,
    /// Delete every key under the prefix (`delete-tree`).
    DeleteTree,
    /// Delete only if the key's ModifyIndex is `index` (`delete-cas`).
    DeleteCas,
}

impl KvVerb {
    /// Every verb with Consul's spelling.
    pub const ALL: [(Self, &'static str); 13] = [
        (Self::Set, "set"),
        (Self::Cas, "cas"),
        (Self::Lock, "lock"),
        (Self::Unlock, "unlock"),
        (Self::Get, "get"),
        (Self::GetOrEmpty, "get-or-empty"),
        (Self::GetTree, "get-tree"),
        (Self::CheckIndex, "check-index"),
        (Self::CheckSession, "check-session"),
        (Self::CheckNotExists, "check-not-exists"),
        (Self::Delete, "delete"),
        (Self::DeleteTree, "delete-tree"),
        (Self::DeleteCas, "delete-cas"),
    ];

    /// Parses Consul's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(v, _)| *v)
    }

    /// Whether the verb only reads.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Self::Get
                | Self::GetOrEmpty
                | Self::GetTree
                | Self::CheckIndex
                | Self::CheckSession
                | Self::CheckNotExists
        )
    }
}

/// One KV operation (Consul's `TxnKVOp`): the verb and the fields it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvOp {
    /// What to do.
    pub verb: KvVerb,
    /// The key, or the prefix for the tree verbs.
    pub key: String,
    /// The value to write; encoded as bytes, as [`KvEntry::value`].
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The flags to write.
    pub flags: u64,
    /// The ModifyIndex a `cas`, `delete-cas` or `check-index` compares with.
    pub index: Index,
    /// The session of a `lock`, `unlock` or `check-session`.
    pub session: String,
}

impl KvOp {
    /// An op of `verb` on `key` with every other field empty.
    pub fn new(verb: KvVerb, key: impl Into<String>) -> Self {
        Self {
            verb,
            key: key.into(),
            value: Vec::new(),
            flags: 0,
            index: 0,
            session: String::new(),
        }
    }
}

/// What happens to the keys a session holds when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Behavior {
    /// Their locks are released; the keys stay (`release`, the default).
    Release,
    /// The keys are deleted (`delete`).
    Delete,
}

impl Behavior {
    /// Consul's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Delete => "delete",
        }
    }
}

/// A check a session depends on, by the ID of a service check on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCheck {
    /// The check's ID.
    pub id: String,
    /// Consul Enterprise's namespace; kept as given.
    pub namespace: String,
}

/// A session: a node's claim, alive while its node and checks are healthy
/// and (with a TTL) while it is renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its UUID, chosen by the agent that created it.
    pub id: String,
    /// A free-form name.
    pub name: String,
    /// The node it belongs to, as registered.
    pub node: String,
    /// IDs of node checks on its node that must not turn critical.
    pub node_checks: Vec<String>,
    /// Service checks on its node that must not turn critical.
    pub service_checks: Vec<ServiceCheck>,
    /// How long its locks stay unavailable after it is invalidated, in ns.
    pub lock_delay_ns: u64,
    /// What happens to its keys when it is invalidated.
    pub behavior: Behavior,
    /// The TTL as the client wrote it (`"15s"`), empty without one.
    pub ttl: String,
    /// The TTL in milliseconds, 0 without one.
    pub ttl_ms: u64,
    /// When it expires unless renewed: the last create or renew plus twice
    /// the TTL, as Consul grants. `None` without a TTL.
    pub expires: Option<Time>,
    /// Index of the write that created it.
    pub create_index: Index,
    /// Index of the last write that changed it.
    pub modify_index: Index,
}

impl Session {
    /// Every check ID the session depends on.
    pub fn check_ids(&self) -> impl Iterator<Item = &str> {
        self.node_checks
            .iter()
            .map(String::as_str)
            .chain(self.service_checks.iter().map(|c| c.id.as_str()))
    }
}

/// A change to sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    /// Create a session; its indexes and expiry are set on apply.
    Create(Session),
    /// Destroy a session, releasing or deleting its keys.
    Destroy {
        /// The session's ID.
        id: String,
    },
    /// Extend a session's TTL from now.
    Renew {
        /// The session's ID.
        id: String,
    },
    /// Invalidate those of these sessions whose deadline has passed by the
    /// entry's time (the leader proposes it; a session renewed meanwhile
    /// stays).
    Expire {
        /// The sessions the leader found due.
        ids: Vec<String>,
    },
}

/// One operation of a transaction. Only KV operations exist today; catalog
/// operations would be further variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// A KV operation.
    Kv(KvOp),
}

/// What a KV operation of a transaction returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    /// An entry; for the write verbs without its value.
    Kv(KvEntry),
}

/// Why one operation of a transaction failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnError {
    /// The operation's position in the transaction.
    pub op_index: usize,
    /// Consul's message.
    pub what: String,
}
