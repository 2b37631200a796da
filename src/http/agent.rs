//! `/v1/agent/*`: this agent's identity and its own services.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::json::AgentServiceJson;
use super::query::{Params, parse_bool};
use super::{ApiError, Ctx, JsonBody, decode};
use crate::agent::local::LocalError;

/// `GET /v1/agent/self`: the subset of Consul's `Config`, `Member` and `Meta`
/// that clients read.
pub(super) async fn agent_self(State(state): State<Ctx>) -> Response {
    let id = state.local.identity();
    let role = if id.server { "consul" } else { "node" };
    let mut tags = serde_json::Map::new();
    tags.insert("dc".into(), json!(id.datacenter));
    tags.insert("id".into(), json!(id.node_id));
    tags.insert("role".into(), json!(role));
    tags.insert("build".into(), json!(id.version));
    tags.insert("vsn".into(), json!("2"));
    if id.server {
        tags.insert("port".into(), json!(id.server_port.to_string()));
    }
    Json(json!({
        "Config": {
            "Datacenter": id.datacenter,
            "PrimaryDatacenter": id.datacenter,
            "NodeName": id.node_name,
            "NodeID": id.node_id,
            "Revision": "",
            "Server": id.server,
            "Version": id.version,
        },
        "Member": {
            "Name": id.node_name,
            "Addr": id.advertise_addr,
            "Port": id.serf_lan_port,
            "Tags": tags,
            "Status": 1,
        },
        "Meta": id.meta,
    }))
    .into_response()
}

/// `GET /v1/agent/services`: local services by ID.
pub(super) async fn services(State(state): State<Ctx>) -> Response {
    let dc = &state.local.identity().datacenter;
    let out: std::collections::BTreeMap<_, _> = state
        .local
        .services()
        .iter()
        .map(|(id, s)| (id.clone(), AgentServiceJson::new(s, dc)))
        .collect();
    Json(out).into_response()
}

/// `GET /v1/agent/service/:id`.
pub(super) async fn service(
    State(state): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = state
        .local
        .service(&id)
        .ok_or_else(|| ApiError::from(LocalError::UnknownService(id)))?;
    Ok(Json(AgentServiceJson::new(
        &s,
        &state.local.identity().datacenter,
    ))
    .into_response())
}

/// `PUT /v1/agent/service/register[?replace-existing-checks]`.
pub(super) async fn register(
    State(state): State<Ctx>,
    params: Params,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let replace = params.flag("replace-existing-checks")?;
    let def = decode::service_definition(&body)?;
    if is_unspecified(&def.address) {
        return Err(ApiError::BadRequest("Invalid service address".into()));
    }
    state.local.register_service(def, replace).await?;
    Ok(().into_response())
}

/// `PUT /v1/agent/service/deregister/:id`.
pub(super) async fn deregister(
    State(state): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.local.deregister_service(&id).await?;
    Ok(().into_response())
}

/// `PUT /v1/agent/service/maintenance/:id?enable=true|false[&reason=...]`.
pub(super) async fn maintenance(
    State(state): State<Ctx>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let raw = params
        .get("enable")
        .ok_or_else(|| ApiError::BadRequest("Missing value for enable".into()))?;
    let enable = parse_bool(raw)
        .ok_or_else(|| ApiError::BadRequest(format!("Invalid value for enable: {raw:?}")))?;
    let reason = params.get("reason").map(str::to_string);
    state.local.set_maintenance(&id, enable, reason).await?;
    Ok(().into_response())
}

/// `0.0.0.0` and `::` are not addresses anyone can reach; Consul refuses them.
fn is_unspecified(address: &str) -> bool {
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}
