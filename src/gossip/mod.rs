//! Gossip: which agents are in a pool, which of them are alive, and what
//! they are (server or client, datacenter, RPC address). Every agent is in
//! its datacenter's LAN pool; servers are also in the WAN pool of every
//! datacenter's servers, a second instance with WAN timing
//! ([`Profile::wan`]) and member names `node.dc`.
//!
//! Membership runs on foca (SWIM with suspicion and infection-style
//! dissemination) over UDP. The parts, in the order a packet meets them:
//!
//! - [`crypto`]: the `--encrypt` key and AES-256-GCM sealing of every
//!   datagram; anything that fails to open is counted and dropped.
//! - [`wire`]: the framing inside a datagram: a foca packet, or a suspicion
//!   notice sent straight to a member we suspect so it can refute in time.
//! - [`codec`]: foca's packets on the wire, naming sender and receiver by
//!   (address, generation) once the peer is known to have the full identity.
//! - [`identity`]: the identity foca gossips (address, name, node ID,
//!   generation, role, datacenter, RPC address), bounded on decode.
//! - `runtime`: the single task that owns foca, drains its output after
//!   every call, keeps the timer schedule ([`timers`]) and publishes the
//!   membership.
//! - [`health`]: local health, which slows down the probing of a member
//!   that is itself in trouble so it does not accuse healthy ones.
//! - [`membership`]: the published view, one node per name (a second node
//!   claiming a live member's name is refused), and how a graceful leave
//!   (Left) is told apart from a failure (Failed).
//! - [`profile`]: the timing numbers and the arithmetic behind them.
//! - [`coordinates`]: this member's network coordinate, measured by
//!   coordinate pings beside foca's probes, and the latest coordinate of
//!   each peer.
//!
//! [`Gossip`] is the handle: start it on a socket the caller bound, join,
//! watch the membership, leave. The agent starts one per process (two on a
//! server: the WAN pool is `agent/wan.rs`'s); servers find each other
//! through the LAN pool, client agents find servers, and the leader
//! reconciles it into the catalog (`reconcile`).

pub mod codec;
pub mod coordinates;
pub mod crypto;
pub mod health;
pub mod identity;
pub mod membership;
pub mod profile;
mod runtime;
pub mod timers;
pub mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use coordinates::Coordinates;
pub use crypto::{Key, KeyError, keygen};
pub use identity::{IdentityError, MemberId, Role};
pub use membership::{Member, MemberStatus, Refusal};
pub use profile::Profile;

use runtime::{Control, Counters, Driver};

/// How many requests may wait for the driver; they are rare (join,
/// leave), so a caller that finds the queue full is told to retry.
const CONTROL_QUEUE: usize = 16;

/// Everything gossip fails with.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// The identity fields are out of bounds.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The encryption key is malformed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The socket could not tell its own address.
    #[error("gossip socket: {0}")]
    Socket(#[source] std::io::Error),
    /// Nobody at the address answered in time (wrong address, down, or a
    /// different encryption key).
    #[error("no gossip member answered at {addr} within {waited:?}")]
    JoinTimeout {
        /// The address announced to.
        addr: SocketAddr,
        /// How long we tried.
        waited: Duration,
    },
    /// Asked to join our own address.
    #[error("{0} is this agent's own gossip address")]
    JoinSelf(SocketAddr),
    /// The control queue is full.
    #[error("gossip is busy; try again")]
    Busy,
    /// The gossip task has stopped (left, shut down, or failed).
    #[error("gossip has stopped")]
    Stopped,
    /// No member of the pool has that name.
    #[error("No node found with name {0:?}")]
    UnknownMember(String),
    /// Only a failed member can be forced out; this one is alive or suspect.
    #[error("node {0:?} is not failed; only a failed node can be forced to leave")]
    NotFailed(String),
}

