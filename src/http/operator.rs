//! The Raft configuration (`/v1/operator/raft/*`) and leaving the cluster
//! (`/v1/agent/leave`: the Raft configuration for a server, then the gossip
//! pool).
//!
//! With ACLs on, as Consul's: reading the configuration needs
//! `operator:read`, removing a peer `operator:write`, leaving
//! `agent:write` on this agent.

use axum::Json;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::json_true;
use super::route::Route;

/// One server as Consul's `RaftServer` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftServer {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    leader: bool,
    voter: bool,
    protocol_version: &'static str,
}

/// Consul's `RaftConfigurationResponse`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftConfiguration {
    servers: Vec<RaftServer>,
    index: u64,
}

/// The Raft id as operators see and type it.
pub(crate) fn format_id(id: u64) -> String {
    format!("{id:016x}")
}

/// `GET /v1/operator/raft/configuration`: every server, voter or learner,
/// and which one leads, as this server's log has it.
pub(super) async fn configuration(route: Route) -> Result<Response, ApiError> {
    route.require(route.authz().operator_read(), "operator:read", None)?;
    if !route.params().has("stale") && !route.servers().leader_live() {
        return Err(ApiError::NoLeader);
    }
    let config = route.servers().configuration().await?;
    let body = RaftConfiguration {
        servers: config
            .servers
            .into_iter()
            .map(|s| RaftServer {
                id: format_id(s.id),
                node: s.name,
                address: s.addr.to_string(),
                leader: s.leader,
                voter: s.voter,
                protocol_version: "3",
            })
            .collect(),
        index: config.index,
    };
    Ok(Json(body).into_response())
}

/// `DELETE /v1/operator/raft/peer?id=ID` or `?address=IP:PORT`.
pub(super) async fn remove_peer(route: Route, headers: HeaderMap) -> Result<Response, ApiError> {
    route.require(route.authz().operator_write(), "operator:write", None)?;
    // A client agent's server checks the token again.
    let token = route.secret(&headers);
    match (route.params().get("id"), route.params().get("address")) {
        (Some(id), _) if !id.is_empty() => {
            let id = u64::from_str_radix(id.trim_start_matches("0x"), 16).map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid id {id:?}: expected the hex ID that list-peers shows"
                ))
            })?;
            route.servers().remove_server(id, token).await?;
        }
        (_, Some(addr)) if !addr.is_empty() => {
            let addr = addr.parse().map_err(|_| {
                ApiError::BadRequest(format!("invalid address {addr:?}: expected IP:port"))
            })?;
            route.servers().remove_address(addr, token).await?;
        }
        _ => {
            return Err(ApiError::BadRequest(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove".into(),
            ));
        }
    }
    Ok(json_true())
}

/// `PUT /v1/agent/leave`: a server leaves the Raft configuration, then the
/// agent shuts down (once this answer is on its way).
pub(super) async fn leave(route: Route) -> Result<Response, ApiError> {
    let node = &route.agent().identity().node_name;
    route.require(route.authz().agent_write(node), "agent:write", Some(node))?;
    route.servers().leave().await?;
    // The WAN pool first, as Consul's servers leave it.
    if let Some(wan) = route.wan_gossip()
        && let Err(e) = wan.leave().await
    {
        tracing::warn!(error = %e, "leaving the WAN pool");
    }
    if let Err(e) = route.gossip().leave().await {
        tracing::warn!(error = %e, "leaving the LAN pool");
    }
    tracing::info!("leaving: the agent will shut down");
    route.shut_down();
    Ok(json_true())
}
