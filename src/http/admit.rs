//! Admission: how many requests run at once, with blocking queries counted
//! apart from the rest.
//!
//! A blocking query (`?index=N`, N > 0) spends its life parked, costing a
//! task and a connection but no CPU; a burst of them must not take the
//! slots every other request needs, so parked queries can never starve
//! writes and plain reads. Each kind has its own bound; past it, a request
//! is shed with 503 at once rather than queued.
//!
//! Blocking queries are also counted per client IP: a client with
//! `limits.http_max_blocking_per_client` parked gets 429 for its next one,
//! so one client cannot take the blocking slots every other client's
//! watches need, while its writes and plain reads still go through.

use std::sync::Arc;

use axum::extract::Request;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;
use super::listen::ClientAddr;
use crate::per_client::{PerClient, Slot};

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
    /// Blocking queries parked by each client.
    blocking_per_client: Arc<PerClient>,
}

impl Admission {
    /// Room for `plain` ordinary requests and `blocking` blocking queries,
    /// with no cap per client.
    pub(super) fn new(plain: usize, blocking: usize) -> Self {
        Self {
            plain: Arc::new(Semaphore::new(plain)),
            blocking: Arc::new(Semaphore::new(blocking)),
            blocking_per_client: PerClient::new(0),
        }
    }

    /// At most `max` blocking queries parked per client IP (0: no cap).
    pub(super) fn blocking_per_client(mut self, max: usize) -> Self {
        self.blocking_per_client = PerClient::new(max);
        self
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

/// What an admitted request holds until its answer is complete (or the
/// client goes away and the request is dropped): a slot of its kind, and
/// for a blocking query one of its client's.
#[derive(Debug)]
pub(super) struct Admitted {
    _slot: OwnedSemaphorePermit,
    _client: Option<Slot>,
}

impl Admission {
    /// Takes the slots `request` runs in, or the error that sheds it: 429
    /// for a client at its own cap of blocking queries, 503 when the server
    /// is full.
    pub(super) fn admit(&self, request: &Request) -> Result<Admitted, ApiError> {
        let blocking = is_blocking(request.uri().query());
        // The client's own cap first, so a client over it takes no shared slot.
        let client = match request.extensions().get::<ClientAddr>() {
            Some(ClientAddr(addr)) if blocking => {
                match self.blocking_per_client.try_take(addr.ip()) {
                    Some(slot) => Some(slot),
                    None => return Err(ApiError::TooManyBlocking),
                }
            }
            // Not blocking, or served without a listener that names clients.
            _ => None,
        };
        let pool = if blocking {
            &self.blocking
        } else {
            &self.plain
        };
        let Ok(slot) = pool.clone().try_acquire_owned() else {
            return Err(ApiError::Overloaded);
        };
        Ok(Admitted {
            _slot: slot,
            _client: client,
        })
    }
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
