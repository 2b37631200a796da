//! Consul's HTTP API on axum: the agent, catalog, health, session, status
//! and operator endpoints.
//!
//! Every handler reaches data through one extractor, `Route` (`route.rs`),
//! which knows the request's datacenter: catalog reads come from this
//! process's [`Replica`] (see [`query`] for consistency modes and blocking
//! queries), catalog writes go through [`Delegate::write`], agent service
//! changes through the [`LocalAgent`]. The routes sit behind one service,
//! [`Api`] (`service.rs`), which forwards requests for other datacenters
//! and admits the rest under two concurrency limits shared by every route,
//! one for blocking queries and one for the rest (`admit.rs`); it sheds
//! load (503) rather than queueing; one client's parked blocking
//! queries are capped too (429). Bodies are capped at 1 MiB (413), KV
//! values and transactions at 512 KiB by the bytes read (`body.rs`). The
//! listener (`listen.rs`) caps connections per client IP (429) and times
//! out half-sent requests and idle keep-alive connections.
//! With `ports.https` on, the same API (state and admission bounds)
//! serves HTTPS too, through the same listener code with TLS in front.

mod acl;
mod admit;
mod agent;
mod body;
mod catalog;
mod coordinate;
pub mod decode;
mod error;
mod forward;
mod health;
pub mod json;
mod kv;
mod listen;
mod members;
mod operator;
mod prepared_query;
pub mod query;
mod route;
mod service;
mod session;
mod status;
#[cfg(test)]
mod tests;
mod txn;
mod watchdog;
mod writer;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::Method;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{delete, get, put};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::catalog::Replica;
use crate::delegate::Delegate;
use crate::local::LocalAgent;
use admit::Admission;
pub use error::ApiError;
use query::Params;
pub use route::Relayed;
pub use service::Api;

/// Largest accepted request body, as Consul's default.
pub const MAX_BODY_BYTES: usize = 1 << 20;
pub use admit::{MAX_BLOCKING, MAX_IN_FLIGHT};

/// The parts the API serves from, as the agent hands them over. Cheap to
/// clone. Handlers reach them only through `Route`.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The applied catalog that reads come from.
    pub replica: Arc<Replica>,
    /// Where catalog writes go, and who leads.
    pub delegate: Delegate,
    /// This node's identity and services.
    pub local: Arc<LocalAgent>,
    /// This agent's membership in the LAN gossip pool.
    pub gossip: Arc<crate::gossip::Gossip>,
    /// This server's membership in the WAN pool; `None` on a client agent
    /// and with `ports.serf_wan = -1`.
    pub wan: Option<Arc<crate::gossip::Gossip>>,
    /// The datacenters this agent knows and the route to each (only its
    /// own on a client agent, which asks its servers).
    pub datacenters: Arc<crate::datacenters::Datacenters>,
    /// The agent's own stop signal: `PUT /v1/agent/leave` ends the agent.
    pub shutdown: CancellationToken,
    /// The KV store's and sessions' settings (`session_ttl_min`).
    pub kv: crate::config::KvSettings,
    /// ACLs: whether they are on, the token for requests without one.
    pub acl: crate::config::AclSettings,
    /// Runs prepared queries (and fails them over to other datacenters).
    pub prepared_queries: crate::prepared_query::Executor,
    /// The way to other datacenters, for requests whose `?dc=` names one.
    pub remote: Arc<crate::remote::Remote>,
}

/// The handlers' state: the parts the caller gives plus what one running
/// server owns, behind one `Arc`, so that every request's copy (each
/// extractor takes one) is one reference count, not one per part.
#[derive(Debug, Clone)]
struct Ctx(Arc<Shared>);

/// What [`Ctx`] shares.
#[derive(Debug)]
struct Shared {
    /// The caller's parts.
    api: ApiState,
    /// Cancelled when the server stops, so parked blocking queries answer at
    /// once instead of holding graceful shutdown for up to their `wait`.
    closing: CancellationToken,
    /// Blocking queries parked right now (a gauge for metrics and tests).
    parked: AtomicUsize,
}

