//! Serving server RPC: the accept loop, one reader and one writer per
//! connection, and the dispatch of each request to consensus.
//!
//! Requests on a connection are handled concurrently (up to
//! [`IN_FLIGHT_PER_CONN`]; beyond that the reader stops reading, which pushes
//! back on the peer through TCP) and answered as they finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::frame::{self, FrameError};
use super::message::{Changes, Envelope, Follow, Request, Response, ServerStatus};
use crate::catalog::{Index, Since};
use crate::consensus::Consensus;

/// Connections served at once; more wait in the listen backlog. Every
/// client agent holds one (its change stream), so this is the number of
/// clients a server can serve, beside its peers.
const MAX_CONNECTIONS: usize = 4096;
/// Each connection's read and write buffers. Large frames (snapshots,
/// batches of entries) bypass them; small ones (heartbeats, polls) fit.
const CONN_BUFFER: usize = 16 << 10;
/// Requests handled at once on one connection.
const IN_FLIGHT_PER_CONN: usize = 256;
/// Longest a client's follow poll is held open.
pub const MAX_FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// Commands in one follow answer, so frames stay small; a client behind by
/// more asks again at once.
const FOLLOW_COMMANDS: usize = 4096;
/// Entries in one follow answer. The proposer keeps an entry under 2 MiB
/// (1 MiB of batch plus the command that crossed it), so an answer stays
/// under 32 MiB, well within the 64 MiB frame limit, as AppendEntries does.
const FOLLOW_ENTRIES: usize = 16;

/// Serves `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    consensus: Arc<Consensus>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(r) => r,
                // Out of file descriptors and the like: keep serving the
                // connections we have.
                Err(e) => {
                    tracing::warn!(error = %e, "server RPC accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (consensus, token) = (consensus.clone(), shutdown.clone());
        conns.spawn(async move {
            if let Err(e) = connection(stream, consensus, token).await {
                tracing::debug!(%peer, error = %e, "server RPC connection ended");
            }
            drop(permit);
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    consensus: Arc<Consensus>,
    shutdown: CancellationToken,
) -> Result<(), FrameError> {
    let (read, write) = stream.into_split();
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
        let (consensus, answers) = (consensus.clone(), answers.clone());
        match frame::decode::<Envelope<Request>>(&buf) {
            Ok(Envelope { id, body }) => {
                handlers.spawn(async move {
                    let body = handle(&consensus, body).await;
                    send(&answers, id, &body).await;
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
    result
}

async fn send(answers: &mpsc::Sender<Vec<u8>>, id: u64, body: &Response) {
    let bytes = match frame::encode(&Envelope { id, body }) {
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

/// Carries out one request.
async fn handle(consensus: &Consensus, req: Request) -> Response {
    let me = consensus.node_id();
    match req {
        Request::AppendEntries { to, .. }
        | Request::InstallSnapshot { to, .. }
        | Request::Vote { to, .. }
            if to != me =>
        {
            Response::NotHere { is: me }
        }
        Request::AppendEntries { rpc, .. } => {
            let leader = rpc.vote.leader_id().voted_for();
            let result = consensus.raft().append_entries(rpc).await;
            if let (Ok(r), Some(leader)) = (&result, leader)
                && !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))
            {
                consensus.heard_from_leader(leader);
            }
            Response::AppendEntries(result)
        }
        Request::InstallSnapshot { rpc, .. } => {
            Response::InstallSnapshot(consensus.raft().install_snapshot(rpc).await)
        }
        Request::Vote { rpc, .. } => Response::Vote(consensus.raft().vote(rpc).await),
        Request::Write(cmd) => Response::Write(consensus.write_as_leader(cmd).await),
        Request::ReadIndex => Response::ReadIndex(consensus.read_index_as_leader().await),
        Request::Hello(hello) => Response::Hello(consensus.hello(hello)),
        Request::Join(member) => Response::Done(consensus.join(member).await),
        Request::Remove(id) => Response::Done(consensus.remove_server(id).await),
        Request::Forward(cmd) => Response::Write(consensus.write(cmd).await),
        Request::ConsistentIndex => Response::ReadIndex(
            consensus
                .linearizable_read()
                .await
                .map(|()| consensus.replica().applied_index()),
        ),
        Request::Follow { after, wait_ms } => follow(consensus, after, wait_ms).await,
        Request::Configuration => Response::Configuration(consensus.configuration()),
    }
}

/// Answers a client's follow poll: waits until this server has applied past
/// `after` (or `wait_ms` passes), then sends what follows `after`, or the
/// whole state when `after` is older than the history.
async fn follow(consensus: &Consensus, after: Index, wait_ms: u32) -> Response {
    let replica = consensus.replica();
    let mut applied = replica.subscribe();
    let wait = Duration::from_millis(wait_ms.into()).min(MAX_FOLLOW_WAIT);
    // Timing out is an answer too: nothing changed.
    let _ = tokio::time::timeout(wait, applied.wait_for(|&i| i > after)).await;
    let changes = match replica.since(after, FOLLOW_ENTRIES, FOLLOW_COMMANDS) {
        Since::Entries(entries) => Changes::Entries(entries),
        Since::TooOld => Changes::Snapshot(replica.snapshot()),
    };
    Response::Follow(Follow {
        changes,
        status: ServerStatus {
            leader: consensus.leader(),
            leader_live: consensus.leader_live(),
            last_contact_ms: u64::try_from(consensus.last_contact().as_millis())
                .unwrap_or(u64::MAX),
            peers: consensus.peers(),
        },
    })
}
