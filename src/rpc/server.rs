//! Serving server RPC: the accept loop, the preface that opens each
//! connection, one reader and one writer per connection, and the dispatch of
//! each request to the [`Handler`] of its family.
//!
//! Requests on a connection are handled concurrently (up to
//! `IN_FLIGHT_PER_CONN`; beyond that the reader stops reading, which pushes
//! back on the peer through TCP) and answered as they finish.
//!
//! One IP holds at most [`ConnLimits::max_conns_per_client`] connections
//! (Consul's `rpc_max_conns_per_client`): beyond, a new one is closed at
//! accept, before it is read. A connection that has not sent its preface
//! within [`ConnLimits::handshake_timeout`] is closed, so silent
//! connections cannot hold the slots new servers and agents need.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::{
    self, CatchUp, ClientAnswer, ClientHandler, ClientResponse, FollowAnswer, SharedFollow,
};
use super::cluster::{self, ClusterHandler};
use super::datacenter::Slot;
use super::fanout::FollowCache;
use super::frame::{self, FrameError, MAX_FRAME};
use super::message::{Envelope, Request, Response};
use super::preface::{self, PROTOCOL_VERSION, PrefaceError, Refusals};
use super::proof::ProofError;
use super::raft::{self, RaftHandler};
use super::secure::{Credentials, Peer, SecureError};
use crate::per_client::PerClient;

/// Connections served at once; more wait in the listen backlog. Every
/// client agent holds one (its change stream), so this is the number of
/// clients a server can serve, beside its peers.
const MAX_CONNECTIONS: usize = 4096;
/// Each connection's read and write buffers. Large frames (snapshots,
/// batches of entries) bypass them; small ones (heartbeats, polls) fit.
const CONN_BUFFER: usize = 16 << 10;
/// Requests handled at once on one connection.
const IN_FLIGHT_PER_CONN: usize = 256;

/// What one client may hold of server RPC (`limits { … }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections one IP may hold at once; 0 is no cap.
    pub max_conns_per_client: usize,
    /// How long a new connection may take to send its preface; `None`
    /// waits for ever.
    pub handshake_timeout: Option<Duration>,
}

impl Default for ConnLimits {
    /// The agent's defaults.
    fn default() -> Self {
        Self {
            max_conns_per_client: crate::config::defaults::RPC_MAX_CONNS_PER_CLIENT,
            handshake_timeout: Some(crate::config::defaults::RPC_HANDSHAKE_TIMEOUT),
        }
    }
}

/// What a server answers every family with: consensus implements the
/// handler of each.
pub trait Handler: RaftHandler + ClusterHandler + ClientHandler + 'static {}

impl<T: RaftHandler + ClusterHandler + ClientHandler + 'static> Handler for T {}

/// Serves `listener` with `handler` under `limits` until `shutdown` is
/// cancelled, refusing the datacenter family (a server that serves no
/// other datacenter).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    credentials: Credentials,
    limits: ConnLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let none = Arc::new(Slot::default());
    serve_with(listener, handler, none, credentials, limits, shutdown).await
}

