//! DNS over TCP: a connection-capped accept loop and one task per
//! connection answering length-prefixed requests in order.
//!
//! TCP is ours because hickory's listener has no cap on concurrent
//! connections; here a semaphore sheds connections beyond
//! `max_tcp_connections` at accept time, a client IP holding
//! `max_tcp_conns_per_client` already has its new ones closed at once (so
//! one client cannot lock the others out), and idle connections are closed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::dns::DnsError;
use crate::dns::config::Limits;
use crate::dns::fit;
use crate::dns::fit::Transport;
use crate::dns::wire::Scratch;
use crate::per_client::PerClient;

/// Accepts connections until `shutdown`, then ends them all.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Limits,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let slots = Arc::new(Semaphore::new(limits.max_tcp_connections.max(1)));
    let per_client = PerClient::new(limits.max_tcp_conns_per_client);
    let mut conns = JoinSet::new();
    while let Some((stream, peer)) = crate::accept::next(&listener, &shutdown, "DNS TCP").await {
        while conns.try_join_next().is_some() {}
        // The client's own cap first: a client at it must not take a
        // slot of the shared pool, even briefly.
        let Some(client_slot) = per_client.try_take(peer.ip()) else {
            tracing::debug!(%peer, "client at limits.dns_tcp_max_conns_per_client, closing");
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS TCP connections, closing");
            continue;
        };
        let (shared, token) = (shared.clone(), shutdown.clone());
        conns.spawn(async move {
            let _held = (permit, client_slot);
            if let Err(error) =
                connection(stream, peer, &shared, limits.tcp_idle_timeout, token).await
            {
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
    idle_timeout: Option<std::time::Duration>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    // The fast path's buffers, reused for every request on the connection.
    let mut scratch = Scratch::new(u64::from(peer.port()) ^ 0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let mut framed = Vec::new();
    loop {
        let len = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = within(idle_timeout, stream.read_u16()) => match r {
                None => {
                    tracing::debug!(%peer, "DNS TCP connection idle past limits.dns_tcp_idle_timeout, closing");
                    return Ok(());
                }
                Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Some(r) => usize::from(r?),
            },
        };
        buf.resize(len, 0);
        within(idle_timeout, stream.read_exact(&mut buf))
            .await
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow request"))??;
        if !shared.answer_wire(&buf, Transport::Tcp, &mut scratch, &mut out) {
            let Some(msg) = shared.answer(&buf, Transport::Tcp, peer).await else {
                // A request without a DNS header: the stream is out of sync.
                return Ok(());
            };
            if !fit::encode_into(&msg, &mut out) {
                return Ok(());
            }
        }
        let Ok(len) = u16::try_from(out.len()) else {
            // Both paths keep TCP answers within 65535 bytes; anything else is a bug.
            return Err(std::io::Error::other("response larger than 65535 bytes"));
        };
        framed.clear();
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        stream.write_all(&framed).await?;
    }
}

/// `f`'s output, or `None` when `limit` ran out first (no limit: never).
async fn within<T>(limit: Option<std::time::Duration>, f: impl Future<Output = T>) -> Option<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, f).await.ok(),
        None => Some(f.await),
    }
}
