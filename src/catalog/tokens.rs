//! Resolved tokens: every token of the ACL table with its policies merged
//! into one [`Authorizer`], found by the hash of its secret. The replica
//! rebuilds this after each ACL write and publishes it whole, so resolving a
//! request's token is one hash and one map lookup, never an RPC, and DNS
//! and HTTP read it without a lock.
//!
//! Building is incremental: a policy is parsed once per version of it
//! (its ModifyIndex), and tokens with the same policies at the same versions
//! share one authorizer, so one token's write builds one authorizer, not
//! one per token.

use std::collections::HashMap;
use std::sync::Arc;

use crate::acl::{Authorizer, DefaultPolicy, Policy};

use super::acl_types::{
    ANONYMOUS_ACCESSOR_ID, ANONYMOUS_SECRET_ID, AclToken, SecretHash, secret_hash,
};
use super::state::State;
use super::types::Index;

/// What the agent's ACL settings give the resolution: the default policy
/// under every token, and the datacenter whose policies apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclContext {
    /// `acl.default_policy`.
    pub default: DefaultPolicy,
    /// This agent's datacenter: a policy limited to other datacenters
    /// grants nothing here.
    pub datacenter: String,
}

/// One token, resolved.
#[derive(Debug)]
pub struct Resolved {
    /// The token's AccessorID, for errors and logs.
    pub accessor_id: String,
    /// What it may do.
    pub authorizer: Arc<Authorizer>,
}

/// The policies of an authorizer at the versions it was built from.
type PolicySet = Vec<(String, Index)>;

/// Every token by the hash of its secret, and what resolving did that a
/// rebuild can reuse.
#[derive(Debug)]
pub struct Tokens {
    by_secret: HashMap<SecretHash, Arc<Resolved>>,
    /// The anonymous token: the table's if it was written, else one
    /// without policies.
    anonymous: Arc<Resolved>,
    /// Parsed policies by ID, with the ModifyIndex they were parsed at.
    parsed: HashMap<String, (Index, Arc<Policy>)>,
    /// Authorizers by the policies they merge.
    built: HashMap<PolicySet, Arc<Authorizer>>,
}

impl Tokens {
    /// The tokens of `state` under `ctx`, reusing what `previous` parsed
    /// and built.
    pub fn build(state: &State, ctx: &AclContext, previous: Option<&Self>) -> Self {
        let acl = &state.tables.acl;
        let mut parsed = HashMap::new();
        for policy in acl.policies() {
            let reuse = previous
                .and_then(|p| p.parsed.get(&policy.id))
                .filter(|(at, _)| *at == policy.modify_index)
                .map(|(_, p)| Arc::clone(p));
            let applies =
                policy.datacenters.is_empty() || policy.datacenters.contains(&ctx.datacenter);
            let rules = reuse.unwrap_or_else(|| {
                // The rules parsed when the policy was written (the state
                // refuses rules that do not); a policy limited to other
                // datacenters grants nothing here.
                Arc::new(if applies {
                    crate::acl::parse(&policy.rules).unwrap_or_default()
                } else {
                    Policy::default()
                })
            });
            parsed.insert(policy.id.clone(), (policy.modify_index, rules));
        }
        let mut built = HashMap::new();
        let mut resolve = |token: &AclToken| {
            let authorizer = if token.is_management() {
                Arc::new(Authorizer::management())
            } else {
                let set: PolicySet = token
                    .policies
                    .iter()
                    .filter_map(|id| parsed.get(id).map(|(at, _)| (id.clone(), *at)))
                    .collect();
                let reused = previous.and_then(|p| p.built.get(&set)).map(Arc::clone);
                let made = built.entry(set).or_insert_with_key(|set| {
                    reused.unwrap_or_else(|| {
                        let policies: Vec<Policy> = set
                            .iter()
                            .filter_map(|(id, _)| parsed.get(id).map(|(_, p)| (**p).clone()))
                            .collect();
                        Arc::new(Authorizer::new(&policies, ctx.default))
                    })
                });
                Arc::clone(made)
            };
            Arc::new(Resolved {
                accessor_id: token.accessor_id.clone(),
                authorizer,
            })
        };
        let by_secret: HashMap<SecretHash, Arc<Resolved>> =
            acl.tokens().map(|t| (t.secret_hash, resolve(t))).collect();
        let anonymous = acl.token(ANONYMOUS_ACCESSOR_ID).map_or_else(
            || {
                Arc::new(Resolved {
                    accessor_id: ANONYMOUS_ACCESSOR_ID.into(),
                    authorizer: Arc::new(Authorizer::new(&[], ctx.default)),
                })
            },
            &mut resolve,
        );
        Self {
            by_secret,
            anonymous,
            parsed,
            built,
        }
    }

    /// The token whose secret is `secret`, if there is one; the
    /// anonymous token's secret is always known.
    pub fn by_secret(&self, secret: &str) -> Option<&Arc<Resolved>> {
        if secret == ANONYMOUS_SECRET_ID {
            return Some(&self.anonymous);
        }
        self.by_hash(&secret_hash(secret))
    }

    /// The token whose secret hashes to `hash`, if there is one: for a
    /// secret fixed at start (DNS's default token), hashed once instead of
    /// per lookup. Unlike [`Self::by_secret`], the anonymous token's secret
    /// is found only when the table holds that token.
    pub fn by_hash(&self, hash: &SecretHash) -> Option<&Arc<Resolved>> {
        self.by_secret.get(hash)
    }

    /// The anonymous token.
    pub fn anonymous(&self) -> &Arc<Resolved> {
        &self.anonymous
    }
}
