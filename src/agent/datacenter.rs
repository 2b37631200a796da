//! A server's side of the datacenter family (`rpc::datacenter`): requests
//! from other datacenters' servers run through this agent's own HTTP
//! router and DNS responder, and its client agents' requests for other
//! datacenters sent on through [`Remote`]. Built once the router exists
//! and installed in the slot the RPC server (started earlier, for Raft)
//! reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use tower::ServiceExt;

use super::AgentError;
use crate::catalog::Replica;
use crate::config::DnsSettings;
use crate::datacenters::Datacenters;
use crate::delegate::Delegate;
use crate::dns::Answerer;
use crate::http::{Api, Relayed};
use crate::remote::Remote;
use crate::rpc::Credentials;
use crate::rpc::datacenter::{
    Answer, DatacenterRequest, DatacenterResponse, ForwardError, Handler, HttpAnswer, HttpRequest,
    Slot,
};

/// Longest a relayed request may take in the other datacenter once
/// reached: Consul's longest blocking wait (10 min), its jitter and a
/// margin, as for a client agent's forward.
const MAX_RELAY_WAIT: Duration = Duration::from_secs(11 * 60);

/// The largest answer body sent back: well within the 64 MiB RPC frame,
/// beside the headers.
const MAX_ANSWER_BODY: usize = 60 << 20;

/// An agent's part in other datacenters: the way there, and the slot
/// server RPC reads what answers them here from.
pub(super) struct Far {
    /// The way to other datacenters (`?dc=`, their DNS names).
    pub(super) remote: Arc<Remote>,
    /// Filled by [`Self::install`] once the HTTP router exists; servers
    /// only (a client agent serves no RPC).
    slot: Option<Arc<Slot>>,
}

impl Far {
    /// A server reaches other datacenters through the route its WAN pool
    /// gives (`datacenters`), with its server RPC `credentials`, and
    /// relays through the other servers of its datacenter when it cannot
    /// (its RPC address in the WAN pool is `wan_rpc`); a client agent, in
    /// no WAN pool, goes through its servers.
    pub(super) fn new(
        datacenters: Arc<Datacenters>,
        delegate: &Delegate,
        credentials: &Credentials,
        wan_rpc: SocketAddr,
        dns: &DnsSettings,
        slot: Option<Arc<Slot>>,
    ) -> Self {
        let remote = match delegate {
            Delegate::Server(_) => {
                Remote::direct(datacenters, credentials.clone()).relaying(wan_rpc)
            }
            Delegate::Client(link) => Remote::through(datacenters, link.clone()),
        };
        Self {
            remote: Arc::new(remote.translating(dns.translate_wan_addrs)),
            slot,
        }
    }

    /// What answers other datacenters' DNS queries on a server: a
    /// responder like our own DNS server's, on the same `replica`; `None`
    /// on a client agent, which other datacenters never ask.
    pub(super) fn answerer(
        &self,
        dns: &DnsSettings,
        replica: &Arc<Replica>,
    ) -> Result<Option<Answerer>, AgentError> {
        if self.slot.is_none() {
            return Ok(None);
        }
        Answerer::new(dns, self.remote.datacenters().local(), replica.clone())
            .map(Some)
            .map_err(|e| AgentError::Task(format!("DNS: {e}")))
    }

    /// From now on other datacenters' requests run through `api` (with
    /// its admission bounds) and `dns`, as our own clients' do.
    pub(super) fn install(&self, api: Api, dns: Option<Answerer>) {
        if let (Some(slot), Some(dns)) = (&self.slot, dns) {
            slot.install(Arc::new(Local {
                api,
                dns: Arc::new(dns),
                remote: self.remote.clone(),
            }));
        }
    }
}

/// What runs other datacenters' requests here.
struct Local {
    /// The agent's HTTP API, with its admission bounds.
    api: Api,
    /// The agent's DNS answers, from its view.
    dns: Arc<Answerer>,
    /// The way on to other datacenters, for our client agents.
    remote: Arc<Remote>,
}

impl Handler for Local {
    fn serve(&self, req: DatacenterRequest) -> Answer<DatacenterResponse> {
        match req {
            DatacenterRequest::Http(http) => {
                let api = self.api.clone();
                Box::pin(async move { run_http(api, http).await })
            }
            // Answered by the RPC server itself; here for completeness.
            DatacenterRequest::Ping => Box::pin(std::future::ready(DatacenterResponse::Pong)),
            DatacenterRequest::Relay(relay) => {
                let remote = self.remote.clone();
                Box::pin(async move {
                    let ms = Duration::from_millis;
                    let answer = remote
                        .call_direct(
                            &relay.dc,
                            *relay.request,
                            ms(relay.answer_within_ms).min(MAX_RELAY_WAIT),
                            ms(relay.reach_within_ms),
                        )
                        .await;
                    DatacenterResponse::Relayed(answer.map(Box::new))
                })
            }
            DatacenterRequest::Dns(dns) => {
                let answer = self.dns.answer(&dns.query, dns.tcp, dns.translate_wan);
                Box::pin(std::future::ready(DatacenterResponse::Dns(
                    answer.map(Into::into),
                )))
            }
        }
    }

    fn forward(
        &self,
        dc: String,
        req: DatacenterRequest,
        within: Duration,
    ) -> Answer<Result<DatacenterResponse, ForwardError>> {
        let remote = self.remote.clone();
        Box::pin(async move { remote.call(&dc, req, within).await })
    }
}

/// Runs `req` through `api` as a local request; any status is an
/// answer, which the asking agent relays.
async fn run_http(api: Api, req: HttpRequest) -> DatacenterResponse {
    let Ok(method) = Method::from_bytes(req.method.as_bytes()) else {
        return DatacenterResponse::Failed(format!("not an HTTP method: {:?}", req.method));
    };
    let mut request = Request::new(Body::from(req.body.into_vec()));
    *request.method_mut() = method;
    match req.path_and_query.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(e) => {
            return DatacenterResponse::Failed(format!(
                "not a path and query: {:?}: {e}",
                req.path_and_query
            ));
        }
    }
    request.extensions_mut().insert(Relayed);
    let headers = request.headers_mut();
    for (name, value) in req.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    // The API's error type is `Infallible`: every failure is a response.
    let Ok(response) = api.oneshot(request).await;
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(Body::new(body), MAX_ANSWER_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return DatacenterResponse::Failed(format!("the answer could not be read: {e}"));
        }
    };
    DatacenterResponse::Http(HttpAnswer {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec().into()))
            .collect(),
        body: body.to_vec().into(),
    })
}
