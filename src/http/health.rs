//! `/v1/health/*`: instances with their checks, and checks by state.
//!
//! With ACLs on, an instance needs `service:read` and `node:read` on its
//! node, a check `node:read` on its node and, for a service's check,
//! `service:read`; the rest is left out, never refused (Consul's filters).

use axum::extract::Path;
use axum::response::Response;

use super::ApiError;
use super::catalog::node_matches;
use super::coordinate::Near;
use super::json::{CheckJson, HealthServiceJson};
use super::route::Route;
use crate::catalog::{Check, HealthStatus};

/// `GET /v1/health/service/:name[?passing][&tag=..][&node-meta=k:v][&near=..]`.
pub(super) async fn service(Path(name): Path<String>, route: Route) -> Result<Response, ApiError> {
    let passing = route.params().flag("passing")?;
    let tags = route.params().all("tag");
    let filters = route.params().node_meta();
    let near = Near::from_route(&route);
    route
        .read_filtered(
            |c| c.service_index(&name),
            |c| {
                let mut filtered = false;
                let mut seen: Vec<_> = c
                    .health_service(&name, &tags, passing)
                    .into_iter()
                    .filter(|e| node_matches(e.node, &filters))
                    .filter(|e| {
                        let seen = route.may_see_instance(&e.node.name, &e.service.service);
                        filtered |= !seen;
                        seen
                    })
                    .collect();
                near.sort(&mut seen, |e| &e.node.name);
                let out = seen
                    .into_iter()
                    .map(|e| HealthServiceJson {
                        node: e.node.into(),
                        service: e.service.into(),
                        checks: e.checks.iter().map(|ch| CheckJson::from(*ch)).collect(),
                    })
                    .collect::<Vec<HealthServiceJson>>();
                (out, filtered)
            },
        )
        .await
}

/// The checks the token may see, and whether any were left out.
fn visible<'a>(route: &Route, checks: impl Iterator<Item = &'a Check>) -> (Vec<CheckJson>, bool) {
    let mut filtered = false;
    let out = checks
        .filter(|c| {
            let seen = route.may_see_check(c);
            filtered |= !seen;
            seen
        })
        .map(CheckJson::from)
        .collect();
    (out, filtered)
}

/// `GET /v1/health/checks/:service`: the checks of every instance.
pub(super) async fn checks(Path(name): Path<String>, route: Route) -> Result<Response, ApiError> {
    route
        .read_filtered(
            |c| c.service_index(&name),
            |c| visible(&route, c.service_checks(&name)),
        )
        .await
}

/// `GET /v1/health/node/:node`: every check on the node.
pub(super) async fn node(Path(node): Path<String>, route: Route) -> Result<Response, ApiError> {
    route
        .read_filtered(
            |c| c.checks_index(),
            |c| visible(&route, c.node_checks(&node)),
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
        .read_filtered(
            |c| c.checks_index(),
            |c| visible(&route, c.checks_in_state(filter)),
        )
        .await
}
