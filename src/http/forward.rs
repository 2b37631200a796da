//! `?dc=` naming another datacenter: the request is sent whole to a server
//! of that datacenter, which runs it through its own router, and its
//! answer (status, body, `X-Consul-*` headers) is ours.
//!
//! A step of the API's service (`service.rs`), not a handler's business:
//! the request goes before any extractor reads its body or decides
//! anything from this agent's replica, so every endpoint family that takes
//! `?dc` (catalog, health, KV, sessions, txn, prepared queries,
//! coordinates) forwards with no code of its own, a blocking query parks
//! on the remote side (next to the writes that wake it), and the remote
//! datacenter checks the request's token against its own ACLs. It runs
//! after admission, so a forwarded blocking query holds a blocking slot
//! here as a local one does. `Route::reach` stays the seam for what does
//! not pass here (a catalog write whose body names another datacenter).
//!
//! Errors keep Consul's status and body, which clients match, and add what
//! Consul's lack (research §6): `X-Trellis-Reason: unknown-dc` or
//! `dc-unreachable`, and `X-Trellis-Datacenter` naming the datacenter.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::query::{Params, ReadOptions};
use super::{Ctx, MAX_BODY_BYTES};
use crate::rpc::datacenter::{
    DatacenterRequest, DatacenterResponse, ForwardError, HttpAnswer, HttpRequest,
};

/// The endpoint families that answer for the datacenter `?dc` names, as
/// Consul's do; everything else answers for this agent.
const FORWARDED: &[&str] = &[
    "/v1/catalog/",
    "/v1/health/",
    "/v1/kv/",
    "/v1/session/",
    "/v1/txn",
    "/v1/query",
    "/v1/coordinate/",
];
/// Paths under those that list datacenters themselves and ignore `?dc`.
const NOT_FORWARDED: &[&str] = &["/v1/catalog/datacenters", "/v1/coordinate/datacenters"];
/// Time beyond a blocking query's wait (and its jitter) for its answer to
/// come back.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);
/// A request that does not block: the remote server's own deadlines (a
/// consistent read, a write through its leader: 5 s) are within it.
const PLAIN_ANSWER: Duration = Duration::from_secs(10);

/// Why a request for another datacenter failed, as a header.
const REASON: &str = "x-trellis-reason";
/// The datacenter it failed for.
const DATACENTER: &str = "x-trellis-datacenter";

/// Sends `request`, whose `?dc=` names the other datacenter `dc`
/// ([`other_datacenter`]), on to it, and answers with that datacenter's
/// answer.
pub(super) async fn forward(ctx: Ctx, dc: String, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return super::ApiError::PayloadTooLarge.into_response();
    };
    let params = parts.uri.query().map(parse_query).unwrap_or_default();
    let answer_within = answer_within(&params);
    let request = DatacenterRequest::Http(HttpRequest {
        method: parts.method.to_string(),
        path_and_query: without_dc(parts.uri.path(), parts.uri.query()),
        headers: carried(&parts.headers),
        body: body.to_vec().into(),
    });
    let call = ctx.api.remote.call(&dc, request, answer_within);
    let answer = tokio::select! {
        answer = call => answer,
        // A forwarded blocking query must not hold the agent's graceful
        // shutdown for its whole wait.
        () = ctx.closing.cancelled() => {
            return failure(StatusCode::SERVICE_UNAVAILABLE, "agent is shutting down", None, &dc);
        }
    };
    let mut response = match answer {
        Ok(DatacenterResponse::Http(mut answer)) => {
            if ctx.api.remote.translate_wan()
                && TRANSLATED.iter().any(|p| parts.uri.path().starts_with(p))
            {
                translate_body(&mut answer);
            }
            relay(answer)
        }
        Ok(DatacenterResponse::Failed(why)) => {
            failure(StatusCode::INTERNAL_SERVER_ERROR, &why, None, &dc)
        }
        Ok(other) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{dc} answered an HTTP request with {}", other.kind()),
            None,
            &dc,
        ),
        Err(e) => forward_error(&e, &dc),
    };
    if ctx.api.remote.translate_wan() {
        mark_translated(&mut response);
    }
    if parts.method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response
}

/// Consul's header on answers of an agent with `translate_wan_addrs` on.
const TRANSLATE_HEADER: &str = "x-consul-translate-addresses";

/// Says on `response` that addresses are translated: Consul says so on
/// every answer of an agent with `translate_wan_addrs` on.
pub(super) fn mark_translated(response: &mut Response) {
    response.headers_mut().insert(
        HeaderName::from_static(TRANSLATE_HEADER),
        HeaderValue::from_static("true"),
    );
}
/// The families whose answers carry node and service addresses Consul
/// translates (catalog, health, prepared query execution).
const TRANSLATED: &[&str] = &["/v1/catalog/", "/v1/health/", "/v1/query/"];

