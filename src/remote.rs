//! Sending a request to another datacenter: the one function every
//! cross-datacenter call goes through (HTTP `?dc=`, DNS names of another
//! datacenter, and what the prepared queries' failover asks).
//!
//! On a server, [`Remote::call`] takes the route [`Datacenters::route`]
//! gives (live servers first, those that failed a call lately last) and
//! tries them in order: each gets a short share of one reach deadline
//! ([`REACH_DEADLINE`], 2 s) to connect, so a dead or cut datacenter fails
//! clearly within it, never at Consul's 10 s dial per call (Consul #9185,
//! #5595), and a server that cannot be reached is marked `failed` and the
//! next one tried at once, so one dead server is routed around. When none
//! of them answers within [`DIRECT_SHARE`] (1.4 s), the request is relayed
//! through another server of our own datacenter, which carries it
//! straight there with the rest of the deadline (a partial cut: our WAN
//! link is down, a peer's is not); after our own tries failed lately the
//! relay comes first. Once connected, the answer may take as long as the request
//! needs (a blocking query parks on the remote side for its `wait`), but a
//! ping sent beside it must come back within the same share: a connection
//! opened before the link was cut still looks open, and without it the
//! request would wait out its whole answer time. A request that reached a
//! server and was lost is sent to the next one only when running it twice
//! is harmless (reads, DNS). After a call found no server of a datacenter,
//! calls to it fail at once for [`BREAKER`] (1 s), so a dead or cut
//! datacenter costs its callers no connection attempts; the first call
//! after that tries again.
//!
//! A client agent is in no WAN pool: it hands the request to a server of
//! its own datacenter (`ClientRequest::Forward`), which makes the same
//! call, as Consul's client agents do.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::datacenters::{Datacenters, RouteError};
use crate::rpc::datacenter::{DatacenterRequest, DatacenterResponse, ForwardError, Relay};
use crate::rpc::{Credentials, Pool, Request, Response, RpcError, ServerLink};

pub use crate::rpc::datacenter::REACH_DEADLINE;
/// How long after a call found none of a datacenter's servers the next
/// calls fail at once without dialling (a circuit breaker, research §6):
/// a dead or cut datacenter then costs its callers nothing, not a round of
/// connection attempts each, and the first call after it tries again.
pub const BREAKER: Duration = Duration::from_secs(1);
/// How much of [`REACH_DEADLINE`] a server spends trying the other
/// datacenter's servers itself before it relays through another server of
/// ours: the rest is the relay's, so a datacenter cut off from every
/// server of ours still fails within the deadline.
const DIRECT_SHARE: Duration = Duration::from_millis(1400);
/// What the hop to another server of our own datacenter may take, kept
/// back from the reach time a relay hands on.
const LOCAL_HOP: Duration = Duration::from_millis(100);
/// The least connect time one server gets, however many are left to try:
/// a TLS handshake across a 300 ms round trip takes about three of them.
const MIN_CONNECT: Duration = Duration::from_millis(500);

/// How this agent reaches other datacenters.
#[derive(Debug)]
pub struct Remote {
    /// The known datacenters and the route to each (a client agent's has
    /// no WAN pool and knows only its own).
    datacenters: Arc<Datacenters>,
    /// Directly, or through a server of our own.
    way: Way,
    /// `translate_wan_addrs`: answers from other datacenters are to carry
    /// WAN addresses.
    translate_wan: bool,
    /// Datacenters none of whose servers answered lately.
    breaker: Breaker,
    /// This server's RPC address as the WAN pool lists it, when it relays
    /// through the other servers of its datacenter ([`Self::relaying`]).
    relay_from: Option<SocketAddr>,
}

/// The two ways to another datacenter.
#[derive(Debug)]
enum Way {
    /// A server: to the remote servers, one pool of connections per
    /// datacenter (their certificates name their own datacenter).
    Direct {
        /// TLS and the membership proof, as for our own servers.
        credentials: Credentials,
        /// The pools, by datacenter, made on first use.
        pools: Mutex<HashMap<String, Arc<Pool>>>,
    },
    /// A client agent: through the link to its servers.
    Through(Arc<ServerLink>),
}

