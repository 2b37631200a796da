//! The HTTP listener: accepts connections, caps them per client IP and in
//! all, and serves each with hyper's HTTP/1 under header, body and idle
//! timeouts, so that no client can hold connections it does not use.
//!
//! - A client IP at `limits.http_max_conns_per_client` gets a fixed 429
//!   answer and its new connection closed, as Consul's connection limiter
//!   does; its open connections and every other client are served.
//! - All clients together hold at most what the open-file limit leaves
//!   after the other listeners' caps ([`connections_within`]); beyond, a
//!   fixed 503 and close, so HTTP never takes the descriptors DNS over TCP
//!   and server RPC need.
//! - A request's headers must arrive within `limits.http_read_header_timeout`
//!   of its first byte, and a new connection's first request within that
//!   time of the accept: a half-sent request or a silent connection is
//!   closed (Consul sets no such timeout, so 60 half-sent requests held
//!   their connections for ever).
//! - A request's body must arrive in full within
//!   `limits.http_read_body_timeout` of its headers; a body sent too slowly
//!   fails its read, so the request is answered 400 and the connection
//!   closed, instead of holding an admission slot.
//! - Between requests, a keep-alive connection may stay idle for
//!   `limits.http_idle_timeout`.
//!
//! hyper's own header timeout also runs while a keep-alive connection waits
//! for its next request, which would make the idle time the header time; so
//! both are kept here instead, by a watchdog per connection that follows the
//! connection's phase: reading a request head, running a request, idle
//! (`watchdog.rs`).
//!
//! Every request carries its client's address ([`ClientAddr`]) into the
//! API, where admission counts parked blocking queries per client.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::Api;
use super::watchdog::{BUSY, PhaseCell, Running, watchdog};
use crate::config::LimitsSettings;
use crate::per_client::{PerClient, Slot};
use crate::tls::Tls;

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientAddr(pub(super) SocketAddr);

/// What a client at its connection cap reads before its connection closes:
/// a 429, as Consul answers, naming the setting.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
Content-Type: text/plain\r\n\
Content-Length: 110\r\n\
Connection: close\r\n\
\r\n\
Too many concurrent connections from this client address (limits.http_max_conns_per_client); retry with fewer\n";

/// What a client reads when the server holds all the connections it may.
const TOO_MANY_IN_ALL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain\r\n\
Content-Length: 21\r\n\
Connection: close\r\n\
\r\n\
Too many connections\n";

/// How long a refused connection is given to take its 429 and close: its
/// request is read and thrown away meanwhile, so that closing does not
/// reset the connection before the client read the answer.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Refused connections waiting out their grace at once. Each holds a
/// descriptor; beyond this many, a refused connection gets its answer
/// written and is closed at once, so a flood of refused connections
/// cannot hold descriptors either.
const REFUSALS_AT_ONCE: usize = 64;

/// Descriptors kept for everything but HTTP connections: the DNS TCP and
/// server RPC listeners' own caps (1,024 and 4,096), and 1,024 for the
/// database, gossip, health checks and calls out.
const RESERVED_FILES: u64 = 1024 + 4096 + 1024;

/// Fewest HTTP connections allowed in all, however low the open-file limit.
const MIN_CONNECTIONS: usize = 256;

/// How long a client gets to finish its TLS handshake: Consul's
/// `limits.https_handshake_timeout` default.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection caps one agent's HTTP and HTTPS listeners share: a
/// client's connections count against one `http_max_conns_per_client`
/// whichever port they use, and both draw on one budget of descriptors.
#[derive(Debug, Clone)]
pub(super) struct Caps {
    per_client: Arc<PerClient>,
    in_all: Arc<Semaphore>,
}

impl Caps {
    pub(super) fn new(limits: &LimitsSettings) -> Self {
        Self {
            per_client: PerClient::new(limits.http_max_conns_per_client),
            in_all: Arc::new(Semaphore::new(connections_within(open_files()))),
        }
    }
}

