//! `/v1/health/*`: instances with their checks, and checks by state.

use axum::extract::Path;
use axum::response::Response;

use super::ApiError;
use super::catalog::node_matches;
use super::json::{CheckJson, HealthServiceJson};
use super::route::Route;
use crate::catalog::HealthStatus;

/// `GET /v1/health/service/:name[?passing][&tag=..][&node-meta=k:v]`.
pub(super) async fn service(Path(name): Path<String>, route: Route) -> Result<Response, ApiError> {
    let passing = route.params().flag("passing")?;
    let tags = route.params().all("tag");
    let filters = route.params().node_meta();
    route
        .read(
            |c| c.service_index(&name),
            |c| {
                c.health_service(&name, &tags, passing)
                    .into_iter()
                    .filter(|e| node_matches(e.node, &filters))
                    .map(|e| HealthServiceJson {
                        node: e.node.into(),
                        service: e.service.into(),
                        checks: e.checks.iter().map(|ch| CheckJson::from(*ch)).collect(),
                    })
                    .collect::<Vec<HealthServiceJson>>()
            },
        )
        .await
}

/// `GET /v1/health/checks/:service`: the checks of every instance.
pub(super) async fn checks(Path(name): Path<String>, route: Route) -> Result<Response, ApiError> {
    route
        .read(
            |c| c.service_index(&name),
            |c| {
                c.service_checks(&name)
                    .map(CheckJson::from)
                    .collect::<Vec<CheckJson>>()
            },
        )
        .await
}

/// `GET /v1/health/node/:node`: every check on the node.
pub(super) async fn node(Path(node): Path<String>, route: Route) -> Result<Response, ApiError> {
    route
        .read(
            |c| c.checks_index(),
            |c| {
                c.node_checks(&node)
                    .map(CheckJson::from)
                    .collect::<Vec<CheckJson>>()
            },
        )
        .await
}

/// `GET /v1/health/state/:state` with `any`, `passing`, `warning` or `critical`.
pub(super) async fn state(Path(which): Path<String>, route: Route) -> Result<Response, ApiError> {
    let filter = match which.as_str() {
        "any" => None,
        s => Some(
            HealthStatus::parse(s)
                .filter(|_| s == s.to_ascii_lowercase())
                .ok_or_else(|| ApiError::BadRequest("Invalid state".into()))?,
        ),
    };
    route
        .read(
            |c| c.checks_index(),
            |c| {
                c.checks_in_state(filter)
                    .map(CheckJson::from)
                    .collect::<Vec<CheckJson>>()
            },
        )
        .await
}
