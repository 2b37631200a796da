//! Network coordinates over HTTP: `/v1/coordinate/datacenters`,
//! `/v1/coordinate/nodes`, `/v1/coordinate/node/:node`,
//! `PUT /v1/coordinate/update`, and the `?near=` ordering that catalog and
//! health answers take.
//!
//! Where the coordinates come from: Consul's agents send theirs to the
//! servers, which write them into the Raft log in batches; ours are in
//! gossip. Every agent pings one random member per probe period and keeps
//! the latest coordinate each ping and pong carries (`gossip::coordinates`),
//! so the LAN answers here are this agent's gossip cache, joined with the
//! catalog's nodes. That is fine because a coordinate is a soft estimate
//! that changes every probe period: the log would order and persist
//! numbers that are stale seconds later, and cost every server a write per
//! node per sync. What differs from Consul: two agents may list slightly
//! different (equally fresh) numbers, and a node no member has heard from
//! yet is missing for a while after it joins (`gossip::coordinates` says
//! how long). `X-Consul-Index` is the catalog nodes' index, which clients
//! need to parse; it does not move with the coordinates.
//!
//! ACLs as Consul's: the lists leave out nodes the token may not read
//! (`node:read`); an update needs `node:write` on the node.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::JsonBody;
use super::error::ApiError;
use super::route::{Route, json_response};
use crate::coordinate::{Coordinate, near};
use crate::gossip::Coordinates;

/// One node's coordinate as Consul's `structs.Coordinate`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CoordinateJson {
    node: String,
    /// Network segments are Enterprise; always empty, as Consul OSS.
    segment: &'static str,
    coord: Coordinate,
}

/// One datacenter's servers as Consul's `structs.DatacenterMap`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DatacenterMapJson {
    datacenter: String,
    #[serde(rename = "AreaID")]
    area_id: &'static str,
    coordinates: Vec<CoordinateJson>,
}

/// `GET /v1/coordinate/datacenters`: the WAN coordinates of every
/// datacenter's servers, datacenters by name, node names without their
/// `.dc` suffix, as Consul's `ListDatacenters`. A server answers from its
/// WAN pool (refreshed every 2 s, `agent/distances.rs`); a client agent
/// asks a server, as Consul's. With no WAN pool at all, this datacenter
/// alone, with no coordinates.
pub(super) async fn datacenters(route: Route) -> Result<Response, ApiError> {
    let maps = match route.servers() {
        crate::delegate::Delegate::Client(link) => link
            .coordinate_datacenters()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        crate::delegate::Delegate::Server(_) => route.datacenters().coordinates(),
    };
    let mut json: Vec<DatacenterMapJson> = maps
        .into_iter()
        .map(|map| DatacenterMapJson {
            datacenter: map.datacenter,
            area_id: "wan",
            coordinates: map
                .nodes
                .into_iter()
                .map(|(node, coord)| CoordinateJson {
                    node,
                    segment: "",
                    coord,
                })
                .collect(),
        })
        .collect();
    if json.is_empty() {
        json.push(DatacenterMapJson {
            datacenter: route.local_datacenter().to_owned(),
            area_id: "wan",
            coordinates: Vec::new(),
        });
    }
    json_response(&json, route.params().has("pretty"))
}

/// The catalog's nodes that have a coordinate and that the token may
/// read, by name; and whether any were left out for the token.
fn known_nodes(
    route: &Route,
    coordinates: &Coordinates,
    state: &crate::catalog::State,
    only: Option<&str>,
) -> (Vec<CoordinateJson>, bool) {
    let mut filtered = false;
    let out = coordinates
        .by_name
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
        .filter(|(name, _)| state.node(name).is_some())
        .filter(|(name, _)| {
            let seen = route.authz().node_read(name);
            filtered |= !seen;
            seen
        })
        .map(|(name, coord)| CoordinateJson {
            node: name.clone(),
            segment: "",
            coord: coord.clone(),
        })
        .collect();
    (out, filtered)
}

