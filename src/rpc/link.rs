//! A client agent's link to the servers of its datacenter: which server it
//! talks to, the writes and `?consistent` reads it sends there, and the
//! change stream that keeps the agent's own replica current.
//!
//! A client holds a full replica of the catalog, as servers do, so its DNS
//! and HTTP reads never wait for the network. The replica follows one server
//! by long polls ([`ClientRequest::Follow`]): each answer carries the entries
//! that server applied since the client's index (or, when the client fell
//! behind the server's history, an offer of the whole state, which the
//! client fetches in chunks and installs: `catchup`), and the server's view
//! of its leader, which is what the client reports in `X-Consul-KnownLeader`
//! and `X-Consul-LastContact`.
//!
//! The servers come from the gossip pool. The client sticks to one while it
//! answers and is in the pool, and moves to another, chosen at random, when a
//! call fails or the pool no longer lists it, as Consul's client does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::seq::IndexedRandom;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::catchup::{self, CatchUpError, Chunk, ChunkSource, MAX_CHUNK, Offer};
use super::client::{CatchUp, ClientRequest, ClientResponse, ServerStatus};
use super::cluster::Configuration;
use super::datacenter::{DatacenterRequest, DatacenterResponse, ForwardError};
use super::errors::{MembershipError, ReadError, WriteError};
use super::message::{Request, Response};
use super::pool::Pool;
use super::secure::Credentials;
use super::types::RaftId;
use crate::catalog::{Applied, Command, Index, Outcome, Replica};

/// How long a server holds a follow poll open when nothing changes. Short
/// enough that the server's leader status reaches the client every couple
/// of seconds when idle.
const FOLLOW_WAIT: Duration = Duration::from_secs(2);
/// Time allowed beyond the poll's wait for its answer to arrive.
const CALL_MARGIN: Duration = Duration::from_secs(1);
/// How long connecting to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A write's whole budget: the server's own (5 s) and the way there.
const WRITE_TIMEOUT: Duration = Duration::from_secs(7);
/// A call other than a write.
const CALL_TIMEOUT: Duration = Duration::from_secs(7);
/// Pause after a failed poll before the next, so a client without a
/// reachable server does not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pause after a catch-up that failed other than by a call (a state too
/// large or undecodable): trying again at once would fail the same way.
const CATCH_UP_PAUSE: Duration = Duration::from_secs(5);

/// The link. One per client agent, shared by its HTTP API, its local
/// state's writes and the follow task.
#[derive(Debug)]
pub struct ServerLink {
    /// Connections to servers.
    pool: Pool,
    /// The replica the follow task keeps current.
    replica: Arc<Replica>,
    /// Live servers of the datacenter, as the pool reports them.
    servers: watch::Sender<Vec<SocketAddr>>,
    /// The server calls go to, while it answers.
    current: Mutex<Option<SocketAddr>>,
    /// What the followed server last said, and when.
    heard: Mutex<Heard>,
    /// The most bytes asked for in one chunk of a catch-up: [`MAX_CHUNK`];
    /// tests ask for less, so that a small state arrives in many chunks.
    chunk_len: u32,
}

/// Why a call to the servers got no usable answer.
#[derive(Debug)]
enum CallError {
    /// No server is known, or none could be reached: the request was not
    /// sent.
    NoServers,
    /// Sent, and no answer in time (or the time ran out before sending).
    Timeout,
    /// Lost after it was sent, and not sent again because it must not be
    /// carried out twice: it may or may not have been.
    Interrupted,
    /// A server refused the request or answered it with something else.
    Fatal(String),
}

impl From<CallError> for WriteError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::NoServers => Self::NoServers,
            CallError::Timeout => Self::Timeout,
            CallError::Interrupted => Self::Interrupted,
            CallError::Fatal(why) => Self::Fatal(why),
        }
    }
}

