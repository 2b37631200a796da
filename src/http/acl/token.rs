//! `/v1/acl/token*` and `/v1/acl/tokens`: creating, changing, reading
//! (by AccessorID, or the caller's own) and deleting tokens, and listing
//! them.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;

use super::body::{TokenBody, TokenJson, token_body};
use super::{bad, enabled, now, optional_object, refused, respond, valid_uuid};
use crate::catalog::{
    ANONYMOUS_ACCESSOR_ID, ANONYMOUS_SECRET_ID, AclError, AclOp, AclToken, Command, Outcome, State,
    secret_hash,
};
use crate::http::ApiError;
use crate::http::route::{Route, presented};

/// Consul's reserved prefix for built-in IDs: a token written through the
/// API may not take one.
const RESERVED_PREFIX: &str = "00000000-0000-0000-0000-0000000000";

/// `PUT /v1/acl/token`: a new token.
pub(in crate::http) async fn token_create(route: Route, body: Bytes) -> Result<Response, ApiError> {
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
pub(in crate::http) async fn token_update(
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
    match apply_token(route, token, AclOp::SetToken).await? {
        Ok(json) => respond(route, &json),
        Err(other) => Err(refused(other)),
    }
}

/// Writes `token` through `op` (a set or a bootstrap): the token as read
/// back once this agent applied it, or the outcome when it was not
/// applied. The secret is the one the caller gave or was given: a client
/// agent's replica holds none.
pub(super) async fn apply_token(
    route: &Route,
    token: AclToken,
    op: fn(AclToken) -> AclOp,
) -> Result<Result<TokenJson, Outcome>, ApiError> {
    let accessor = token.accessor_id.clone();
    let secret = token.secret_id.clone();
    let index = match route.writer()?.write(Command::Acl(op(token))).await? {
        Outcome::Applied(index) => index,
        other => return Ok(Err(other)),
    };
    let mut json = route
        .read_applied(index, |s| {
            s.acl_token(&accessor).map(|t| TokenJson::new(s, t, true))
        })
        .await?
        .ok_or_else(|| ApiError::Internal(format!("token {accessor} is gone")))?;
    if !secret.is_empty() {
        json.secret_id = secret;
    }
    Ok(Ok(json))
}

/// `GET /v1/acl/token/:accessor`.
pub(in crate::http) async fn token_read(
    Path(id): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
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
pub(in crate::http) async fn token_self(
    route: Route,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
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
pub(in crate::http) async fn token_delete(
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
        Outcome::Applied(_) => Ok(crate::http::json_true()),
        other => Err(refused(other)),
    }
}

/// `GET /v1/acl/tokens`: every token as a stub; `?policy=` keeps those
/// linking that policy ID.
pub(in crate::http) async fn token_list(route: Route) -> Result<Response, ApiError> {
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

fn decode_token(body: &[u8]) -> Result<TokenBody, ApiError> {
    match optional_object(body, "Token")? {
        Some(v) => token_body(&v).map_err(|e| bad("Token", &e)),
        None => Ok(TokenBody::default()),
    }
}
