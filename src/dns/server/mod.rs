//! The sockets: UDP through the worker threads of `udp.rs` (their batched
//! I/O in `mmsg.rs`), TCP through the connection-capped accept loop of
//! `tcp.rs`, both thin adapters over the fast path ([`Shared::answer_wire`])
//! and, for what it leaves, the [`Responder`]. What they share, and what a
//! [`Reply`] other than a ready response turns into, lives here: the
//! transports are children of this module and never name each other.

mod mmsg;
mod remote;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::Message;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::DnsError;
use super::access::{Caller, DnsToken};
use super::config::Limits;
use super::fit::Transport;
use super::forward::Forwarder;
use super::respond::{Reply, Responder};
use super::rrl::RateLimiter;
use super::wire::Scratch;
use crate::catalog::view::View;
use crate::catalog::{Replica, Tokens};
use crate::config::{DnsSettings, LimitsSettings};
pub use remote::Answerer;
use udp::UdpWorkers;
pub use udp::set_reuse_port;

/// What every request needs; shared by all tasks and UDP workers.
pub(super) struct Shared {
    /// The pure decision.
    pub(super) responder: Responder,
    /// Where foreign names go.
    pub(super) forwarder: Forwarder,
    /// Caps forwards in flight, to the recursors or to other
    /// datacenters: each holds a task and a socket for up to
    /// `recursor_timeout` per recursor, or a call for up to 2 s.
    pub(super) forward_slots: Arc<Semaphore>,
    /// The way to other datacenters' servers; `None` knows none (tests).
    pub(super) remote: Option<Arc<crate::remote::Remote>>,
    /// `translate_wan_addrs`: other datacenters answer with WAN addresses.
    pub(super) translate_wan: bool,
    /// The catalog whose view we answer from.
    pub(super) replica: Arc<Replica>,
    /// Response-rate limiting of UDP answers; `None` when off.
    pub(super) rrl: Option<RateLimiter>,
    /// The token answers are computed as; `None` with ACLs off.
    pub(super) acl: Option<DnsToken>,
    /// Runs `<name>.query.<domain>` lookups; `None` answers them NXDOMAIN.
    pub(super) queries: Option<crate::prepared_query::Executor>,
}

impl Shared {
    /// The replica's resolved tokens with ACLs on; `None` (without looking)
    /// with ACLs off. An answer depends on them as on the view.
    pub(super) fn tokens(&self) -> Option<Arc<Tokens>> {
        self.acl.as_ref().and_then(|_| self.replica.tokens())
    }

    /// Who answers are computed as, given `tokens` from [`Self::tokens`].
    pub(super) fn caller<'a>(&self, tokens: Option<&'a Tokens>) -> Caller<'a> {
        match &self.acl {
            None => Caller::Anyone,
            Some(token) => token.resolve(tokens),
        }
    }

    /// The fast path (`dns/wire`) for one raw request: true with the
    /// response in `out`, false to ask [`Self::answer`] (the responder).
    pub(super) fn answer_wire(
        &self,
        bytes: &[u8],
        transport: Transport,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> bool {
        let view = self.replica.view();
        let tokens = self.tokens();
        let caller = self.caller(tokens.as_deref());
        self.responder
            .respond_wire(&view, caller, bytes, transport, scratch, out)
    }

    /// The response to one raw request, forwarding if needed; `None` to stay silent.
    async fn answer(
        &self,
        bytes: &[u8],
        transport: Transport,
        peer: SocketAddr,
    ) -> Option<Message> {
        let view = self.replica.view();
        let tokens = self.tokens();
        let caller = self.caller(tokens.as_deref());
        match self
            .responder
            .respond_as(&view, caller, bytes, transport, peer)
        {
            Reply::Respond(m) => Some(m),
            Reply::Forward(request) => {
                // Release the snapshot before awaiting the network.
                drop(view);
                let upstream = match self.forward_slots.try_acquire() {
                    Ok(_slot) => self.forwarder.forward(&request).await,
                    Err(_) => {
                        tracing::debug!(%peer, "too many forwarded queries in flight, shedding");
                        None
                    }
                };
                Some(self.responder.relay(&request, upstream, transport))
            }
            Reply::OtherDatacenter { dc, request } => {
                // Release the snapshot before awaiting the network.
                drop(view);
                let Ok(_slot) = self.forward_slots.try_acquire() else {
                    tracing::debug!(%peer, "too many forwarded queries in flight, shedding");
                    return Some(self.responder.servfail(&request, transport));
                };
                Some(self.other_datacenter(&dc, &request, transport).await)
            }
            Reply::PreparedQuery { name, request } => {
                // Release the snapshot before awaiting the network.
                drop(view);
                Some(self.prepared_query(name, &request, transport).await)
            }
            Reply::Drop => None,
        }
    }

    /// The answer to `request`, a name of datacenter `dc`, when asking its
    /// servers is known to fail right now (unknown, or none of them
    /// answered lately): cheap, for a UDP worker to answer on the spot.
    /// `None`: they must be asked ([`Self::other_datacenter`]).
    pub(super) fn known_failure(
        &self,
        view: &View,
        dc: &str,
        request: &Message,
        transport: Transport,
    ) -> Option<Message> {
        let e = self.remote.as_ref()?.fails_now(dc)?;
        Some(remote::failed(
            &self.responder,
            view,
            request,
            transport,
            &e,
        ))
    }

    /// Executes the prepared query `name` as the DNS token and answers
    /// `request` from it. Executing may fail over to other datacenters,
    /// so this runs on the runtime, never on a UDP worker thread.
    pub(super) async fn prepared_query(
        &self,
        name: String,
        request: &Message,
        transport: Transport,
    ) -> Message {
        use crate::prepared_query::{ExecuteError, Request};
        let authz = match &self.acl {
            None => Some(Arc::new(crate::acl::Authorizer::management())),
            Some(token) => token.resolve_shared(self.tokens().as_deref()),
        };
        let executed = match (&self.queries, authz) {
            (None, _) => Err(ExecuteError::NotFound),
            // The DNS token is unknown: as every catalog lookup, fail.
            (Some(_), None) => Err(ExecuteError::Unauthorized),
            (Some(queries), Some(authz)) => {
                let req = Request {
                    id_or_name: name,
                    limit: 0,
                    near: None,
                    authz,
                    secret: None,
                };
                queries.execute(&req).await
            }
        };
        let view = self.replica.view();
        self.responder
            .prepared_query(&view, request, executed, transport)
    }

    /// The answer to `request`, a name of datacenter `dc`, from that
    /// datacenter's servers (see `remote.rs`). Awaits the network: never
    /// on a UDP worker thread.
    async fn other_datacenter(&self, dc: &str, request: &Message, transport: Transport) -> Message {
        remote::ask(
            self.remote.as_deref(),
            &self.responder,
            || self.replica.view(),
            dc,
            request,
            transport,
            self.translate_wan,
        )
        .await
    }
}

