//! Consul's `/v1/kv/<key>`: GET (one key, `?recurse`, `?keys` with
//! `?separator`, `?raw`), PUT (`?flags`, `?cas`, `?acquire`, `?release`) and
//! DELETE (`?recurse`, `?cas`).
//!
//! As Consul's, the flags are by presence: `?recurse=false` recurses. A
//! missing key is a 404 with an empty body and every `X-Consul-*` header
//! (clients read the index from it). The index of one key is its own, so a
//! blocking read of a key wakes when that key changes and not on every KV
//! write (Consul #9449); a listing's is its prefix's, deletes included.
//!
//! With ACLs on, as Consul's: reading one key needs `key:read` (a 403
//! even for a key that does not exist); a listing leaves out the keys the
//! token may not read (a 404 when none is left, the filtered header still
//! set) and, with `acl.enable_key_list_policy`, first needs `key:list` on
//! the prefix; a write needs `key:write`, a recursive delete `key:write`
//! on the whole prefix.
//!
//! Beyond Consul, a successful write answers with its index in
//! `X-Consul-Index` (Consul #304, #14258), and a write answered `false` (a
//! stale cas, a lock held by another session or under lock-delay, a release
//! by a non-holder) carries the reason, in Consul's words, in
//! `X-Trellis-Refused`.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;

use super::ApiError;
use super::body::read_limited;
use super::route::{Route, json_response};
use crate::catalog::{
    CatalogError, Command, Index, KvEntry, KvError, KvOp, KvVerb, Outcome, TxnResult,
};

/// Largest value, as Consul's `kv_max_value_size`.
pub(super) const MAX_VALUE_BYTES: usize = 512 * 1024;
/// Longest key. Consul has no limit of its own but its request line's;
/// keys are names, and this keeps one write from being mostly key.
pub(super) const MAX_KEY_BYTES: usize = 4096;

/// A KV entry in Consul's JSON, fields in Consul's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct KvEntryJson<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    /// Base64; `null` for an empty value.
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    create_index: Index,
    modify_index: Index,
}

impl<'a> From<&'a KvEntry> for KvEntryJson<'a> {
    fn from(e: &'a KvEntry) -> Self {
        Self {
            lock_index: e.lock_index,
            key: &e.key,
            flags: e.flags,
            value: (!e.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
            session: e.session.as_deref(),
            create_index: e.create_index,
            modify_index: e.modify_index,
        }
    }
}

/// Refuses keys Consul refuses since CVE-2025-11392: a leading `/`, a
/// `../` (or `..\`) traversal, surrounding spaces; and overlong keys.
pub(super) fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.starts_with('/') {
        return Err(ApiError::BadRequest("key must not begin with a '/'".into()));
    }
    if key.contains("../") || key.contains("..\\") {
        return Err(ApiError::BadRequest(
            "key contains path traversal sequence".into(),
        ));
    }
    if key.starts_with(' ') || key.ends_with(' ') {
        return Err(ApiError::BadRequest(
            "key must not begin or end with a space".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::TooLarge(format!(
            "Key too long ({} > {MAX_KEY_BYTES} bytes)",
            key.len()
        )));
    }
    Ok(())
}

/// The key from the path: empty for `/v1/kv/`, validated otherwise.
fn key_of(path: Option<Path<String>>) -> Result<String, ApiError> {
    let key = path.map(|Path(k)| k).unwrap_or_default();
    if !key.is_empty() {
        validate_key(&key)?;
    }
    Ok(key)
}

/// Consul's 400 for flags that do not compose. Its text is Consul's: every
/// parameter of the request, sorted by name and encoded as Go's
/// `url.Values.Encode` does.
fn conflicting(route: &Route, flags: &[&str]) -> Result<(), ApiError> {
    let given = flags.iter().filter(|f| route.params().has(f)).count();
    if given > 1 {
        let mut pairs = route.params().0.clone();
        // Stable: the values of one name keep the order they were sent in.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let sent: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
            .collect();
        return Err(ApiError::BadRequest(format!(
            "Conflicting flags: {}\n",
            sent.join("&")
        )));
    }
    Ok(())
}

