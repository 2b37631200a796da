//! The benchmark's client: a group of blocking queries, each on its own
//! HTTP/1.1 connection, all driven by one thread on one `mio` poll.
//!
//! The client shares the machine's two cores with the agent it measures, so
//! what it spends receiving the answers delays the last of them as much as
//! the agent's own work. A task per connection on the benchmark's tokio
//! runtime cost 11–18 µs of CPU per answer (a wake-up for the socket, one
//! for the join, work stealing between two threads); one thread reading
//! every ready socket from one `epoll_wait` costs a `read` and a parse
//! (3–4 µs, with the pause in `drive`). That is how a load generator (wrk,
//! dnsperf) is built, and the nearest this machine comes to clients on
//! other machines.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

/// Connections opened at once while parking: below the listener's accept
/// backlog, so none is refused.
const CONNECT_AT_ONCE: usize = 256;
/// How long the thread sleeps after a poll that found work.
const GATHER: Duration = Duration::from_micros(500);
/// The token of the waker that tells the thread to stop.
const WAKE: Token = Token(usize::MAX);

/// One blocking query's answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    /// HTTP status.
    pub(crate) status: u16,
    /// `X-Consul-Index`, when sent.
    pub(crate) index: Option<u64>,
    /// When the whole answer had arrived.
    pub(crate) at: Instant,
    /// Its bytes, head and body.
    pub(crate) len: usize,
}

