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
//!
//! Bootstrapping and what the endpoints share are here; tokens are in
//! `token.rs`, policies in `policy.rs`, their JSON in `body.rs`.

mod body;
mod policy;
#[cfg(test)]
mod tests;
mod token;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::ApiError;
use super::decode::{DecodeError, parse_object};
use super::route::{Route, json_response};
use crate::catalog::{
    AclError, AclOp, AclToken, CatalogError, MANAGEMENT_POLICY_ID, Outcome, State, secret_hash,
};
use body::{BootstrapJson, bootstrap_secret};
pub(super) use policy::{
    policy_create, policy_delete, policy_list, policy_read, policy_read_name, policy_update,
};
pub(super) use token::{
    token_create, token_delete, token_list, token_read, token_self, token_update,
};

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
    match token::apply_token(&route, token, AclOp::Bootstrap).await? {
        Ok(json) => Ok(axum::Json(BootstrapJson {
            id: secret,
            token: json,
        })
        .into_response()),
        Err(Outcome::Refused(CatalogError::Acl(e @ AclError::BootstrapDone(_)))) => {
            Ok((StatusCode::FORBIDDEN, format!("Permission denied: {e}")).into_response())
        }
        Err(other) => Err(refused(other)),
    }
}

/// Consul's 401 while ACLs are off.
fn enabled(route: &Route) -> Result<(), ApiError> {
    if route.acl_enabled() {
        Ok(())
    } else {
        Err(ApiError::AclDisabled)
    }
}

/// `text` if it is a UUID.
fn valid_uuid(text: &str, field: &str) -> Result<(), ApiError> {
    uuid::Uuid::try_parse(text)
        .map(drop)
        .map_err(|_| ApiError::Internal(format!("Invalid Token: {field} is not a valid UUID")))
}

/// A body that may be empty: `None` when it is (or is `null`).
fn optional_object(body: &[u8], what: &str) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
        return Ok(None);
    }
    parse_object(body).map(Some).map_err(|e| bad(what, &e))
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
