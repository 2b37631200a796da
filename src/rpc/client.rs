//! The client family: what a client agent asks a server. Its writes (the
//! server routes them to the leader), the index a `?consistent` read must
//! wait for, the change stream that keeps its replica current
//! ([`ClientRequest::Follow`], and [`ClientRequest::SnapshotChunk`] for a
//! client behind the server's history: see `catchup`), and the Raft
//! configuration. `link` is the client agent's side of these calls; the
//! server's side is here.
//!
//! A client agent resolves tokens by the hash of their secret and never
//! needs the secret itself, so what a server sends it (the entries of a
//! follow answer here, the catch-up state in `catchup`) carries every ACL
//! token with its secret blanked: a client agent's memory, and anything
//! that reads it, holds no secret to steal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::catchup::{Chunk, Offer, SnapshotCache};
use super::cluster::Configuration;
use super::datacenter::{DatacenterRequest, DatacenterResponse, ForwardError, Slot};
use super::errors::{MembershipError, ReadError, WriteError};
use super::fanout::FollowCache;
use super::types::RaftId;
use crate::catalog::{Applied, Command, Index, Outcome, Replica, Since};

/// Longest a client's follow poll is held open.
pub const MAX_FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// Longest a client agent's request to another datacenter may take there:
/// Consul's longest blocking wait (10 min), its jitter and a margin.
const MAX_FORWARD_WAIT: Duration = Duration::from_secs(11 * 60);
/// Commands in one follow answer, so frames stay small; a client behind by
/// more asks again at once.
const FOLLOW_COMMANDS: usize = 4096;
/// Entries in one follow answer. The proposer keeps an entry under 2 MiB
/// (1 MiB of batch plus the command that crossed it), so an answer stays
/// under 32 MiB, well within the 64 MiB frame limit, as AppendEntries does.
const FOLLOW_ENTRIES: usize = 16;

/// A call from a client agent to a server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientRequest {
    /// A write for the server to route to the leader. Boxed: a command
    /// is large beside the other requests.
    Write(Box<Command>),
    /// The index a `?consistent` read must wait for. The server confirms a
    /// leader and applies that index before answering.
    ConsistentIndex,
    /// What was applied after `after`, once there is something, or nothing
    /// after `wait_ms` (a long poll).
    Follow {
        /// The last index the client applied.
        after: Index,
        /// How long to wait for a change, in milliseconds.
        wait_ms: u32,
    },
    /// The Raft configuration as this server has it.
    Configuration,
    /// Up to `len` bytes (the server caps it) from `offset` of the encoded
    /// state a follow answer offered ([`CatchUp::Snapshot`]).
    SnapshotChunk {
        /// The index of the encoding offered.
        index: Index,
        /// Where in it to start.
        offset: u64,
        /// The most bytes wanted.
        len: u32,
    },
    /// Remove server `id` from the configuration, for an operator at a
    /// client agent (`operator raft remove-peer`). Carries the operator's
    /// token: with ACLs on the server checks `operator:write` itself, so
    /// a client agent's certificate may ask but never decides.
    RemovePeer {
        /// The server to remove.
        id: RaftId,
        /// The ACL token the operator presented, if any.
        token: Option<String>,
    },
    /// The datacenters the server knows, its own first, then by distance
    /// (`/v1/catalog/datacenters` on a client agent; Consul's servers
    /// answer it too).
    Datacenters,
    /// Send `request` on to datacenter `dc` (`?dc=`, a DNS name of
    /// another datacenter): a client agent is in no WAN pool, so its
    /// server carries the request, as Consul's servers do. The remote
    /// server checks the token the request carries.
    Forward {
        /// The datacenter.
        dc: String,
        /// The request, as the remote server will run it.
        request: DatacenterRequest,
        /// How long the remote server may take to answer once reached, in
        /// milliseconds (a blocking query's wait); the server caps it.
        answer_within_ms: u64,
    },
    /// The WAN coordinates of every datacenter's servers
    /// (`/v1/coordinate/datacenters` on a client agent, which has no WAN
    /// pool; Consul's servers answer it too).
    CoordinateDatacenters,
}

/// The answer to a [`ClientRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientResponse {
    /// To [`ClientRequest::Write`].
    Write(Result<Outcome, WriteError>),
    /// To [`ClientRequest::ConsistentIndex`]: the log index to have applied.
    ConsistentIndex(Result<u64, ReadError>),
    /// To [`ClientRequest::Follow`].
    Follow(FollowAnswer),
    /// To [`ClientRequest::Configuration`].
    Configuration(Configuration),
    /// To [`ClientRequest::SnapshotChunk`]: a piece of the encoding the
    /// server holds (another one's index and size when it moved on), or
    /// `None` when it holds none any more.
    SnapshotChunk(Option<Chunk>),
    /// To [`ClientRequest::RemovePeer`].
    RemovePeer(Result<(), MembershipError>),
    /// To [`ClientRequest::Datacenters`].
    Datacenters(Vec<String>),
    /// To [`ClientRequest::Forward`]: the remote datacenter's answer, or
    /// why there was none.
    Forward(Result<DatacenterResponse, ForwardError>),
    /// To [`ClientRequest::CoordinateDatacenters`].
    CoordinateDatacenters(Vec<crate::coordinate::DatacenterCoordinates>),
}

