//! `/v1/catalog/*`: registering and listing nodes and service instances.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};

use super::json::{CatalogServiceJson, NodeJson, NodeServicesJson, ServiceJson};
use super::route::{Route, Writer};
use super::{ApiError, JsonBody, decode, json_true};
use crate::catalog::{Command, Node, Outcome};

/// Whether a node carries every `?node-meta` pair.
pub(super) fn node_matches(node: &Node, filters: &[(String, String)]) -> bool {
    filters
        .iter()
        .all(|(k, v)| node.meta.get(k).is_some_and(|x| x == v))
}

/// Writes a catalog command and answers Consul's `true`.
async fn write(writer: &Writer<'_>, cmd: Command) -> Result<Response, ApiError> {
    match writer.write(cmd).await? {
        Outcome::Refused(e) => Err(ApiError::BadRequest(e.to_string())),
        Outcome::Applied(_) | Outcome::Noop => Ok(json_true()),
        other => Err(ApiError::Internal(format!(
            "a catalog write answered {other:?}"
        ))),
    }
}

/// `PUT /v1/catalog/register`.
pub(super) async fn register(route: Route, JsonBody(body): JsonBody) -> Result<Response, ApiError> {
    // `?dc` first: another datacenter's rules are not ours to check.
    let writer = route.writer()?;
    let mut reg = decode::registration(&body)?;
    if reg.node.is_empty() {
        return Err(ApiError::BadRequest("Missing node name".into()));
    }
    if reg.address.is_empty() && !reg.skip_node_update {
        return Err(ApiError::BadRequest("Missing node address".into()));
    }
    if reg.service.as_ref().is_some_and(|s| s.service.is_empty()) {
        return Err(ApiError::BadRequest("Missing service name".into()));
    }
    if reg
        .checks
        .iter()
        .any(|c| c.name.is_empty() && c.check_id.is_empty())
    {
        return Err(ApiError::BadRequest("Missing check name".into()));
    }
    crate::definition::validate_registration(&reg)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // A registration may name its datacenter too; empty means the request's.
    let writer = if reg.datacenter.is_empty() {
        reg.datacenter = route.local_datacenter().to_string();
        writer
    } else {
        route.writer_in(&reg.datacenter)?
    };
    write(&writer, Command::register(reg)).await
}

/// `PUT /v1/catalog/deregister`.
pub(super) async fn deregister(
    route: Route,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let writer = route.writer()?;
    let dereg = decode::deregistration(&body)?;
    if dereg.node.is_empty() {
        return Err(ApiError::BadRequest("Missing node name".into()));
    }
    write(&writer, Command::deregister(dereg)).await
}

/// `GET /v1/catalog/services[?node-meta=k:v]`: service name → tags.
pub(super) async fn services(route: Route) -> Result<Response, ApiError> {
    let filters = route.params().node_meta();
    route
        .read(
            |c| c.services_index(),
            |c| {
                if filters.is_empty() {
                    c.services()
                } else {
                    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                    for node in c.nodes().filter(|n| node_matches(n, &filters)) {
                        for s in c.node_services(&node.name) {
                            out.entry(s.service.clone())
                                .or_default()
                                .extend(s.tags.iter().cloned());
                        }
                    }
                    out.into_iter()
                        .map(|(k, v)| (k, v.into_iter().collect::<Vec<_>>()))
                        .collect()
                }
            },
        )
        .await
}

/// `GET /v1/catalog/service/:name[?tag=..][&node-meta=k:v]`.
pub(super) async fn service(Path(name): Path<String>, route: Route) -> Result<Response, ApiError> {
    let tags = route.params().all("tag");
    let filters = route.params().node_meta();
    route
        .read(
            |c| c.service_index(&name),
            |c| {
                c.service_instances(&name, &tags)
                    .filter(|i| node_matches(i.node, &filters))
                    .map(|i| CatalogServiceJson::new(i.node, i.service))
                    .collect::<Vec<CatalogServiceJson>>()
            },
        )
        .await
}

/// `GET /v1/catalog/nodes[?node-meta=k:v]`.
pub(super) async fn nodes(route: Route) -> Result<Response, ApiError> {
    let filters = route.params().node_meta();
    route
        .read(
            |c| c.nodes_index(),
            |c| {
                c.nodes()
                    .filter(|n| node_matches(n, &filters))
                    .map(NodeJson::from)
                    .collect::<Vec<NodeJson>>()
            },
        )
        .await
}

/// `GET /v1/catalog/node/:node`: the node and its services, or `null`.
pub(super) async fn node(Path(node): Path<String>, route: Route) -> Result<Response, ApiError> {
    route
        .read(
            |c| c.nodes_index().max(c.services_index()),
            |c| {
                c.node(&node).map(|n| NodeServicesJson {
                    node: n.into(),
                    services: c
                        .node_services(&node)
                        .map(|s| (s.id.clone(), ServiceJson::from(s)))
                        .collect(),
                })
            },
        )
        .await
}

/// `GET /v1/catalog/datacenters`: only ours until WAN federation exists.
pub(super) async fn datacenters(route: Route) -> Response {
    Json(vec![route.local_datacenter().to_string()]).into_response()
}