/// What one try at one server came to.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// It answered.
    Answered(T),
    /// It could not be reached; the request was never sent.
    NotSent(String),
    /// It was sent and got no answer (lost, timed out): it may have run.
    Lost(String),
    /// It answered that it could not run the request (still starting):
    /// the request did not run.
    Refused(String),
}

impl Remote {
    /// Reaching other datacenters as a server, with our own server RPC
    /// `credentials`.
    pub fn direct(datacenters: Arc<Datacenters>, credentials: Credentials) -> Self {
        Self {
            datacenters,
            way: Way::Direct {
                credentials,
                pools: Mutex::default(),
            },
            translate_wan: false,
            breaker: Breaker::default(),
            relay_from: None,
        }
    }

    /// Reaching other datacenters as a client agent, through `link`.
    pub fn through(datacenters: Arc<Datacenters>, link: Arc<ServerLink>) -> Self {
        Self {
            datacenters,
            way: Way::Through(link),
            translate_wan: false,
            breaker: Breaker::default(),
            relay_from: None,
        }
    }

    /// With `translate_wan_addrs` on (`on`): answers from other
    /// datacenters carry their nodes' and services' WAN addresses.
    pub fn translating(self, on: bool) -> Self {
        Self {
            translate_wan: on,
            ..self
        }
    }

    /// A server at `me` (its RPC address as the WAN pool lists it) that
    /// cannot reach a datacenter itself asks the other servers of its own
    /// to carry the request.
    pub fn relaying(self, me: SocketAddr) -> Self {
        Self {
            relay_from: Some(me),
            ..self
        }
    }

    /// Whether answers from other datacenters carry WAN addresses.
    pub fn translate_wan(&self) -> bool {
        self.translate_wan
    }

    /// An agent of datacenter `dc` that knows no other: every other one is
    /// unknown (tests, and agents inside the test process).
    pub fn alone(dc: &str) -> Arc<Self> {
        Arc::new(Self::direct(
            Arc::new(Datacenters::new(dc, None)),
            Credentials::default(),
        ))
    }

    /// The known datacenters.
    pub fn datacenters(&self) -> &Arc<Datacenters> {
        &self.datacenters
    }

    /// Runs `req` in datacenter `dc` (another one), giving the remote
    /// server up to `answer_within` to answer once reached.
    pub async fn call(
        &self,
        dc: &str,
        req: DatacenterRequest,
        answer_within: Duration,
    ) -> Result<DatacenterResponse, ForwardError> {
        if let Some(e) = self.fails_now(dc) {
            return Err(e);
        }
        let answer = match &self.way {
            Way::Through(link) => link.forward(dc, req, answer_within).await,
            Way::Direct { .. } => self.direct_or_relayed(dc, req, answer_within).await,
        };
        match &answer {
            Err(ForwardError::Unreachable(_)) => self.breaker.open(dc, Instant::now()),
            Ok(_) => self.breaker.close(dc),
            Err(_) => {}
        }
        answer
    }

    /// Runs `req` in `dc` for another server of ours that cannot reach it
    /// ([`DatacenterRequest::Relay`]): straight to `dc`'s servers within
    /// `reach_within`, never relayed again.
    pub async fn call_direct(
        &self,
        dc: &str,
        req: DatacenterRequest,
        answer_within: Duration,
        reach_within: Duration,
    ) -> Result<DatacenterResponse, ForwardError> {
        match &self.way {
            Way::Direct { .. } => {
                let reach_by = Instant::now() + reach_within.min(REACH_DEADLINE);
                self.straight(dc, &req, answer_within, reach_by).await
            }
            Way::Through(_) => Err(ForwardError::Failed(
                "a client agent relays nothing to other datacenters".into(),
            )),
        }
    }