impl ClientRequest {
    /// The request's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Write(_) => "forward",
            Self::ConsistentIndex => "consistent-index",
            Self::Follow { .. } => "follow",
            Self::Configuration => "configuration",
            Self::SnapshotChunk { .. } => "snapshot-chunk",
            Self::RemovePeer { .. } => "remove-peer",
            Self::Datacenters => "datacenters",
            Self::Forward { .. } => "forward-to-datacenter",
            Self::CoordinateDatacenters => "coordinate-datacenters",
        }
    }
}

impl ClientResponse {
    /// The response's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Write(_) => "a write result",
            Self::ConsistentIndex(_) => "a read index",
            Self::Follow(_) => "changes",
            Self::Configuration(_) => "a configuration",
            Self::SnapshotChunk(_) => "a snapshot chunk",
            Self::RemovePeer(_) => "a removal's result",
            Self::Datacenters(_) => "datacenters",
            Self::Forward(_) => "a forwarded answer",
            Self::CoordinateDatacenters(_) => "datacenters' coordinates",
        }
    }
}

/// A server's answer to [`ClientRequest::Follow`].
#[derive(Debug, Serialize, Deserialize)]
pub struct FollowAnswer {
    /// What to apply.
    pub catch_up: CatchUp,
    /// The server's view of the cluster when it answered.
    pub status: ServerStatus,
}

/// What a following client applies to catch up.
#[derive(Debug, Serialize, Deserialize)]
pub enum CatchUp {
    /// The applied entries after the client's index, in order; empty when
    /// nothing changed before the poll ended.
    Entries(Vec<Applied>),
    /// The client is behind the server's history: the server's whole
    /// state, encoded, which the client fetches in chunks
    /// ([`ClientRequest::SnapshotChunk`]).
    Snapshot(Offer),
    /// The client is behind the server's history, and the server could not
    /// encode its state: why.
    Unavailable(String),
}

/// `entries` as a client agent may hold them: every token without its
/// secret. Entries without a token keep their commands as they are.
fn without_secrets(mut entries: Vec<Applied>) -> Vec<Applied> {
    let redacted = |cmd: &Command| match cmd {
        Command::Acl(op) => op.redacted().map(Command::Acl),
        Command::PreparedQuery(op) => op.redacted().map(Command::PreparedQuery),
        _ => None,
    };
    for entry in &mut entries {
        if entry.commands.iter().any(|c| redacted(c).is_some()) {
            entry.commands = entry
                .commands
                .iter()
                .map(|c| redacted(c).unwrap_or_else(|| c.clone()))
                .collect();
        }
    }
    entries
}

/// What a server knows of its cluster, for a client's headers and
/// `/v1/status/*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The leader's RPC address, if one is known and live.
    pub leader: Option<SocketAddr>,
    /// Whether the server may serve default-consistency reads.
    pub leader_live: bool,
    /// Milliseconds since the server last heard from its leader.
    pub last_contact_ms: u64,
    /// The voters' RPC addresses.
    pub peers: Vec<SocketAddr>,
}

/// What a server answers client agents with (consensus implements it).
pub trait ClientHandler: Send + Sync {
    /// Commits a write, through the leader.
    fn write(&self, cmd: Command) -> impl Future<Output = Result<Outcome, WriteError>> + Send;

    /// Confirms a leader and waits until this server applied everything
    /// committed before the call.
    fn linearizable_read(&self) -> impl Future<Output = Result<(), ReadError>> + Send;

    /// The catalog this server applies, which clients follow.
    fn replica(&self) -> &Arc<Replica>;

    /// The encoded state this server keeps for clients behind its history.
    fn snapshot_cache(&self) -> &SnapshotCache;

    /// This server's view of its cluster.
    fn status(&self) -> ServerStatus;

    /// The Raft configuration as this server has it.
    fn configuration(&self) -> Configuration;

    /// Removes server `id` for a caller holding `token`, if the token may
    /// (`operator:write`, when ACLs are on).
    fn remove_peer(
        &self,
        id: RaftId,
        token: Option<String>,
    ) -> impl Future<Output = Result<(), MembershipError>> + Send;

    /// The datacenters this server knows: its own first, then by
    /// estimated round trip, then by name.
    fn datacenters(&self) -> Vec<String>;

    /// The WAN coordinates of every datacenter's servers, by datacenter;
    /// empty without a WAN pool.
    fn coordinate_datacenters(&self) -> Vec<crate::coordinate::DatacenterCoordinates>;
}