/// Puts the WAN addresses in a JSON answer from another datacenter.
fn translate_body(answer: &mut HttpAnswer) {
    if !(200..300).contains(&answer.status) {
        return;
    }
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&answer.body) else {
        return;
    };
    translate_json(&mut body);
    if let Ok(bytes) = serde_json::to_vec(&body) {
        answer.body = bytes.into();
    }
}

/// Consul's translation (`translate_addr.go`), on any object of the answer
/// that has them: a node's `Address` becomes its `TaggedAddresses.wan`; a
/// service's `Address` and `Port` (health answers) its
/// `TaggedAddresses.wan`, and a catalog entry's `ServiceAddress` and
/// `ServicePort` its `ServiceTaggedAddresses.wan`.
fn translate_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter_mut().for_each(translate_json),
        Value::Object(map) => {
            let wan = |key: &str| map.get(key).and_then(|t| t.get("wan")).cloned();
            let tagged = wan("TaggedAddresses");
            let service_tagged = wan("ServiceTaggedAddresses");
            match tagged {
                Some(Value::String(addr)) if !addr.is_empty() => {
                    map.insert("Address".into(), Value::String(addr));
                }
                Some(Value::Object(svc)) => {
                    if let Some(Value::String(addr)) = svc.get("Address").filter(|a| a != &"") {
                        map.insert("Address".into(), Value::String(addr.clone()));
                        if let Some(port) = svc.get("Port") {
                            map.insert("Port".into(), port.clone());
                        }
                    }
                }
                _ => {}
            }
            if let Some(Value::Object(svc)) = service_tagged
                && let Some(Value::String(addr)) = svc.get("Address").filter(|a| a != &"")
            {
                map.insert("ServiceAddress".into(), Value::String(addr.clone()));
                if let Some(port) = svc.get("Port") {
                    map.insert("ServicePort".into(), port.clone());
                }
            }
            map.values_mut().for_each(translate_json);
        }
        _ => {}
    }
}

/// The datacenter `uri` is for when it is another one and the path is of a
/// family that forwards.
pub(super) fn other_datacenter(ctx: &Ctx, uri: &axum::http::Uri) -> Option<String> {
    let path = uri.path();
    if !FORWARDED.iter().any(|p| path.starts_with(p)) || NOT_FORWARDED.contains(&path) {
        return None;
    }
    let query = uri.query()?;
    // Most requests name no datacenter: no need to decode their query (a
    // name spelled with escapes has a `%`).
    if !query.contains("dc") && !query.contains('%') {
        return None;
    }
    let params = parse_query(query);
    let dc = params.get("dc").filter(|dc| !dc.is_empty())?;
    let local = &ctx.api.local.identity().datacenter;
    (!dc.eq_ignore_ascii_case(local)).then(|| dc.to_owned())
}

/// The query string's pairs, decoded; an undecodable one is left to the
/// handler, which answers 400.
fn parse_query(query: &str) -> Params {
    let uri = format!("/?{query}");
    uri.parse::<axum::http::Uri>()
        .ok()
        .and_then(|u| axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&u).ok())
        .map(|q| Params(q.0))
        .unwrap_or_default()
}

/// `path?query` with every `dc` pair removed, the others as sent.
fn without_dc(path: &str, query: Option<&str>) -> String {
    let kept: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != "dc")
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// How long the remote server may take to answer: a blocking query's wait
/// (Consul's default and cap) and its jitter, or a plain request's time.
fn answer_within(params: &Params) -> Duration {
    match ReadOptions::parse(params) {
        Ok(opts) if opts.min_index > 0 => opts.wait + opts.wait / 16 + ANSWER_MARGIN,
        Ok(_) => PLAIN_ANSWER,
        // The remote server refuses it (400) at once.
        Err(_) => PLAIN_ANSWER,
    }
}

/// Whether a header belongs to this connection, not to the request or
/// answer it carries (RFC 9110 §7.6.1), or is recomputed for the new one.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// The request's headers the remote router needs: the token, `Accept`,
/// `Content-Type`, …; the connection's own stay behind.
fn carried(headers: &HeaderMap) -> Vec<(String, serde_bytes::ByteBuf)> {
    headers
        .iter()
        .filter(|(name, _)| !hop_by_hop(name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec().into()))
        .collect()
}

