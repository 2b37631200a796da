//! `/v1/catalog/*`: registering and listing nodes and service instances.
//!
//! With ACLs on, a write is checked as Consul's servers check it (node,
//! service and check permissions against what the catalog holds now) and
//! refused with a 403; a read leaves out what the token may not see: a
//! service instance needs `service:read` and `node:read` on its node.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};

use super::coordinate::Near;
use super::json::{CatalogServiceJson, NodeJson, NodeServicesJson, ServiceJson};
use super::route::Route;
use super::writer::Writer;
use super::{ApiError, JsonBody, decode, json_true};
use crate::catalog::{Command, Deregistration, Node, Outcome, Registration, State};

/// Whether a node carries every `?node-meta` pair.
pub(super) fn node_matches(node: &Node, filters: &[(String, String)]) -> bool {
    filters
        .iter()
        .all(|(k, v)| node.meta.get(k).is_some_and(|x| x == v))
}

/// Writes a catalog command and answers Consul's `true`, with the
/// write's index.
async fn write(writer: &Writer<'_>, cmd: Command) -> Result<Response, ApiError> {
    match writer.write(cmd).await? {
        Outcome::Refused(e) => Err(ApiError::BadRequest(e.to_string())),
        Outcome::Applied(index) => Ok(writer.written(json_true(), index)),
        Outcome::Noop => Ok(json_true()),
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
    if route.acl_enabled() {
        route
            .state_now(|state| vet_register(&route, state, &reg))
            .await??;
    }
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
    if route.acl_enabled() {
        route
            .state_now(|state| vet_deregister(&route, state, &dereg))
            .await??;
    }
    write(&writer, Command::deregister(dereg)).await
}

/// Whether a registration changes its node (Consul's `ChangesNode`): a
/// new node, or another ID, name case, address, datacenter, tagged
/// addresses or meta, unless it skips the node update.
fn changes_node(reg: &Registration, node: Option<&Node>) -> bool {
    let Some(node) = node else {
        return true;
    };
    !reg.skip_node_update
        && (reg.id != node.id
            || !reg.node.eq_ignore_ascii_case(&node.name)
            || reg.address != node.address
            || reg.datacenter != node.datacenter
            || reg.tagged_addresses != node.tagged_addresses
            || reg.node_meta != node.meta)
}

/// Consul's `vetRegisterWithACL`: `node:write` when the node changes;
/// `service:write` on the service (the servers' own `consul` excepted)
/// and on the one it replaces; for each check, `node:write` for a node
/// check or `service:write` on the service it covers.
fn vet_register(route: &Route, state: &State, reg: &Registration) -> Result<(), ApiError> {
    let authz = route.authz();
    if changes_node(reg, state.node(&reg.node)) {
        route.require(authz.node_write(&reg.node), "node:write", Some(&reg.node))?;
    }
    let service_id = reg.service.as_ref().map(|s| {
        if s.id.is_empty() {
            s.service.as_str()
        } else {
            s.id.as_str()
        }
    });
    if let Some(svc) = &reg.service {
        if svc.service != "consul" {
            route.require(
                authz.service_write(&svc.service),
                "service:write",
                Some(&svc.service),
            )?;
        }
        let id = service_id.unwrap_or_default();
        if let Some(old) = state.node_services(&reg.node).find(|s| *s.id == *id) {
            route.require(
                authz.service_write(&old.service),
                "service:write",
                Some(&old.service),
            )?;
        }
    }
    for check in &reg.checks {
        if check.service_id.is_empty() {
            route.require(authz.node_write(&reg.node), "node:write", Some(&reg.node))?;
            continue;
        }
        if Some(check.service_id.as_str()) == service_id {
            continue;
        }
        // A check on a service the node lacks: the state machine refuses
        // the registration with a 400 that names it.
        let Some(other) = state
            .node_services(&reg.node)
            .find(|s| *s.id == *check.service_id)
        else {
            continue;
        };
        route.require(
            authz.service_write(&other.service),
            "service:write",
            Some(&other.service),
        )?;
    }
    Ok(())
}

/// Consul's `vetDeregisterWithACL`: `node:write` on the node allows every
/// deregistration; without it a service needs `service:write`, a service
/// check `service:write` on its service, a node check `node:write`.
fn vet_deregister(route: &Route, state: &State, dereg: &Deregistration) -> Result<(), ApiError> {
    let authz = route.authz();
    if authz.node_write(&dereg.node) {
        return Ok(());
    }
    if !dereg.service_id.is_empty() {
        let Some(svc) = state
            .node_services(&dereg.node)
            .find(|s| *s.id == *dereg.service_id)
        else {
            return Err(ApiError::Internal(format!(
                "Unknown service ID '{}'",
                dereg.service_id
            )));
        };
        return route.require(
            authz.service_write(&svc.service),
            "service:write",
            Some(&svc.service),
        );
    }
    if !dereg.check_id.is_empty() {
        let Some(check) = state
            .node_checks(&dereg.node)
            .find(|c| *c.check_id == *dereg.check_id)
        else {
            return Err(ApiError::Internal(format!(
                "Unknown check ID '{}'",
                dereg.check_id
            )));
        };
        if !check.service_id.is_empty() {
            return route.require(
                authz.service_write(&check.service_name),
                "service:write",
                Some(&check.service_name),
            );
        }
    }
    Err(route.denied("node:write", Some(&dereg.node)))
}

/// `GET /v1/catalog/services[?node-meta=k:v]`: service name → tags, the
/// names the token may read (no node check, as Consul's).
pub(super) async fn services(route: Route) -> Result<Response, ApiError> {
    let filters = route.params().node_meta();
    let authz = route.authz();
    route
        .read_filtered(
            |c| c.services_index(),
            |c| {
                let all = if filters.is_empty() {
                    c.services()
                } else {
                    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                    for node in c.nodes().filter(|n| node_matches(n, &filters)) {
                        for s in c.node_services(&node.name) {
                            out.entry(s.service.to_string())
                                .or_default()
                                .extend(s.tags.iter().map(|t| t.to_string()));
                        }
                    }
                    out.into_iter()
                        .map(|(k, v)| (k, v.into_iter().collect::<Vec<_>>()))
                        .collect()
                };
                let before = all.len();
                let seen: BTreeMap<String, Vec<String>> = all
                    .into_iter()
                    .filter(|(name, _)| authz.service_read(name))
                    .collect();
                let filtered = seen.len() < before;
                (seen, filtered)
            },
        )
        .await
}

/// `GET /v1/catalog/service/:name[?tag=..][&node-meta=k:v][&near=..]`.
pub(super) async fn service(Path(name): Path<String>, route: Route) -> Result<Response, ApiError> {
    let tags = route.params().all("tag");
    let filters = route.params().node_meta();
    let near = Near::from_route(&route);
    route
        .read_filtered(
            |c| c.service_index(&name),
            |c| {
                let mut filtered = false;
                let mut seen: Vec<_> = c
                    .service_instances(&name, &tags)
                    .filter(|i| node_matches(i.node, &filters))
                    .filter(|i| {
                        let seen = route.may_see_instance(&i.node.name, &i.service.service);
                        filtered |= !seen;
                        seen
                    })
                    .collect();
                near.sort(&mut seen, |i| &i.node.name);
                let out = seen
                    .into_iter()
                    .map(|i| CatalogServiceJson::new(i.node, i.service))
                    .collect::<Vec<CatalogServiceJson>>();
                (out, filtered)
            },
        )
        .await
}

/// `GET /v1/catalog/nodes[?node-meta=k:v][&near=..]`: the nodes the token
/// may read.
pub(super) async fn nodes(route: Route) -> Result<Response, ApiError> {
    let filters = route.params().node_meta();
    let authz = route.authz();
    let near = Near::from_route(&route);
    route
        .read_filtered(
            |c| c.nodes_index(),
            |c| {
                let mut filtered = false;
                let mut seen: Vec<&Node> = c
                    .nodes()
                    .filter(|n| node_matches(n, &filters))
                    .filter(|n| {
                        let seen = authz.node_read(&n.name);
                        filtered |= !seen;
                        seen
                    })
                    .collect();
                near.sort(&mut seen, |n| &n.name);
                let out = seen
                    .into_iter()
                    .map(NodeJson::from)
                    .collect::<Vec<NodeJson>>();
                (out, filtered)
            },
        )
        .await
}

/// `GET /v1/catalog/node/:node`: the node and the services on it the
/// token may read, or `null` (also without `node:read` on it, as Consul).
pub(super) async fn node(Path(node): Path<String>, route: Route) -> Result<Response, ApiError> {
    let authz = route.authz();
    route
        .read_filtered(
            |c| c.nodes_index().max(c.services_index()),
            |c| {
                let Some(n) = c.node(&node) else {
                    return (None, false);
                };
                if !authz.node_read(&n.name) {
                    return (None, true);
                }
                let mut filtered = false;
                let services = c
                    .node_services(&node)
                    .filter(|s| {
                        let seen = authz.service_read(&s.service);
                        filtered |= !seen;
                        seen
                    })
                    .map(|s| (s.id.to_string(), ServiceJson::from(s)))
                    .collect();
                let body = NodeServicesJson {
                    node: n.into(),
                    services,
                };
                (Some(body), filtered)
            },
        )
        .await
}

/// `GET /v1/catalog/datacenters`: every datacenter known, our own first,
/// then by estimated round trip. A server answers from its WAN pool; a
/// client agent asks a server, as Consul's.
pub(super) async fn datacenters(route: Route) -> Result<Response, ApiError> {
    let names = match route.servers() {
        crate::delegate::Delegate::Client(link) => link
            .datacenters()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        crate::delegate::Delegate::Server(_) => route.datacenters().names(),
    };
    Ok(Json(names).into_response())
}