/// A follow answer whose entries are encoded already: what the handler
/// hands the connection's writer instead of a [`ClientResponse`], which
/// splices the bytes into the answer's frame (`server::follow_frame`).
#[derive(Debug, Clone)]
pub struct SharedFollow {
    /// `CatchUp::Entries(…)`, encoded, shared by every answer of its range.
    pub catch_up: Arc<[u8]>,
    /// The server's view, per answer.
    pub status: ServerStatus,
}

/// What the server sends back for a client call: an answer, or a follow
/// answer whose entries are encoded already (`fanout`).
#[derive(Debug)]
pub(super) enum ClientAnswer {
    /// Any answer, encoded when sent.
    Response(ClientResponse),
    /// Entries to follow, encoded once for every poll of their range.
    Follow(SharedFollow),
}

impl From<ClientResponse> for ClientAnswer {
    fn from(r: ClientResponse) -> Self {
        Self::Response(r)
    }
}

/// Carries out one client call; a forward to another datacenter goes
/// through `datacenters`, the agent's side of the datacenter family, and
/// follow polls share their entries' encoding through `follows`.
pub(super) async fn handle(
    handler: &impl ClientHandler,
    datacenters: &Slot,
    follows: &FollowCache,
    req: ClientRequest,
) -> ClientAnswer {
    match req {
        ClientRequest::Write(cmd) => ClientResponse::Write(handler.write(*cmd).await),
        ClientRequest::ConsistentIndex => ClientResponse::ConsistentIndex(
            handler
                .linearizable_read()
                .await
                .map(|()| handler.replica().applied_index()),
        ),
        ClientRequest::Follow { after, wait_ms } => {
            return follow(handler, follows, after, wait_ms).await;
        }
        ClientRequest::Configuration => ClientResponse::Configuration(handler.configuration()),
        ClientRequest::SnapshotChunk { index, offset, len } => {
            ClientResponse::SnapshotChunk(handler.snapshot_cache().chunk(index, offset, len))
        }
        ClientRequest::RemovePeer { id, token } => {
            ClientResponse::RemovePeer(handler.remove_peer(id, token).await)
        }
        ClientRequest::Datacenters => ClientResponse::Datacenters(handler.datacenters()),
        ClientRequest::Forward {
            dc,
            request,
            answer_within_ms,
        } => {
            let within = Duration::from_millis(answer_within_ms).min(MAX_FORWARD_WAIT);
            ClientResponse::Forward(datacenters.forward(dc, request, within).await)
        }
        ClientRequest::CoordinateDatacenters => {
            ClientResponse::CoordinateDatacenters(handler.coordinate_datacenters())
        }
    }
    .into()
}

/// Answers a client's follow poll: waits until this server has applied past
/// `after` (or `wait_ms` passes), then sends what follows `after`, encoded
/// once for every client at `after` (`fanout`), or offers the whole state,
/// encoded once for every client behind, when `after` is older than the
/// history.
async fn follow(
    handler: &impl ClientHandler,
    follows: &FollowCache,
    after: Index,
    wait_ms: u32,
) -> ClientAnswer {
    let replica = handler.replica();
    let mut applied = replica.subscribe();
    let wait = Duration::from_millis(wait_ms.into()).min(MAX_FOLLOW_WAIT);
    // Timing out is an answer too: nothing changed.
    let _ = tokio::time::timeout(wait, applied.wait_for(|&i| i > after)).await;
    let pending = replica.pending(after, FOLLOW_ENTRIES, FOLLOW_COMMANDS);
    // The others at `after` had this range encoded already: no need to
    // decode what the history holds as bytes.
    if let Some(last) = pending.last()
        && let Some(catch_up) = follows.cached(after, last)
    {
        return ClientAnswer::Follow(SharedFollow {
            catch_up,
            status: handler.status(),
        });
    }
    let catch_up = match pending.decode() {
        Since::Entries(entries) if !entries.is_empty() => {
            let last = entries.last().map_or(after, |e| e.index);
            let encode = || postcard::to_allocvec(&CatchUp::Entries(without_secrets(entries)));
            match follows.encoded(after, last, encode) {
                Ok(catch_up) => {
                    return ClientAnswer::Follow(SharedFollow {
                        catch_up,
                        status: handler.status(),
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "applied entries could not be encoded");
                    CatchUp::Unavailable(format!("applied entries could not be encoded: {e}"))
                }
            }
        }
        Since::Entries(entries) => CatchUp::Entries(entries),
        Since::TooOld => match handler.snapshot_cache().offer(replica).await {
            Ok(offer) => CatchUp::Snapshot(offer),
            Err(e) => {
                tracing::error!(error = %e, "a client agent behind the history cannot catch up");
                CatchUp::Unavailable(e.to_string())
            }
        },
    };
    ClientResponse::Follow(FollowAnswer {
        catch_up,
        status: handler.status(),
    })
    .into()
}
