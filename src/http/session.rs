//! `/v1/session/*`: creating, destroying and renewing sessions, and reading
//! them (one, a node's, all) with blocking queries.
//!
//! A create is checked here as Consul's agent and server check it (the body,
//! the behavior, the TTL against `session_ttl_min`) and gets its random ID
//! here, since the state machine may not draw one; the node and the checks
//! it names are checked on apply, and their refusals come back as Consul's
//! 500s. Bad input writes nothing. Every write answers with its index in
//! `X-Consul-Index`, which Consul does not send (#304, #14258).
//!
//! With ACLs on, a create, renew or destroy needs `session:write` on the
//! session's node (a destroy of a session that is gone needs nothing and
//! answers `true`; a renewal of one is a 404 first); reads leave out the
//! sessions of nodes the token lacks `session:read` on.
//!
//! Consul's `Checks` field is folded into `NodeChecks`: a session depends on
//! every check either names, exactly as Consul's, but reads show them all as
//! `NodeChecks` and never `Checks`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::decode::{self, DecodeError, Fields};
use super::route::Route;
use super::{ApiError, json_true};
use crate::catalog::{
    Behavior, CatalogError, Command, Index, Outcome, ServiceCheck, Session, SessionError, SessionOp,
};
use crate::config::defaults::SESSION_TTL_MAX;

/// The check every session depends on unless told otherwise: its node's
/// gossip health.
const SERF_CHECK: &str = "serfHealth";
/// A session's lock-delay unless told otherwise, in ns (Consul's 15 s).
const DEFAULT_LOCK_DELAY_NS: u64 = 15_000_000_000;
/// A lock-delay number (or duration) below this many ns is taken as seconds:
/// clients send `15` meaning 15 s (Consul's `lockDelayMinThreshold`).
const LOCK_DELAY_SECONDS_BELOW: u64 = 1000;
/// How many fresh IDs a create tries if one is taken: with random UUIDs a
/// second try is already a curiosity.
const ID_TRIES: usize = 3;

/// `PUT /v1/session/create`: `{"ID": …}`.
pub(super) async fn create(route: Route, MaybeJson(body): MaybeJson) -> Result<Response, ApiError> {
    let writer = route.writer()?;
    let node = route.agent().identity().node_name.clone();
    let mut session = decode_create(body.as_ref(), &node, route.kv_settings().session_ttl_min)?;
    route.require(
        route.authz().session_write(&session.node),
        "session:write",
        Some(&session.node),
    )?;
    for _ in 0..ID_TRIES {
        session.id = uuid::Uuid::new_v4().to_string();
        match writer
            .write(Command::Session(SessionOp::Create(session.clone())))
            .await?
        {
            Outcome::Applied(index) => {
                let body = Json(serde_json::json!({ "ID": session.id })).into_response();
                return Ok(writer.written(body, index));
            }
            Outcome::Refused(CatalogError::Session(SessionError::Duplicate(_))) => {}
            other => return Err(refused(other)),
        }
    }
    Err(ApiError::Internal("no free session ID".into()))
}

/// `PUT /v1/session/destroy/:id`: `true`, whether or not it existed.
pub(super) async fn destroy(Path(id): Path<String>, route: Route) -> Result<Response, ApiError> {
    let writer = route.writer()?;
    vet_existing(&route, &id).await?;
    match writer
        .write(Command::Session(SessionOp::Destroy { id }))
        .await?
    {
        Outcome::Applied(index) => Ok(writer.written(json_true(), index)),
        other => Err(refused(other)),
    }
}

/// `PUT /v1/session/renew/:id`: the session, in a one-element list, or 404.
pub(super) async fn renew(Path(id): Path<String>, route: Route) -> Result<Response, ApiError> {
    let writer = route.writer()?;
    if !vet_existing(&route, &id).await? {
        return Ok(not_found(&id));
    }
    let cmd = Command::Session(SessionOp::Renew { id: id.clone() });
    match writer.write(cmd).await? {
        Outcome::Applied(index) => {
            // Answer from this agent's replica once it holds the renewal,
            // which a follower or a client agent may not yet.
            let found = route
                .read_applied(index, |c| c.session(&id).map(SessionJson::from))
                .await?;
            let body = match found {
                Some(s) => Json(vec![s]).into_response(),
                // Invalidated between the renewal and this read.
                None => not_found(&id),
            };
            Ok(writer.written(body, index))
        }
        Outcome::Refused(CatalogError::Session(SessionError::NotFound(_))) => Ok(not_found(&id)),
        other => Err(refused(other)),
    }
}

/// `session:write` on the node of session `id` if it exists; whether it
/// does (a session that is gone needs no permission to be gone).
async fn vet_existing(route: &Route, id: &str) -> Result<bool, ApiError> {
    match route
        .state_now(|c| c.session(id).map(|s| s.node.clone()))
        .await?
    {
        None => Ok(false),
        Some(node) => route
            .require(
                route.authz().session_write(&node),
                "session:write",
                Some(&node),
            )
            .map(|()| true),
    }
}