/// Connections kept open after their answers, closed when dropped: a real
/// blocking client keeps its connection for its next query, so closing
/// them would put the agent's work on the closes inside what is measured.
pub(crate) struct Held(#[allow(dead_code)] Vec<TcpStream>);

/// Every answer of a group, and the connections they came on.
type Collected = (Vec<Answer>, Held);

/// What the group's thread and its owner share.
#[derive(Default)]
struct Shared {
    /// Requests sent.
    sent: AtomicUsize,
    /// Complete answers received.
    answered: AtomicUsize,
    /// Set when the group is dropped: the thread closes every connection
    /// and ends.
    stop: AtomicBool,
}

/// A group of parked queries, all asking the same path.
pub(crate) struct Group {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    done: Option<oneshot::Receiver<anyhow::Result<Collected>>>,
    len: usize,
}

impl Group {
    /// Opens `n` connections to `addr`, each sending `GET path`, from a
    /// thread of their own.
    pub(crate) fn park(addr: SocketAddr, path: &str, n: usize) -> anyhow::Result<Self> {
        let poll = Poll::new().context("creating a poll")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).context("creating a waker")?);
        let shared = Arc::new(Shared::default());
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
        let (tx, rx) = oneshot::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("fanout-client".into())
            .spawn(move || {
                let result = drive(poll, addr, &request, n, &thread_shared);
                // The receiver is gone only when the group was dropped.
                let _ = tx.send(result);
            })
            .context("starting the client thread")?;
        Ok(Self {
            shared,
            waker,
            done: Some(rx),
            len: n,
        })
    }

    pub(crate) fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }

    pub(crate) fn sent(&self) -> usize {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// Every answer, waiting up to `deadline` for the last, and the
    /// connections they came on, still open.
    pub(crate) async fn collect(mut self, deadline: Duration) -> anyhow::Result<Collected> {
        let done = self.done.take().context("collected twice")?;
        match tokio::time::timeout(deadline, done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => bail!("the client thread ended without a result"),
            Err(_) => bail!(
                "{} of {} queries answered within {} s",
                self.answered(),
                self.len,
                deadline.as_secs()
            ),
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // A thread already gone has nothing left to stop.
        let _ = self.waker.wake();
    }
}

/// One connection and what it has read.
struct Conn {
    stream: TcpStream,
    state: State,
    read: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Connecting,
    Waiting,
    Answered,
}

/// The thread's loop: opens the connections (at most `CONNECT_AT_ONCE`
/// still connecting), sends each its request once connected, and reads
/// every answer. Ends when all `n` have answered, handing back the answers
/// and the open connections, or when the group is dropped.
fn drive(
    mut poll: Poll,
    addr: SocketAddr,
    request: &[u8],
    n: usize,
    shared: &Shared,
) -> anyhow::Result<Collected> {
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    let mut answers = Vec::with_capacity(n);
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 16 * 1024];
    let mut connecting = 0;
    while answers.len() < n {
        while conns.len() < n && connecting < CONNECT_AT_ONCE {
            let mut stream = TcpStream::connect(addr).context("connecting")?;
            stream.set_nodelay(true)?;
            poll.registry().register(
                &mut stream,
                Token(conns.len()),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(Conn {
                stream,
                state: State::Connecting,
                read: Vec::new(),
            });
            connecting += 1;
        }
        if shared.stop.load(Ordering::SeqCst) {
            bail!("stopped");
        }
        // Let answers gather before the next poll. On loopback the kernel
        // charges waking a receiver blocked in `epoll_wait` to the sender,
        // once per answer while the client keeps up: work a client on
        // another machine would not cost the agent. Asleep here instead,
        // the thread is not woken, and the next poll takes a batch.
        if !events.is_empty() {
            std::thread::sleep(GATHER);
        }
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => r.context("polling")?,
        }
        for event in &events {
            let Some(c) = conns.get_mut(event.token().0) else {
                continue; // the waker: the loop looks at `stop`
            };
            if c.state == State::Connecting {
                if let Some(e) = c.stream.take_error()? {
                    return Err(e).context("connecting");
                }
                match c.stream.peer_addr() {
                    Err(e) if e.kind() == ErrorKind::NotConnected => continue,
                    r => r.context("connecting")?,
                };
                // A fresh connection's send buffer takes a short request whole.
                let wrote = c.stream.write(request).context("sending the request")?;
                if wrote != request.len() {
                    bail!("sent {wrote} of the request's {} bytes", request.len());
                }
                poll.registry()
                    .reregister(&mut c.stream, event.token(), Interest::READABLE)?;
                c.state = State::Waiting;
                connecting -= 1;
                shared.sent.fetch_add(1, Ordering::SeqCst);
            } else if c.state == State::Waiting
                && let Some(answer) = read_ready(c, &mut scratch)?
            {
                c.state = State::Answered;
                answers.push(answer);
                shared.answered.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let held = conns.into_iter().map(|c| c.stream).collect();
    Ok((answers, Held(held)))
}

/// Reads what a ready connection has (until it would block, as the poll
/// is edge-triggered) and the answer once it is whole.
fn read_ready(c: &mut Conn, scratch: &mut [u8]) -> anyhow::Result<Option<Answer>> {
    loop {
        match c.stream.read(scratch) {
            Ok(0) => bail!("the agent closed the connection before answering"),
            Ok(k) => {
                c.read.extend_from_slice(&scratch[..k]);
                if let Some(head) = whole(&c.read)? {
                    return Ok(Some(Answer {
                        status: head.status,
                        index: head.index,
                        at: Instant::now(),
                        len: c.read.len(),
                    }));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading an answer"),
        }
    }
}

/// The head of the response in `read` once the whole response is there: a
/// body of `Content-Length` bytes, or a chunked body's last chunk.
pub(crate) fn whole(read: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(head_end) = find(read, b"\r\n\r\n").map(|i| i + 4) else {
        return Ok(None);
    };
    let head = Head::parse(&read[..head_end])?;
    let body = &read[head_end..];
    let complete = match head.length {
        Some(len) => body.len() >= len,
        None => body.ends_with(b"0\r\n\r\n"),
    };
    Ok(complete.then_some(head))
}

/// What the benchmark reads of a response head.
#[derive(Debug, PartialEq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    /// `Content-Length`; `None` for a chunked body.
    pub(crate) length: Option<usize>,
    pub(crate) index: Option<u64>,
}

impl Head {
    pub(crate) fn parse(head: &[u8]) -> anyhow::Result<Self> {
        let text = std::str::from_utf8(head).context("a response head")?;
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("status line of {text:?}"))?;
        let mut h = Self {
            status,
            length: None,
            index: None,
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                h.length = Some(value.parse().context("Content-Length")?);
            } else if name.eq_ignore_ascii_case("x-consul-index") {
                h.index = value.parse().ok();
            }
        }
        Ok(h)
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