impl Ctx {
    fn new(api: ApiState, closing: CancellationToken) -> Self {
        Self(Arc::new(Shared {
            api,
            closing,
            parked: AtomicUsize::new(0),
        }))
    }
}

impl std::ops::Deref for Ctx {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

fn build(state: Ctx, admission: Admission) -> Api {
    let routes = Router::new()
        .route("/v1/agent/self", get(agent::agent_self))
        .route("/v1/agent/services", get(agent::services))
        .route("/v1/agent/service/register", put(agent::register))
        .route("/v1/agent/service/deregister/{id}", put(agent::deregister))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(agent::maintenance),
        )
        .route("/v1/agent/service/{id}", get(agent::service))
        .route("/v1/agent/checks", get(agent::checks))
        .route("/v1/agent/maintenance", put(agent::node_maintenance))
        .route("/v1/agent/check/register", put(agent::check_register))
        .route(
            "/v1/agent/check/deregister/{id}",
            put(agent::check_deregister),
        )
        .route("/v1/agent/check/update/{id}", put(agent::check_update))
        .route("/v1/agent/check/{verb}/{id}", put(agent::check_ttl))
        .route("/v1/agent/health/service/id/{id}", get(agent::health_by_id))
        .route(
            "/v1/agent/health/service/name/{name}",
            get(agent::health_by_name),
        )
        .route("/v1/catalog/register", put(catalog::register))
        .route("/v1/catalog/deregister", put(catalog::deregister))
        .route("/v1/catalog/services", get(catalog::services))
        .route("/v1/catalog/service/{name}", get(catalog::service))
        .route("/v1/catalog/nodes", get(catalog::nodes))
        .route("/v1/catalog/node/{node}", get(catalog::node))
        .route("/v1/catalog/datacenters", get(catalog::datacenters))
        .route("/v1/health/service/{name}", get(health::service))
        .route("/v1/health/checks/{name}", get(health::checks))
        .route("/v1/health/node/{node}", get(health::node))
        .route("/v1/health/state/{state}", get(health::state))
        .route("/v1/kv/", get(kv::get).put(kv::put).delete(kv::delete))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/txn", put(txn::txn))
        .route("/v1/status/leader", get(status::leader))
        .route("/v1/status/peers", get(status::peers))
        .route("/v1/agent/leave", put(operator::leave))
        .route("/v1/agent/members", get(members::members))
        .route("/v1/agent/join/{addr}", put(members::join))
        .route("/v1/agent/force-leave/{node}", put(members::force_leave))
        .route(
            "/v1/operator/raft/configuration",
            get(operator::configuration),
        )
        .route("/v1/operator/raft/peer", delete(operator::remove_peer))
        .route("/v1/session/create", put(session::create))
        .route("/v1/session/destroy/{id}", put(session::destroy))
        .route("/v1/session/renew/{id}", put(session::renew))
        .route("/v1/session/info/{id}", get(session::info))
        .route("/v1/session/node/{node}", get(session::node))
        .route("/v1/session/list", get(session::list))
        .route("/v1/session/destroy/", put(session::missing_session))
        .route("/v1/session/renew/", put(session::missing_session))
        .route("/v1/session/info/", get(session::missing_session))
        .route("/v1/session/node/", get(session::missing_node))
        .route("/v1/acl/bootstrap", put(acl::bootstrap))
        .route("/v1/acl/token", put(acl::token_create))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route(
            "/v1/acl/token/{id}",
            get(acl::token_read)
                .put(acl::token_update)
                .delete(acl::token_delete),
        )
        .route("/v1/acl/tokens", get(acl::token_list))
        .route("/v1/acl/policy", put(acl::policy_create))
        .route("/v1/acl/policy/name/{name}", get(acl::policy_read_name))
        .route(
            "/v1/acl/policy/{id}",
            get(acl::policy_read)
                .put(acl::policy_update)
                .delete(acl::policy_delete),
        )
        .route("/v1/acl/policies", get(acl::policy_list))
        .route(
            "/v1/query",
            get(prepared_query::list).post(prepared_query::create),
        )
        .route(
            "/v1/query/{id}",
            get(prepared_query::read)
                .put(prepared_query::update)
                .delete(prepared_query::delete),
        )
        .route("/v1/query/{id}/execute", get(prepared_query::execute))
        .route("/v1/query/{id}/explain", get(prepared_query::explain))
        .route(
            "/v1/internal/query/execute",
            axum::routing::post(prepared_query::execute_rendered),
        )
        .route("/v1/coordinate/datacenters", get(coordinate::datacenters))
        .route("/v1/coordinate/nodes", get(coordinate::nodes))
        .route("/v1/coordinate/node/{node}", get(coordinate::node))
        .route("/v1/coordinate/update", put(coordinate::update))
        .fallback(|| async { ApiError::NotFound("404 page not found".into()) })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::MethodNotAllowed(method.to_string())
        })
        .with_state(state.clone());
    service::api(routes, admission, state)
}

