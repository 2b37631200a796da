//! The accept step every TCP listener of the agent shares (HTTP, HTTPS,
//! DNS over TCP, server RPC): the next connection, or `None` once shutdown is asked.
//!
//! A failed accept (out of file descriptors, a connection reset before it
//! was accepted) is not the listener's end: it is logged at debug and the
//! listener pauses briefly before trying again, so that a persistent error
//! does not spin the loop.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection on `listener`, or `None` when `shutdown` is
/// cancelled; `what` names the listener in the log.
pub async fn next(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(conn) => return Some(conn),
            Err(error) => {
                tracing::debug!(%error, "{what} accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}
