//! The ACL table: tokens by AccessorID (and by the hash of their secret),
//! policies by ID (and by name), whether bootstrapping is over, and the
//! index of the last change to any of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::super::acl_types::{AclPolicy, AclToken, SecretHash};
use super::super::types::Index;
use super::{Capture, CapturedMap};

/// Tokens and policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Acl {
    /// Tokens by AccessorID.
    tokens: CapturedMap<String, AclToken>,
    /// Policies by ID.
    policies: CapturedMap<String, AclPolicy>,
    /// Index of the last change to a token or a policy.
    index: Index,
    /// Index of the bootstrap, or of the initial management token's
    /// creation; 0 while bootstrapping is still allowed.
    bootstrapped: Index,
    /// Derived: AccessorIDs by secret hash.
    by_secret: HashMap<SecretHash, String>,
    /// Derived: policy IDs by name.
    by_name: HashMap<String, String>,
}

/// What a snapshot keeps of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AclRows {
    pub(crate) tokens: BTreeMap<String, AclToken>,
    pub(crate) policies: BTreeMap<String, AclPolicy>,
    pub(crate) index: Index,
    pub(crate) bootstrapped: Index,
}

impl Acl {
    /// Opens `capture` on the persisted maps: from now on they can be read
    /// as they are at this moment (`tables::CapturedMap`).
    pub(crate) fn open_capture(&mut self, capture: &Arc<Capture>) {
        self.tokens.open(capture);
        self.policies.open(capture);
    }

    /// The table a snapshot holds, with its derived indexes rebuilt.
    pub(crate) fn from_rows(rows: AclRows) -> Self {
        let by_secret = rows
            .tokens
            .values()
            .map(|t| (t.secret_hash, t.accessor_id.clone()))
            .collect();
        let by_name = rows
            .policies
            .values()
            .map(|p| (p.name.clone(), p.id.clone()))
            .collect();
        Self {
            tokens: rows.tokens.into(),
            policies: rows.policies.into(),
            index: rows.index,
            bootstrapped: rows.bootstrapped,
            by_secret,
            by_name,
        }
    }

    /// The persisted maps, for a snapshot: tokens and policies.
    pub(crate) fn persisted(
        &self,
    ) -> (
        &CapturedMap<String, AclToken>,
        &CapturedMap<String, AclPolicy>,
    ) {
        (&self.tokens, &self.policies)
    }

    /// Index of the last change to a token or a policy.
    pub(crate) fn index(&self) -> Index {
        self.index
    }

    /// Index bootstrapping ended at; 0 while it is still allowed.
    pub(crate) fn bootstrapped(&self) -> Index {
        self.bootstrapped
    }

    /// One token by AccessorID.
    pub(crate) fn token(&self, accessor_id: &str) -> Option<&AclToken> {
        self.tokens.get(accessor_id)
    }

    /// One token by the hash of its secret.
    pub(crate) fn token_by_secret(&self, hash: &SecretHash) -> Option<&AclToken> {
        self.by_secret.get(hash).and_then(|a| self.tokens.get(a))
    }

    /// Every token, by AccessorID.
    pub(crate) fn tokens(&self) -> impl Iterator<Item = &AclToken> {
        self.tokens.values()
    }

    /// One policy by ID.
    pub(crate) fn policy(&self, id: &str) -> Option<&AclPolicy> {
        self.policies.get(id)
    }

    /// One policy by name.
    pub(crate) fn policy_by_name(&self, name: &str) -> Option<&AclPolicy> {
        self.by_name.get(name).and_then(|id| self.policies.get(id))
    }

    /// Every policy, by ID.
    pub(crate) fn policies(&self) -> impl Iterator<Item = &AclPolicy> {
        self.policies.values()
    }

    /// Inserts or replaces a token, at `index`.
    pub(crate) fn put_token(&mut self, token: AclToken, index: Index) {
        if let Some(old) = self.tokens.get(&token.accessor_id) {
            self.by_secret.remove(&old.secret_hash);
        }
        self.by_secret
            .insert(token.secret_hash, token.accessor_id.clone());
        self.tokens.insert(token.accessor_id.clone(), token);
        self.index = index;
    }

    /// Removes a token, at `index`; whether it was there.
    pub(crate) fn remove_token(&mut self, accessor_id: &str, index: Index) -> bool {
        let Some(old) = self.tokens.remove(accessor_id) else {
            return false;
        };
        self.by_secret.remove(&old.secret_hash);
        self.index = index;
        true
    }

    /// Inserts or replaces a policy, at `index`.
    pub(crate) fn put_policy(&mut self, policy: AclPolicy, index: Index) {
        if let Some(old) = self.policies.get(&policy.id) {
            self.by_name.remove(&old.name);
        }
        self.by_name.insert(policy.name.clone(), policy.id.clone());
        self.policies.insert(policy.id.clone(), policy);
        self.index = index;
    }

    /// Removes a policy, and its links from every token, at `index`;
    /// whether it was there.
    pub(crate) fn remove_policy(&mut self, id: &str, index: Index) -> bool {
        let Some(old) = self.policies.remove(id) else {
            return false;
        };
        self.by_name.remove(&old.name);
        let linked: Vec<String> = self
            .tokens
            .values()
            .filter(|t| t.policies.iter().any(|p| p == id))
            .map(|t| t.accessor_id.clone())
            .collect();
        for accessor_id in &linked {
            if let Some(token) = self.tokens.get_mut(accessor_id) {
                token.policies.retain(|p| p != id);
                token.modify_index = index;
            }
        }
        self.index = index;
        true
    }

    /// Ends bootstrapping at `index`.
    pub(crate) fn end_bootstrap(&mut self, index: Index) {
        if self.bootstrapped == 0 {
            self.bootstrapped = index;
            self.index = index;
        }
    }
}
