//! The sockets: UDP through the worker threads of `udp.rs`, TCP through a
//! connection-capped accept loop, both thin adapters over [`Responder`].
//!
//! TCP is ours because hickory's listener has no cap on concurrent
//! connections; here a semaphore sheds connections beyond
//! `max_tcp_connections` at accept time, and idle connections are closed.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::fit;
use super::forward::Forwarder;
use super::respond::{Reply, Responder, Transport};
use super::udp::UdpWorkers;
use super::{DnsConfig, DnsError};
use crate::catalog::Replica;

/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// What every request needs; shared by all tasks and UDP workers.
pub(super) struct Shared {
    /// The pure decision.
    pub(super) responder: Responder,
    /// Where foreign names go.
    pub(super) forwarder: Forwarder,
    /// Caps forwards in flight: each holds a task and a socket for up to
    /// `recursor_timeout` per recursor.
    pub(super) forward_slots: Arc<Semaphore>,
    /// The catalog whose view we answer from.
    pub(super) replica: Arc<Replica>,
}

impl Shared {
    /// The response to one raw request, forwarding if needed; `None` to stay silent.
    async fn answer(
        &self,
        bytes: &[u8],
        transport: Transport,
        peer: SocketAddr,
    ) -> Option<Message> {
        let view = self.replica.view();
        match self.responder.respond(&view, bytes, transport, peer) {
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
            Reply::Drop => None,
        }
    }
}

/// Serves DNS on the given sockets until `shutdown` fires. Zone files are
/// loaded first; a bad one is an error before anything is served.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    cfg: DnsConfig,
    replica: Arc<Replica>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let shared = Arc::new(Shared {
        responder: Responder::new(&cfg)?,
        forwarder: Forwarder::new(cfg.recursors.clone(), cfg.recursor_timeout),
        forward_slots: Arc::new(Semaphore::new(cfg.max_concurrent_forwards.max(1))),
        replica,
    });
    let failed = CancellationToken::new();
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let udp = udp
        .into_std()
        .map_err(|e| DnsError::Server(format!("UDP socket: {e}")))?;
    let udp_workers = UdpWorkers::spawn(udp, shared.clone(), workers, failed.clone())
        .map_err(|e| DnsError::Server(format!("starting UDP workers: {e}")))?;
    let tcp_token = shutdown.child_token();
    let tcp_task = tokio::spawn(serve_tcp(tcp, shared, cfg, tcp_token.clone()));
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

async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    cfg: DnsConfig,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let slots = Arc::new(Semaphore::new(cfg.max_tcp_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Usually EMFILE or a reset before accept: keep serving, but
                // pause so a persistent error does not spin the loop.
                tracing::debug!(%error, "TCP accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS TCP connections, closing");
            continue;
        };
        let (shared, cfg, token) = (shared.clone(), cfg.clone(), shutdown.clone());
        conns.spawn(async move {
            let _permit = permit;
            if let Err(error) = connection(stream, peer, &shared, &cfg, token).await {
                tracing::debug!(%peer, %error, "DNS TCP connection ended");
            }
        });
    }
    conns.shutdown().await;
    Ok(())
}

/// Serves length-prefixed requests on one connection, in order, until the
/// peer closes, idles out, or we shut down.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &DnsConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let len = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(cfg.tcp_idle_timeout, stream.read_u16()) => match r {
                Err(_) => return Ok(()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => usize::from(r?),
            },
        };
        buf.resize(len, 0);
        tokio::time::timeout(cfg.tcp_idle_timeout, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow request"))??;
        let Some(msg) = shared.answer(&buf, Transport::Tcp, peer).await else {
            // A request without a DNS header: the stream is out of sync.
            return Ok(());
        };
        let Some(bytes) = fit::encode(&msg) else {
            return Ok(());
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            // fit() keeps TCP answers within 65535 bytes; anything else is a bug.
            return Err(std::io::Error::other("response larger than 65535 bytes"));
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
    }
}