impl From<CallError> for ReadError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::NoServers => Self::NoServers,
            // Reads are sent again (`resend`), so `call` reports a lost one
            // as a timeout once the servers are tried; this arm only keeps
            // the mapping total.
            CallError::Timeout | CallError::Interrupted => Self::Timeout,
            CallError::Fatal(why) => Self::Fatal(why),
        }
    }
}

impl From<CallError> for MembershipError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::NoServers => Self::NoServers,
            CallError::Timeout => Self::Timeout,
            CallError::Interrupted => Self::Interrupted,
            CallError::Fatal(why) => Self::Fatal(why),
        }
    }
}

/// The last follow answer's status.
#[derive(Debug)]
struct Heard {
    /// The server's view of its cluster.
    status: ServerStatus,
    /// When it arrived; `None` before the first answer.
    at: Option<Instant>,
}

impl ServerLink {
    /// A link that keeps `replica` current once it knows servers.
    /// It reaches its servers as `credentials` say (TLS, the membership
    /// proof).
    pub fn new(replica: Arc<Replica>, credentials: Credentials) -> Self {
        Self {
            pool: Pool::new(CONNECT_TIMEOUT, credentials),
            replica,
            servers: watch::channel(Vec::new()).0,
            current: Mutex::new(None),
            heard: Mutex::new(Heard {
                status: ServerStatus::default(),
                at: None,
            }),
            chunk_len: MAX_CHUNK,
        }
    }

    /// The same link, fetching a catch-up `len` bytes a chunk.
    #[cfg(test)]
    pub(crate) fn with_chunk_len(mut self, len: u32) -> Self {
        self.chunk_len = len;
        self
    }

    /// Replaces the known live servers. A current server no longer among
    /// them is dropped at once (the follow poll to it is abandoned).
    pub fn set_servers(&self, servers: Vec<SocketAddr>) {
        {
            let mut current = self.current();
            if current.is_some_and(|c| !servers.contains(&c)) {
                *current = None;
            }
        }
        self.servers.send_if_modified(|known| {
            let changed = *known != servers;
            *known = servers;
            changed
        });
    }

    /// The server to call: the current one, or a random live one.
    fn pick(&self) -> Option<SocketAddr> {
        let mut current = self.current();
        if current.is_none() {
            *current = self.servers.borrow().choose(&mut rand::rng()).copied();
        }
        *current
    }

    /// `addr` failed a call: the next call goes to another server when
    /// there is one.
    fn failed(&self, addr: SocketAddr) {
        self.pool.forget(addr);
        self.move_from(addr);
    }

    /// The next call goes to another server than `addr` when there is one
    /// (`addr` answers, but has no leader).
    fn move_from(&self, addr: SocketAddr) {
        let mut current = self.current();
        if *current == Some(addr) {
            let servers = self.servers.borrow();
            let others: Vec<_> = servers.iter().filter(|s| **s != addr).collect();
            *current = others.choose(&mut rand::rng()).map(|s| **s);
        }
    }

