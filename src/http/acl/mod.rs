//! `/v1/acl/*`: bootstrapping, tokens and policies, as Consul's ACL
//! endpoints answer them.
//!
//! Every endpoint answers 401 `ACL support disabled` while ACLs are off.
//! Reads need `acl:read` and block on the ACL table's index; writes need
//! `acl:write` and go through the Raft log as `Command::Acl`, whose rules
//! (`catalog/rules/acl.rs`) have the last word: what they refuse comes back
//! as Consul's 500 with its text. The checks made here first (a name that
//! resolves, an ID that exists) are the ones whose wording Consul gives at
//! its endpoint, and they make bad input write nothing.
//!
//! Secrets: a token's SecretID is shown only to a token with `acl:write`
//! (`<hidden>` otherwise, as Consul). A client agent's replica holds no
//! secrets, so reads through a client agent show `<hidden>` too, except
//! `token/self`, whose caller presented the secret.
//!
//! The anonymous token exists before anyone writes it (the resolver gives
//! it no policies): reads show it, and an update of it creates its row.

mod body;
#[cfg(test)]
mod tests;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::ApiError;
use super::decode::{DecodeError, parse_object};
use super::route::{Route, json_response, presented};
use crate::catalog::{
    ANONYMOUS_ACCESSOR_ID, ANONYMOUS_SECRET_ID, AclError, AclOp, AclPolicy, AclToken, CatalogError,
    Command, MANAGEMENT_POLICY_ID, Outcome, State, secret_hash,
};
use body::{
    BootstrapJson, PolicyJson, PolicyStubJson, TokenBody, TokenJson, bootstrap_secret, policy_body,
    token_body,
};

/// Consul's reserved prefix for built-in IDs: a token or policy written
/// through the API may not take one.
const RESERVED_PREFIX: &str = "00000000-0000-0000-0000-0000000000";

/// `PUT /v1/acl/bootstrap`: the first management token, once. The body may
/// choose its secret (`{"BootstrapSecret": "…"}`).
pub(super) async fn bootstrap(route: Route, body: Bytes) -> Result<Response, ApiError> {
    enabled(&route)?;
    let secret = match optional_object(&body, "Bootstrap")? {
        Some(v) => bootstrap_secret(&v).map_err(|e| bad("Bootstrap", &e))?,
        None => String::new(),
    };
    let secret = if secret.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        valid_uuid(&secret, "SecretID")?;
        secret
    };
    let token = AclToken {
        accessor_id: uuid::Uuid::new_v4().to_string(),
        secret_hash: secret_hash(&secret),
        secret_id: secret.clone(),
        description: "Bootstrap Token (Global Management)".into(),
        policies: vec![MANAGEMENT_POLICY_ID.into()],
        local: false,
        create_time: 0,
        create_index: 0,
        modify_index: 0,
    };
    let accessor = token.accessor_id.clone();
    match route
        .writer()?
        .write(Command::Acl(AclOp::Bootstrap(token)))
        .await?
    {
        Outcome::Applied(index) => {
            let json = route
                .read_applied(index, |s| {
                    s.acl_token(&accessor).map(|t| TokenJson::new(s, t, true))
                })
                .await?
                .ok_or_else(|| ApiError::Internal("the bootstrap token is gone".into()))?;
            let mut json = json;
            // This agent's replica may hold no secret (a client agent's);
            // the caller is owed the one it created.
            json.secret_id.clone_from(&secret);
            Ok(axum::Json(BootstrapJson {
                id: secret,
                token: json,
            })
            .into_response())
        }
        Outcome::Refused(CatalogError::Acl(e @ AclError::BootstrapDone(_))) => {
            Ok((StatusCode::FORBIDDEN, format!("Permission denied: {e}")).into_response())
        }
        other => Err(refused(other)),
    }
}

