//! Calling servers: one persistent TCP connection per peer, opened with the
//! protocol preface and shared by every caller. Calls are pipelined: each is
//! written as soon as it is made and its answer is matched by id, so a slow
//! snapshot chunk does not hold up a vote. A broken connection fails the
//! calls waiting on it and is replaced on the next call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::frame::{self, FrameError};
use super::message::{Envelope, Request, Response};
use super::preface::{self, PROTOCOL_VERSION, PrefaceError, Refusals};
use super::proof::ProofError;
use super::secure::{Credentials, Io, SecureError};

/// Frames waiting to be written on one connection; callers wait beyond it.
const SEND_QUEUE: usize = 256;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No connection could be made: the request was never sent.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The connection broke after the request was sent: it may or may not
    /// have been carried out.
    #[error("connection to {0} lost before it answered")]
    Lost(SocketAddr),
    /// No answer within the deadline; the request may still be carried out.
    #[error("no answer from {0} in time")]
    Timeout(SocketAddr),
    /// The peer refused the connection at its preface (another protocol
    /// version), or is not a trellis server of this generation: the request
    /// was never sent.
    #[error("{addr}: {source}")]
    Preface {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        source: PrefaceError,
    },
    /// TLS could not be set up (the server's certificate failed the checks,
    /// or it refused ours): the request was never sent.
    #[error("{addr}: {source}")]
    Insecure {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        source: SecureError,
    },
    /// The request could not be encoded (too large).
    #[error("request: {0}")]
    Encode(#[from] FrameError),
    /// The peer could not decode the request.
    #[error("{addr} refused the request: {message}")]
    Refused {
        /// The peer.
        addr: SocketAddr,
        /// What it said.
        message: String,
    },
}

impl RpcError {
    /// Whether the request certainly never reached the peer, so it is safe
    /// to send it elsewhere.
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Preface { .. } | Self::Insecure { .. } | Self::Encode(_)
        )
    }
}

/// A peer's connection slot; its lock is held while connecting.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// Connections to other servers, by address.
#[derive(Debug)]
pub struct Pool {
    /// One slot per peer; the slot's lock is held while connecting, so a
    /// peer that does not answer delays only the callers of that peer.
    peers: Mutex<HashMap<SocketAddr, Slot>>,
    /// How long to wait for a connection, its preface included.
    connect_timeout: Duration,
    /// Rate limit for the warnings of refused prefaces.
    refusals: Refusals,
    /// What this side proves, and requires peers to prove, at connect.
    credentials: Credentials,
    /// The datacenter of the servers this pool dials, when it is another
    /// one: their certificates name `server.<dc>.<domain>`.
    datacenter: Option<String>,
}

impl Pool {
    /// An empty pool whose connection attempts give up after
    /// `connect_timeout`, speaking TLS and proving cluster membership as
    /// `credentials` say (see [`super::secure`]).
    pub fn new(connect_timeout: Duration, credentials: Credentials) -> Self {
        Self {
            peers: Mutex::new(HashMap::new()),
            connect_timeout,
            refusals: Refusals::new(),
            credentials,
            datacenter: None,
        }
    }

    /// An empty pool for the servers of another datacenter, `dc`: as
    /// [`Self::new`], expecting their certificates to name
    /// `server.<dc>.<domain>`.
    pub fn to_datacenter(connect_timeout: Duration, credentials: Credentials, dc: String) -> Self {
        Self {
            datacenter: Some(dc),
            ..Self::new(connect_timeout, credentials)
        }
    }

    /// Makes sure a connection to `addr` is open (opening it if need be)
    /// within `timeout`: a caller that will wait long for an answer (a
    /// blocking query) learns within a short deadline whether the peer is
    /// there at all.
    pub async fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<(), RpcError> {
        match tokio::time::timeout(timeout, self.conn(addr)).await {
            Ok(conn) => conn.map(|_| ()),
            Err(_) => Err(RpcError::Connect {
                addr,
                source: std::io::ErrorKind::TimedOut.into(),
            }),
        }
    }

    /// Sends `req` to `addr` and waits up to `timeout` (connecting included)
    /// for its answer.
    pub async fn call(
        &self,
        addr: SocketAddr,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let conn = tokio::time::timeout_at(deadline, self.conn(addr))
            .await
            .map_err(|_| RpcError::Connect {
                addr,
                source: std::io::ErrorKind::TimedOut.into(),
            })??;
        match tokio::time::timeout_at(deadline, conn.call(req)).await {
            Ok(r) => r,
            Err(_) => Err(RpcError::Timeout(addr)),
        }
    }

