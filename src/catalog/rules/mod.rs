//! The rules that span tables, one file per domain, and [`Touched`]: what a
//! change touched for the DNS view.
//!
//! - `catalog.rs`: Consul's register and deregister over nodes, services
//!   and checks, and the sessions a removed or critical check ends.
//! - `identity.rs`: a node name belongs to one node ID; another ID may not
//!   take a healthy node's name.
//! - `kv.rs`: the KV verbs over the KV table (one operation, or a
//!   transaction's in order, all or none), with the sessions and lock-delays
//!   a lock depends on.
//! - `sessions.rs`: creating, renewing, expiring and destroying sessions,
//!   and what invalidating one does to the keys it holds.
//! - `acl.rs`: tokens and policies.
//! - `prepared_queries.rs`: prepared queries, and the session whose end
//!   deletes them.

mod acl;
mod catalog;
mod identity;
mod kv;
mod prepared_queries;
mod sessions;

use std::collections::BTreeSet;

pub(crate) use acl::apply as apply_acl;
pub(crate) use catalog::apply as apply_catalog;
pub(crate) use kv::{apply as apply_kv, apply_txn, evaluate as evaluate_txn};
pub(crate) use prepared_queries::apply as apply_prepared_query;
pub(crate) use sessions::apply as apply_session;

/// What one `apply` touched, so the DNS view can be rebuilt for just that
/// and blocking queries on a service name or a KV key woken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Lowercased names of nodes whose own record or node-level checks changed.
    pub nodes: BTreeSet<String>,
    /// Lowercased service names whose instances or health may have changed.
    pub services: BTreeSet<String>,
    /// KV keys written or deleted, so blocking reads of just those wake.
    pub kv_keys: BTreeSet<String>,
    /// Whether a token or a policy changed, so resolved tokens are rebuilt.
    pub acl: bool,
}

impl Touched {
    /// Adds what `other` touched.
    pub fn extend(&mut self, other: Self) {
        self.nodes.extend(other.nodes);
        self.services.extend(other.services);
        self.kv_keys.extend(other.kv_keys);
        self.acl |= other.acl;
    }
}