/// Serves the API on an already-bound listener under the per-client caps
/// and timeouts of `limits` until `shutdown` is cancelled, then lets
/// in-flight requests finish (blocking queries answer at once).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    limits: &crate::config::LimitsSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with_https(listener, None, state, limits, shutdown).await
}

/// [`serve`], and the same API (its routes, state and admission bounds)
/// on the HTTPS listener too when there is one, with `tls`'s certificates:
/// both under the per-client caps and timeouts of `listen.rs`, sharing one
/// count per client and one connection budget.
pub async fn serve_with_https(
    listener: tokio::net::TcpListener,
    https: Option<(tokio::net::TcpListener, Arc<crate::tls::Tls>)>,
    state: ApiState,
    limits: &crate::config::LimitsSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let api = api(state, limits, shutdown.clone());
    serve_api(listener, https, api, limits, shutdown).await
}

/// The API over `state`, its requests shed as `limits` say, its
/// parked blocking queries answered when `closing` fires: what the
/// listeners serve, and what runs requests other datacenters send here
/// (`rpc::datacenter`), under the same admission bounds.
pub fn api(
    state: ApiState,
    limits: &crate::config::LimitsSettings,
    closing: CancellationToken,
) -> Api {
    let ctx = Ctx::new(state, closing);
    let admission = Admission::new(MAX_IN_FLIGHT, MAX_BLOCKING)
        .blocking_per_client(limits.http_max_blocking_per_client);
    build(ctx, admission)
}

/// Serves `api` (from [`api()`]) as [`serve_with_https`] does.
pub async fn serve_api(
    listener: tokio::net::TcpListener,
    https: Option<(tokio::net::TcpListener, Arc<crate::tls::Tls>)>,
    api: Api,
    limits: &crate::config::LimitsSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let caps = listen::Caps::new(limits);
    let Some((https, tls)) = https else {
        return listen::serve(listener, api, limits, None, caps, shutdown).await;
    };
    let secure = listen::serve(
        https,
        api.clone(),
        limits,
        Some(tls),
        caps.clone(),
        shutdown.clone(),
    );
    let plain = listen::serve(listener, api, limits, None, caps, shutdown);
    tokio::try_join!(plain, secure).map(|_| ())
}

/// The query string as pairs; a malformed one is a 400.
impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, &())
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        Ok(Self(pairs))
    }
}

/// A JSON object body, read under the size limit. Too large is 413, not
/// JSON or not an object is 400.
#[derive(Debug)]
struct JsonBody(Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })?;
        Ok(Self(decode::parse_object(&bytes)?))
    }
}

/// Consul answers writes with a bare JSON `true`.
fn json_true() -> axum::response::Response {
    axum::Json(true).into_response()
}