/// `PUT /v1/acl/token`: a new token.
pub(super) async fn token_create(route: Route, body: Bytes) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_write(), "acl:write", None)?;
    let b = decode_token(&body)?;
    let accessor_id = if b.accessor_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        user_uuid(&b.accessor_id, "AccessorID")?;
        b.accessor_id.clone()
    };
    let secret = if b.secret_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        user_uuid(&b.secret_id, "SecretID")?;
        b.secret_id.clone()
    };
    let hash = secret_hash(&secret);
    let policies = now(&route, |state| {
        if state.acl_token(&accessor_id).is_some() {
            return Err(ApiError::Internal(
                "Invalid Token: AccessorID is already in use".into(),
            ));
        }
        if state.acl_token_by_secret(&hash).is_some() {
            return Err(ApiError::Internal(AclError::SecretInUse.to_string()));
        }
        links(state, &b)
    })
    .await?;
    let token = AclToken {
        accessor_id,
        secret_id: secret,
        secret_hash: hash,
        description: b.description,
        policies,
        local: b.local,
        create_time: 0,
        create_index: 0,
        modify_index: 0,
    };
    write_token(&route, token).await
}

/// `PUT /v1/acl/token/:accessor`: changes a token's description and
/// policies; its secret and locality stay as they are.
pub(super) async fn token_update(
    Path(id): Path<String>,
    route: Route,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_write(), "acl:write", None)?;
    let b = decode_token(&body)?;
    if !b.accessor_id.is_empty() && b.accessor_id != id {
        return Err(ApiError::BadRequest(
            "Token Accessor ID in URL and payload do not match".into(),
        ));
    }
    let token = now(&route, |state| {
        let old = state
            .acl_token(&id)
            .cloned()
            .or_else(|| (id == ANONYMOUS_ACCESSOR_ID).then(anonymous))
            .ok_or_else(|| ApiError::Internal(format!("Cannot find token {id:?}")))?;
        if !b.secret_id.is_empty() && secret_hash(&b.secret_id) != old.secret_hash {
            return Err(ApiError::Internal(
                "Changing a tokens SecretID is not permitted".into(),
            ));
        }
        if b.local != old.local {
            return Err(ApiError::Internal(format!(
                "cannot toggle local mode of {id}"
            )));
        }
        Ok(AclToken {
            description: b.description.clone(),
            policies: links(state, &b)?,
            // Empty where this agent holds no secret: the state machine
            // keeps the stored one for an update by the same hash.
            secret_id: old.secret_id.clone(),
            ..old
        })
    })
    .await?;
    write_token(&route, token).await
}

/// Writes `token` and answers with it as read back.
async fn write_token(route: &Route, token: AclToken) -> Result<Response, ApiError> {
    let accessor = token.accessor_id.clone();
    let secret = token.secret_id.clone();
    match route
        .writer()?
        .write(Command::Acl(AclOp::SetToken(token)))
        .await?
    {
        Outcome::Applied(index) => {
            let mut json = route
                .read_applied(index, |s| {
                    s.acl_token(&accessor).map(|t| TokenJson::new(s, t, true))
                })
                .await?
                .ok_or_else(|| ApiError::Internal(format!("token {accessor} is gone")))?;
            if !secret.is_empty() {
                json.secret_id = secret;
            }
            respond(route, &json)
        }
        other => Err(refused(other)),
    }
}

/// `GET /v1/acl/token/:accessor`.
pub(super) async fn token_read(Path(id): Path<String>, route: Route) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_read(), "acl:read", None)?;
    let show = route.authz().acl_write();
    route
        .read_with(
            State::acl_index,
            |s| token_or_anonymous(s, &id).map(|t| TokenJson::new(s, &t, show)),
            |found| match found {
                Some(json) => respond(&route, &json),
                None => Err(ApiError::NotFound(
                    "Requested token does not exist: ACL not found".into(),
                )),
            },
        )
        .await
}

/// `GET /v1/acl/token/self`: the caller's own token (the one the request
/// presented, else `acl.tokens.default`), with no permission needed: the
/// caller holds its secret. A request with no token at all has none to
/// read (404), as Consul's.
pub(super) async fn token_self(route: Route, headers: HeaderMap) -> Result<Response, ApiError> {
    enabled(&route)?;
    let presented = presented(route.params(), &headers).map(str::to_string);
    let accessor = route.accessor_id().to_string();
    if presented.is_none() && accessor == ANONYMOUS_ACCESSOR_ID {
        return Err(ApiError::NotFound("Supplied token does not exist".into()));
    }
    route
        .read_with(
            State::acl_index,
            |s| token_or_anonymous(s, &accessor).map(|t| TokenJson::new(s, &t, true)),
            |found| match found {
                Some(mut json) => {
                    // A client agent's replica holds no secret; the caller
                    // presented it.
                    if let Some(secret) = &presented {
                        json.secret_id.clone_from(secret);
                    }
                    respond(&route, &json)
                }
                None => Err(ApiError::NotFound("Supplied token does not exist".into())),
            },
        )
        .await
}

