//! `/v1/query/*`: prepared queries (Consul's `prepared_query_endpoint.go`):
//! create, list, read, update, delete, execute and explain, in Consul's
//! JSON.
//!
//! A write is checked before it is sent (`prepared_query::check`: Consul's
//! rules, a template compiled and rendered with its own name), so bad input
//! writes nothing; what depends on the other queries (a name taken, a
//! second catch-all, an unknown session) is refused on apply, as Consul's
//! 500s. With ACLs on, a write needs `query:write` on the query's name (and
//! on the old name for an update or delete); reads leave out what the
//! token lacks `query:read` on and show a query's token as `<hidden>` to
//! any but a management token (Consul's `filterPreparedQueries`); an
//! unnamed, session-bound query is listed to management tokens only.
//! Executing needs no permission on the query: its answers are filtered by
//! `service:read` and `node:read` of the query's token, else the caller's.
//!
//! `POST /v1/internal/query/execute` runs a rendered query (the body, in
//! trellis's own JSON) here without failing over: what another
//! datacenter's failover asks of this one through the cross-datacenter
//! HTTP family, so that no new RPC is needed.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::json::{CheckJson, HealthServiceJson};
use super::route::Route;
use super::{ApiError, JsonBody};
use crate::catalog::{
    Command, Outcome, PreparedQuery, PreparedQueryOp, QueryDns, QueryFailover, QueryTemplate,
    ServiceQuery, State, secret_hash,
};
use crate::prepared_query::{self, ExecuteError, QueryResult, REDACTED_TOKEN, Request};

/// Consul's answer for an ID or name that resolves to nothing.
const NOT_FOUND: &str = "Query not found";

/// `POST /v1/query`: `{"ID": …}`.
pub(super) async fn create(route: Route, JsonBody(body): JsonBody) -> Result<Response, ApiError> {
    let writer = route.writer()?;
    let mut query = decode(body)?;
    query.id = uuid::Uuid::new_v4().to_string();
    may_write(&route, &query)?;
    let id = query.id.clone();
    match writer
        .write(Command::PreparedQuery(PreparedQueryOp::Create(Box::new(
            query,
        ))))
        .await?
    {
        Outcome::Applied(index) => {
            Ok(writer.written(Json(json!({ "ID": id })).into_response(), index))
        }
        other => Err(refused(other)),
    }
}

/// `PUT /v1/query/:id`: an empty 200, as Consul's.
pub(super) async fn update(
    Path(id): Path<String>,
    route: Route,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let writer = route.writer()?;
    let mut query = decode(body)?;
    query.id = id;
    if let Some(old) = route
        .state_now(|s| s.prepared_query(&query.id).cloned())
        .await?
    {
        may_write(&route, &old)?;
    }
    may_write(&route, &query)?;
    match writer
        .write(Command::PreparedQuery(PreparedQueryOp::Update(Box::new(
            query,
        ))))
        .await?
    {
        Outcome::Applied(index) => Ok(writer.written(().into_response(), index)),
        other => Err(refused(other)),
    }
}

/// `DELETE /v1/query/:id`: an empty 200.
pub(super) async fn delete(Path(id): Path<String>, route: Route) -> Result<Response, ApiError> {
    let writer = route.writer()?;
    if let Some(old) = route.state_now(|s| s.prepared_query(&id).cloned()).await? {
        may_write(&route, &old)?;
    }
    match writer
        .write(Command::PreparedQuery(PreparedQueryOp::Delete(id)))
        .await?
    {
        Outcome::Applied(index) => Ok(writer.written(().into_response(), index)),
        other => Err(refused(other)),
    }
}

/// `GET /v1/query`: every query the token may read.
pub(super) async fn list(route: Route) -> Result<Response, ApiError> {
    route
        .read_filtered(State::prepared_queries_index, |s| {
            let mut filtered = false;
            let out: Vec<QueryJson> = s
                .prepared_queries()
                .filter_map(|q| {
                    let shown = visible(&route, q);
                    filtered |= shown.is_none();
                    shown
                })
                .collect();
            (out, filtered)
        })
        .await
}

