//! `/v1/status/*`: who leads and who votes. No ACL check, as Consul's:
//! clients ask these before they have a token.

use axum::Json;
use axum::response::{IntoResponse, Response};

use super::route::Route;

/// `GET /v1/status/leader`: `"ip:port"` of the leader, `""` when none is known.
pub(super) async fn leader(route: Route) -> Response {
    let leader = route
        .servers()
        .leader()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Json(leader).into_response()
}

/// `GET /v1/status/peers`: the voters' RPC addresses.
pub(super) async fn peers(route: Route) -> Response {
    let peers: Vec<String> = route
        .servers()
        .peers()
        .iter()
        .map(ToString::to_string)
        .collect();
    Json(peers).into_response()
}
