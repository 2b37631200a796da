//! The UDP answer loop: a few OS threads, each blocking in `recv_from` on the
//! shared socket, answering through the fast path (`dns/wire`, into the
//! worker's own buffer and scratch) or else the
//! [`Responder`](crate::dns::Responder), and sending straight back.
//!
//! This replaces hickory-server's UDP loop, which spawns an unbounded task
//! per datagram and hands each response through a channel: it had no
//! backpressure (a flood grew the task set without limit) and spent most of
//! its time on that machinery. Here the kernel's socket buffer is the only
//! queue; when it is full, the kernel drops, which is the right place to shed
//! UDP load. The fast path reads and writes the bytes itself; what it
//! leaves, the responder parses and hickory-proto encodes.
//!
//! With RRL on, each datagram is counted against its source prefix first,
//! and dropped or answered empty with TC beyond the rate (see `rrl.rs`).
//!
//! Names for the recursors leave the thread: the parsed request goes to a
//! tokio task, capped by a semaphore; beyond the cap the query gets SERVFAIL
//! at once.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::dns::fit;
use crate::dns::respond::{Reply, Transport};
use crate::dns::rrl::{self, Verdict};
use crate::dns::wire::Scratch;

/// How often a blocked worker looks up to see whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Largest datagram read. EDNS clients send at most their own buffer size;
/// anything longer is not a query we answer.
const MAX_DATAGRAM: usize = 4096;

/// The running UDP workers.
pub(super) struct UdpWorkers {
    /// Set to make the workers return.
    stop: Arc<AtomicBool>,
    /// Joined on shutdown.
    threads: Vec<JoinHandle<()>>,
}

impl UdpWorkers {
    /// Starts `count` workers on `socket`. `failed` is cancelled if the socket
    /// breaks for good, so the server can stop instead of going silently deaf.
    pub(super) fn spawn(
        socket: UdpSocket,
        shared: Arc<Shared>,
        count: usize,
        failed: CancellationToken,
    ) -> std::io::Result<Self> {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(STOP_POLL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = Handle::current();
        let mut threads = Vec::with_capacity(count);
        for n in 0..count.max(1) {
            let worker = Worker {
                socket: socket.try_clone()?,
                shared: shared.clone(),
                runtime: runtime.clone(),
                stop: stop.clone(),
                failed: failed.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dns-udp-{n}"))
                    .spawn(move || worker.run(n as u64))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops the workers and waits for them (at most one poll interval).
    pub(super) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a DNS UDP worker panicked");
                }
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::error!(error = %e, "joining the DNS UDP workers failed");
        }
    }
}

/// One worker thread's state.
struct Worker {
    socket: UdpSocket,
    shared: Arc<Shared>,
    runtime: Handle,
    stop: Arc<AtomicBool>,
    failed: CancellationToken,
}

impl Worker {
    fn run(self, seed: u64) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = Vec::with_capacity(MAX_DATAGRAM);
        let mut scratch = Scratch::new(0x9e37_79b9_7f4a_7c15 ^ seed);
        while !self.stop.load(Ordering::Relaxed) {
            let (len, peer) = match self.socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                // ICMP errors from earlier sends and signals: keep serving.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "DNS UDP socket failed; stopping");
                    self.failed.cancel();
                    return;
                }
            };
            if self.answer(&buf[..len], peer, &mut scratch, &mut out) {
                self.send(&out, peer);
            }
        }
    }

    /// Everything one datagram takes: RRL, then the fast path, then the
    /// full responder. Returns true with the response in `out` to send to
    /// `peer` now; false when there is nothing to send now (dropped, or
    /// handed to the runtime, which sends it later).
    fn answer(
        &self,
        request: &[u8],
        peer: SocketAddr,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> bool {
        // One branch when RRL is off.
        if let Some(rrl) = &self.shared.rrl {
            match rrl.check(peer.ip()) {
                Verdict::Send => {}
                Verdict::Drop => return false,
                Verdict::Slip => return rrl::slip_response(request, out),
            }
        }
        if self
            .shared
            .answer_wire(request, Transport::Udp, scratch, out)
        {
            return true;
        }
        let view = self.shared.replica.view();
        let tokens = self.shared.tokens();
        let caller = self.shared.caller(tokens.as_deref());
        let responder = &self.shared.responder;
        let m = match responder.respond_as(&view, caller, request, Transport::Udp, peer) {
            Reply::Respond(m) => m,
            Reply::OtherDatacenter {
                dc,
                request: parsed,
            } => {
                // Known to fail (unknown, or no server answered lately):
                // answered here at once.
                match self
                    .shared
                    .known_failure(&view, &dc, &parsed, Transport::Udp)
                {
                    Some(m) => m,
                    None => {
                        self.other_datacenter(dc, parsed, peer);
                        return false;
                    }
                }
            }
            Reply::Forward(parsed) => {
                self.forward(parsed, peer);
                return false;
            }
            Reply::PreparedQuery {
                name,
                request: parsed,
            } => {
                self.prepared_query(name, parsed, peer);
                return false;
            }
            Reply::Drop => return false,
        };
        fit::encode_into(&m, out)
    }

    fn send(&self, bytes: &[u8], peer: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, peer) {
            tracing::debug!(%peer, error = %e, "sending a DNS response failed");
        }
    }

    /// Hands a request for another datacenter to the runtime: the worker
    /// goes on answering local names at once.
    fn other_datacenter(&self, dc: String, request: Message, peer: SocketAddr) {
        self.off_worker(
            request,
            peer,
            "another datacenter's answer",
            |shared, request| async move {
                shared.other_datacenter(&dc, &request, Transport::Udp).await
            },
        );
    }

    /// Hands a prepared query's lookup to the runtime (executing it may
    /// fail over, which waits on the network). Never cached: its answer
    /// may come from another datacenter.
    fn prepared_query(&self, name: String, request: Message, peer: SocketAddr) {
        self.off_worker(request, peer, "a prepared query's answer", |shared, request| async move {
            shared.prepared_query(name, &request, Transport::Udp).await
        });
    }

    /// Hands a request for the recursors to the runtime.
    fn forward(&self, request: Message, peer: SocketAddr) {
        self.off_worker(
            request,
            peer,
            "a forwarded answer",
            |shared, request| async move {
                let upstream = shared.forwarder.forward(&request).await;
                shared.responder.relay(&request, upstream, Transport::Udp)
            },
        );
    }

    /// Runs `answer`, which waits on the network, on the runtime within the
    /// cap that forwarded queries, other datacenters' names and prepared
    /// queries share, and sends what it gives to `peer`; over the cap the
    /// request is shed at once (SERVFAIL, as a recursor's failure is).
    fn off_worker<F, Fut>(&self, request: Message, peer: SocketAddr, what: &'static str, answer: F)
    where
        F: FnOnce(Arc<Shared>, Message) -> Fut + Send + 'static,
        Fut: Future<Output = Message> + Send + 'static,
    {
        let shared = self.shared.clone();
        let Ok(socket) = self.socket.try_clone() else {
            return;
        };
        let Ok(slot) = shared.forward_slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, what, "too many DNS lookups off the workers in flight, shedding");
            let m = shared.responder.servfail(&request, Transport::Udp);
            if let Some(bytes) = fit::encode(&m) {
                self.send(&bytes, peer);
            }
            return;
        };
        self.runtime.spawn(async move {
            let _slot = slot;
            let m = answer(shared, request).await;
            if let Some(bytes) = fit::encode(&m)
                && let Err(e) = socket.send_to(&bytes, peer)
            {
                tracing::debug!(%peer, what, error = %e, "sending a DNS response failed");
            }
        });
    }
}
