//! The datacenter family: what a server of another datacenter asks this
//! one to run, on behalf of its clients (`?dc=` over HTTP, a name of this
//! datacenter over DNS).
//!
//! Two requests carry everything. [`DatacenterRequest::Http`] is a whole
//! HTTP request (method, path and query without `?dc`, the headers that
//! matter, the body): the receiving server runs it through its OWN HTTP
//! router as if a local client had sent it, so every endpoint family
//! (catalog, health, KV, sessions, txn, prepared queries, coordinates)
//! forwards with no code of its own, ACLs are checked against this
//! datacenter's tokens, and a blocking query parks here, next to the data
//! that wakes it. [`DatacenterRequest::Dns`] is a DNS query's bytes: the
//! receiving server's DNS responder answers it from its own view, where
//! `*.dc2.consul` is its own name.
//!
//! Only servers may call this family (a certificate of a server of any
//! datacenter, when TLS verifies peers): it runs requests with whatever
//! token they carry, as the endpoints would for a client here. A client
//! agent reaches another datacenter through a server of its own, with
//! `ClientRequest::Forward`, which carries the same request.
//!
//! The server's side is a [`Handler`] the agent installs once its HTTP
//! router and DNS responder exist ([`Slot`]); the RPC server starts before
//! them (Raft needs it), and answers "not ready" until then.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// How long reaching some server of another datacenter may take in all:
/// past it the datacenter is unreachable for this request (Consul waits
/// up to 10 s per dial).
pub const REACH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// A call from a server of another datacenter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DatacenterRequest {
    /// Run this HTTP request as a local one.
    Http(HttpRequest),
    /// Answer this DNS query.
    Dns(DnsRequest),
    /// Are you there? Sent beside each request and answered at once by the
    /// RPC server, so that a server gone silent behind an open connection
    /// (a cut link drops packets without a word) is found within the reach
    /// deadline, while the request itself may rightly wait long (a
    /// blocking query).
    Ping,
    /// From a server of this datacenter that cannot reach `dc` itself (a
    /// partial cut: its own WAN link is down, ours is not): run the
    /// request there for it. Never relayed again.
    Relay(Relay),
}

/// A request another server of this datacenter asks us to carry to `dc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relay {
    /// The datacenter to run it in.
    pub dc: String,
    /// The request.
    pub request: Box<DatacenterRequest>,
    /// How long `dc`'s server may take to answer once reached, in
    /// milliseconds (a blocking query's wait).
    pub answer_within_ms: u64,
    /// How long we may take to reach one of `dc`'s servers, in
    /// milliseconds: what is left of the asking server's reach deadline.
    pub reach_within_ms: u64,
}

/// The answer to a [`DatacenterRequest`], variant for variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DatacenterResponse {
    /// To [`DatacenterRequest::Http`]: the local router's answer, whatever
    /// its status.
    Http(HttpAnswer),
    /// To [`DatacenterRequest::Dns`]: the response's bytes, or `None` when
    /// the responder stays silent (a malformed query).
    Dns(Option<serde_bytes::ByteBuf>),
    /// The receiver could not run it (not ready, refused); the text says
    /// why.
    Failed(String),
    /// To [`DatacenterRequest::Ping`].
    Pong,
    /// To [`DatacenterRequest::Relay`]: the other datacenter's answer, or
    /// why there was none.
    Relayed(Result<Box<Self>, ForwardError>),
}

/// An HTTP request as the remote router gets it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `PUT`, ….
    pub method: String,
    /// The path and query string, `?dc` removed.
    pub path_and_query: String,
    /// The headers that say who asks and what it accepts (the token,
    /// `Accept`, `Content-Type`); connection headers stay behind.
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    /// The body, as read (within the HTTP body limit).
    pub body: serde_bytes::ByteBuf,
}

/// An HTTP answer as the remote router gave it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The headers: `X-Consul-Index`, `X-Consul-KnownLeader`,
    /// `X-Consul-LastContact`, `Content-Type`, ….
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    /// The body.
    pub body: serde_bytes::ByteBuf,
}

/// A DNS query for the remote responder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsRequest {
    /// The query as the client sent it.
    pub query: serde_bytes::ByteBuf,
    /// Whether it came over TCP (the answer's size limit follows).
    pub tcp: bool,
    /// Whether the asking agent translates addresses
    /// (`translate_wan_addrs`): answer with the nodes' WAN addresses.
    pub translate_wan: bool,
}

impl DatacenterRequest {
    /// Whether running it twice is harmless, so that a request lost after
    /// it was sent may go to another server: DNS queries and HTTP reads.
    pub fn idempotent(&self) -> bool {
        match self {
            Self::Http(r) => matches!(r.method.as_str(), "GET" | "HEAD"),
            Self::Dns(_) | Self::Ping => true,
            Self::Relay(r) => r.request.idempotent(),
        }
    }

    /// The request's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "datacenter-http",
            Self::Dns(_) => "datacenter-dns",
            Self::Ping => "datacenter-ping",
            Self::Relay(_) => "datacenter-relay",
        }
    }
}

impl DatacenterResponse {
    /// The response's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "an HTTP answer",
            Self::Dns(_) => "a DNS answer",
            Self::Failed(_) => "a failure",
            Self::Pong => "a pong",
            Self::Relayed(_) => "a relayed answer",
        }
    }
}

