//! Admission: how many requests run at once, with blocking queries counted
//! apart from the rest.
//!
//! A blocking query (`?index=N`, N > 0) spends its life parked, costing a
//! task and a connection but no CPU; a burst of them must not take the
//! slots every other request needs, so parked queries can never starve
//! writes and plain reads. Each kind has its own bound; past it, a request
//! is shed with 503 at once rather than queued.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::ApiError;

/// Requests running at once that are not blocking queries.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Blocking queries parked at once.
pub const MAX_BLOCKING: usize = 16_384;

/// The two bounds, shared by every route.
#[derive(Debug, Clone)]
pub(super) struct Admission {
    /// Slots for requests that answer as soon as they can.
    plain: Arc<Semaphore>,
    /// Slots for blocking queries.
    blocking: Arc<Semaphore>,
}

impl Admission {
    /// Room for `plain` ordinary requests and `blocking` blocking queries.
    pub(super) fn new(plain: usize, blocking: usize) -> Self {
        Self {
            plain: Arc::new(Semaphore::new(plain)),
            blocking: Arc::new(Semaphore::new(blocking)),
        }
    }
}

/// Whether the query string asks to block: an `index` other than 0.
fn is_blocking(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k == "index" && !v.is_empty() && v != "0"
        })
    })
}

/// Runs the request in a slot of its kind, or sheds it with 503.
pub(super) async fn admit(
    State(admission): State<Admission>,
    request: Request,
    next: Next,
) -> Response {
    let pool = if is_blocking(request.uri().query()) {
        &admission.blocking
    } else {
        &admission.plain
    };
    let Ok(_slot) = pool.clone().try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::is_blocking;

    #[test]
    fn only_a_nonzero_index_blocks() {
        assert!(is_blocking(Some("index=5")));
        assert!(is_blocking(Some("stale&index=12&wait=1s")));
        assert!(!is_blocking(Some("index=0")));
        assert!(!is_blocking(Some("index=")));
        assert!(!is_blocking(Some("recurse&myindex=4")));
        assert!(!is_blocking(None));
    }
}