    /// A server's call: to `dc`'s servers first, and when none of them
    /// answers, through another server of ours (a partial cut: our WAN
    /// link is down, theirs is not), all within [`REACH_DEADLINE`]. After
    /// our own tries failed lately ([`Datacenters::shunned`]) the relay
    /// comes first, so a partial cut costs the calls after the first one
    /// nothing.
    async fn direct_or_relayed(
        &self,
        dc: &str,
        req: DatacenterRequest,
        answer_within: Duration,
    ) -> Result<DatacenterResponse, ForwardError> {
        let started = Instant::now();
        let reach_by = started + REACH_DEADLINE;
        let peers = self.relay_peers();
        if peers.is_empty() {
            return self.straight(dc, &req, answer_within, reach_by).await;
        }
        if self.datacenters.shunned(dc) {
            return self.relay(dc, req, answer_within, peers, reach_by).await;
        }
        match self
            .straight(dc, &req, answer_within, started + DIRECT_SHARE)
            .await
        {
            Err(ForwardError::Unreachable(_)) => {
                self.relay(dc, req, answer_within, peers, reach_by).await
            }
            answer => answer,
        }
    }

    /// The other live servers of our own datacenter, by the RPC address the
    /// WAN pool gives them, to relay through; none unless [`Self::relaying`].
    fn relay_peers(&self) -> Vec<SocketAddr> {
        let Some(me) = self.relay_from else {
            return Vec::new();
        };
        self.datacenters
            .route(self.datacenters.local())
            .unwrap_or_default()
            .into_iter()
            .filter(|addr| *addr != me)
            .collect()
    }

    /// `req` to `dc`'s servers, reached by `reach_by`.
    async fn straight(
        &self,
        dc: &str,
        req: &DatacenterRequest,
        answer_within: Duration,
        reach_by: Instant,
    ) -> Result<DatacenterResponse, ForwardError> {
        let route = self.datacenters.route(dc).map_err(route_error)?;
        let request = Request::Datacenter(req.clone());
        self.first_of(
            dc,
            route,
            &request,
            req.idempotent(),
            answer_within,
            reach_by,
        )
        .await
    }

    /// `req` to `dc` through one of `peers` (servers of ours), which has
    /// what is left until `reach_by` to reach `dc`.
    async fn relay(
        &self,
        dc: &str,
        req: DatacenterRequest,
        answer_within: Duration,
        peers: Vec<SocketAddr>,
        reach_by: Instant,
    ) -> Result<DatacenterResponse, ForwardError> {
        let left = reach_by.saturating_duration_since(Instant::now());
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let resend = req.idempotent();
        let relay = Request::Datacenter(DatacenterRequest::Relay(Relay {
            dc: dc.to_owned(),
            request: Box::new(req),
            answer_within_ms: millis(answer_within),
            // The hop to our peer is on our own LAN: it takes a sliver.
            reach_within_ms: millis(left.saturating_sub(LOCAL_HOP)),
        }));
        let local = self.datacenters.local().to_owned();
        let answer = self
            .first_of(
                &local,
                peers,
                &relay,
                resend,
                answer_within + left,
                reach_by,
            )
            .await;
        tracing::debug!(
            dc,
            relayed = answer.is_ok(),
            "relayed through another server of ours"
        );
        match answer {
            Ok(DatacenterResponse::Relayed(answer)) => answer.map(|a| *a),
            Ok(other) => Err(ForwardError::Failed(format!(
                "a relay answered with {}",
                other.kind()
            ))),
            // None of our own servers took it: the datacenter is out of
            // reach for us.
            Err(ForwardError::Unreachable(_)) => Err(ForwardError::Unreachable(dc.to_owned())),
            Err(e) => Err(e),
        }
    }