/// Go's `url.QueryEscape`: unreserved bytes as they are, a space as `+`,
/// every other byte as `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A numeric query parameter; absent is `None`, unparsable a 400 naming it.
fn number(route: &Route, name: &str) -> Result<Option<u64>, ApiError> {
    match route.params().get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!("Invalid ?{name}: {v:?} is not an unsigned integer"))
        }),
    }
}

/// `GET /v1/kv/<key>`.
pub(super) async fn get(route: Route, path: Option<Path<String>>) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let params = route.params();
    let pretty = params.has("pretty");
    let authz = route.authz();
    if (params.has("keys") || params.has("recurse")) && route.key_list_policy() {
        route.require(authz.key_list(&key), "key:list", Some(&key))?;
    }
    if params.has("keys") {
        let separator = params
            .get("separator")
            .or_else(|| params.get("seperator"))
            .unwrap_or_default()
            .to_string();
        return route
            .read_with(
                |s| s.kv_prefix_index(&key),
                |s| {
                    let mut keys = s.kv_keys(&key, &separator);
                    let before = keys.len();
                    keys.retain(|k| authz.key_read(k));
                    let filtered = keys.len() < before;
                    (keys, filtered)
                },
                |(keys, filtered)| {
                    // Consul lists the root as `[]`, any other empty prefix as 404.
                    let mut response = if keys.is_empty() && !key.is_empty() {
                        not_found()
                    } else {
                        json_response(&keys, pretty)?
                    };
                    route.mark_filtered(response.headers_mut(), filtered);
                    Ok(response)
                },
            )
            .await;
    }
    if params.has("recurse") {
        return route
            .read_with(
                |s| s.kv_prefix_index(&key),
                |s| {
                    let mut filtered = false;
                    let entries = s
                        .kv_list(&key)
                        .filter(|e| {
                            let seen = authz.key_read(&e.key);
                            filtered |= !seen;
                            seen
                        })
                        .cloned()
                        .collect::<Vec<KvEntry>>();
                    (entries, filtered)
                },
                |(entries, filtered)| {
                    let mut response = if entries.is_empty() {
                        not_found()
                    } else {
                        let entries: Vec<KvEntryJson<'_>> =
                            entries.iter().map(Into::into).collect();
                        json_response(&entries, pretty)?
                    };
                    route.mark_filtered(response.headers_mut(), filtered);
                    Ok(response)
                },
            )
            .await;
    }
    if key.is_empty() {
        return Err(ApiError::BadRequest("Missing key name".into()));
    }
    // Before the lookup, as Consul's: a 403 says nothing of whether it exists.
    route.require(authz.key_read(&key), "key:read", Some(&key))?;
    let raw = params.has("raw");
    route
        .read_key_with(
            &key,
            |s| s.kv_key_index(&key),
            // Rendered from the entry where it lies, under the read lock,
            // rather than from a copy of it: thousands of parked reads of
            // one key may wake at once.
            |s| {
                s.kv_get(&key).map(|e| {
                    if raw {
                        Ok(raw_value(e.value.clone()))
                    } else {
                        json_response(&[KvEntryJson::from(e)], pretty)
                    }
                })
            },
            |answer| answer.unwrap_or_else(|| Ok(not_found())),
        )
        .await
}

/// Consul's 404 for a missing key: an empty body (the headers are added by
/// the read).
fn not_found() -> Response {
    (axum::http::StatusCode::NOT_FOUND, "").into_response()
}

/// `?raw`: the bytes as they are, marked so a browser neither sniffs nor
/// runs them (CVE-2020-25864).
fn raw_value(value: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, "sandbox"),
        ],
        value,
    )
        .into_response()
}

/// Consul's 413 for a value over `kv_max_value_size`.
fn value_too_large(declared: Option<u64>) -> String {
    let size = declared.map_or_else(String::new, |n| format!("({n} bytes)"));
    format!(
        "Request body{size} too large, max size: {MAX_VALUE_BYTES} bytes. See \
         https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
    )
}

