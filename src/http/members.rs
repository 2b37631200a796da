//! The gossip pools: `/v1/agent/members`, `/v1/agent/join/:addr` and
//! `/v1/agent/force-leave/:node`. With `?wan` (any non-empty value, as
//! Consul's) each is about a server's WAN pool: its members are named
//! `node.dc`; a client agent, which is in no WAN pool, lists none (`null`,
//! as Consul's) and refuses to join one, as Consul's.
//!
//! With ACLs on, as Consul's: the member list leaves out the nodes the
//! token may not read; a join needs `agent:write` on this agent, a
//! force-leave `operator:write`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::json_true;
use super::route::Route;
use crate::gossip::{GossipError, MemberStatus, Role};

/// One member as Consul's `/v1/agent/members` shows a Serf member.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentMember {
    name: String,
    addr: String,
    port: u16,
    tags: BTreeMap<&'static str, String>,
    /// Serf's status codes: 1 alive, 3 left, 4 failed.
    status: u8,
    protocol_min: u8,
    protocol_max: u8,
    protocol_cur: u8,
    delegate_min: u8,
    delegate_max: u8,
    delegate_cur: u8,
}

fn status_code(s: MemberStatus) -> u8 {
    match s {
        // Serf reports a suspect as alive until it is declared failed.
        MemberStatus::Alive | MemberStatus::Suspect => 1,
        MemberStatus::Left => 3,
        MemberStatus::Failed => 4,
    }
}

/// Whether the request is about the WAN pool: Consul's `?wan` takes any
/// non-empty value as yes (`?wan=0` included).
fn wan_requested(route: &Route) -> bool {
    route.params().get("wan").is_some_and(|v| !v.is_empty())
}

/// `GET /v1/agent/members`: the LAN pool as this agent sees it, or with
/// `?wan` the WAN pool (empty on a client agent).
pub(super) async fn members(route: Route) -> Result<Response, ApiError> {
    let all = if wan_requested(&route) {
        match route.wan_gossip() {
            Some(wan) => wan.members(),
            // Consul's client agent encodes its nil list of WAN members:
            // `null`, which its own clients read as none.
            None => return Ok(Json(serde_json::Value::Null).into_response()),
        }
    } else {
        route.gossip().members()
    };
    let before = all.len();
    let list: Vec<AgentMember> = all
        .into_iter()
        // Consul's `filterMembers`: `node:read` on each member.
        .filter(|m| route.authz().node_read(&m.name))
        .map(|m| {
            let mut tags = BTreeMap::from([
                ("dc", m.dc.clone()),
                // As Consul's serf tags: the node ID, so a client can tell
                // which node holds a name.
                ("id", m.node_id.to_string()),
                (
                    "role",
                    match m.role {
                        Role::Server => "consul".to_string(),
                        Role::Client => "node".to_string(),
                    },
                ),
            ]);
            if let Some(rpc) = m.rpc_addr {
                tags.insert("port", rpc.port().to_string());
            }
            AgentMember {
                name: m.name,
                addr: m.addr.ip().to_string(),
                port: m.addr.port(),
                tags,
                status: status_code(m.status),
                protocol_min: 1,
                protocol_max: 5,
                protocol_cur: 2,
                delegate_min: 2,
                delegate_max: 5,
                delegate_cur: 4,
            }
        })
        .collect();
    let mut response = Json(&list).into_response();
    route.mark_filtered(response.headers_mut(), list.len() < before);
    Ok(response)
}

/// `PUT /v1/agent/force-leave/:node`: a failed node is marked left, so the
/// leader deregisters it now instead of after `reconnect_timeout`; with
/// `?wan`, a failed server of the WAN pool, so its datacenter's route
/// drops it at once.
pub(super) async fn force_leave(
    Path(node): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    route.require(route.authz().operator_write(), "operator:write", None)?;
    // With `?wan`, a failed server of the WAN pool (`node.dc`): Consul's
    // WAN force-leave is broken (research §6), this one marks it left.
    let pool = if wan_requested(&route) {
        route.wan_gossip().ok_or_else(|| {
            ApiError::Internal("Must be a server to force-leave from the WAN pool".into())
        })?
    } else {
        route.gossip()
    };
    match pool.force_leave(&node).await {
        Ok(()) => Ok(json_true()),
        Err(e @ GossipError::UnknownMember(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ GossipError::NotFailed(_)) => Err(ApiError::BadRequest(e.to_string())),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// `PUT /v1/agent/join/:addr`: joins the pool of the agent at `addr`
/// (`host[:port]`, port 8301 by default), or with `?wan` the WAN pool of
/// the server at `addr` (port 8302 by default).
pub(super) async fn join(Path(addr): Path<String>, route: Route) -> Result<Response, ApiError> {
    let node = &route.agent().identity().node_name;
    route.require(route.authz().agent_write(node), "agent:write", Some(node))?;
    let (pool, default_port) = if wan_requested(&route) {
        let pool = route.wan_gossip().ok_or_else(|| {
            // Consul's words and status (a 500) for the same request.
            ApiError::Internal("Must be a server to join WAN cluster".into())
        })?;
        (pool, crate::config::defaults::SERF_WAN_PORT)
    } else {
        (route.gossip(), crate::config::defaults::SERF_LAN_PORT)
    };
    let targets = crate::config::join::resolve(&addr, default_port).await;
    if targets.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "cannot resolve join address {addr:?}"
        )));
    }
    let mut last = None;
    for target in targets {
        match pool.join(target).await {
            Ok(()) => return Ok(json_true()),
            Err(e) => last = Some(e),
        }
    }
    Err(ApiError::Internal(format!(
        "joining {addr}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}