/// The sessions the token may read (`session:read` on their node), and
/// whether any were left out.
fn readable<'a>(
    route: &Route,
    sessions: impl IntoIterator<Item = &'a Session>,
) -> (Vec<SessionJson>, bool) {
    let mut filtered = false;
    let out = sessions
        .into_iter()
        .filter(|s| {
            let seen = route.authz().session_read(&s.node);
            filtered |= !seen;
            seen
        })
        .map(SessionJson::from)
        .collect();
    (out, filtered)
}

/// `GET /v1/session/info/:id`: the session in a list, or `[]`.
pub(super) async fn info(Path(id): Path<String>, route: Route) -> Result<Response, ApiError> {
    route
        .read_filtered(|c| c.sessions_index(), |c| readable(&route, c.session(&id)))
        .await
}

/// `GET /v1/session/node/:node`: the node's sessions.
pub(super) async fn node(Path(node): Path<String>, route: Route) -> Result<Response, ApiError> {
    route
        .read_filtered(
            |c| c.sessions_index(),
            |c| readable(&route, c.sessions_on_node(&node)),
        )
        .await
}

/// `GET /v1/session/list`: every session.
pub(super) async fn list(route: Route) -> Result<Response, ApiError> {
    route
        .read_filtered(|c| c.sessions_index(), |c| readable(&route, c.sessions()))
        .await
}

/// `/v1/session/{destroy,renew,info}/` without an ID.
pub(super) async fn missing_session() -> ApiError {
    ApiError::BadRequest("Missing session".into())
}

/// `/v1/session/node/` without a node.
pub(super) async fn missing_node() -> ApiError {
    ApiError::BadRequest("Missing node name".into())
}

/// Consul's 404 for a renewal of a session that does not exist.
fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("Session id '{id}' not found"),
    )
        .into_response()
}

/// A write's outcome other than success, as Consul's 500 with its message.
fn refused(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::Refused(e) => ApiError::Internal(e.to_string()),
        other => ApiError::Internal(format!("a session write answered {other:?}")),
    }
}

/// A session as Consul's JSON has it, fields in Consul's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    node: String,
    /// Nanoseconds, as Go encodes a `time.Duration`.
    lock_delay: u64,
    behavior: &'static str,
    #[serde(rename = "TTL")]
    ttl: String,
    node_checks: Vec<String>,
    /// `null` when there are none, as Consul answers.
    service_checks: Option<Vec<ServiceCheckJson>>,
    create_index: Index,
    modify_index: Index,
}

/// One of a session's service checks.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceCheckJson {
    #[serde(rename = "ID")]
    id: String,
    namespace: String,
}