/// `PUT /v1/kv/<key>`.
pub(super) async fn put(
    route: Route,
    path: Option<Path<String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    if key.is_empty() {
        return Err(ApiError::BadRequest("Missing key name".into()));
    }
    conflicting(&route, &["cas", "acquire", "release"])?;
    let mut op = KvOp::new(KvVerb::Set, key);
    op.flags = number(&route, "flags")?.unwrap_or(0);
    if let Some(cas) = number(&route, "cas")? {
        op.verb = KvVerb::Cas;
        op.index = cas;
    }
    if let Some(session) = route.params().get("acquire") {
        op.verb = KvVerb::Lock;
        op.session = session.to_string();
    }
    if let Some(session) = route.params().get("release") {
        op.verb = KvVerb::Unlock;
        op.session = session.to_string();
    }
    op.value = read_limited(&headers, body, MAX_VALUE_BYTES, value_too_large)
        .await?
        .to_vec();
    write(&route, op).await
}

/// `DELETE /v1/kv/<key>`.
pub(super) async fn delete(route: Route, path: Option<Path<String>>) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    conflicting(&route, &["recurse", "cas"])?;
    let verb = if route.params().has("recurse") {
        KvVerb::DeleteTree
    } else if key.is_empty() {
        return Err(ApiError::BadRequest("Missing key name".into()));
    } else {
        KvVerb::Delete
    };
    let mut op = KvOp::new(verb, key);
    if let Some(cas) = number(&route, "cas")? {
        op.verb = KvVerb::DeleteCas;
        op.index = cas;
    }
    write(&route, op).await
}

/// Consul's `kvsPreApply`: what a KV operation needs of the token before
/// it is applied. Reads (`get`, `get-tree`, `get-or-empty`) need nothing
/// here: their results are filtered. The checks of a key's state need
/// `key:read`, a tree delete `key:write` on the whole prefix, every other
/// write `key:write`. No `session:*` check: a lock is a key write.
pub(super) fn vet(route: &Route, op: &KvOp) -> Result<(), ApiError> {
    let authz = route.authz();
    let key = op.key.as_str();
    match op.verb {
        KvVerb::Get | KvVerb::GetOrEmpty | KvVerb::GetTree => Ok(()),
        KvVerb::CheckIndex | KvVerb::CheckSession => {
            route.require(authz.key_read(key), "key:read", Some(key))
        }
        KvVerb::DeleteTree => route.require(authz.key_write_prefix(key), "key:write", Some(key)),
        KvVerb::Set
        | KvVerb::Cas
        | KvVerb::Lock
        | KvVerb::Unlock
        | KvVerb::CheckNotExists
        | KvVerb::Delete
        | KvVerb::DeleteCas => route.require(authz.key_write(key), "key:write", Some(key)),
    }
}

/// Writes one KV op and answers Consul's `true` or `false`: `false` when a
/// condition did not hold (cas, a held lock, lock-delay, release by a
/// non-holder); an unknown or missing session is Consul's 500.
async fn write(route: &Route, op: KvOp) -> Result<Response, ApiError> {
    let writer = route.writer()?;
    vet(route, &op)?;
    let outcome = writer.write(Command::Kv(op)).await?;
    let mut response = match outcome {
        Outcome::Txn { index, results } => {
            // The key's ModifyIndex where the write left one: an identical
            // rewrite does not move it, and the index answered must be the
            // one a following `?cas` needs (Consul #304). A delete has none:
            // the log index.
            let index = results
                .iter()
                .map(|TxnResult::Kv(e)| e.modify_index)
                .next()
                .unwrap_or(index);
            return Ok(writer.written(axum::Json(true).into_response(), index));
        }
        Outcome::Refused(CatalogError::Kv(
            e @ (KvError::SetStale(_)
            | KvError::DeleteStale(_)
            | KvError::LockHeld(_)
            | KvError::LockDelay(_)
            | KvError::NotHolder(_)),
        )) => {
            let mut r = axum::Json(false).into_response();
            if let Ok(reason) = HeaderValue::from_str(&e.to_string()) {
                r.headers_mut()
                    .insert(HeaderName::from_static("x-trellis-refused"), reason);
            }
            r
        }
        Outcome::Refused(e) => return Err(ApiError::Internal(e.to_string())),
        other => {
            return Err(ApiError::Internal(format!("a KV write answered {other:?}")));
        }
    };
    writer.meta_headers(response.headers_mut());
    Ok(response)
}
