//! The UDP answer loop: a few OS threads, each reading a batch of datagrams
//! from its own socket (`recvmmsg`, see `mmsg.rs`), answering each through
//! the fast path (`dns/wire`, into the batch's buffer with the worker's
//! scratch) or else the [`Responder`](crate::dns::Responder), and sending
//! the batch's replies back together (`sendmmsg`).
//!
//! Each worker has a socket of its own, all bound to one address with
//! `SO_REUSEPORT`, as Knot and NSD do: the kernel spreads datagrams over
//! them by the source's address and port, and no two threads contend for
//! one socket's queue and lock. The caller binds the first (with
//! `SO_REUSEPORT`, see [`set_reuse_port`]); the others bind to its actual
//! address, so port 0 gives them all the same port. A first socket bound
//! without it cannot be joined: then the workers share clones of it.
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
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::mmsg::Batch;
use crate::dns::fit::{self, Transport};
use crate::dns::respond::Reply;
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
        let sockets = worker_sockets(socket, count.max(1))?;
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = Handle::current();
        let mut threads = Vec::with_capacity(sockets.len());
        for (n, socket) in sockets.into_iter().enumerate() {
            socket.set_nonblocking(false)?;
            socket.set_read_timeout(Some(STOP_POLL))?;
            let worker = Worker {
                socket,
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

/// `count` sockets for the workers: `first`, and others bound to its
/// address with `SO_REUSEPORT` and its receive buffer size; clones of
/// `first` if it was bound without `SO_REUSEPORT` and so cannot be joined.
fn worker_sockets(first: UdpSocket, count: usize) -> std::io::Result<Vec<UdpSocket>> {
    let addr = first.local_addr()?;
    // The kernel reports twice what was asked (its bookkeeping) and
    // doubles what is set: half of it asks for the same.
    let rcvbuf = socket2::SockRef::from(&first)
        .recv_buffer_size()
        .ok()
        .map(|n| n / 2);
    let mut sockets = Vec::with_capacity(count);
    sockets.push(first);
    while sockets.len() < count {
        match bind_reuse_port(addr, rcvbuf) {
            Ok(s) => sockets.push(s),
            Err(e) if sockets.len() == 1 && e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::debug!(%addr, "DNS UDP socket bound without SO_REUSEPORT: the workers share it");
                let first = &sockets[0];
                let clones = (1..count)
                    .map(|_| first.try_clone())
                    .collect::<std::io::Result<Vec<_>>>()?;
                sockets.extend(clones);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(sockets)
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT`, joining the group of
/// the sockets already bound there with it, with a receive buffer of
/// `rcvbuf` bytes when given (best effort: the kernel caps it).
fn bind_reuse_port(addr: SocketAddr, rcvbuf: Option<usize>) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    set_reuse_port(&s)?;
    if let Some(n) = rcvbuf {
        let _ = s.set_recv_buffer_size(n);
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Sets `SO_REUSEPORT` on `socket`, before it is bound, so that the UDP
/// workers can each bind a socket of their own to the same address.
/// (socket2 offers this only with its `all` feature, which would rebuild
/// every crate that uses socket2.)
pub fn set_reuse_port(socket: &socket2::Socket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `socket` is an open socket for the call's duration, and the
    // option value is a live c_int whose size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What a worker does after a failed receive.
enum RecvError {
    /// Nothing to read within the stop poll, an ICMP error from an earlier
    /// send, or a signal: look at the stop flag and read again.
    Retry,
    /// The socket is broken for good.
    Fatal,
}

fn recv_error(e: &std::io::Error) -> RecvError {
    use std::io::ErrorKind::{
        ConnectionRefused, ConnectionReset, Interrupted, TimedOut, WouldBlock,
    };
    match e.kind() {
        WouldBlock | TimedOut | ConnectionRefused | ConnectionReset | Interrupted => {
            RecvError::Retry
        }
        _ => RecvError::Fatal,
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
        let mut batch = Batch::new(MAX_DATAGRAM);
        let mut scratch = Scratch::new(0x9e37_79b9_7f4a_7c15 ^ seed);
        while !self.stop.load(Ordering::Relaxed) {
            let n = match batch.recv(&self.socket) {
                Ok(n) => n,
                Err(e) => match recv_error(&e) {
                    RecvError::Retry => continue,
                    RecvError::Fatal => {
                        tracing::error!(error = %e, "DNS UDP socket failed; stopping");
                        self.failed.cancel();
                        return;
                    }
                },
            };
            for i in 0..n {
                let (request, peer, out) = batch.slot(i);
                if let Some(peer) = peer
                    && self.answer(request, peer, &mut scratch, out)
                {
                    batch.reply(i);
                }
            }
            batch.send(&self.socket);
        }
    }

    /// The decision for one datagram: rate limiting, then the fast path,
    /// then the responder. Returns true when `out` holds the reply to send
    /// `peer` now; false to stay silent, or when the answer leaves the worker (forwards,
    /// other datacenters, prepared queries send their own later).
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
                return match self
                    .shared
                    .known_failure(&view, &dc, &parsed, Transport::Udp)
                {
                    Some(m) => fit::encode_into(&m, out),
                    None => {
                        self.other_datacenter(dc, parsed, peer);
                        false
                    }
                };
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
