//! `/v1/acl/policy*` and `/v1/acl/policies`: creating, changing, reading
//! (by ID or name) and deleting policies, and listing them.

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::Response;

use super::body::{PolicyBody, PolicyJson, PolicyStubJson, policy_body};
use super::{bad, enabled, now, optional_object, refused, respond};
use crate::catalog::{AclOp, AclPolicy, Command, MANAGEMENT_POLICY_ID, Outcome, State};
use crate::http::ApiError;
use crate::http::route::Route;

/// `PUT /v1/acl/policy`: a new policy.
pub(in crate::http) async fn policy_create(
    route: Route,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_write(), "acl:write", None)?;
    let b = decode_policy(&body)?;
    if !b.id.is_empty() {
        return Err(ApiError::BadRequest(
            "Cannot specify the ID when creating a new policy".into(),
        ));
    }
    valid_policy_name(&b.name)?;
    write_policy(&route, b.into_policy(uuid::Uuid::new_v4().to_string())).await
}

/// `PUT /v1/acl/policy/:id`: replaces a policy's name, description, rules
/// and datacenters.
pub(in crate::http) async fn policy_update(
    Path(id): Path<String>,
    route: Route,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_write(), "acl:write", None)?;
    let b = decode_policy(&body)?;
    if !b.id.is_empty() && b.id != id {
        return Err(ApiError::BadRequest(
            "Policy ID in URL and payload do not match".into(),
        ));
    }
    valid_policy_name(&b.name)?;
    now(&route, |state| {
        let old = state
            .acl_policy(&id)
            .ok_or_else(|| ApiError::Internal(format!("cannot find policy {id}")))?;
        if id == MANAGEMENT_POLICY_ID && old.datacenters != b.datacenters {
            return Err(ApiError::Internal(
                "Changing the Datacenters of the builtin global-management policy is not permitted"
                    .into(),
            ));
        }
        Ok(())
    })
    .await?;
    write_policy(&route, b.into_policy(id)).await
}

/// Writes `policy` and answers with it as read back.
async fn write_policy(route: &Route, policy: AclPolicy) -> Result<Response, ApiError> {
    let id = policy.id.clone();
    match route
        .writer()?
        .write(Command::Acl(AclOp::SetPolicy(policy)))
        .await?
    {
        Outcome::Applied(index) => {
            let json = route
                .read_applied(index, |s| s.acl_policy(&id).map(PolicyJson::from))
                .await?
                .ok_or_else(|| ApiError::Internal(format!("policy {id} is gone")))?;
            respond(route, &json)
        }
        other => Err(refused(other)),
    }
}

/// `GET /v1/acl/policy/:id`.
pub(in crate::http) async fn policy_read(
    Path(id): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    policy_read_by(route, move |s| s.acl_policy(&id).map(PolicyJson::from)).await
}

/// `GET /v1/acl/policy/name/:name`.
pub(in crate::http) async fn policy_read_name(
    Path(name): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    policy_read_by(route, move |s| {
        s.acl_policy_by_name(&name).map(PolicyJson::from)
    })
    .await
}

async fn policy_read_by(
    route: Route,
    find: impl Fn(&State) -> Option<PolicyJson>,
) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_read(), "acl:read", None)?;
    route
        .read_with(State::acl_index, find, |found| match found {
            Some(json) => respond(&route, &json),
            None => Err(ApiError::NotFound(
                "Requested policy does not exist: ACL not found".into(),
            )),
        })
        .await
}

/// `DELETE /v1/acl/policy/:id`: `true`, also for a policy that is gone;
/// tokens linking it keep a link that reads leave out.
pub(in crate::http) async fn policy_delete(
    Path(id): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_write(), "acl:write", None)?;
    let writer = route.writer()?;
    match writer.write(Command::Acl(AclOp::DeletePolicy(id))).await? {
        Outcome::Applied(_) => Ok(crate::http::json_true()),
        other => Err(refused(other)),
    }
}

/// `GET /v1/acl/policies`: every policy as a stub, without rules.
pub(in crate::http) async fn policy_list(route: Route) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_read(), "acl:read", None)?;
    route
        .read(State::acl_index, |s| {
            s.acl_policies()
                .map(PolicyStubJson::from)
                .collect::<Vec<_>>()
        })
        .await
}

/// Consul's policy names: 1 to 128 of `A-Z a-z 0-9 - _`.
fn valid_policy_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::Internal("Invalid Policy: invalid Name".into()))
    }
}

fn decode_policy(body: &[u8]) -> Result<PolicyBody, ApiError> {
    match optional_object(body, "Policy")? {
        Some(v) => policy_body(&v).map_err(|e| bad("Policy", &e)),
        None => Ok(PolicyBody::default()),
    }
}