    /// Drops the connection to `addr`, if any (a peer that was removed).
    pub fn forget(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Slot>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn conn(&self, addr: SocketAddr) -> Result<Arc<Conn>, RpcError> {
        let slot = self.lock().entry(addr).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.closed.load(Ordering::Acquire)) {
            return Ok(conn.clone());
        }
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            open(addr, &self.credentials, self.datacenter.as_deref()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if let RpcError::Preface {
                    source:
                        PrefaceError::Mismatch { .. }
                        | PrefaceError::Proof(
                            ProofError::Unproven | ProofError::Unkeyed | ProofError::WrongKey,
                        ),
                    ..
                } = &e
                {
                    if self.refusals.warn_now() {
                        tracing::warn!("{e}");
                    } else {
                        tracing::debug!("{e}");
                    }
                }
                return Err(e);
            }
            Err(_) => {
                return Err(RpcError::Connect {
                    addr,
                    source: std::io::ErrorKind::TimedOut.into(),
                });
            }
        };
        let conn = Conn::start(addr, stream);
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// Connects to `addr` (a server of datacenter `dc`, when another one) and
/// exchanges prefaces.
async fn open(
    addr: SocketAddr,
    credentials: &Credentials,
    dc: Option<&str>,
) -> Result<Box<dyn Io>, RpcError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| RpcError::Connect { addr, source })?;
    // Raft messages are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    let mut stream = credentials
        .connect_to(tcp, dc)
        .await
        .map_err(|source| RpcError::Insecure { addr, source })?;
    preface::offer(
        &mut stream,
        PROTOCOL_VERSION,
        credentials.cluster_key.as_ref(),
    )
    .await
    .map_err(|source| RpcError::Preface { addr, source })?;
    Ok(stream)
}

type Waiters = Mutex<HashMap<u64, oneshot::Sender<Response>>>;

/// One live connection: a writer task fed by a bounded queue, a reader task
/// that hands each answer to the caller waiting for its id.
#[derive(Debug)]
struct Conn {
    addr: SocketAddr,
    frames: mpsc::Sender<Vec<u8>>,
    waiting: Arc<Waiters>,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Conn {
    fn start(addr: SocketAddr, stream: Box<dyn Io>) -> Arc<Self> {
        let (read, write) = tokio::io::split(stream);
        let (frames, queue) = mpsc::channel(SEND_QUEUE);
        let waiting = Arc::new(Waiters::default());
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_frames(write, queue, closed.clone()));
        tokio::spawn(read_answers(addr, read, waiting.clone(), closed.clone()));
        Arc::new(Self {
            addr,
            frames,
            waiting,
            next_id: AtomicU64::new(1),
            closed,
        })
    }

    async fn call(&self, req: &Request) -> Result<Response, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = frame::encode(&Envelope { id, body: req })?;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        // Removes the waiter if the caller gives up (timeout, cancellation).
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        // The reader marks the connection closed before failing the waiters,
        // so a waiter added after that is caught here instead of hanging.
        if self.closed.load(Ordering::Acquire) {
            return Err(RpcError::Connect {
                addr: self.addr,
                source: std::io::ErrorKind::ConnectionReset.into(),
            });
        }
        if self.frames.send(bytes).await.is_err() {
            return Err(RpcError::Connect {
                addr: self.addr,
                source: std::io::ErrorKind::BrokenPipe.into(),
            });
        }
        match rx.await {
            Ok(Response::Malformed(message)) => Err(RpcError::Refused {
                addr: self.addr,
                message,
            }),
            Ok(r) => Ok(r),
            Err(_) => Err(RpcError::Lost(self.addr)),
        }
    }
}

struct Forget<'a> {
    waiting: &'a Waiters,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Writes queued frames, flushing whenever the queue runs dry so that
/// pipelined calls share syscalls.
async fn write_frames(
    write: WriteHalf<Box<dyn Io>>,
    mut queue: mpsc::Receiver<Vec<u8>>,
    closed: Arc<AtomicBool>,
) {
    let mut out = BufWriter::with_capacity(64 << 10, write);
    while let Some(bytes) = queue.recv().await {
        if out.write_all(&bytes).await.is_err() {
            break;
        }
        if queue.is_empty() && out.flush().await.is_err() {
            break;
        }
    }
    closed.store(true, Ordering::Release);
}

/// Reads answers until the connection ends, then fails every waiting call.
async fn read_answers(
    addr: SocketAddr,
    read: ReadHalf<Box<dyn Io>>,
    waiting: Arc<Waiters>,
    closed: Arc<AtomicBool>,
) {
    let mut input = BufReader::with_capacity(64 << 10, read);
    let mut buf = Vec::new();
    loop {
        let answer = match frame::read(&mut input, &mut buf).await {
            Ok(()) => frame::decode::<Envelope<Response>>(&buf),
            Err(e) => Err(e),
        };
        match answer {
            Ok(Envelope { id, body }) => {
                let waiter = waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(body);
                }
            }
            Err(FrameError::Closed) => break,
            Err(e) => {
                tracing::debug!(peer = %addr, error = %e, "server RPC connection failed");
                break;
            }
        }
    }
    closed.store(true, Ordering::Release);
    // Dropping the senders wakes every caller with `Lost`.
    waiting.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