/// Serves DNS on the given sockets until `shutdown` fires, answering for
/// the datacenter of `queries` (this agent's; they run its prepared
/// queries) as `settings` say (with ACLs on, as the
/// token they name), with TCP connections capped per client and timed out
/// as `limits` say, and names of other datacenters through `remote`. Zone
/// files are loaded first; a bad one is an error before anything is
/// served.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    settings: DnsSettings,
    limits: &LimitsSettings,
    queries: crate::prepared_query::Executor,
    remote: Arc<crate::remote::Remote>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let responder = Responder::new(&settings, queries.datacenter())?;
    serve_limited(
        udp,
        tcp,
        responder,
        &settings,
        Limits::with_settings(limits),
        queries.replica().clone(),
        Some(remote),
        Some(queries),
        shutdown,
    )
    .await
}

/// [`serve`] with a responder already built and these limits (tests lower
/// them to reach the caps).
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_limited(
    udp: UdpSocket,
    tcp: TcpListener,
    responder: Responder,
    settings: &DnsSettings,
    limits: Limits,
    replica: Arc<Replica>,
    remote: Option<Arc<crate::remote::Remote>>,
    queries: Option<crate::prepared_query::Executor>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let shared = Arc::new(Shared {
        responder,
        forwarder: Forwarder::new(settings.recursors.clone(), settings.recursor_timeout),
        forward_slots: Arc::new(Semaphore::new(limits.max_concurrent_forwards.max(1))),
        remote,
        translate_wan: settings.translate_wan_addrs,
        replica,
        rrl: RateLimiter::new(&settings.rrl),
        acl: DnsToken::new(settings),
        queries,
    });
    let failed = CancellationToken::new();
    let workers = limits.udp_workers;
    let udp = udp
        .into_std()
        .map_err(|e| DnsError::Server(format!("UDP socket: {e}")))?;
    let udp_workers = UdpWorkers::spawn(udp, shared.clone(), workers, failed.clone())
        .map_err(|e| DnsError::Server(format!("starting UDP workers: {e}")))?;
    let tcp_token = shutdown.child_token();
    let tcp_task = tokio::spawn(tcp::serve(tcp, shared, limits, tcp_token.clone()));
    let result = tokio::select! {
        () = shutdown.cancelled() => Ok(()),
        () = failed.cancelled() => Err(DnsError::Server("the UDP socket failed".into())),
    };
    udp_workers.stop().await;
    tcp_token.cancel();
    let tcp_result = tcp_task
        .await
        .map_err(|e| DnsError::Server(format!("TCP task: {e}")))?;
    result.and(tcp_result)
}
