//! `/v1/agent/*`: this agent's identity, its own services and checks, and
//! the TTL and health endpoints that applications and load balancers call.
//!
//! With ACLs on, as Consul's agent: `agent:read` on this node for
//! `/v1/agent/self`; `service:write` to change a service (and the one it
//! replaces), `service:write` or `node:write` to change a check (after the
//! 404 for an unknown ID); `service:read` to read one service or its
//! health (a 403); the service and check lists leave out what the token
//! may not read.

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::collections::BTreeMap;

use axum::http::StatusCode;

use super::json::{AgentServiceJson, CheckJson};
use super::query::parse_bool;
use super::route::Route;
use super::{ApiError, JsonBody, decode};
use crate::catalog::HealthStatus;
use crate::definition::{CheckDefinition, Origin, cap_output};
use crate::local::{
    LocalAgent, LocalCheck, LocalError, LocalService, NODE_MAINTENANCE_CHECK,
    SERVICE_MAINTENANCE_PREFIX,
};

/// `GET /v1/agent/self`: the subset of Consul's `Config`, `Member` and `Meta`
/// that clients read.
pub(super) async fn agent_self(route: Route) -> Result<Response, ApiError> {
    let id = route.agent().identity();
    route.require(
        route.authz().agent_read(&id.node_name),
        "agent:read",
        Some(&id.node_name),
    )?;
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
    Ok(Json(json!({
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
    .into_response())
}

/// `GET /v1/agent/services`: local services by ID, those the token may
/// read.
pub(super) async fn services(route: Route) -> Response {
    let dc = &route.agent().identity().datacenter;
    let all = route.agent().services();
    let out: BTreeMap<_, _> = all
        .iter()
        .filter(|(_, s)| route.authz().service_read(&s.definition.name))
        .map(|(id, s)| (id.clone(), AgentServiceJson::new(s, dc)))
        .collect();
    let mut response = Json(&out).into_response();
    route.mark_filtered(response.headers_mut(), out.len() < all.len());
    response
}

/// `service:write` on a local service, found by ID (Consul's
/// `vetServiceUpdateWithAuthorizer`): an unknown ID is a 404 first.
fn vet_service_update(route: &Route, id: &str) -> Result<(), ApiError> {
    let s = route
        .agent()
        .service(id)
        .ok_or_else(|| ApiError::from(LocalError::UnknownService(id.into())))?;
    let name = &s.definition.name;
    route.require(
        route.authz().service_write(name),
        "service:write",
        Some(name),
    )
}

/// What changing local check `id` needs (Consul's
/// `vetCheckUpdateWithAuthorizer`): `service:write` on the service it
/// covers, `node:write` on this node for a node check; an unknown ID is a
/// 404 first.
fn vet_check_update(route: &Route, id: &str) -> Result<(), ApiError> {
    let check = route
        .agent()
        .checks()
        .remove(id)
        .ok_or_else(|| ApiError::from(LocalError::UnknownCheck(id.into())))?;
    vet_check_owner(route, &check.definition.service_id)
}

/// `service:write` on local service `service_id`, or `node:write` on
/// this node when it is empty (a node check).
fn vet_check_owner(route: &Route, service_id: &str) -> Result<(), ApiError> {
    if service_id.is_empty() {
        let node = &route.agent().identity().node_name;
        return route.require(route.authz().node_write(node), "node:write", Some(node));
    }
    let name = route
        .agent()
        .service(service_id)
        .map(|s| s.definition.name)
        .unwrap_or_default();
    route.require(
        route.authz().service_write(&name),
        "service:write",
        Some(&name),
    )
}

/// `GET /v1/agent/service/:id`.
pub(super) async fn service(Path(id): Path<String>, route: Route) -> Result<Response, ApiError> {
    let s = route
        .agent()
        .service(&id)
        .ok_or_else(|| ApiError::from(LocalError::UnknownService(id)))?;
    let name = &s.definition.name;
    route.require(route.authz().service_read(name), "service:read", Some(name))?;
    Ok(Json(AgentServiceJson::new(
        &s,
        &route.agent().identity().datacenter,
    ))
    .into_response())
}

/// `PUT /v1/agent/service/register[?replace-existing-checks]`.
pub(super) async fn register(route: Route, JsonBody(body): JsonBody) -> Result<Response, ApiError> {
    let replace = route.params().flag("replace-existing-checks")?;
    let def = decode::service_definition(&body)?;
    if is_unspecified(&def.address) {
        return Err(ApiError::BadRequest("Invalid service address".into()));
    }
    let authz = route.authz();
    route.require(
        authz.service_write(&def.name),
        "service:write",
        Some(&def.name),
    )?;
    let id = if def.id.is_empty() {
        &def.name
    } else {
        &def.id
    };
    if let Some(old) = route.agent().service(id) {
        let name = &old.definition.name;
        route.require(authz.service_write(name), "service:write", Some(name))?;
    }
    route.agent().register_service(def, replace).await?;
    Ok(().into_response())
}

/// `PUT /v1/agent/service/deregister/:id`.
pub(super) async fn deregister(Path(id): Path<String>, route: Route) -> Result<Response, ApiError> {
    vet_service_update(&route, &id)?;
    route.agent().deregister_service(&id).await?;
    Ok(().into_response())
}

/// `PUT /v1/agent/service/maintenance/:id?enable=true|false[&reason=...]`.
pub(super) async fn maintenance(
    Path(id): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    let raw = route
        .params()
        .get("enable")
        .ok_or_else(|| ApiError::BadRequest("Missing value for enable".into()))?;
    let enable = parse_bool(raw)
        .ok_or_else(|| ApiError::BadRequest(format!("Invalid value for enable: {raw:?}")))?;
    let reason = route.params().get("reason").map(str::to_string);
    vet_service_update(&route, &id)?;
    route.agent().set_maintenance(&id, enable, reason).await?;
    Ok(().into_response())
}

/// `PUT /v1/agent/check/register`.
pub(super) async fn check_register(
    route: Route,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let def = decode::check_registration(&body)?;
    // Consul's `vetCheckRegisterWithAuthorizer`: the service a check
    // covers must exist; then the check's owner, and the owner of the
    // check it replaces.
    if !def.service_id.is_empty() && route.agent().service(&def.service_id).is_none() {
        return Err(ApiError::NotFound(format!(
            "ServiceID {:?} does not exist",
            def.service_id
        )));
    }
    vet_check_owner(&route, &def.service_id)?;
    let id = if def.id.is_empty() {
        &def.name
    } else {
        &def.id
    };
    if let Some(old) = route.agent().checks().remove(id) {
        vet_check_owner(&route, &old.definition.service_id)?;
    }
    route.agent().register_check(def, Origin::Api).await?;
    Ok(().into_response())
}

/// `PUT /v1/agent/check/deregister/:id`.
pub(super) async fn check_deregister(
    Path(id): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    vet_check_update(&route, &id)?;
    route.agent().deregister_check(&id).await?;
    Ok(().into_response())
}

/// `GET /v1/agent/checks`: this agent's checks by ID, with their latest
/// output (which may be newer than the catalog's, see output batching).
pub(super) async fn checks(route: Route) -> Response {
    let services = route.agent().services();
    let mut out: BTreeMap<String, CheckJson> = route
        .agent()
        .checks()
        .into_iter()
        .map(|(id, c)| {
            let svc = services.get(&c.definition.service_id);
            (id, check_json(route.agent(), svc, &c))
        })
        .collect();
    // The maintenance checks are the agent's too, as in Consul.
    let maintenance = |id: String, name: &str, notes: String, svc: Option<&LocalService>| {
        let def = CheckDefinition {
            id,
            name: name.into(),
            notes,
            service_id: svc.map(|s| s.definition.id.clone()).unwrap_or_default(),
            ..CheckDefinition::default()
        };
        let c = LocalCheck {
            definition: def,
            status: HealthStatus::Critical,
            output: String::new(),
            written_at: None,
            dirty: false,
            origin: Origin::Api,
        };
        let mut j = check_json(route.agent(), svc, &c);
        j.kind = "maintenance".into();
        (c.definition.id, j)
    };
    for s in services.values() {
        if let Some(reason) = &s.maintenance {
            let id = format!("{SERVICE_MAINTENANCE_PREFIX}{}", s.definition.id);
            let (k, v) = maintenance(id, "Service Maintenance Mode", reason.clone(), Some(s));
            out.insert(k, v);
        }
    }
    if let Some(reason) = route.agent().node_maintenance() {
        let id = NODE_MAINTENANCE_CHECK.to_string();
        let (k, v) = maintenance(id, "Node Maintenance Mode", reason, None);
        out.insert(k, v);
    }
    // Consul's `filterChecksWithAuthorizer`: a service's check needs
    // `service:read` on it, a node check `node:read` on this node.
    let before = out.len();
    let authz = route.authz();
    out.retain(|_, c| {
        if c.service_id.is_empty() {
            authz.node_read(&c.node)
        } else {
            authz.service_read(&c.service_name)
        }
    });
    let mut response = Json(&out).into_response();
    route.mark_filtered(response.headers_mut(), out.len() < before);
    response
}

fn check_json(local: &LocalAgent, service: Option<&LocalService>, c: &LocalCheck) -> CheckJson {
    CheckJson {
        node: local.identity().node_name.clone(),
        check_id: c.definition.id.clone(),
        name: c.definition.name.clone(),
        status: c.status.as_str(),
        notes: c.definition.notes.clone(),
        output: c.output.clone(),
        service_id: c.definition.service_id.clone(),
        service_name: service
            .map(|s| s.definition.name.clone())
            .unwrap_or_default(),
        service_tags: service
            .map(|s| s.definition.tags.clone())
            .unwrap_or_default(),
        kind: c.definition.kind().as_str().into(),
        definition: BTreeMap::new(),
        create_index: 0,
        modify_index: 0,
    }
}

/// `PUT /v1/agent/check/pass|warn|fail/:id?note=`: a TTL check's
/// application reports in.
pub(super) async fn check_ttl(
    Path((verb, id)): Path<(String, String)>,
    route: Route,
) -> Result<Response, ApiError> {
    let status = match verb.as_str() {
        "pass" => HealthStatus::Passing,
        "warn" => HealthStatus::Warning,
        "fail" => HealthStatus::Critical,
        _ => return Err(ApiError::NotFound("404 page not found".into())),
    };
    let note = route.params().get("note").unwrap_or_default().to_string();
    vet_check_update(&route, &id)?;
    route
        .agent()
        .ttl_update(&id, status, cap_output(note))
        .await?;
    Ok(().into_response())
}

/// `PUT /v1/agent/check/update/:id` with `{"Status": .., "Output": ..}`.
pub(super) async fn check_update(
    Path(id): Path<String>,
    route: Route,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let f = decode::Fields::new(&body, "")?;
    let status = f.status(&["Status"])?.ok_or_else(|| {
        ApiError::BadRequest("Status: required (passing, warning or critical)".into())
    })?;
    let output = f.string(&["Output"])?;
    vet_check_update(&route, &id)?;
    route
        .agent()
        .ttl_update(&id, status, cap_output(output))
        .await?;
    Ok(().into_response())
}

/// A service's health as the agent sees it, with Consul's status code.
fn aggregate(local: &LocalAgent, s: &LocalService) -> (StatusCode, &'static str, Vec<CheckJson>) {
    let node_checks: Vec<LocalCheck> = local
        .checks()
        .into_values()
        .filter(|c| c.definition.service_id.is_empty())
        .collect();
    let checks: Vec<CheckJson> = s
        .checks
        .values()
        .chain(&node_checks)
        .map(|c| check_json(local, Some(s), c))
        .collect();
    if s.maintenance.is_some() || local.node_maintenance().is_some() {
        return (StatusCode::SERVICE_UNAVAILABLE, "maintenance", checks);
    }
    let worst = HealthStatus::worst(s.checks.values().chain(&node_checks).map(|c| c.status));
    let code = match worst {
        HealthStatus::Passing => StatusCode::OK,
        HealthStatus::Warning => StatusCode::TOO_MANY_REQUESTS,
        HealthStatus::Critical => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, worst.as_str(), checks)
}

fn health_json(
    route: &Route,
    s: &LocalService,
    status: &str,
    checks: Vec<CheckJson>,
) -> serde_json::Value {
    json!({
        "AggregatedStatus": status,
        "Service": AgentServiceJson::new(s, &route.agent().identity().datacenter),
        "Checks": checks,
    })
}

/// `GET /v1/agent/health/service/id/:id[?format=text]`: 200 passing, 429
/// warning, 503 critical or in maintenance, 404 unknown.
pub(super) async fn health_by_id(
    Path(id): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    let Some(s) = route.agent().service(&id) else {
        return Err(ApiError::NotFound(format!("ServiceId {id} not found")));
    };
    let name = &s.definition.name;
    route.require(route.authz().service_read(name), "service:read", Some(name))?;
    let (code, status, checks) = aggregate(route.agent(), &s);
    if route.params().get("format") == Some("text") {
        return Ok((code, status).into_response());
    }
    Ok((code, Json(health_json(&route, &s, status, checks))).into_response())
}

/// `GET /v1/agent/health/service/name/:name[?format=text]`: every local
/// instance of the service; the code is the worst instance's.
pub(super) async fn health_by_name(
    Path(name): Path<String>,
    route: Route,
) -> Result<Response, ApiError> {
    route.require(
        route.authz().service_read(&name),
        "service:read",
        Some(&name),
    )?;
    let instances: Vec<LocalService> = route
        .agent()
        .services()
        .into_values()
        .filter(|s| s.definition.name == name)
        .collect();
    if instances.is_empty() {
        return Err(ApiError::NotFound(format!("ServiceName {name} Not Found")));
    }
    let mut worst = (StatusCode::OK, "passing");
    let mut out = Vec::new();
    for s in &instances {
        let (code, status, checks) = aggregate(route.agent(), s);
        if rank(code) > rank(worst.0) {
            worst = (code, status);
        }
        out.push(health_json(&route, s, status, checks));
    }
    if route.params().get("format") == Some("text") {
        return Ok((worst.0, worst.1).into_response());
    }
    Ok((worst.0, Json(out)).into_response())
}

fn rank(code: StatusCode) -> u8 {
    match code {
        StatusCode::OK => 0,
        StatusCode::TOO_MANY_REQUESTS => 1,
        _ => 2,
    }
}

/// `PUT /v1/agent/maintenance?enable=true|false[&reason=...]`: the whole node.
pub(super) async fn node_maintenance(route: Route) -> Result<Response, ApiError> {
    let raw = route
        .params()
        .get("enable")
        .ok_or_else(|| ApiError::BadRequest("Missing value for enable".into()))?;
    let enable = parse_bool(raw)
        .ok_or_else(|| ApiError::BadRequest(format!("Invalid value for enable: {raw:?}")))?;
    let reason = route.params().get("reason").map(str::to_string);
    let node = &route.agent().identity().node_name;
    route.require(route.authz().node_write(node), "node:write", Some(node))?;
    route.agent().set_node_maintenance(enable, reason).await?;
    Ok(().into_response())
}

/// `0.0.0.0` and `::` are not addresses anyone can reach; Consul refuses them.
fn is_unspecified(address: &str) -> bool {
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}