/// `GET /v1/query/:id`: the query in a one-element list; 404 when there is
/// none, 403 when the token may not read it.
pub(super) async fn read(Path(id): Path<String>, route: Route) -> Result<Response, ApiError> {
    let pretty = route.params().has("pretty");
    route
        .read_with(
            State::prepared_queries_index,
            |s| {
                s.prepared_query(&id)
                    .map(|q| (visible(&route, q), q.acl_prefix().map(String::from)))
            },
            |found| match found {
                None => Err(ApiError::NotFound(NOT_FOUND.into())),
                Some((None, name)) => Err(route.denied("query:read", name.as_deref())),
                Some((Some(q), _)) => super::route::json_response(&vec![q], pretty),
            },
        )
        .await
}

/// `GET /v1/query/:id_or_name/explain`: the query as it would run,
/// rendered, `{"Query": …}`.
pub(super) async fn explain(Path(id): Path<String>, route: Route) -> Result<Response, ApiError> {
    let executor = route.prepared_queries()?;
    route.read_your_writes().await?;
    let query = executor
        .resolve(&id)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(NOT_FOUND.into()))?;
    let Some(shown) = visible(&route, &query) else {
        return Err(route.denied("query:read", query.acl_prefix()));
    };
    let index = route.state_now(State::prepared_queries_index).await?;
    let mut resp =
        super::route::json_response(&json!({ "Query": shown }), route.params().has("pretty"))?;
    route.index_headers(resp.headers_mut(), index);
    Ok(resp)
}

/// `GET /v1/query/:id_or_name/execute[?near=][&limit=]`.
pub(super) async fn execute(
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    route: Route,
) -> Result<Response, ApiError> {
    let executor = route.prepared_queries()?;
    route.read_your_writes().await?;
    let limit = match route.params().get("limit").filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::BadRequest(format!("Bad limit: {l:?}")))?,
    };
    let req = Request {
        id_or_name: id,
        limit,
        near: route.params().get("near").map(String::from),
        authz: route.authorizer(),
        secret: route.secret(&headers),
    };
    let result = executor.execute(&req).await.map_err(|e| match e {
        ExecuteError::NotFound => ApiError::NotFound(NOT_FOUND.into()),
        other => ApiError::Internal(other.to_string()),
    })?;
    let index = result.index;
    let mut resp =
        super::route::json_response(&ExecuteJson::from(&result), route.params().has("pretty"))?;
    route.index_headers(resp.headers_mut(), index);
    Ok(resp)
}

/// `POST /v1/internal/query/execute[?limit=]`: the rendered query of the
/// body executed here, as another datacenter's failover asks; trellis's
/// own JSON both ways.
pub(super) async fn execute_rendered(route: Route, body: Bytes) -> Result<Response, ApiError> {
    let executor = route.prepared_queries()?;
    let query: PreparedQuery = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("Request decode failed: {e}")))?;
    let limit = route
        .params()
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let result = executor.execute_here(&query, &route.authorizer(), None, limit);
    Ok(Json(result).into_response())
}

/// `query:write` on the query's name, when it has one an ACL applies to.
fn may_write(route: &Route, query: &PreparedQuery) -> Result<(), ApiError> {
    match query.acl_prefix() {
        Some(name) => route.require(route.authz().query_write(name), "query:write", Some(name)),
        None => Ok(()),
    }
}

/// The query as the token may see it: `None` when it may not read it;
/// its token `<hidden>` unless the token is a management one.
fn visible(route: &Route, q: &PreparedQuery) -> Option<QueryJson> {
    let authz = route.authz();
    let management = authz.acl_write();
    if !management {
        match q.acl_prefix() {
            Some(name) if authz.query_read(name) => {}
            _ => return None,
        }
    }
    let mut shown = QueryJson::from(q);
    if !management && !shown.token.is_empty() {
        shown.token = REDACTED_TOKEN.into();
    }
    Some(shown)
}

/// A write's outcome other than success, as Consul's 500 with its message.
fn refused(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::Refused(e) => ApiError::Internal(e.to_string()),
        other => ApiError::Internal(format!("a prepared query write answered {other:?}")),
    }
}

/// A request body as a query, checked as Consul checks it.
fn decode(body: Value) -> Result<PreparedQuery, ApiError> {
    let json: QueryJson = serde_path_to_error::deserialize(body)
        .map_err(|e| ApiError::BadRequest(format!("Request decode failed: {e}")))?;
    let query = PreparedQuery::from(json);
    prepared_query::check(&query).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(query)
}

