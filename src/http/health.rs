//! `/v1/health/*`: instances with their checks, and checks by state.

use axum::extract::{Path, State};
use axum::response::Response;

use super::catalog::node_matches;
use super::json::{CheckJson, HealthServiceJson};
use super::query::{Params, read};
use super::{ApiError, Ctx};
use crate::catalog::HealthStatus;

/// `GET /v1/health/service/:name[?passing][&tag=..][&node-meta=k:v]`.
pub(super) async fn service(
    State(state): State<Ctx>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let passing = params.flag("passing")?;
    let tags = params.all("tag");
    let filters = params.node_meta();
    read(
        &state,
        &params,
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
pub(super) async fn checks(
    State(state): State<Ctx>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    read(
        &state,
        &params,
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
pub(super) async fn node(
    State(state): State<Ctx>,
    Path(node): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    read(
        &state,
        &params,
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
pub(super) async fn state(
    State(state): State<Ctx>,
    Path(which): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let filter = match which.as_str() {
        "any" => None,
        s => Some(
            HealthStatus::parse(s)
                .filter(|_| s == s.to_ascii_lowercase())
                .ok_or_else(|| ApiError::BadRequest("Invalid state".into()))?,
        ),
    };
    read(
        &state,
        &params,
        |c| c.checks_index(),
        |c| {
            c.checks_in_state(filter)
                .map(CheckJson::from)
                .collect::<Vec<CheckJson>>()
        },
    )
    .await
}