/// [`serve`], answering the datacenter family (and client agents'
/// forwards) with what the agent installs in `datacenters`.
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    datacenters: Arc<Slot>,
    credentials: Credentials,
    limits: ConnLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let follows = Arc::new(FollowCache::default());
    let per_client = PerClient::new(limits.max_conns_per_client);
    let refusals = Arc::new(Refusals::new());
    let over_cap = Refusals::new();
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        // Out of file descriptors and the like: the step pauses and tries
        // again, serving the connections we have meanwhile.
        let Some((stream, peer)) = crate::accept::next(&listener, &shutdown, "server RPC").await
        else {
            break;
        };
        let Some(client_slot) = per_client.try_take(peer.ip()) else {
            // Closed unread, as Consul does: the peer sees its connection
            // end before the preface, everyone else is served.
            refused_over_cap(&over_cap, peer.ip(), per_client.max());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (handler, token, refusals) = (handler.clone(), shutdown.clone(), refusals.clone());
        let (credentials, timeout) = (credentials.clone(), limits.handshake_timeout);
        let (datacenters, follows) = (datacenters.clone(), follows.clone());
        conns.spawn(async move {
            let served = connection(
                stream,
                handler,
                datacenters,
                follows,
                credentials,
                timeout,
                token,
            );
            match served.await {
                Ok(()) => {}
                // A peer that spoke, but not our protocol: worth a warning.
                Err(Ended::Refused(
                    e @ (PrefaceError::Mismatch { .. }
                    | PrefaceError::Missing
                    | PrefaceError::Proof(
                        ProofError::Unproven | ProofError::Unkeyed | ProofError::WrongKey,
                    )),
                )) if refusals.warn_now() => {
                    tracing::warn!(%peer, "refused a server RPC connection: {e}");
                }
                Err(Ended::Insecure(
                    e @ (SecureError::PlainRefused | SecureError::Handshake(_)),
                )) if refusals.warn_now() => {
                    tracing::warn!(%peer, "refused a server RPC connection: {e}");
                }
                Err(Ended::Insecure(e)) => {
                    tracing::debug!(%peer, "refused a server RPC connection: {e}");
                }
                // Or one that hung up or stayed silent (a port probe).
                Err(Ended::Refused(e)) => {
                    tracing::debug!(%peer, "refused a server RPC connection: {e}");
                }
                Err(Ended::Frame(e)) => {
                    tracing::debug!(%peer, error = %e, "server RPC connection ended");
                }
            }
            drop((permit, client_slot));
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
    Ok(())
}

/// Reports a connection closed because its IP is at the cap: a warning
/// now and then (a flood would write one per attempt), debug otherwise.
fn refused_over_cap(refusals: &Refusals, ip: IpAddr, max: usize) {
    let message = "refused a server RPC connection: the client is at \
                   limits.rpc_max_conns_per_client";
    if refusals.warn_now() {
        tracing::warn!(client = %ip, max, "{message}");
    } else {
        tracing::debug!(client = %ip, max, "{message}");
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum Ended {
    /// Refused before its preface: plain where TLS is required, or a TLS
    /// handshake that failed.
    #[error(transparent)]
    Insecure(SecureError),
    /// Refused at its preface.
    #[error(transparent)]
    Refused(PrefaceError),
    /// A frame could not be read.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

async fn connection<H: Handler>(
    stream: TcpStream,
    handler: Arc<H>,
    datacenters: Arc<Slot>,
    follows: Arc<FollowCache>,
    credentials: Credentials,
    handshake_timeout: Option<Duration>,
    shutdown: CancellationToken,
) -> Result<(), Ended> {
    // TLS (when configured), the preface and the membership proof, all
    // within the handshake timeout.
    let handshake = async {
        let (mut stream, peer) = credentials.accept(stream).await.map_err(Ended::Insecure)?;
        preface::accept(
            &mut stream,
            PROTOCOL_VERSION,
            credentials.cluster_key.as_ref(),
        )
        .await
        .map_err(Ended::Refused)?;
        Ok((stream, peer))
    };
    let timed = async {
        match handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, handshake)
                .await
                .unwrap_or(Err(Ended::Refused(PrefaceError::Timeout(limit)))),
            None => handshake.await,
        }
    };
    let (stream, peer) = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        r = timed => r?,
    };
    let (read, write) = tokio::io::split(stream);
    let (answers, mut queue) = mpsc::channel::<Vec<u8>>(IN_FLIGHT_PER_CONN);
    let writer = tokio::spawn(async move {
        let mut out = BufWriter::with_capacity(CONN_BUFFER, write);
        while let Some(bytes) = queue.recv().await {
            out.write_all(&bytes).await?;
            if queue.is_empty() {
                out.flush().await?;
            }
        }
        Ok::<_, std::io::Error>(())
    });
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONN));
    let mut input = BufReader::with_capacity(CONN_BUFFER, read);
    let mut buf = Vec::new();
    let mut handlers = JoinSet::new();
    let result = loop {
        let read = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            r = frame::read(&mut input, &mut buf) => r,
        };
        match read {
            Ok(()) => {}
            Err(FrameError::Closed) => break Ok(()),
            Err(e) => break Err(e),
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break Ok(());
        };
        let (handler, answers) = (handler.clone(), answers.clone());
        let (datacenters, follows) = (datacenters.clone(), follows.clone());
        match frame::decode::<Envelope<Request>>(&buf) {
            Ok(Envelope { id, body }) => {
                handlers.spawn(async move {
                    // Boxed: the future of any family's call is as large
                    // as the largest (Raft's), and a task moves its future
                    // whole; a follow poll per client per write should
                    // not copy kilobytes.
                    let reply = Box::pin(handle(&*handler, &datacenters, &follows, peer, body));
                    send(&answers, id, reply.await).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Without an id there is nobody to answer; a peer that sends
                // garbage loses its connection.
                tracing::warn!(error = %e, "undecodable server RPC frame");
                break Err(e);
            }
        }
        while handlers.try_join_next().is_some() {}
    };
    handlers.shutdown().await;
    drop(answers);
    let _ = writer.await;
    Ok(result?)
}

/// What a handler answers: a response, or a follow answer whose entries
/// are encoded already.
enum Reply {
    Response(Response),
    Follow(SharedFollow),
}

async fn send(answers: &mpsc::Sender<Vec<u8>>, id: u64, reply: Reply) {
    let encoded = match &reply {
        Reply::Response(body) => frame::encode(&Envelope { id, body }),
        Reply::Follow(shared) => follow_frame(id, shared),
    };
    let bytes = match encoded {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "server RPC answer could not be encoded");
            match frame::encode(&Envelope {
                id,
                body: &Response::Malformed(format!("answer could not be encoded: {e}")),
            }) {
                Ok(b) => b,
                Err(_) => return,
            }
        }
    };
    // The connection may be gone; the peer then sees its call fail.
    let _ = answers.send(bytes).await;
}

