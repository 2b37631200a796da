//! The records of prepared queries (Consul's `PreparedQuery`) and what a
//! write to them carries, and the refusals the state machine gives.
//!
//! Like every replicated record these travel through the Raft log and
//! snapshots by position (postcard); the HTTP layer owns Consul's JSON, and
//! `crate::prepared_query` owns what a query means (its checks before a
//! write, its templates, executing it). The state machine checks only what
//! depends on the other rows: a name taken by another query or naming
//! another's ID, a second catch-all template, a session that does not exist
//! (Consul's `preparedQuerySetTxn`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::acl_types::SecretHash;
use super::types::Index;

/// The only template type Consul has.
pub const NAME_PREFIX_MATCH: &str = "name_prefix_match";

/// One prepared query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedQuery {
    /// Its ID, a UUID drawn by the agent that created it.
    pub id: String,
    /// Its name: what `/v1/query/<name>/execute` and `<name>.query.consul`
    /// find it by (case-insensitively); for a template, the prefix it
    /// matches. May be empty (a session-bound query, or the catch-all
    /// template).
    pub name: String,
    /// The session whose invalidation deletes the query; empty for none.
    pub session: String,
    /// The token the query executes with; empty to use the caller's. In a
    /// client agent's replica it is blank (see [`Self::redacted`]).
    pub token: String,
    /// SHA-256 of [`Self::token`], so an agent whose replica holds no
    /// secrets still executes with the query's token.
    pub token_hash: Option<SecretHash>,
    /// Whether and how the query is a template.
    pub template: QueryTemplate,
    /// What to look up.
    pub service: ServiceQuery,
    /// Its DNS answers' settings.
    pub dns: QueryDns,
    /// Index of the write that created it.
    pub create_index: Index,
    /// Index of the last write that changed it.
    pub modify_index: Index,
}

/// Consul's `QueryTemplateOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryTemplate {
    /// Empty for a plain query, else [`NAME_PREFIX_MATCH`].
    pub kind: String,
    /// A regular expression matched against the full name asked for, whose
    /// groups `${match(N)}` gives.
    pub regexp: String,
    /// Drop tags that rendered empty.
    pub remove_empty_tags: bool,
}

/// Consul's `ServiceQuery`: which instances a query answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceQuery {
    /// The service name.
    pub service: String,
    /// Where to look when this datacenter has no healthy instance.
    pub failover: QueryFailover,
    /// Drop instances with a warning check too, not only critical ones.
    pub only_passing: bool,
    /// Check IDs whose status is ignored.
    pub ignore_check_ids: Vec<String>,
    /// The node to sort by distance from: a node name, `_agent` or `_ip`.
    pub near: String,
    /// Tags every instance must have; `!tag` must be absent.
    /// Case-insensitive.
    pub tags: Vec<String>,
    /// Node metadata every node must carry.
    pub node_meta: BTreeMap<String, String>,
    /// Service metadata every instance must carry.
    pub service_meta: BTreeMap<String, String>,
}

/// Consul's `QueryFailoverOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryFailover {
    /// How many of the nearest other datacenters to try.
    pub nearest_n: u32,
    /// Datacenters to try after those, in order.
    pub datacenters: Vec<String>,
}

/// Consul's `QueryDNSOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryDns {
    /// A Go duration; empty for the agent's service TTL.
    pub ttl: String,
}

impl PreparedQuery {
    /// Whether it is a template.
    pub fn is_template(&self) -> bool {
        !self.template.kind.is_empty()
    }

    /// The name ACLs are asked about (`query:read`/`query:write`): the name;
    /// `None` for an unnamed query that is not a template, which only its
    /// session guards (Consul's `GetACLPrefix`).
    pub fn acl_prefix(&self) -> Option<&str> {
        (!self.name.is_empty() || self.is_template()).then_some(self.name.as_str())
    }

    /// The query without its token, as a client agent's replica holds it.
    pub fn redacted(&self) -> Self {
        Self {
            token: String::new(),
            ..self.clone()
        }
    }
}

/// A write to the prepared queries. The query is boxed so that a command
/// stays as small as the catalog's (postcard encodes a box as its content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreparedQueryOp {
    /// Create the query (its ID unused).
    Create(Box<PreparedQuery>),
    /// Replace the query of that ID, which must exist.
    Update(Box<PreparedQuery>),
    /// Delete the query of that ID, which must exist.
    Delete(String),
}

impl PreparedQueryOp {
    /// The op without the query's token secret, as a client agent
    /// receives it; `None` when there is nothing to blank.
    pub fn redacted(&self) -> Option<Self> {
        match self {
            Self::Create(q) if !q.token.is_empty() => Some(Self::Create(Box::new(q.redacted()))),
            Self::Update(q) if !q.token.is_empty() => Some(Self::Update(Box::new(q.redacted()))),
            _ => None,
        }
    }
}

/// Why the state machine refused a prepared query write, in Consul's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PreparedQueryError {
    /// The write carries no ID.
    #[error("Missing query ID")]
    MissingId,
    /// A create with an ID that is taken.
    #[error("Query ID {0:?} already exists")]
    Duplicate(String),
    /// An update of a query that does not exist.
    #[error("Cannot modify non-existent prepared query: '{0}'")]
    UpdateMissing(String),
    /// A delete of a query that does not exist.
    #[error("Cannot delete non-existent prepared query: '{0}'")]
    DeleteMissing(String),
    /// Another query has this name.
    #[error("name '{0}' aliases an existing query name")]
    NameTaken(String),
    /// The name is another query's ID.
    #[error("name '{0}' aliases an existing query ID")]
    NameIsId(String),
    /// A second catch-all template.
    #[error("a query template with an empty name already exists")]
    CatchAllTaken,
    /// The session does not exist.
    #[error("invalid session {0:?}")]
    InvalidSession(String),
}