/// `DELETE /v1/acl/token/:accessor`: `true`, also for a token that is gone.
pub(super) async fn token_delete(
    Path(id): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_write(), "acl:write", None)?;
    if id == route.accessor_id() {
        return Err(ApiError::Internal(
            "Deletion of the request's authorization token is not permitted".into(),
        ));
    }
    let writer = route.writer()?;
    match writer.write(Command::Acl(AclOp::DeleteToken(id))).await? {
        Outcome::Applied(_) => Ok(super::json_true()),
        other => Err(refused(other)),
    }
}

/// `GET /v1/acl/tokens`: every token as a stub; `?policy=` keeps those
/// linking that policy ID.
pub(super) async fn token_list(route: Route) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_read(), "acl:read", None)?;
    let show = route.authz().acl_write();
    let policy = route.params().get("policy").unwrap_or_default().to_string();
    for unsupported in ["role", "authmethod", "servicename"] {
        if route
            .params()
            .get(unsupported)
            .is_some_and(|v| !v.is_empty())
        {
            return Err(ApiError::BadRequest(format!(
                "filtering tokens by {unsupported} is not supported by trellis"
            )));
        }
    }
    route
        .read(State::acl_index, |s| {
            let mut tokens: Vec<AclToken> = s.acl_tokens().cloned().collect();
            if s.acl_token(ANONYMOUS_ACCESSOR_ID).is_none() {
                tokens.push(anonymous());
            }
            tokens
                .iter()
                .filter(|t| policy.is_empty() || t.policies.contains(&policy))
                .map(|t| TokenJson::new(s, t, show))
                .collect::<Vec<_>>()
        })
        .await
}

/// `PUT /v1/acl/policy`: a new policy.
pub(super) async fn policy_create(route: Route, body: Bytes) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_write(), "acl:write", None)?;
    let b = decode_policy(&body)?;
    if !b.id.is_empty() {
        return Err(ApiError::BadRequest(
            "Cannot specify the ID when creating a new policy".into(),
        ));
    }
    valid_policy_name(&b.name)?;
    let policy = AclPolicy {
        id: uuid::Uuid::new_v4().to_string(),
        name: b.name,
        description: b.description,
        rules: b.rules,
        datacenters: b.datacenters,
        create_index: 0,
        modify_index: 0,
    };
    write_policy(&route, policy).await
}

