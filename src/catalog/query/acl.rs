//! Reads of ACL tokens and policies, and the index their answers block on
//! (the ACL table's).

use super::super::acl_types::{AclPolicy, AclToken, SecretHash};
use super::super::state::State;
use super::super::types::Index;

impl State {
    /// One token by AccessorID.
    pub fn acl_token(&self, accessor_id: &str) -> Option<&AclToken> {
        self.tables.acl.token(accessor_id)
    }

    /// One token by the hash of its secret.
    pub fn acl_token_by_secret(&self, hash: &SecretHash) -> Option<&AclToken> {
        self.tables.acl.token_by_secret(hash)
    }

    /// Every token, by AccessorID.
    pub fn acl_tokens(&self) -> impl Iterator<Item = &AclToken> {
        self.tables.acl.tokens()
    }

    /// One policy by ID.
    pub fn acl_policy(&self, id: &str) -> Option<&AclPolicy> {
        self.tables.acl.policy(id)
    }

    /// One policy by name.
    pub fn acl_policy_by_name(&self, name: &str) -> Option<&AclPolicy> {
        self.tables.acl.policy_by_name(name)
    }

    /// Every policy, by ID.
    pub fn acl_policies(&self) -> impl Iterator<Item = &AclPolicy> {
        self.tables.acl.policies()
    }

    /// Index of the last change to a token or a policy.
    pub fn acl_index(&self) -> Index {
        self.tables.acl.index()
    }

    /// Index bootstrapping ended at; 0 while `PUT /v1/acl/bootstrap` may
    /// still run.
    pub fn acl_bootstrapped(&self) -> Index {
        self.tables.acl.bootstrapped()
    }
}
