//! [`Writer`]: how a handler writes to the replicated catalog, and the
//! headers every write's answer carries (the write's index, whether there
//! is a known leader, and how long ago it was heard from).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use super::{ApiError, ApiState};
use crate::catalog::{Command, Index, Outcome};
use crate::delegate::Delegate;

/// Writes to one datacenter's replicated catalog: the request's, or the
/// one a registration names (`Route::writer`, `Route::writer_in`).
#[derive(Debug)]
pub(super) struct Writer<'a>(&'a ApiState);

impl<'a> Writer<'a> {
    /// Writes through `api`, the datacenter the route reached.
    pub(super) fn new(api: &'a ApiState) -> Self {
        Self(api)
    }

    /// Writes `cmd` to the replicated catalog and answers once the leader
    /// applied it. This agent's own replica may hold it a little later (a
    /// follower or a client agent learns of a commit a round trip after
    /// the leader, and a follower encoding a snapshot applies nothing
    /// until it is done: 150-260 ms for a catalog of 100,000 nodes on two
    /// busy cores); so the write is recorded, and the agent's next read
    /// waits for it instead (`Route::consistent`), as a read through the
    /// same agent must see it, as Consul's default reads (served by the
    /// leader) do. Waiting here made every write through a follower as
    /// slow as its snapshot's encoding.
    pub(super) async fn write(&self, cmd: Command) -> Result<Outcome, ApiError> {
        let outcome = self.0.delegate.write(cmd).await?;
        if let Outcome::Applied(index) | Outcome::Txn { index, .. } = outcome {
            self.0.replica.acknowledge(index);
        }
        Ok(outcome)
    }

    /// `X-Consul-KnownLeader` and `X-Consul-LastContact` on a write's answer.
    pub(super) fn meta_headers(&self, headers: &mut HeaderMap) {
        meta_headers(&self.0.delegate, headers);
    }

    /// A write's answer with its index, which Consul leaves out (Consul
    /// #304, #14258), and the leader headers, as every write here answers:
    /// a client that reads next can ask for that index or later.
    pub(super) fn written(&self, mut response: Response, index: Index) -> Response {
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static("x-consul-index"),
            HeaderValue::from(index),
        );
        self.meta_headers(headers);
        response
    }
}

/// Adds `X-Consul-KnownLeader` and `X-Consul-LastContact`.
pub(super) fn meta_headers(delegate: &Delegate, headers: &mut HeaderMap) {
    headers.insert(
        HeaderName::from_static("x-consul-knownleader"),
        HeaderValue::from_static(if delegate.leader_live() {
            "true"
        } else {
            "false"
        }),
    );
    let ms = u64::try_from(delegate.last_contact().as_millis()).unwrap_or(u64::MAX);
    headers.insert(
        HeaderName::from_static("x-consul-lastcontact"),
        HeaderValue::from(ms),
    );
}
