//! `/v1/status/*`: who leads and who votes.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::Ctx;

/// `GET /v1/status/leader`: `"ip:port"` of the leader, `""` when none is known.
pub(super) async fn leader(State(state): State<Ctx>) -> Response {
    let leader = state
        .delegate
        .leader()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Json(leader).into_response()
}

/// `GET /v1/status/peers`: the voters' RPC addresses.
pub(super) async fn peers(State(state): State<Ctx>) -> Response {
    let peers: Vec<String> = state
        .delegate
        .peers()
        .iter()
        .map(ToString::to_string)
        .collect();
    Json(peers).into_response()
}
