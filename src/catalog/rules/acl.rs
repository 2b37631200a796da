//! Writes to tokens and policies: bootstrapping once, the built-in
//! management policy, secrets unique and fixed, policy names unique, links
//! only to policies that exist, rules that parse.

use super::super::acl_types::{
    ANONYMOUS_ACCESSOR_ID, AclError, AclOp, AclPolicy, AclToken, MANAGEMENT_POLICY_ID,
    MANAGEMENT_POLICY_NAME,
};
use super::super::command::CatalogError;
use super::super::kv_types::Time;
use super::super::tables::{Acl, Tables};
use super::super::types::Index;

/// Applies one ACL operation at `index`, proposed at `time`.
pub(crate) fn apply(
    tables: &mut Tables,
    index: Index,
    time: Time,
    op: &AclOp,
) -> Result<(), CatalogError> {
    let acl = &mut tables.acl;
    match op {
        AclOp::Bootstrap(token) => {
            if acl.bootstrapped() != 0 {
                return Err(AclError::BootstrapDone(acl.bootstrapped()).into());
            }
            create_management(acl, token, index, time)?;
        }
        AclOp::InitialManagement(token) => {
            if acl.token_by_secret(&token.secret_hash).is_none() {
                create_management(acl, token, index, time)?;
            }
        }
        AclOp::SetToken(token) => set_token(acl, token, index, time)?,
        AclOp::DeleteToken(accessor_id) => {
            if accessor_id == ANONYMOUS_ACCESSOR_ID {
                return Err(AclError::Builtin(
                    "Delete operation not permitted on the anonymous token".into(),
                )
                .into());
            }
            // Deleting a token that is gone already succeeds, as Consul's.
            acl.remove_token(accessor_id, index);
        }
        AclOp::SetPolicy(policy) => set_policy(acl, policy, index)?,
        AclOp::DeletePolicy(id) => {
            if id == MANAGEMENT_POLICY_ID {
                return Err(AclError::Builtin(
                    "Delete operation not permitted on the builtin global-management policy".into(),
                )
                .into());
            }
            acl.remove_policy(id, index);
        }
    }
    Ok(())
}

/// Creates the built-in policy if missing and `token` linked to it, and
/// ends bootstrapping.
fn create_management(
    acl: &mut Acl,
    token: &AclToken,
    index: Index,
    time: Time,
) -> Result<(), CatalogError> {
    if acl.policy(MANAGEMENT_POLICY_ID).is_none() {
        acl.put_policy(
            AclPolicy {
                id: MANAGEMENT_POLICY_ID.into(),
                name: MANAGEMENT_POLICY_NAME.into(),
                description: "Builtin Policy that grants unlimited access".into(),
                rules: String::new(),
                datacenters: Vec::new(),
                create_index: index,
                modify_index: index,
            },
            index,
        );
    }
    let mut token = token.clone();
    if !token.is_management() {
        token.policies.push(MANAGEMENT_POLICY_ID.into());
    }
    set_token(acl, &token, index, time)?;
    acl.end_bootstrap(index);
    Ok(())
}

fn set_token(
    acl: &mut Acl,
    token: &AclToken,
    index: Index,
    time: Time,
) -> Result<(), CatalogError> {
    if let Some(holder) = acl.token_by_secret(&token.secret_hash)
        && holder.accessor_id != token.accessor_id
    {
        return Err(AclError::SecretInUse.into());
    }
    if let Some(p) = token.policies.iter().find(|p| acl.policy(p).is_none()) {
        return Err(AclError::UnknownPolicy(p.clone()).into());
    }
    let mut row = token.clone();
    row.policies.dedup();
    match acl.token(&token.accessor_id) {
        Some(old) => {
            if old.secret_hash != token.secret_hash {
                return Err(AclError::SecretChanged.into());
            }
            row.create_index = old.create_index;
            row.create_time = old.create_time;
            // A client agent's replica has no secret to keep.
            if row.secret_id.is_empty() {
                row.secret_id.clone_from(&old.secret_id);
            }
        }
        None => {
            row.create_index = index;
            row.create_time = time;
        }
    }
    row.modify_index = index;
    acl.put_token(row, index);
    Ok(())
}

fn set_policy(acl: &mut Acl, policy: &AclPolicy, index: Index) -> Result<(), CatalogError> {
    if let Some(holder) = acl.policy_by_name(&policy.name)
        && holder.id != policy.id
    {
        return Err(AclError::PolicyNameInUse(policy.name.clone()).into());
    }
    let old = acl.policy(&policy.id);
    if policy.id == MANAGEMENT_POLICY_ID && old.is_some_and(|old| old.rules != policy.rules) {
        return Err(AclError::Builtin(
            "Changing the Rules for the builtin global-management policy is not permitted".into(),
        )
        .into());
    }
    crate::acl::parse(&policy.rules).map_err(|e| AclError::InvalidRules(e.to_string()))?;
    let mut row = policy.clone();
    row.create_index = old.map_or(index, |o| o.create_index);
    row.modify_index = index;
    acl.put_policy(row, index);
    Ok(())
}