/// What a member needs to start gossiping: facts about this node and its
/// socket, not user settings. The user's gossip settings
/// (`config::GossipSettings`) are read by the agent, which joins, leaves
/// and reaps; of them gossip itself takes only the encryption key, as its
/// own [`Key`] (the cipher's key, which benches and tests generate).
#[derive(Debug)]
pub struct GossipConfig {
    /// The gossip socket, already bound by the caller (port 0 is fine).
    pub socket: UdpSocket,
    /// The node name.
    pub name: String,
    /// The node ID (kept in the data directory): what this node is.
    pub node_id: uuid::Uuid,
    /// Server or client.
    pub role: Role,
    /// The datacenter.
    pub dc: String,
    /// Where this server answers RPC; `None` for clients.
    pub rpc_addr: Option<SocketAddr>,
    /// The generation of this node's previous life, if the caller kept it
    /// (0 if not). The new generation is larger, so a restart wins over the
    /// previous life even when the clock stepped back in between; without
    /// it, the wall clock in milliseconds orders restarts.
    pub generation_floor: u64,
    /// The pool's encryption key; `None` gossips in the clear.
    pub key: Option<Key>,
    /// The timing profile.
    pub profile: Profile,
}

/// Traffic counters since start. Bytes are UDP payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Bytes received, dropped datagrams included.
    pub bytes_received: u64,
    /// Datagrams received, dropped ones included.
    pub packets_received: u64,
    /// Datagrams that failed to open: wrong key, tampered, truncated, or
    /// in the clear while we encrypt.
    pub dropped_bad_key: u64,
    /// Datagrams larger than the limit.
    pub dropped_oversize: u64,
    /// Datagrams that opened but did not decode, or that foca refused.
    pub dropped_undecodable: u64,
}

/// The handle to a running gossip member.
#[derive(Debug)]
pub struct Gossip {
    /// Requests to the driver task.
    controls: mpsc::Sender<Control>,
    /// The published membership.
    members: watch::Receiver<Arc<Vec<Member>>>,
    /// Set once the pool refused this member's claim to its name.
    refusal: watch::Receiver<Option<Refusal>>,
    /// Traffic counters, written by the driver.
    counters: Arc<Counters>,
    /// Our coordinate and our peers', measured by the driver.
    coordinates: coordinates::Published,
    /// The socket's address.
    local_addr: SocketAddr,
    /// The driver task, awaited on shutdown.
    task: JoinHandle<()>,
}