/// Why a request for another datacenter got no answer from it. Carried
/// back to a client agent in `ClientResponse::Forward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// No server of the WAN pool is of this datacenter (Consul's text,
    /// which clients match).
    #[error("No path to datacenter")]
    Unknown(String),
    /// The datacenter is known, but no server of it answered in time
    /// (Consul's text).
    #[error("Remote DC has no server currently reachable")]
    Unreachable(String),
    /// This agent could not reach a server of its own datacenter to carry
    /// the request (a client agent without servers).
    #[error("no server of this datacenter could take the request: {0}")]
    NoLocalServer(String),
    /// A server of the datacenter took the request and failed it (not a
    /// refusal by the endpoint, which is an answer): the text says why.
    #[error("{0}")]
    Failed(String),
}

impl ForwardError {
    /// The datacenter a route error is about.
    pub fn datacenter(&self) -> Option<&str> {
        match self {
            Self::Unknown(dc) | Self::Unreachable(dc) => Some(dc),
            Self::NoLocalServer(_) | Self::Failed(_) => None,
        }
    }
}

/// A future a [`Handler`] returns: boxed, so the handler can sit behind a
/// `dyn` in the [`Slot`] (it is made of parts built after server RPC).
pub type Answer<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How a server answers the datacenter family, and sends its own client
/// agents' requests on to other datacenters.
pub trait Handler: Send + Sync + 'static {
    /// Runs `req` here, as a local request.
    fn serve(&self, req: DatacenterRequest) -> Answer<DatacenterResponse>;

    /// Sends `req` on to datacenter `dc` (for a client agent of ours),
    /// whose server may take `within` to answer once reached.
    fn forward(
        &self,
        dc: String,
        req: DatacenterRequest,
        within: std::time::Duration,
    ) -> Answer<Result<DatacenterResponse, ForwardError>>;
}

/// Where the agent installs its [`Handler`] once it is built; shared with
/// the RPC server, which starts first.
#[derive(Default)]
pub struct Slot(OnceLock<Arc<dyn Handler>>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Slot")
            .field(&self.0.get().map(|_| "installed"))
            .finish()
    }
}

impl Slot {
    /// Installs the handler; a second call is ignored (there is one agent
    /// per server).
    pub fn install(&self, handler: Arc<dyn Handler>) {
        let _ = self.0.set(handler);
    }

    fn get(&self) -> Option<&Arc<dyn Handler>> {
        self.0.get()
    }

    /// Answers a call of the datacenter family.
    pub(super) async fn serve(&self, req: DatacenterRequest) -> DatacenterResponse {
        if matches!(req, DatacenterRequest::Ping) {
            return DatacenterResponse::Pong;
        }
        match self.get() {
            Some(handler) => handler.serve(req).await,
            None => DatacenterResponse::Failed(NOT_READY.into()),
        }
    }

    /// Carries a client agent's request on to datacenter `dc`.
    pub(super) async fn forward(
        &self,
        dc: String,
        req: DatacenterRequest,
        within: std::time::Duration,
    ) -> Result<DatacenterResponse, ForwardError> {
        match self.get() {
            Some(handler) => handler.forward(dc, req, within).await,
            None => Err(ForwardError::NoLocalServer(NOT_READY.into())),
        }
    }
}

/// What a server answers before its HTTP router and DNS responder exist
/// (the first milliseconds after start).
const NOT_READY: &str = "this server is still starting and serves no requests yet";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_without_a_handler_says_it_is_not_ready() {
        let slot = Slot::default();
        let answer = slot
            .serve(DatacenterRequest::Dns(DnsRequest {
                query: Vec::new().into(),
                tcp: false,
                translate_wan: false,
            }))
            .await;
        assert!(matches!(answer, DatacenterResponse::Failed(m) if m == NOT_READY));
        let forwarded = slot
            .forward(
                "dc2".into(),
                DatacenterRequest::Dns(DnsRequest {
                    query: Vec::new().into(),
                    tcp: true,
                    translate_wan: false,
                }),
                std::time::Duration::from_secs(1),
            )
            .await;
        assert!(matches!(forwarded, Err(ForwardError::NoLocalServer(_))));
    }

    /// The family's place on the wire: `Request`'s fourth variant and the
    /// client family's seventh, after everything that was there. A change
    /// here breaks servers of other versions: append, or bump
    /// `preface::PROTOCOL_VERSION`.
    #[test]
    fn the_family_keeps_its_place_on_the_wire() {
        let http = crate::rpc::Request::Datacenter(DatacenterRequest::Http(HttpRequest {
            method: "GET".into(),
            path_and_query: "/v1/kv/a".into(),
            headers: vec![("x-consul-token".into(), b"t".to_vec().into())],
            body: Vec::new().into(),
        }));
        let forward = crate::rpc::Request::Client(super::super::client::ClientRequest::Forward {
            dc: "dc2".into(),
            request: DatacenterRequest::Ping,
            answer_within_ms: 1000,
        });
        let hex = |v: &crate::rpc::Request| -> String {
            postcard::to_allocvec(v)
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        assert_eq!(
            hex(&http),
            "030003474554082f76312f6b762f61010e782d636f6e73756c2d746f6b656e017400",
            "{http:?}"
        );
        assert_eq!(hex(&forward), "02070364633202e807", "{forward:?}");
    }

    #[test]
    fn route_errors_keep_consuls_wording_and_name_their_datacenter() {
        let unknown = ForwardError::Unknown("dc9".into());
        assert_eq!(unknown.to_string(), "No path to datacenter");
        assert_eq!(unknown.datacenter(), Some("dc9"));
        let unreachable = ForwardError::Unreachable("dc2".into());
        assert_eq!(
            unreachable.to_string(),
            "Remote DC has no server currently reachable"
        );
        assert_eq!(unreachable.datacenter(), Some("dc2"));
    }
}