    /// `request` to the servers of `route` (of datacenter `dc`), the first
    /// that answers by `reach_by` ([`first_answer`]).
    async fn first_of(
        &self,
        dc: &str,
        route: Vec<SocketAddr>,
        request: &Request,
        resend: bool,
        answer_within: Duration,
        reach_by: Instant,
    ) -> Result<DatacenterResponse, ForwardError> {
        let Way::Direct { credentials, pools } = &self.way else {
            return Err(ForwardError::Failed(
                "a client agent dials no other datacenter".into(),
            ));
        };
        let pool = {
            let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
            pools
                .entry(dc.to_owned())
                .or_insert_with(|| {
                    Arc::new(Pool::to_datacenter(
                        REACH_DEADLINE,
                        credentials.clone(),
                        dc.to_owned(),
                    ))
                })
                .clone()
        };
        let attempt = |addr: SocketAddr, connect: Duration| {
            let pool = &pool;
            async move {
                if let Err(e) = pool.connect(addr, connect).await {
                    return Attempt::NotSent(e.to_string());
                }
                // A connection behind a cut link still looks open, and the
                // answer may rightly take long (a blocking query): a ping
                // beside the request, answered at once by the server, tells
                // within the connect budget whether anyone is there.
                let ping = Request::Datacenter(DatacenterRequest::Ping);
                let call = pool.call(addr, request, answer_within);
                tokio::pin!(call);
                let answer = tokio::select! {
                    answer = &mut call => answer,
                    pong = pool.call(addr, &ping, connect) => match pong {
                        Ok(_) => call.await,
                        Err(e) => {
                            // Gone silent: the next call dials afresh.
                            pool.forget(addr);
                            return Attempt::Lost(format!("no answer to a ping: {e}"));
                        }
                    },
                };
                match answer {
                    Ok(Response::Datacenter(DatacenterResponse::Failed(why))) => {
                        Attempt::Refused(why)
                    }
                    Ok(Response::Datacenter(answer)) => Attempt::Answered(Ok(answer)),
                    Ok(other) => Attempt::Answered(Err(ForwardError::Failed(format!(
                        "{addr} answered with {}",
                        other.kind()
                    )))),
                    Err(e @ RpcError::Refused { .. }) => {
                        Attempt::Answered(Err(ForwardError::Failed(e.to_string())))
                    }
                    Err(e) if e.not_sent() => Attempt::NotSent(e.to_string()),
                    Err(e) => Attempt::Lost(e.to_string()),
                }
            }
        };
        // The outer error: no server answered; the inner: one answered
        // that it failed.
        first_answer(&self.datacenters, dc, route, reach_by, resend, attempt)
            .await
            .and_then(|answer| answer)
    }

    /// How a call to `dc` would fail right now without touching the
    /// network: unknown or unreachable by the WAN pool's word (a server),
    /// or by the breaker (no server of it answered lately). DNS answers
    /// these on its worker thread, without handing the query off.
    pub fn fails_now(&self, dc: &str) -> Option<ForwardError> {
        if let Way::Direct { .. } = self.way
            && let Err(e) = self.datacenters.route(dc)
        {
            return Some(route_error(e));
        }
        self.breaker
            .is_open(dc, Instant::now())
            .then(|| ForwardError::Unreachable(dc.to_owned()))
    }
}

fn route_error(e: RouteError) -> ForwardError {
    match e {
        RouteError::Unknown(dc) => ForwardError::Unknown(dc),
        RouteError::Unreachable(dc) => ForwardError::Unreachable(dc),
    }
}

/// When each datacenter last had none of its servers answer.
#[derive(Debug, Default)]
struct Breaker(Mutex<HashMap<String, Instant>>);

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// None of `dc`'s servers answered at `now`.
    fn open(&self, dc: &str, now: Instant) {
        self.lock().insert(dc.to_owned(), now);
    }

    /// One of `dc`'s servers answered.
    fn close(&self, dc: &str) {
        self.lock().remove(dc);
    }

    /// Whether a call to `dc` at `now` should fail without dialling: its
    /// servers all failed less than [`BREAKER`] ago.
    fn is_open(&self, dc: &str, now: Instant) -> bool {
        self.lock()
            .get(dc)
            .is_some_and(|at| now.saturating_duration_since(*at) < BREAKER)
    }
}