/// The remote router's answer as ours.
fn relay(answer: HttpAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(Body::from(answer.body.into_vec()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        if hop_by_hop(&name) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    response
}

/// A failed forward: Consul's status and text, with the reason and the
/// datacenter as headers.
fn forward_error(e: &ForwardError, dc: &str) -> Response {
    let reason = match e {
        ForwardError::Unknown(_) => Some("unknown-dc"),
        ForwardError::Unreachable(_) => Some("dc-unreachable"),
        ForwardError::NoLocalServer(_) | ForwardError::Failed(_) => None,
    };
    failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        &e.to_string(),
        reason,
        dc,
    )
}

fn failure(status: StatusCode, text: &str, reason: Option<&'static str>, dc: &str) -> Response {
    let mut response = (status, text.to_owned()).into_response();
    let headers = response.headers_mut();
    if let Some(reason) = reason {
        headers.insert(
            HeaderName::from_static(REASON),
            HeaderValue::from_static(reason),
        );
    }
    if let Ok(dc) = HeaderValue::from_str(dc) {
        headers.insert(HeaderName::from_static(DATACENTER), dc);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dc_pairs_are_removed_and_the_rest_kept_as_sent() {
        assert_eq!(without_dc("/v1/kv/a", Some("dc=dc2")), "/v1/kv/a");
        assert_eq!(
            without_dc(
                "/v1/health/service/web",
                Some("dc=dc2&passing&tag=a%20b&index=7")
            ),
            "/v1/health/service/web?passing&tag=a%20b&index=7"
        );
        assert_eq!(
            without_dc("/v1/kv/x", Some("recurse&dc=dc2&dcx=1&dc")),
            "/v1/kv/x?recurse&dcx=1"
        );
        assert_eq!(without_dc("/v1/txn", None), "/v1/txn");
    }

    #[test]
    fn a_blocking_query_may_take_its_wait_and_jitter_there() {
        let params = |q: &str| parse_query(q);
        assert_eq!(answer_within(&params("dc=dc2")), PLAIN_ANSWER);
        assert_eq!(
            answer_within(&params("index=5&wait=16s")),
            Duration::from_secs(17) + ANSWER_MARGIN
        );
        // Consul's default wait, 5 minutes, and its cap, 10.
        assert_eq!(
            answer_within(&params("index=5")),
            Duration::from_millis(318_750) + ANSWER_MARGIN
        );
        assert_eq!(
            answer_within(&params("index=5&wait=1h")),
            Duration::from_millis(637_500) + ANSWER_MARGIN
        );
    }

    #[test]
    fn connection_headers_stay_behind_and_the_token_goes() {
        let mut headers = HeaderMap::new();
        headers.insert("x-consul-token", HeaderValue::from_static("secret"));
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        headers.insert("content-length", HeaderValue::from_static("12"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let names: Vec<String> = carried(&headers).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x-consul-token", "accept"]);
    }

    #[test]
    fn unknown_and_unreachable_keep_consuls_text_and_say_which() {
        let unknown = forward_error(&ForwardError::Unknown("dc9".into()), "dc9");
        assert_eq!(unknown.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(unknown.headers()[REASON], "unknown-dc");
        assert_eq!(unknown.headers()[DATACENTER], "dc9");
        let cut = forward_error(&ForwardError::Unreachable("dc2".into()), "dc2");
        assert_eq!(cut.headers()[REASON], "dc-unreachable");
        assert_eq!(cut.headers()[DATACENTER], "dc2");
    }

    #[test]
    fn translation_puts_wan_addresses_where_consul_does() {
        let mut health = serde_json::json!([{
            "Node": {"Node": "n1", "Address": "10.0.2.1",
                     "TaggedAddresses": {"lan": "10.0.2.1", "wan": "203.0.113.1"}},
            "Service": {"Service": "web", "Address": "10.0.2.5", "Port": 80,
                        "TaggedAddresses": {"wan": {"Address": "203.0.113.5", "Port": 8080}}},
            "Checks": []
        }]);
        translate_json(&mut health);
        assert_eq!(health[0]["Node"]["Address"], "203.0.113.1");
        assert_eq!(health[0]["Service"]["Address"], "203.0.113.5");
        assert_eq!(health[0]["Service"]["Port"], 8080);
        let mut catalog = serde_json::json!([{
            "Node": "n1", "Address": "10.0.2.1",
            "TaggedAddresses": {"wan": "203.0.113.1"},
            "ServiceAddress": "", "ServicePort": 80,
            "ServiceTaggedAddresses": {}
        }]);
        translate_json(&mut catalog);
        assert_eq!(catalog[0]["Address"], "203.0.113.1");
        assert_eq!(catalog[0]["ServiceAddress"], "");
        assert_eq!(catalog[0]["ServicePort"], 80);
        // Nothing to translate to: left alone.
        let mut plain = serde_json::json!({"Address": "10.0.2.1", "TaggedAddresses": {}});
        let before = plain.clone();
        translate_json(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn the_remote_answer_is_ours_with_its_headers() {
        let answer = HttpAnswer {
            status: 404,
            headers: vec![
                ("x-consul-index".into(), b"42".to_vec().into()),
                ("x-consul-knownleader".into(), b"true".to_vec().into()),
                ("transfer-encoding".into(), b"chunked".to_vec().into()),
            ],
            body: b"not here".to_vec().into(),
        };
        let response = relay(answer);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["x-consul-index"], "42");
        assert_eq!(response.headers()["x-consul-knownleader"], "true");
        assert!(response.headers().get("transfer-encoding").is_none());
    }
}