    fn current(&self) -> MutexGuard<'_, Option<SocketAddr>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn heard(&self) -> MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req` to a server, moving to another when one cannot be
    /// reached. A request that may have been carried out is sent again
    /// only if `resend` (it is idempotent); otherwise the loss is
    /// [`CallError::Interrupted`].
    async fn call(
        &self,
        req: &Request,
        timeout: Duration,
        resend: bool,
    ) -> Result<Response, CallError> {
        let deadline = Instant::now() + timeout;
        // Each live server once, and once more for the one that was current.
        let attempts = self.servers.borrow().len() + 1;
        let mut last = CallError::NoServers;
        for _ in 0..attempts {
            let Some(addr) = self.pick() else { break };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Timeout);
            }
            match self.pool.call(addr, req, left).await {
                Ok(Response::Malformed(why)) => {
                    return Err(CallError::Fatal(format!(
                        "{addr} refused the request: {why}"
                    )));
                }
                Ok(response) => return Ok(response),
                Err(e) => {
                    tracing::debug!(server = %addr, error = %e, kind = req.kind(), "server call failed");
                    self.failed(addr);
                    if !e.not_sent() && !resend {
                        return Err(CallError::Interrupted);
                    }
                    last = if e.not_sent() {
                        CallError::NoServers
                    } else {
                        CallError::Timeout
                    };
                }
            }
        }
        Err(last)
    }

    /// Sends a catalog write to a server, which routes it to the leader.
    /// A server that knows no leader (it may be cut off from the others)
    /// has waited for one already; the write then tries one other server.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        let resend = cmd.idempotent();
        let req = Request::Client(ClientRequest::Write(Box::new(cmd)));
        let mut result = Err(WriteError::NoServers);
        for _ in 0..2 {
            let server = self.pick();
            result = match self.call(&req, WRITE_TIMEOUT, resend).await? {
                Response::Client(ClientResponse::Write(result)) => result,
                other => return Err(unexpected("write", &other).into()),
            };
            match (&result, server) {
                (Err(WriteError::NoLeader), Some(server)) => self.move_from(server),
                _ => break,
            }
        }
        result
    }

    /// For a `?consistent` read: has a server confirm the leader and name
    /// the index the leader had committed, then waits until this replica has
    /// applied it.
    pub async fn linearizable_read(&self) -> Result<(), ReadError> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let req = Request::Client(ClientRequest::ConsistentIndex);
        let index = match self.call(&req, CALL_TIMEOUT, true).await? {
            Response::Client(ClientResponse::ConsistentIndex(result)) => result?,
            other => return Err(unexpected("consistent read", &other).into()),
        };
        if self.replica.wait_applied(index, deadline).await {
            Ok(())
        } else {
            Err(ReadError::Timeout)
        }
    }

    /// The Raft configuration, as a server has it.
    pub async fn configuration(&self) -> Result<Configuration, MembershipError> {
        let req = Request::Client(ClientRequest::Configuration);
        match self.call(&req, CALL_TIMEOUT, true).await? {
            Response::Client(ClientResponse::Configuration(config)) => Ok(config),
            other => Err(unexpected("configuration", &other).into()),
        }
    }

    /// The datacenters a server knows, its own first.
    pub async fn datacenters(&self) -> Result<Vec<String>, MembershipError> {
        let req = Request::Client(ClientRequest::Datacenters);
        match self.call(&req, CALL_TIMEOUT, true).await? {
            Response::Client(ClientResponse::Datacenters(names)) => Ok(names),
            other => Err(unexpected("datacenters", &other).into()),
        }
    }

    /// The WAN coordinates of every datacenter's servers, as a server
    /// knows them.
    pub async fn coordinate_datacenters(
        &self,
    ) -> Result<Vec<crate::coordinate::DatacenterCoordinates>, MembershipError> {
        let req = Request::Client(ClientRequest::CoordinateDatacenters);
        match self.call(&req, CALL_TIMEOUT, true).await? {
            Response::Client(ClientResponse::CoordinateDatacenters(maps)) => Ok(maps),
            other => Err(unexpected("coordinate-datacenters", &other).into()),
        }
    }

    /// Asks the servers to remove server `id` from the configuration for
    /// an operator holding `token`; the server checks the token. A client
    /// family call, so a client agent's certificate may make it.
    pub async fn remove_server(
        &self,
        id: RaftId,
        token: Option<String>,
    ) -> Result<(), MembershipError> {
        let req = Request::Client(ClientRequest::RemovePeer { id, token });
        match self.call(&req, CALL_TIMEOUT, true).await? {
            Response::Client(ClientResponse::RemovePeer(result)) => result,
            other => Err(unexpected("remove", &other).into()),
        }
    }

    /// Has a server of this datacenter run `request` in datacenter `dc`,
    /// which may take `answer_within` there (a blocking query), plus the
    /// server's own time to reach `dc`. Sent again to another server of
    /// ours only when the request is idempotent.
    pub async fn forward(
        &self,
        dc: &str,
        request: DatacenterRequest,
        answer_within: Duration,
    ) -> Result<DatacenterResponse, ForwardError> {
        let resend = request.idempotent();
        let req = Request::Client(ClientRequest::Forward {
            dc: dc.to_owned(),
            request,
            answer_within_ms: u64::try_from(answer_within.as_millis()).unwrap_or(u64::MAX),
        });
        let timeout = answer_within + super::datacenter::REACH_DEADLINE + CALL_MARGIN;
        match self.call(&req, timeout, resend).await {
            Ok(Response::Client(ClientResponse::Forward(result))) => result,
            Ok(other) => Err(ForwardError::Failed(format!(
                "server answered a forward request with {}",
                other.kind()
            ))),
            Err(CallError::NoServers) => Err(ForwardError::NoLocalServer(
                "none of this datacenter's servers could be reached".into(),
            )),
            Err(CallError::Timeout) => Err(ForwardError::Failed(format!(
                "no answer from {dc} through this datacenter's servers in time"
            ))),
            Err(CallError::Interrupted) => Err(ForwardError::Failed(format!(
                "the request to {dc} was lost on the way to this datacenter's server; it was \
                 not sent again, since it may have been carried out"
            ))),
            Err(CallError::Fatal(why)) => Err(ForwardError::Failed(why)),
        }
    }

    /// The leader's RPC address, as the followed server last reported it.
    pub fn leader(&self) -> Option<SocketAddr> {
        self.fresh().and_then(|s| s.leader)
    }

    /// The voters' RPC addresses, as the followed server last reported them.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.heard().status.peers.clone()
    }

    /// Whether the followed server answered lately and had a live leader:
    /// then this replica is as current as that server's.
    pub fn leader_live(&self) -> bool {
        self.fresh().is_some_and(|s| s.leader_live)
    }

    /// How stale this replica may be: the followed server's own staleness
    /// while its polls keep answering, otherwise the time since its last
    /// answer (the whole uptime before the first).
    pub fn last_contact(&self) -> Duration {
        let heard = self.heard();
        match heard.at {
            Some(at) if at.elapsed() <= FOLLOW_WAIT + CALL_MARGIN => {
                Duration::from_millis(heard.status.last_contact_ms)
            }
            Some(at) => at.elapsed() + Duration::from_millis(heard.status.last_contact_ms),
            None => Duration::MAX,
        }
    }

    /// The last status, if it arrived recently enough to speak for now.
    fn fresh(&self) -> Option<ServerStatus> {
        let heard = self.heard();
        heard
            .at
            .filter(|at| at.elapsed() <= FOLLOW_WAIT + CALL_MARGIN)
            .map(|_| heard.status.clone())
    }

    /// Keeps the replica current until `stop`: polls the current server for
    /// what it applied after the replica's index and applies it.
    pub async fn follow(self: Arc<Self>, stop: CancellationToken) {
        let mut servers = self.servers.subscribe();
        loop {
            let Some(addr) = self.pick() else {
                // No server known yet: wait for the pool to report one.
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = servers.changed() => if changed.is_err() { return },
                }
                continue;
            };
            let req = Request::Client(ClientRequest::Follow {
                after: self.replica.applied_index(),
                wait_ms: u32::try_from(FOLLOW_WAIT.as_millis()).unwrap_or(u32::MAX),
            });
            let answer = tokio::select! {
                () = stop.cancelled() => return,
                // The pool dropped this server (it failed or left): do not
                // wait out a poll it will never answer.
                () = dropped(&mut servers, addr) => continue,
                r = self.pool.call(addr, &req, FOLLOW_WAIT + CALL_MARGIN) => r,
            };
            let mut pause = RETRY_PAUSE;
            match answer {
                Ok(Response::Client(ClientResponse::Follow(answer))) => {
                    let caught_up = match answer.catch_up {
                        CatchUp::Entries(entries) => {
                            self.apply(entries);
                            Ok(true)
                        }
                        CatchUp::Snapshot(offer) => tokio::select! {
                            () = stop.cancelled() => return,
                            () = dropped(&mut servers, addr) => continue,
                            r = self.catch_up(addr, offer) => r,
                        },
                        CatchUp::Unavailable(why) => Err(CatchUpError::Encode(why)),
                    };
                    match caught_up {
                        Ok(true) => {
                            let leader_live = answer.status.leader_live;
                            *self.heard() = Heard {
                                status: answer.status,
                                at: Some(Instant::now()),
                            };
                            if leader_live {
                                continue;
                            }
                            // A server without a leader may be cut off from
                            // the others, and its copy stale: follow another.
                            self.move_from(addr);
                        }
                        // The server moved on from the encoding it offered:
                        // ask again, for its newer one.
                        Ok(false) => continue,
                        Err(e @ CatchUpError::Call(_)) => {
                            tracing::debug!(server = %addr, error = %e, "catching up failed");
                            self.failed(addr);
                        }
                        // Not the connection's fault, and likely the same on
                        // the next try: say so, and try less often.
                        Err(e) => {
                            tracing::warn!(server = %addr, "cannot catch up from the server: {e}");
                            self.move_from(addr);
                            pause = CATCH_UP_PAUSE;
                        }
                    }
                }
                Ok(other) => {
                    tracing::warn!(server = %addr, "follow answered with {}", other.kind());
                    self.failed(addr);
                }
                Err(e) => {
                    tracing::debug!(server = %addr, error = %e, "follow poll failed");
                    self.failed(addr);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Applies the entries of a follow answer to the replica.
    fn apply(&self, entries: Vec<Applied>) {
        for entry in entries {
            // A server switch may repeat what the replica has.
            if entry.index <= self.replica.applied_index() {
                continue;
            }
            if entry.commands.is_empty() {
                self.replica.apply_noop(entry.index);
            } else {
                self.replica
                    .apply_batch(entry.index, entry.time, entry.commands);
            }
        }
    }

    /// Fetches the state `addr` offered and installs it. `false` when the
    /// server no longer holds it, and nothing changed.
    async fn catch_up(&self, addr: SocketAddr, offer: Offer) -> Result<bool, CatchUpError> {
        let source = Chunks { link: self, addr };
        let Some(state) = catchup::fetch(&source, offer, self.chunk_len).await? else {
            return Ok(false);
        };
        let index = state.last_index();
        let replica = self.replica.clone();
        // Rebuilding the tables and the view of a large state takes a while.
        tokio::task::spawn_blocking(move || replica.install(state))
            .await
            .map_err(|e| CatchUpError::Inconsistent(format!("installing it failed: {e}")))?;
        tracing::info!(server = %addr, index, "installed the state from a server");
        Ok(true)
    }
}

/// The chunks of a catch-up, asked of the server that offered them.
struct Chunks<'a> {
    link: &'a ServerLink,
    addr: SocketAddr,
}

impl ChunkSource for Chunks<'_> {
    async fn chunk(&self, index: Index, offset: u64, len: u32) -> Result<Option<Chunk>, String> {
        let req = Request::Client(ClientRequest::SnapshotChunk { index, offset, len });
        match self.link.pool.call(self.addr, &req, CALL_TIMEOUT).await {
            Ok(Response::Client(ClientResponse::SnapshotChunk(chunk))) => Ok(chunk),
            Ok(other) => Err(format!(
                "{} answered a chunk request with {}",
                self.addr,
                other.kind()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Resolves once `addr` is no longer among the live servers.
async fn dropped(servers: &mut watch::Receiver<Vec<SocketAddr>>, addr: SocketAddr) {
    if servers.wait_for(|s| !s.contains(&addr)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn unexpected(what: &str, response: &Response) -> CallError {
    CallError::Fatal(format!(
        "server answered a {what} request with {}",
        response.kind()
    ))
}