/// Serves `api` on `listener` under `limits` and `caps` until `shutdown` is
/// cancelled, then lets every connection finish its request (parked
/// blocking queries answer at once on the same signal).
///
/// With `tls`, every connection is HTTPS: its handshake runs in the
/// connection's own task, under the same per-client and overall caps, and
/// must finish within [`TLS_HANDSHAKE_TIMEOUT`].
pub(super) async fn serve(
    listener: TcpListener,
    api: Api,
    limits: &LimitsSettings,
    tls: Option<Arc<Tls>>,
    caps: Caps,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Caps { per_client, in_all } = caps;
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let timeouts = Timeouts {
        read_header: limits.http_read_header_timeout,
        read_body: limits.http_read_body_timeout,
        idle: limits.http_idle_timeout,
    };
    let mut conns = JoinSet::new();
    while let Some((stream, peer)) = crate::accept::next(&listener, &shutdown, "HTTP").await {
        while conns.try_join_next().is_some() {}
        // Answers go out as they are written, not held back for a delayed
        // ACK (Go's servers, Consul's among them, do the same). Best
        // effort: a connection that refuses it still works.
        let _ = stream.set_nodelay(true);
        // The client's own cap first: a client over it takes no slot of all.
        // An HTTPS client expects a TLS handshake, not a plain answer: it
        // is closed without one.
        let Some(slot) = per_client.try_take(peer.ip()) else {
            if tls.is_some() {
                tracing::debug!(%peer, "HTTPS client at limits.http_max_conns_per_client, closing");
                continue;
            }
            tracing::debug!(%peer, "client at limits.http_max_conns_per_client, answering 429");
            match refusals.clone().try_acquire_owned() {
                Ok(permit) => {
                    conns.spawn(async move {
                        refuse(stream, TOO_MANY_CONNECTIONS).await;
                        drop(permit);
                    });
                }
                Err(_) => refuse_now(&stream, TOO_MANY_CONNECTIONS),
            }
            continue;
        };
        let Ok(permit) = in_all.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many HTTP connections in all, refusing");
            if tls.is_none() {
                refuse_now(&stream, TOO_MANY_IN_ALL);
            }
            continue;
        };
        let (api, token, tls) = (api.clone(), shutdown.clone(), tls.clone());
        conns.spawn(async move {
            match tls {
                None => connection(stream, peer, api, timeouts, slot, token).await,
                Some(tls) => {
                    if let Some(stream) = handshake(&tls, stream, peer).await {
                        connection(stream, peer, api, timeouts, slot, token).await;
                    }
                }
            }
            drop(permit);
        });
    }
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// The TLS handshake of an HTTPS connection, with the configuration in
/// force now (SIGHUP swaps it for later ones); `None` when it fails or
/// takes too long.
async fn handshake(
    tls: &Tls,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let config = tls.https_server()?;
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "HTTPS handshake refused");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTPS handshake timed out");
            None
        }
    }
}

/// Answers a refused connection with `answer` and closes it.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_GRACE, async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes too: closing with
        // unread bytes would send a reset that can destroy the answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Writes `answer` if the socket takes it at once (a new socket's buffer
/// does), and closes the connection without waiting for anything.
fn refuse_now(stream: &TcpStream, answer: &[u8]) {
    let _ = stream.try_write(answer);
}

/// HTTP connections allowed in all with `open_files` descriptors.
fn connections_within(open_files: u64) -> usize {
    let left = open_files.saturating_sub(RESERVED_FILES);
    usize::try_from(left)
        .unwrap_or(usize::MAX)
        .clamp(MIN_CONNECTIONS, Semaphore::MAX_PERMITS)
}

/// The process's open-file limit (the agent raised it at start), or a
/// guess as low as the usual default when it cannot be read.
fn open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    }
}