/// Consul's JSON of a query, both ways. Unknown fields (Consul's
/// `Connect`, `Peer`, `Targets`, which trellis has no use for) are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct QueryJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    session: String,
    token: String,
    template: TemplateJson,
    service: ServiceJson,
    #[serde(rename = "DNS")]
    dns: DnsJson,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TemplateJson {
    #[serde(rename = "Type")]
    kind: String,
    regexp: String,
    remove_empty_tags: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ServiceJson {
    service: String,
    failover: FailoverJson,
    only_passing: bool,
    #[serde(rename = "IgnoreCheckIDs")]
    ignore_check_ids: Option<Vec<String>>,
    near: String,
    tags: Option<Vec<String>>,
    node_meta: Option<BTreeMap<String, String>>,
    service_meta: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct FailoverJson {
    nearest_n: u32,
    datacenters: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DnsJson {
    #[serde(rename = "TTL")]
    ttl: String,
}

/// Go's nil for an empty list or map, as Consul shows them.
fn nil_if_empty<T: IntoIterator + Clone>(v: &T) -> Option<T> {
    v.clone().into_iter().next().is_some().then(|| v.clone())
}

impl From<&PreparedQuery> for QueryJson {
    fn from(q: &PreparedQuery) -> Self {
        let s = &q.service;
        Self {
            id: q.id.clone(),
            name: q.name.clone(),
            session: q.session.clone(),
            token: q.token.clone(),
            template: TemplateJson {
                kind: q.template.kind.clone(),
                regexp: q.template.regexp.clone(),
                remove_empty_tags: q.template.remove_empty_tags,
            },
            service: ServiceJson {
                service: s.service.clone(),
                failover: FailoverJson {
                    nearest_n: s.failover.nearest_n,
                    datacenters: nil_if_empty(&s.failover.datacenters),
                },
                only_passing: s.only_passing,
                ignore_check_ids: nil_if_empty(&s.ignore_check_ids),
                near: s.near.clone(),
                tags: nil_if_empty(&s.tags),
                node_meta: nil_if_empty(&s.node_meta),
                service_meta: nil_if_empty(&s.service_meta),
            },
            dns: DnsJson {
                ttl: q.dns.ttl.clone(),
            },
            create_index: q.create_index,
            modify_index: q.modify_index,
        }
    }
}

impl From<QueryJson> for PreparedQuery {
    fn from(j: QueryJson) -> Self {
        let s = j.service;
        Self {
            id: j.id,
            name: j.name,
            session: j.session,
            token_hash: (!j.token.is_empty()).then(|| secret_hash(&j.token)),
            token: j.token,
            template: QueryTemplate {
                kind: j.template.kind,
                regexp: j.template.regexp,
                remove_empty_tags: j.template.remove_empty_tags,
            },
            service: ServiceQuery {
                service: s.service,
                failover: QueryFailover {
                    nearest_n: s.failover.nearest_n,
                    datacenters: s.failover.datacenters.unwrap_or_default(),
                },
                only_passing: s.only_passing,
                ignore_check_ids: s.ignore_check_ids.unwrap_or_default(),
                near: s.near,
                tags: s.tags.unwrap_or_default(),
                node_meta: s.node_meta.unwrap_or_default(),
                service_meta: s.service_meta.unwrap_or_default(),
            },
            dns: QueryDns { ttl: j.dns.ttl },
            // Set by the state machine.
            create_index: 0,
            modify_index: 0,
        }
    }
}

/// Consul's `PreparedQueryExecuteResponse`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExecuteJson {
    service: String,
    nodes: Vec<HealthServiceJson>,
    #[serde(rename = "DNS")]
    dns: DnsJson,
    datacenter: String,
    failovers: u32,
    index: u64,
}

impl From<&QueryResult> for ExecuteJson {
    fn from(r: &QueryResult) -> Self {
        Self {
            service: r.service.clone(),
            nodes: r
                .nodes
                .iter()
                .map(|e| HealthServiceJson {
                    node: (&e.node).into(),
                    service: (&e.service).into(),
                    checks: e.checks.iter().map(CheckJson::from).collect(),
                })
                .collect(),
            dns: DnsJson {
                ttl: r.dns_ttl.clone(),
            },
            datacenter: r.datacenter.clone(),
            failovers: r.failovers,
            index: r.index,
        }
    }
}