impl Gossip {
    /// A member alone on a fresh loopback port, for tests that need an
    /// agent's parts without a pool.
    #[cfg(test)]
    pub(crate) async fn alone(name: &str) -> Arc<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a gossip socket");
        Arc::new(
            Self::start(GossipConfig {
                socket,
                name: name.into(),
                node_id: uuid::Uuid::new_v4(),
                role: Role::Server,
                dc: "dc1".into(),
                rpc_addr: None,
                generation_floor: 0,
                key: None,
                profile: Profile::lan(),
            })
            .expect("start gossip"),
        )
    }

    /// Starts gossiping on `config.socket`. The member is alone until it
    /// joins another (or another joins it). Must be called inside a tokio
    /// runtime.
    pub fn start(config: GossipConfig) -> Result<Self, GossipError> {
        let local_addr = config.socket.local_addr().map_err(GossipError::Socket)?;
        let identity = MemberId::with_generation(
            local_addr,
            identity::next_generation(config.generation_floor),
            config.name,
            config.node_id,
            config.role,
            config.dc,
            config.rpc_addr,
        )?;
        let counters = Arc::new(Counters::default());
        let (members_tx, members) = watch::channel(Arc::new(Vec::new()));
        let (refusal_tx, refusal) = watch::channel(None);
        let (controls, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let driver = Driver::new(
            identity,
            config.socket,
            config.key.as_ref().map(crypto::Cipher::new),
            config.profile,
            Arc::clone(&counters),
            members_tx,
            refusal_tx,
        );
        let coordinates = driver.coordinates();
        let task = tokio::spawn(driver.run(control_rx));
        Ok(Self {
            controls,
            members,
            refusal,
            counters,
            coordinates,
            local_addr,
            task,
        })
    }

    /// This member's generation as last published (it changes if the pool
    /// declared this member down and it rejoined): what a caller keeps to
    /// pass as [`GossipConfig::generation_floor`] next time.
    pub fn generation(&self) -> u64 {
        self.members
            .borrow()
            .iter()
            .find(|m| m.addr == self.local_addr)
            .map_or(0, |m| m.generation)
    }

    /// The gossip socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The members this one knows, itself included, sorted by name.
    pub fn members(&self) -> Vec<Member> {
        self.members.borrow().as_ref().clone()
    }

    /// A watch of the membership. Every change is published as a whole new
    /// list; a reader that falls behind sees the latest list, which is all a
    /// reconciler that compares lists needs (no state is ever skipped for
    /// good: the latest list includes everything that still holds).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.members.clone()
    }

    /// A watch that turns `Some` once another live node is found to hold
    /// this member's name: the pool leaves this member out of its view, and
    /// the agent should stop rather than run as if it had joined.
    pub fn refusal(&self) -> watch::Receiver<Option<Refusal>> {
        self.refusal.clone()
    }

    /// This member's network coordinate.
    pub fn coordinate(&self) -> crate::coordinate::Coordinate {
        self.coordinates.get().own.clone()
    }

    /// Every coordinate this member knows, its own included, by node name.
    pub fn coordinates(&self) -> Arc<Coordinates> {
        self.coordinates.get()
    }

    /// Keeps `coordinate` as node `name`'s (`PUT /v1/coordinate/update`),
    /// until the node leaves the pool or a ping brings a newer one.
    /// Refused when it is not of our space or not finite.
    pub fn set_coordinate(
        &self,
        name: &str,
        coordinate: crate::coordinate::Coordinate,
    ) -> Result<(), crate::coordinate::CoordinateError> {
        self.coordinates.insert(name, coordinate)
    }

    /// Traffic counters.
    pub fn stats(&self) -> GossipStats {
        let c = &self.counters;
        let get = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        GossipStats {
            bytes_sent: get(&c.bytes_sent),
            packets_sent: get(&c.packets_sent),
            bytes_received: get(&c.bytes_received),
            packets_received: get(&c.packets_received),
            dropped_bad_key: get(&c.dropped_bad_key),
            dropped_oversize: get(&c.dropped_oversize),
            dropped_undecodable: get(&c.dropped_undecodable),
        }
    }

    fn send(&self, control: Control) -> Result<(), GossipError> {
        self.controls.try_send(control).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => GossipError::Busy,
            mpsc::error::TrySendError::Closed(_) => GossipError::Stopped,
        })
    }

    /// Joins the pool of the member at `addr`: announces to it until it
    /// answers, or until the profile's join timeout.
    pub async fn join(&self, addr: SocketAddr) -> Result<(), GossipError> {
        let (reply, answer) = oneshot::channel();
        self.send(Control::Join { addr, reply })?;
        answer.await.map_err(|_| GossipError::Stopped)?
    }

    /// Leaves the pool gracefully: the departure is gossiped (others see
    /// this member as Left, not Failed), then the member stops.
    pub async fn leave(&self) -> Result<(), GossipError> {
        let (reply, answer) = oneshot::channel();
        self.send(Control::Leave { reply })?;
        answer.await.map_err(|_| GossipError::Stopped)
    }

    /// Marks the failed member `name` as having left, as if it had left
    /// gracefully: the departure is gossiped for it, and the leader
    /// deregisters its node instead of waiting for `reconnect_timeout`.
    pub async fn force_leave(&self, name: &str) -> Result<(), GossipError> {
        let (reply, answer) = oneshot::channel();
        self.send(Control::ForceLeave {
            name: name.to_owned(),
            reply,
        })?;
        answer.await.map_err(|_| GossipError::Stopped)?
    }

    /// Stops without leaving (others will declare this member Failed) and
    /// waits for the task to end.
    pub async fn shutdown(self) {
        let _ = self.controls.try_send(Control::Shutdown);
        drop(self.controls);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "gossip task ended abnormally");
        }
    }
}
