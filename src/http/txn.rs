//! Consul's `/v1/txn`: KV operations applied in order, all or none, as one
//! log entry at one index.
//!
//! The body is a JSON array of `{"KV": {Verb, Key, Value, Flags, Index,
//! Session}}` (field names in any case, as Go decodes them). Limits, each a
//! 413 with Consul's message: the body (512 KiB, counted as read), the
//! operations (128) and each decoded value (512 KiB). A transaction that
//! only reads runs on this agent's replica with the request's consistency
//! mode and no log entry; one that writes answers 200 with every result,
//! or 409 with every failed operation's index and Consul's message, having
//! changed nothing. With ACLs on, every operation is checked first as a
//! KV write of its own would be (the `key:read` checks and writes, see
//! [`super::kv::vet`]); any refusal is a 409 naming each refused
//! operation, and nothing runs. What the reads return is then filtered by
//! `key:read`; a read-only transaction says so in
//! `X-Consul-Results-Filtered-By-ACLs`, as Consul's. Beyond Consul, a write's answer carries its index in
//! `X-Consul-Index`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use serde_json::Value;

use super::ApiError;
use super::body::read_limited;
use super::decode::Fields;
use super::kv::{self, KvEntryJson, MAX_VALUE_BYTES, validate_key};
use super::route::{Route, json_response};
use crate::catalog::{Command, KvOp, KvVerb, Outcome, TxnError, TxnOp, TxnResult};

/// Largest request body, as Consul's `txn_max_req_len`.
const MAX_BODY_BYTES: usize = 512 * 1024;
/// Most operations in one transaction, as Consul's since 1.14.
const MAX_OPS: usize = 128;

/// One result in Consul's shape.
#[derive(Debug, Serialize)]
struct ResultJson<'a> {
    #[serde(rename = "KV")]
    kv: KvEntryJson<'a>,
}

/// One error in Consul's shape.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorJson<'a> {
    op_index: usize,
    what: &'a str,
}

/// The whole answer in Consul's shape: one of the two is `null`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnJson<'a> {
    results: Option<Vec<ResultJson<'a>>>,
    errors: Option<Vec<ErrorJson<'a>>>,
}

/// `PUT /v1/txn`.
pub(super) async fn txn(
    route: Route,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, MAX_BODY_BYTES, |declared| {
        let size = declared.map_or_else(String::new, |n| format!("({n} bytes)"));
        format!(
            "Request body{size} too large, max size: {MAX_BODY_BYTES} bytes. See \
             https://developer.hashicorp.com/docs/agent/config/config-files#txn_max_req_len."
        )
    })
    .await?;
    let ops = match decode(&bytes)? {
        Ok(ops) => ops,
        Err(errors) => return Ok(answer(&Err(errors), StatusCode::CONFLICT, false)),
    };
    let denied: Vec<TxnError> = ops
        .iter()
        .enumerate()
        .filter_map(|(op_index, TxnOp::Kv(op))| {
            kv::vet(&route, op).err().map(|e| TxnError {
                op_index,
                what: e.to_string(),
            })
        })
        .collect();
    if !denied.is_empty() {
        return Ok(answer(&Err(denied), StatusCode::CONFLICT, false));
    }
    let pretty = route.params().has("pretty");
    let reads_only = ops.iter().all(|TxnOp::Kv(op)| op.verb.is_read());
    if reads_only {
        return route
            .read_once(
                |state| readable(&route, state.kv_read_txn(&ops)),
                |(result, filtered)| {
                    let mut response = answered(&result, pretty);
                    route.mark_filtered(response.headers_mut(), filtered);
                    Ok(response)
                },
            )
            .await;
    }
    let writer = route.writer()?;
    let (result, index) = match writer.write(Command::Txn(ops)).await? {
        Outcome::Txn { index, results } => (readable(&route, Ok(results)).0, Some(index)),
        Outcome::TxnRefused(errors) => (Err(errors), None),
        other => {
            return Err(ApiError::Internal(format!(
                "a transaction answered {other:?}"
            )));
        }
    };
    let mut response = answered(&result, pretty);
    if let Some(index) = index {
        return Ok(writer.written(response, index));
    }
    writer.meta_headers(response.headers_mut());
    Ok(response)
}