/// Hands one request to the handler of its family. Raft and cluster
/// requests come only from servers of this datacenter, datacenter requests
/// from servers of any: a peer that showed a client's certificate is
/// refused them.
async fn handle<H: Handler>(
    handler: &H,
    datacenters: &Slot,
    follows: &FollowCache,
    peer: Peer,
    req: Request,
) -> Reply {
    let allowed = match req {
        Request::Client(_) => true,
        Request::Datacenter(_) => peer.may_act_as_remote_server(),
        Request::Raft(_) | Request::Cluster(_) => peer.may_act_as_server(),
    };
    if !allowed {
        return Reply::Response(Response::Malformed(
            if matches!(req, Request::Datacenter(_)) {
                "refused: this connection showed a client certificate, and requests from another \
                 datacenter need a server certificate of some datacenter"
            } else {
                "refused: this connection showed a client certificate, and Raft and cluster \
                 requests need a server certificate"
            }
            .into(),
        ));
    }
    Reply::Response(match req {
        Request::Raft(r) => Response::Raft(raft::handle(handler, r).await),
        Request::Cluster(r) => Response::Cluster(cluster::handle(handler, r).await),
        Request::Client(r) => match client::handle(handler, datacenters, follows, r).await {
            ClientAnswer::Response(r) => Response::Client(r),
            ClientAnswer::Follow(shared) => return Reply::Follow(shared),
        },
        Request::Datacenter(r) => Response::Datacenter(datacenters.serve(r).await),
    })
}

/// The frame of the answer to call `id` carrying `answer`: what
/// [`frame::encode`] gives for `Envelope { id, Response::Client(
/// ClientResponse::Follow(FollowAnswer { catch_up, status })) }`, with the
/// shared bytes copied in rather than encoded again (`fanout`). The frame
/// is byte for byte what encoding the whole envelope gives (postcard
/// writes a struct's fields one after the other, with nothing around
/// them), so the client's side and the protocol version do not change.
fn follow_frame(id: u64, answer: &SharedFollow) -> Result<Vec<u8>, FrameError> {
    // The envelope with an empty catch-up gives the head (id and the
    // variants' tags) and the status' bytes; the empty catch-up between
    // them is replaced by the shared one.
    let empty = postcard::to_allocvec(&CatchUp::Entries(Vec::new()))?;
    let status = postcard::to_allocvec(&answer.status)?;
    let whole = frame::encode(&Envelope {
        id,
        body: Response::Client(ClientResponse::Follow(FollowAnswer {
            catch_up: CatchUp::Entries(Vec::new()),
            status: answer.status.clone(),
        })),
    })?;
    let head_len = whole.len() - empty.len() - status.len();
    debug_assert_eq!(whole[head_len..], [&empty[..], &status[..]].concat());
    let len = head_len - 4 + answer.catch_up.len() + status.len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut out = Vec::with_capacity(4 + len);
    // `len <= MAX_FRAME` fits in a u32.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&whole[4..head_len]);
    out.extend_from_slice(&answer.catch_up);
    out.extend_from_slice(&status);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Applied, Command, Index, KvOp, KvVerb};
    use crate::rpc::client::ServerStatus;

    fn entry(index: Index, key: &str) -> Applied {
        let mut op = KvOp::new(KvVerb::Set, key);
        op.value = vec![7; 40];
        Applied {
            index,
            time: 1_700_000_000_000 + index,
            commands: vec![Command::Kv(op)].into(),
        }
    }

    #[test]
    fn a_shared_frame_is_the_frame_of_the_whole_answer() {
        let status = ServerStatus {
            leader: Some("127.0.0.1:8300".parse().unwrap()),
            leader_live: true,
            last_contact_ms: 300,
            peers: vec!["127.0.0.1:8300".parse().unwrap()],
        };
        for entries in [
            vec![],
            vec![entry(5, "a")],
            vec![entry(5, "a"), entry(6, "b")],
        ] {
            let cache = FollowCache::default();
            let last = entries.last().map_or(4, |e| e.index);
            let catch_up = cache
                .encoded(4, last, || {
                    postcard::to_allocvec(&CatchUp::Entries(entries.clone()))
                })
                .unwrap();
            let shared = SharedFollow {
                catch_up,
                status: status.clone(),
            };
            for id in [0, 1, 300, u64::MAX] {
                let whole = frame::encode(&Envelope {
                    id,
                    body: Response::Client(ClientResponse::Follow(FollowAnswer {
                        catch_up: CatchUp::Entries(entries.clone()),
                        status: status.clone(),
                    })),
                })
                .unwrap();
                assert_eq!(follow_frame(id, &shared).unwrap(), whole);
            }
        }
    }
}