/// Tries `route`'s servers in order until one answers: each gets a share
/// of what is left before `reach_by` to connect ([`connect_budget`]); one
/// that cannot be reached or refuses is marked failed in `datacenters`
/// (tried last for a while) and the next is tried; one that answers is
/// marked good. A request lost after it was sent goes to the next server
/// only if `resend`. No answer by `reach_by`: the datacenter is
/// unreachable.
pub(crate) async fn first_answer<T, F, Fut>(
    datacenters: &Datacenters,
    dc: &str,
    route: Vec<SocketAddr>,
    reach_by: Instant,
    resend: bool,
    mut attempt: F,
) -> Result<T, ForwardError>
where
    F: FnMut(SocketAddr, Duration) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let count = route.len();
    for (i, addr) in route.into_iter().enumerate() {
        let left = reach_by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let why = match attempt(addr, connect_budget(left, count - i)).await {
            Attempt::Answered(answer) => {
                datacenters.answered(addr);
                return Ok(answer);
            }
            Attempt::NotSent(why) | Attempt::Refused(why) => why,
            Attempt::Lost(why) if resend => why,
            Attempt::Lost(why) => {
                datacenters.failed(addr);
                return Err(ForwardError::Failed(format!(
                    "the request to {dc} was lost after it was sent ({why}); it was not sent \
                     again, since it may have been carried out"
                )));
            }
        };
        tracing::debug!(dc, server = %addr, "a server of another datacenter failed a call: {why}");
        datacenters.failed(addr);
    }
    Err(ForwardError::Unreachable(dc.to_owned()))
}