/// `PUT /v1/acl/policy/:id`: replaces a policy's name, description, rules
/// and datacenters.
pub(super) async fn policy_update(
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
    let policy = AclPolicy {
        id,
        name: b.name,
        description: b.description,
        rules: b.rules,
        datacenters: b.datacenters,
        create_index: 0,
        modify_index: 0,
    };
    write_policy(&route, policy).await
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
pub(super) async fn policy_read(
    Path(id): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    policy_read_by(route, move |s| s.acl_policy(&id).map(PolicyJson::from)).await
}

/// `GET /v1/acl/policy/name/:name`.
pub(super) async fn policy_read_name(
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
pub(super) async fn policy_delete(
    Path(id): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    enabled(&route)?;
    route.require(route.authz().acl_write(), "acl:write", None)?;
    let writer = route.writer()?;
    match writer.write(Command::Acl(AclOp::DeletePolicy(id))).await? {
        Outcome::Applied(_) => Ok(super::json_true()),
        other => Err(refused(other)),
    }
}

/// `GET /v1/acl/policies`: every policy as a stub, without rules.
pub(super) async fn policy_list(route: Route) -> Result<Response, ApiError> {
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

/// Consul's 401 while ACLs are off.
fn enabled(route: &Route) -> Result<(), ApiError> {
    if route.acl_enabled() {
        Ok(())
    } else {
        Err(ApiError::AclDisabled)
    }
}

/// The anonymous token as it is before anyone writes it: no policies.
fn anonymous() -> AclToken {
    AclToken {
        accessor_id: ANONYMOUS_ACCESSOR_ID.into(),
        secret_id: ANONYMOUS_SECRET_ID.into(),
        secret_hash: secret_hash(ANONYMOUS_SECRET_ID),
        description: "Anonymous Token".into(),
        policies: Vec::new(),
        local: false,
        create_time: 0,
        create_index: 0,
        modify_index: 0,
    }
}

/// The token with AccessorID `id`, the unwritten anonymous token included.
fn token_or_anonymous(state: &State, id: &str) -> Option<AclToken> {
    state
        .acl_token(id)
        .cloned()
        .or_else(|| (id == ANONYMOUS_ACCESSOR_ID).then(anonymous))
}

/// A token body's policy links as IDs: names resolved, every ID known,
/// each once, in the order given.
fn links(state: &State, b: &TokenBody) -> Result<Vec<String>, ApiError> {
    let mut ids: Vec<String> = Vec::with_capacity(b.policies.len());
    for link in &b.policies {
        let id = if link.id.is_empty() {
            let p = state.acl_policy_by_name(&link.name).ok_or_else(|| {
                ApiError::Internal(format!("No such ACL policy with name {:?}", link.name))
            })?;
            p.id.clone()
        } else {
            state.acl_policy(&link.id).ok_or_else(|| {
                ApiError::Internal(format!("No such ACL policy with ID {:?}", link.id))
            })?;
            link.id.clone()
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// `text` if it is a UUID.
fn valid_uuid(text: &str, field: &str) -> Result<(), ApiError> {
    uuid::Uuid::try_parse(text)
        .map(drop)
        .map_err(|_| ApiError::Internal(format!("Invalid Token: {field} is not a valid UUID")))
}

/// A UUID a caller chose for a token: not one of the reserved built-ins.
fn user_uuid(text: &str, field: &str) -> Result<(), ApiError> {
    valid_uuid(text, field)?;
    if text.starts_with(RESERVED_PREFIX) {
        return Err(ApiError::Internal(format!(
            "Invalid Token: {field} is reserved for built-in tokens"
        )));
    }
    Ok(())
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

/// A body that may be empty: `None` when it is (or is `null`).
fn optional_object(body: &[u8], what: &str) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
        return Ok(None);
    }
    parse_object(body).map(Some).map_err(|e| bad(what, &e))
}

fn decode_token(body: &[u8]) -> Result<TokenBody, ApiError> {
    match optional_object(body, "Token")? {
        Some(v) => token_body(&v).map_err(|e| bad("Token", &e)),
        None => Ok(TokenBody::default()),
    }
}

fn decode_policy(body: &[u8]) -> Result<body::PolicyBody, ApiError> {
    match optional_object(body, "Policy")? {
        Some(v) => policy_body(&v).map_err(|e| bad("Policy", &e)),
        None => Ok(body::PolicyBody::default()),
    }
}

/// Consul's 400 for a body it cannot decode: `Token decoding failed: …`.
fn bad(what: &str, e: &DecodeError) -> ApiError {
    let text = e.to_string();
    let reason = text
        .strip_prefix("Request decode failed: ")
        .unwrap_or(&text);
    ApiError::BadRequest(format!("{what} decoding failed: {reason}"))
}

/// A write's outcome other than success, as Consul's 500 with its text.
fn refused(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::Refused(e) => ApiError::Internal(e.to_string()),
        other => ApiError::Internal(format!("an ACL write answered {other:?}")),
    }
}

/// Runs `f` on this datacenter's state as this agent's replica holds it
/// now: the checks a write makes before it is proposed.
async fn now<T>(
    route: &Route,
    f: impl FnOnce(&State) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    // Index 0 is applied from the start, so this never waits.
    route.read_applied(0, f).await?
}

/// A JSON answer, indented with `?pretty`.
fn respond<T: serde::Serialize>(route: &Route, body: &T) -> Result<Response, ApiError> {
    json_response(body, route.params().has("pretty"))
}