/// The two timeouts of a connection; `None`: none.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// From a new connection or a request's first byte to its last header.
    read_header: Option<Duration>,
    /// From a request's last header to its body's last byte.
    read_body: Option<Duration>,
    /// Between requests.
    idle: Option<Duration>,
}

/// Serves one connection until it closes, times out or the server stops.
/// Generic over the stream, so a TLS stream is served the same way.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    api: Api,
    timeouts: Timeouts,
    _slot: Slot,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Arc::new(PhaseCell::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: phase.clone(),
    });
    let requests = phase.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut request = request.map(|body| timed(body, timeouts.read_body));
        request.extensions_mut().insert(ClientAddr(peer));
        let running = Running::start(requests.clone());
        let api = api.clone();
        async move {
            let response = api.oneshot(request).await;
            drop(running);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // The watchdog below keeps the header timeout; hyper's would also
        // cut keep-alive connections at the header time.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    // What ends a connection besides its client: its watchdog, and the
    // server stopping. They wait apart from `conn`, polled only when they
    // were woken: a connection is woken for every request it answers, and
    // polling them each time (each poll of a waiting `Notify` takes its
    // lock, and the stop signal's is one lock for every connection) cost
    // a twentieth of a parked query's answer.
    let mut ends: FuturesUnordered<Pin<Box<dyn Future<Output = End> + Send + '_>>> =
        FuturesUnordered::new();
    let phase = &*phase;
    ends.push(Box::pin(async move {
        End::TimedOut(watchdog(phase, timeouts.read_header, timeouts.idle).await)
    }));
    ends.push(Box::pin(async {
        shutdown.cancelled().await;
        End::Stopping
    }));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(error) = r {
                    tracing::debug!(%peer, %error, "HTTP connection ended");
                }
                return;
            }
            Some(end) = ends.next() => match end {
                End::TimedOut(what) => {
                    // Dropping the connection closes the socket.
                    tracing::debug!(%peer, "HTTP connection closed: {what}");
                    return;
                }
                End::Stopping => {
                    // A connection between requests, or still sending one,
                    // has nothing to finish: close it now rather than wait
                    // out its timeout. One running a request answers it
                    // first.
                    if phase.get() != BUSY {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                }
            },
        }
    }
}

/// Why a connection ends, other than its client closing it.
enum End {
    /// Its watchdog closed it, saying why.
    TimedOut(&'static str),
    /// The server is stopping.
    Stopping,
}

/// `body`, which must end within `limit` from now; a body that is already
/// complete (no body, or all of it read with the headers) has nothing to
/// time and costs no timer.
fn timed(body: Incoming, limit: Option<Duration>) -> Body {
    use hyper::body::Body as _;
    match limit {
        Some(limit) if !body.is_end_stream() => Body::new(TimedBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }),
        _ => Body::new(body),
    }
}

/// A request body whose read fails once its deadline has passed.
struct TimedBody {
    /// The body as hyper reads it.
    inner: Incoming,
    /// When the body must be complete.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The limit, for the error.
    limit: Duration,
}

/// A body that was not complete in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (limits.http_read_body_timeout)")]
struct BodyTimeout(Duration);

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout(self.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's stream that tells its phase when bytes arrive.
struct Watched<S> {
    inner: S,
    phase: Arc<PhaseCell>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.bytes_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusals_are_well_formed_answers() {
        for (answer, status) in [
            (TOO_MANY_CONNECTIONS, "HTTP/1.1 429 Too Many Requests\r\n"),
            (TOO_MANY_IN_ALL, "HTTP/1.1 503 Service Unavailable\r\n"),
        ] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(status), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, body.len(), "{head}");
        }
    }

    #[test]
    fn http_leaves_descriptors_for_the_other_listeners() {
        assert_eq!(connections_within(20_000), 20_000 - 6144);
        assert_eq!(connections_within(1024), MIN_CONNECTIONS);
        assert_eq!(connections_within(u64::MAX), Semaphore::MAX_PERMITS);
        assert!(open_files() > 0);
    }
}