impl From<&Session> for SessionJson {
    fn from(s: &Session) -> Self {
        Self {
            id: s.id.clone(),
            name: s.name.clone(),
            node: s.node.clone(),
            lock_delay: s.lock_delay_ns,
            behavior: s.behavior.as_str(),
            ttl: s.ttl.clone(),
            node_checks: s.node_checks.clone(),
            service_checks: (!s.service_checks.is_empty()).then(|| {
                s.service_checks
                    .iter()
                    .map(|c| ServiceCheckJson {
                        id: c.id.clone(),
                        namespace: c.namespace.clone(),
                    })
                    .collect()
            }),
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// A create's body as Consul reads it, over Consul's defaults: this
/// agent's `node`, the `serfHealth` check, 15 s of lock-delay, `release`,
/// no TTL. The ID is left empty for the caller. Bad JSON and wrong types
/// are 400s naming the field; a bad behavior or TTL is Consul's 500.
fn decode_create(body: Option<&Value>, node: &str, ttl_min: Duration) -> Result<Session, ApiError> {
    let empty = Value::Object(serde_json::Map::new());
    let body = body.unwrap_or(&empty);
    let f = Fields::new(body, "")?;
    let node = match present(body, "Node") {
        Some(Value::Null) | None => node.to_string(),
        Some(_) => f.string(&["Node"])?,
    };
    if node.is_empty() {
        return Err(ApiError::Internal("Must provide Node".into()));
    }
    let lock_delay_ns = lock_delay(present(body, "LockDelay"))?;
    let node_checks = checks(body, &f)?;
    let service_checks = f
        .objects(&["ServiceChecks"])?
        .into_iter()
        .map(|(path, v)| {
            let c = Fields::new(v, &path)?;
            Ok(ServiceCheck {
                id: c.string(&["ID"])?,
                namespace: c.string(&["Namespace"])?,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let behavior = match f.string(&["Behavior"])?.as_str() {
        "" | "release" => Behavior::Release,
        "delete" => Behavior::Delete,
        other => {
            return Err(ApiError::Internal(format!(
                "Invalid Behavior setting '{other}'"
            )));
        }
    };
    let ttl = f.string(&["TTL"])?;
    let ttl_ms = session_ttl(&ttl, ttl_min)?;
    Ok(Session {
        id: String::new(),
        name: f.string(&["Name"])?,
        node,
        node_checks,
        service_checks,
        lock_delay_ns,
        behavior,
        ttl,
        ttl_ms,
        expires: None,
        create_index: 0,
        modify_index: 0,
    })
}

/// The field `name` of `body` as sent, `null` included, matched as Go
/// matches JSON keys (and as [`Fields`] does): case-insensitively.
fn present<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    let fold = |k: &str| -> String {
        k.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let want = fold(name);
    body.as_object()?
        .iter()
        .find(|(k, _)| fold(k) == want)
        .map(|(_, v)| v)
}

/// The node checks a session depends on, as Consul derives them from
/// `Checks` and `NodeChecks` (`fixupEmptySessionChecks`): each defaults to
/// `serfHealth`; an empty or null `Checks` leaves no node check; a `Checks`
/// of just `serfHealth`, or any `Checks` beside an empty `NodeChecks`, is
/// dropped. What remains of both is one list.
fn checks(body: &Value, f: &Fields<'_>) -> Result<Vec<String>, DecodeError> {
    let list = |name: &str| -> Result<Vec<String>, DecodeError> {
        match present(body, name) {
            None => Ok(vec![SERF_CHECK.to_string()]),
            // Go decodes null into a nil list.
            Some(Value::Null) => Ok(Vec::new()),
            Some(_) => f.strings(&[name]),
        }
    };
    let mut old = list("Checks")?;
    let mut node = list("NodeChecks")?;
    if old.is_empty() {
        node.clear();
    } else if old == [SERF_CHECK] || node.is_empty() {
        old.clear();
    }
    for c in old {
        if !node.contains(&c) {
            node.push(c);
        }
    }
    Ok(node)
}

/// `LockDelay` in ns: a Go duration string or a number of ns, either taken
/// as seconds when below 1000; 15 s when absent. Kept as given, as Consul
/// keeps it: the state machine holds keys for at most 60 s of it.
fn lock_delay(v: Option<&Value>) -> Result<u64, DecodeError> {
    let bad = |reason: String| DecodeError::Value {
        field: "LockDelay".into(),
        reason,
    };
    let ns = match v {
        None | Some(Value::Null) => return Ok(DEFAULT_LOCK_DELAY_NS),
        Some(Value::String(s)) => {
            let d = crate::definition::parse_duration(s).map_err(bad)?;
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
        }
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(ns), _) => ns,
            // Go reads the number as a float and truncates it to ns.
            (None, Some(x)) if x >= 0.0 && x < u64::MAX as f64 => x as u64,
            _ => return Err(bad(format!("invalid duration {n}"))),
        },
        Some(other) => {
            return Err(DecodeError::Type {
                field: "LockDelay".into(),
                expected: "duration",
                found: match other {
                    Value::Bool(_) => "boolean",
                    Value::Array(_) => "array",
                    _ => "object",
                },
            });
        }
    };
    Ok(if ns < LOCK_DELAY_SECONDS_BELOW {
        ns * 1_000_000_000
    } else {
        ns
    })
}

/// A session's TTL in ms, 0 for none: empty or zero means none; otherwise
/// within `[ttl_min, 24h]`, with Consul's messages.
fn session_ttl(ttl: &str, ttl_min: Duration) -> Result<u64, ApiError> {
    if ttl.is_empty() {
        return Ok(0);
    }
    let d = crate::definition::parse_duration(ttl)
        .map_err(|e| ApiError::Internal(format!("Session TTL '{ttl}' invalid: time: {e}")))?;
    if d.is_zero() {
        return Ok(0);
    }
    if d < ttl_min || d > SESSION_TTL_MAX {
        return Err(ApiError::Internal(format!(
            "Invalid Session TTL '{}', must be between [{}={}]",
            d.as_nanos(),
            go_duration(ttl_min),
            go_duration(SESSION_TTL_MAX)
        )));
    }
    // At most 24h, so it fits.
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration as Go prints it (`10s`, `1m30s`, `24h0m0s`, `1.5ms`).
fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        let (div, unit) = match ns {
            0..1_000 => (1, "ns"),
            1_000..1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{}{unit}", decimal(ns, div));
    }
    let secs = ns / 1_000_000_000;
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = format!("{}s", decimal(ns % 60_000_000_000, 1_000_000_000));
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

/// `v / div` with its fraction, trailing zeros dropped.
fn decimal(v: u128, div: u128) -> String {
    let (int, rem) = (v / div, v % div);
    if rem == 0 {
        return int.to_string();
    }
    let width = div.to_string().len() - 1;
    let frac = format!("{rem:0width$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// A body that may be empty (Consul reads a create's body only when there
/// is one) or else must be a JSON object; `null` counts as empty, as Go
/// decodes it into nothing.
#[derive(Debug)]
pub(super) struct MaybeJson(Option<Value>);

impl<S: Send + Sync> FromRequest<S> for MaybeJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
            return Ok(Self(None));
        }
        Ok(Self(Some(decode::parse_object(&bytes)?)))
    }
}

#[cfg(test)]
mod tests;