/// How long one server may take to connect when `left` remains for
/// `remaining` servers (this one included): an even share, but at least
/// [`MIN_CONNECT`], and never past what is left.
pub(crate) fn connect_budget(left: Duration, remaining: usize) -> Duration {
    let share = left / u32::try_from(remaining.max(1)).unwrap_or(u32::MAX);
    share.max(MIN_CONNECT).min(left)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use tokio::sync::watch;

    use super::*;
    use crate::gossip::{Member, MemberStatus, Role};

    fn server(name: &str, port: u16) -> Member {
        Member {
            name: format!("{name}.dc2"),
            node_id: uuid::Uuid::new_v4(),
            addr: SocketAddr::from(([127, 0, 2, 1], port + 2)),
            status: MemberStatus::Alive,
            role: Role::Server,
            dc: "dc2".into(),
            rpc_addr: Some(addr(port)),
            generation: 1,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 2, 1], port))
    }

    fn dc2() -> (Datacenters, watch::Sender<Arc<Vec<Member>>>) {
        let members = vec![server("s1", 100), server("s2", 200), server("s3", 300)];
        let (tx, rx) = watch::channel(Arc::new(members));
        (Datacenters::new("dc1", Some(rx)), tx)
    }

    /// Runs `first_answer` over `route` where each server does what
    /// `outcome` says; returns the result and the servers tried, in order.
    async fn run(
        dcs: &Datacenters,
        route: Vec<SocketAddr>,
        resend: bool,
        outcome: impl Fn(SocketAddr) -> Attempt<&'static str>,
    ) -> (Result<&'static str, ForwardError>, Vec<SocketAddr>) {
        let tried = StdMutex::new(Vec::new());
        let reach_by = Instant::now() + REACH_DEADLINE;
        let result = first_answer(dcs, "dc2", route, reach_by, resend, |a, _| {
            tried.lock().unwrap().push(a);
            let o = outcome(a);
            async move { o }
        })
        .await;
        (result, tried.into_inner().unwrap())
    }

    #[tokio::test]
    async fn an_unreachable_server_is_skipped_and_tried_last_afterwards() {
        let (dcs, _tx) = dc2();
        let route = vec![addr(100), addr(200), addr(300)];
        let (result, tried) = run(&dcs, route, false, |a| {
            if a == addr(100) {
                Attempt::NotSent("connection refused".into())
            } else {
                Attempt::Answered("from dc2")
            }
        })
        .await;
        assert_eq!(result, Ok("from dc2"));
        assert_eq!(tried, [addr(100), addr(200)]);
        // The one that failed now comes after the others in every route.
        for _ in 0..20 {
            assert_eq!(dcs.route("dc2").unwrap()[2], addr(100));
        }
    }

    #[tokio::test]
    async fn a_refusal_tries_the_next_server_even_for_a_write() {
        let (dcs, _tx) = dc2();
        let (result, tried) = run(&dcs, vec![addr(100), addr(200)], false, |a| {
            if a == addr(100) {
                Attempt::Refused("still starting".into())
            } else {
                Attempt::Answered("ok")
            }
        })
        .await;
        assert_eq!(result, Ok("ok"));
        assert_eq!(tried.len(), 2);
    }

    #[tokio::test]
    async fn a_lost_write_is_not_sent_again_but_a_lost_read_is() {
        let (dcs, _tx) = dc2();
        let lost_first = |a| {
            if a == addr(100) {
                Attempt::Lost("connection reset".into())
            } else {
                Attempt::Answered("ok")
            }
        };
        let (write, tried) = run(&dcs, vec![addr(100), addr(200)], false, lost_first).await;
        assert!(matches!(write, Err(ForwardError::Failed(m)) if m.contains("not sent again")));
        assert_eq!(tried, [addr(100)]);
        let (read, tried) = run(&dcs, vec![addr(100), addr(200)], true, lost_first).await;
        assert_eq!(read, Ok("ok"));
        assert_eq!(tried, [addr(100), addr(200)]);
    }

    #[tokio::test]
    async fn no_server_answering_is_unreachable_naming_the_datacenter() {
        let (dcs, _tx) = dc2();
        let route = vec![addr(100), addr(200), addr(300)];
        let (result, tried) = run(&dcs, route, true, |_| {
            Attempt::NotSent("connection refused".into())
        })
        .await;
        assert_eq!(result, Err(ForwardError::Unreachable("dc2".into())));
        assert_eq!(tried.len(), 3);
        assert_eq!(
            result.unwrap_err().to_string(),
            "Remote DC has no server currently reachable"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_reach_deadline_bounds_every_try_together() {
        let (dcs, _tx) = dc2();
        let started = Instant::now();
        let reach_by = started + REACH_DEADLINE;
        let budgets = StdMutex::new(Vec::new());
        let route = vec![addr(100), addr(200), addr(300)];
        // Each server is a blackhole: its connect takes its whole budget.
        let result: Result<(), _> = first_answer(&dcs, "dc2", route, reach_by, true, |_, b| {
            budgets.lock().unwrap().push(b);
            async move {
                tokio::time::sleep(b).await;
                Attempt::NotSent("timed out".into())
            }
        })
        .await;
        assert_eq!(result, Err(ForwardError::Unreachable("dc2".into())));
        assert!(
            started.elapsed() <= REACH_DEADLINE,
            "{:?}",
            started.elapsed()
        );
        let budgets = budgets.into_inner().unwrap();
        assert_eq!(budgets.len(), 3, "every server got a share: {budgets:?}");
    }

    #[test]
    fn the_breaker_fails_calls_at_once_for_a_while_then_lets_one_try() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        assert!(!breaker.is_open("dc2", t0));
        breaker.open("dc2", t0);
        assert!(breaker.is_open("dc2", t0 + BREAKER / 2));
        assert!(!breaker.is_open("dc3", t0 + BREAKER / 2), "per datacenter");
        assert!(
            !breaker.is_open("dc2", t0 + BREAKER),
            "then a call tries again"
        );
        breaker.open("dc2", t0 + BREAKER);
        breaker.close("dc2");
        assert!(!breaker.is_open("dc2", t0 + BREAKER), "an answer closes it");
    }

    #[test]
    fn connect_budgets_share_what_is_left_with_a_floor() {
        let two = Duration::from_secs(2);
        assert_eq!(connect_budget(two, 4), Duration::from_millis(500));
        assert_eq!(connect_budget(two, 2), Duration::from_secs(1));
        assert_eq!(connect_budget(two, 8), MIN_CONNECT);
        assert_eq!(
            connect_budget(Duration::from_millis(200), 3),
            Duration::from_millis(200)
        );
        assert_eq!(connect_budget(two, 0), two);
    }
}