/// `GET /v1/coordinate/nodes`: the LAN coordinate of every catalog node
/// this agent has heard from.
pub(super) async fn nodes(route: Route) -> Result<Response, ApiError> {
    let coordinates = route.gossip().coordinates();
    route
        .read_filtered(
            |c| c.nodes_index(),
            |c| known_nodes(&route, &coordinates, c, None),
        )
        .await
}

/// `GET /v1/coordinate/node/:node`: that node's coordinate, as a list of
/// one (Consul lists one per segment); 404 when there is none, or when the
/// token may not read the node (as Consul, which filters it out first).
pub(super) async fn node(Path(node): Path<String>, route: Route) -> Result<Response, ApiError> {
    let coordinates = route.gossip().coordinates();
    let pretty = route.params().has("pretty");
    route
        .read_with(
            |c| c.nodes_index(),
            |c| known_nodes(&route, &coordinates, c, Some(&node)),
            |(list, filtered)| {
                if list.is_empty() {
                    return Ok(StatusCode::NOT_FOUND.into_response());
                }
                let mut response = json_response(&list, pretty)?;
                route.mark_filtered(response.headers_mut(), filtered);
                Ok(response)
            },
        )
        .await
}

/// `PUT /v1/coordinate/update` with `{"Node", "Segment", "Coord"}`: keeps
/// the node's coordinate where this agent keeps the others. Refused with
/// 400, changing nothing: no node, a coordinate of another dimensionality
/// or with a non-finite part. A node this agent's pool does not know is
/// accepted and dropped, as Consul's batch update skips unknown nodes.
pub(super) async fn update(route: Route, JsonBody(body): JsonBody) -> Result<Response, ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| ApiError::BadRequest("Request decode failed: expected an object".into()))?;
    let node = match object.get("Node") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ApiError::BadRequest("Missing node name".into())),
    };
    let coord = object
        .get("Coord")
        .ok_or_else(|| ApiError::BadRequest("Missing coordinate".into()))?;
    let coord: Coordinate = serde_json::from_value(coord.clone())
        .map_err(|e| ApiError::BadRequest(format!("Request decode failed: Coord: {e}")))?;
    route.require(route.authz().node_write(&node), "node:write", Some(&node))?;
    let gossip = route.gossip();
    let own = gossip.coordinate();
    if !own.is_compatible_with(&coord) || !coord.is_valid() {
        let error = if coord.is_valid() {
            "incompatible coordinate"
        } else {
            "invalid coordinate"
        };
        return Err(ApiError::BadRequest(error.into()));
    }
    if gossip.members().iter().any(|m| m.name == node) {
        gossip
            .set_coordinate(&node, coord)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    Ok(StatusCode::OK.into_response())
}

/// What `?near=` asks for: the coordinate answers are sorted from, and
/// the coordinates to sort by. Taken once per request, before the read.
#[derive(Debug)]
pub(super) struct Near {
    /// The near node's coordinate; `None` sorts nothing (no `?near`, or a
    /// node with no coordinate, as Consul).
    from: Option<Coordinate>,
    /// Every known coordinate.
    coordinates: std::sync::Arc<Coordinates>,
}

impl Near {
    /// Reads `?near=_agent` (this agent's node) or `?near=<node>`.
    pub(super) fn from_route(route: &Route) -> Self {
        let coordinates = route.gossip().coordinates();
        let from = match route.params().get("near") {
            None | Some("") => None,
            Some("_agent") => Some(coordinates.own.clone()),
            Some(node) => coordinates.by_name.get(node).cloned(),
        };
        Self { from, coordinates }
    }

    /// Sorts `items` by estimated round trip from the near node, stably,
    /// those with no coordinate last.
    pub(super) fn sort<T>(&self, items: &mut [T], node_of: impl Fn(&T) -> &str) {
        near::sort_by_distance(items, self.from.as_ref(), |item| {
            self.coordinates.by_name.get(node_of(item)).cloned()
        });
    }
}