/// The results the token may read (`key:read` on each entry's key), and
/// whether any were left out.
fn readable(
    route: &Route,
    result: Result<Vec<TxnResult>, Vec<TxnError>>,
) -> (Result<Vec<TxnResult>, Vec<TxnError>>, bool) {
    let Ok(mut results) = result else {
        return (result, false);
    };
    let before = results.len();
    results.retain(|TxnResult::Kv(e)| route.authz().key_read(&e.key));
    let filtered = results.len() < before;
    (Ok(results), filtered)
}

/// 200 with the results, or 409 with the errors.
fn answered(result: &Result<Vec<TxnResult>, Vec<TxnError>>, pretty: bool) -> Response {
    let status = if result.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    answer(result, status, pretty)
}

fn answer(
    result: &Result<Vec<TxnResult>, Vec<TxnError>>,
    status: StatusCode,
    pretty: bool,
) -> Response {
    let body = match result {
        Ok(results) => TxnJson {
            results: Some(
                results
                    .iter()
                    .map(|TxnResult::Kv(e)| ResultJson { kv: e.into() })
                    .collect(),
            ),
            errors: None,
        },
        Err(errors) => TxnJson {
            results: None,
            errors: Some(
                errors
                    .iter()
                    .map(|e| ErrorJson {
                        op_index: e.op_index,
                        what: &e.what,
                    })
                    .collect(),
            ),
        },
    };
    match json_response(&body, pretty) {
        Ok(mut r) => {
            *r.status_mut() = status;
            r
        }
        Err(e) => e.into_response(),
    }
}

/// A 400 in Consul's words for a body it cannot use.
fn unparsable(what: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("Failed to parse body: {what}"))
}

/// Decodes the operations. A malformed body is a 400 and an oversized one
/// a 413; unknown verbs and missing keys are the transaction's own errors
/// (409), as Consul reports them, and nothing is written.
fn decode(bytes: &[u8]) -> Result<Result<Vec<TxnOp>, Vec<TxnError>>, ApiError> {
    let body: Value = serde_json::from_slice(bytes).map_err(unparsable)?;
    let Value::Array(items) = body else {
        return Err(unparsable("the body must be a JSON array of operations"));
    };
    if items.len() > MAX_OPS {
        return Err(ApiError::TooLarge(format!(
            "Transaction contains too many operations ({} > {MAX_OPS})",
            items.len()
        )));
    }
    let mut ops = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for (op_index, item) in items.iter().enumerate() {
        let path = format!("[{op_index}]");
        let fields = Fields::new(item, &path).map_err(unparsable)?;
        let Some((kv_path, kv)) = fields.object(&["KV"]).map_err(unparsable)? else {
            return Err(unparsable(format!(
                "operation {op_index}: only KV operations are supported"
            )));
        };
        let kv = Fields::new(kv, &kv_path).map_err(unparsable)?;
        let verb_name = kv.string(&["Verb"]).map_err(unparsable)?;
        let key = kv.string(&["Key"]).map_err(unparsable)?;
        if !key.is_empty() {
            validate_key(&key).map_err(|e| match e {
                ApiError::TooLarge(m) => ApiError::TooLarge(m),
                other => unparsable(format!("{kv_path}.Key: {other}")),
            })?;
        }
        let encoded = kv.string(&["Value"]).map_err(unparsable)?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| unparsable(format!("{kv_path}.Value: {e}")))?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::TooLarge(format!(
                "Value for key {key:?} is too large ({} > {MAX_VALUE_BYTES} bytes)",
                value.len()
            )));
        }
        let Some(verb) = KvVerb::parse(&verb_name) else {
            refused.push(TxnError {
                op_index,
                what: format!("unknown KV verb {verb_name:?}"),
            });
            continue;
        };
        // Consul's `kvsPreApply`: only delete-tree may name the empty key.
        // A set of "" would store a key `/v1/kv` cannot address.
        if key.is_empty() && verb != KvVerb::DeleteTree {
            refused.push(TxnError {
                op_index,
                what: "Must provide key".into(),
            });
            continue;
        }
        ops.push(TxnOp::Kv(KvOp {
            verb,
            key,
            value,
            flags: kv
                .uint(&["Flags"], u64::MAX)
                .map_err(unparsable)?
                .unwrap_or(0),
            index: kv
                .uint(&["Index"], u64::MAX)
                .map_err(unparsable)?
                .unwrap_or(0),
            session: kv.string(&["Session"]).map_err(unparsable)?,
        }));
    }
    if refused.is_empty() {
        Ok(Ok(ops))
    } else {
        Ok(Err(refused))
    }
}
