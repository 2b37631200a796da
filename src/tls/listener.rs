//! The HTTPS listener: TCP connections accepted, TLS handshakes run beside
//! the accept loop (bounded in number and time, so a client that never
//! finishes its handshake holds one slot for at most the timeout), and
//! finished streams handed to axum as its `Listener`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::Tls;

/// How long a client gets to finish its TLS handshake: Consul's
/// `limits.https_handshake_timeout` default.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes running at once; more connections wait in the kernel's
/// accept queue until one finishes.
const MAX_HANDSHAKES: usize = 256;

/// Finished handshakes not yet taken by the HTTP server.
const READY_QUEUE: usize = 64;

/// TLS streams ready for HTTP, from a background accept loop.
#[derive(Debug)]
pub struct HttpsListener {
    /// Streams whose handshake finished.
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    /// The bound address (`None` if the OS would not say).
    local: Option<SocketAddr>,
}

impl HttpsListener {
    /// Starts accepting on `tcp` with the HTTPS configuration `tls` holds
    /// at each connection's start, until `shutdown`.
    pub fn start(tcp: TcpListener, tls: Arc<Tls>, shutdown: CancellationToken) -> Self {
        let local = tcp.local_addr().ok();
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(tcp, tls, tx, shutdown));
        Self { ready, local }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Arc<Tls>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                // Never closed: the semaphore lives in this loop.
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            res = tcp.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, mostly: wait a little rather
                    // than spin, as axum's own loop does.
                    tracing::warn!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(config) = tls.https_server() else {
            return;
        };
        // Best effort, as on the HTTP listener.
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let handshake = TlsAcceptor::from(config).accept(stream);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(tls_stream)) => {
                    drop(permit);
                    // The server stopped taking connections: drop it.
                    let _ = tx.send((tls_stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake refused"),
                Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): nothing more will come, and
            // the server is stopping through its own shutdown signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.local
            .ok_or_else(|| std::io::Error::other("the HTTPS listener's address is unknown"))
    }
}
