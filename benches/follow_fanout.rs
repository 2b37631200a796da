//! Change-stream fan-out: one server followed by many client replicas. How
//! long after a catalog write every follower has the entry, and what the
//! followers cost the server in CPU, parked and per write.
//!
//! Runs the release `trellis` binary (the one cargo built for this bench, or
//! `TRELLIS_BIN`) as one `agent --dev` on 127.0.25.1: a single server, so
//! it serves server RPC, client family included. The load tool in this
//! program speaks that RPC as a client agent's link does (`src/rpc/link.rs`):
//! per follower one TCP connection, from its own address in 127.25.0.0/16
//! (one client agent per machine, so Consul's per-client connection cap,
//! 100, is no concern), the preface, then long polls
//! `ClientRequest::Follow { after, wait_ms: 2000 }` one after the other,
//! `after` being the last index received. A dev agent has no gossip key and
//! no TLS, so there is no membership proof to show: on a cluster with
//! `encrypt` the connection must pass `rpc::proof` with the cluster key,
//! and with `tls.internal_rpc` it is TLS first (`rpc::secure`); neither
//! changes what a follow answer costs once the connection is open. The
//! followers decode every answer but apply nothing: a client agent's apply
//! is its own CPU, not the server's.
//!
//! For each of two sizes, `--small N` (6) and `--followers N` (1,000), in
//! one run against the same server:
//!
//! 1. connects the followers (at most 128 connecting at once) and waits
//!    until every one has had an empty answer (a poll that waited its whole
//!    2 s: it is current and parked);
//! 2. reads the server's CPU time (`/proc/PID/stat`) over `--idle S` (10)
//!    seconds with them parked: what holding them costs (each renews its
//!    poll every 2 s);
//! 3. registers `--writes W` (50) nodes one at a time through
//!    `PUT /v1/catalog/register`, `--gap MS` (100) apart, each after the
//!    previous one reached every follower; for each write and follower the
//!    time from sending the PUT, and from its answer, until the follower has
//!    the entry (an answer can come after some followers have the entry: the
//!    server wakes them when it applies, before HTTP answers; that is 0);
//! 4. prints p50/p99/max over every (write, follower), the time for each
//!    write to reach all followers (p50/p99/max over writes), and the
//!    server's CPU per write, raw and less the idle rate over the same
//!    time; then the ratios of the large size to the small one.
//!
//! Run: `cargo bench --bench follow_fanout` (or `-- --followers 2000
//! --writes 100`). Without `--bench` (as `cargo test --benches` runs it)
//! it only checks its own helpers.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

#[allow(dead_code)] // disk_usage is for kv_million
#[path = "common/mem.rs"]
mod mem;
// Shared with the cluster benchmarks, which use helpers this one does not.
#[allow(dead_code)]
#[path = "common/procs.rs"]
mod procs;
#[path = "common/stats.rs"]
mod stats;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trellis::catalog::{CatalogOp, Command};
use trellis::rpc::client::{CatchUp, ClientRequest, ClientResponse};
use trellis::rpc::message::{Envelope, Request, Response};
use trellis::rpc::{frame, preface};
use trellis_testkit::{Agent, Trellis};

/// The binary under test.
const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
/// The server's address (this helper's 127.0.25.x).
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 25, 1);
/// How long each poll waits, as a client agent's link asks
/// (`FOLLOW_WAIT` in `src/rpc/link.rs`).
const POLL_WAIT_MS: u32 = 2000;
/// Connections opened at once: below the listener's accept backlog.
const CONNECT_AT_ONCE: usize = 128;
/// Node names of the writes: `fanout-w` and the write's number.
const NODE_PREFIX: &str = "fanout-w";
/// Any condition not met in this time is a failure.
const DEADLINE: Duration = Duration::from_secs(60);
/// The measure names no figure; the kv_fanout target (p99 ≤ 100 ms
/// for 10,000 parked readers) is the yardstick printed beside it.
const YARDSTICK_P99: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    procs::bench_main("follow_fanout", self_check, Settings::parse, run)
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Settings {
    /// `--followers N`: the large size.
    followers: usize,
    /// `--small N`: the size it is compared against.
    small: usize,
    /// `--writes W`: catalog writes per size.
    writes: usize,
    /// `--gap MS`: pause between writes.
    gap: Duration,
    /// `--idle S`: seconds of parked followers measured.
    idle: Duration,
}

impl Settings {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut s = Self {
            followers: 1000,
            small: 6,
            writes: 50,
            gap: Duration::from_millis(100),
            idle: Duration::from_secs(10),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut count = |name: &str| -> anyhow::Result<u64> {
                let v = it.next().ok_or_else(|| anyhow!("{name} needs a value"))?;
                v.parse().map_err(|_| anyhow!("{name} {v:?}: want a count"))
            };
            match a.as_str() {
                "--bench" => {}
                "--followers" => s.followers = usize::try_from(count("--followers")?)?,
                "--small" => s.small = usize::try_from(count("--small")?)?,
                "--writes" => s.writes = usize::try_from(count("--writes")?)?,
                "--gap" => s.gap = Duration::from_millis(count("--gap")?),
                "--idle" => s.idle = Duration::from_secs(count("--idle")?),
                other => bail!(
                    "unknown argument {other:?}; use --followers N, --small N, --writes W, \
                     --gap MS, --idle S"
                ),
            }
        }
        if s.followers == 0 || s.small == 0 || s.writes == 0 {
            bail!("--followers, --small and --writes must be at least 1");
        }
        // Follower addresses: 127.25.1.1 on, 250 per /24.
        if s.followers.max(s.small) > 250 * 250 {
            bail!("at most {} followers", 250 * 250);
        }
        Ok(s)
    }
}

/// Follower `i`'s own address.
fn follower_ip(i: usize) -> Ipv4Addr {
    // Both parts are below 251 for i < 62,500 (checked at parse).
    Ipv4Addr::new(127, 25, (1 + i / 250) as u8, (1 + i % 250) as u8)
}

/// What the followers report to the run.
struct Board {
    /// Followers that have had an empty answer (current and parked).
    parked: AtomicUsize,
    /// Polls answered, all followers.
    answers: AtomicUsize,
    /// Per write number: how many followers have it, and when each got it.
    arrivals: Mutex<Vec<Vec<Instant>>>,
    /// Woken at every arrival.
    arrived: Notify,
}

impl Board {
    fn new(writes: usize) -> Self {
        Self {
            parked: AtomicUsize::new(0),
            answers: AtomicUsize::new(0),
            arrivals: Mutex::new(vec![Vec::new(); writes]),
            arrived: Notify::new(),
        }
    }

    fn record(&self, write: usize, at: Instant) {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = arrivals.get_mut(write) {
            list.push(at);
        }
        drop(arrivals);
        self.arrived.notify_waiters();
    }

    fn count(&self, write: usize) -> usize {
        let arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        arrivals.get(write).map_or(0, Vec::len)
    }

    fn arrivals(&self, write: usize) -> Vec<Instant> {
        let arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        arrivals.get(write).cloned().unwrap_or_default()
    }
}

/// The write number a command carries, if it is one of this run's.
fn write_number(cmd: &Command) -> Option<usize> {
    match cmd {
        Command::Catalog(CatalogOp::Register(r)) => r.node.strip_prefix(NODE_PREFIX)?.parse().ok(),
        _ => None,
    }
}

/// One follower: connects from `ip`, then polls until `stop`.
async fn follower(
    ip: Ipv4Addr,
    server: SocketAddr,
    board: Arc<Board>,
    connect: Arc<Semaphore>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut stream = {
        let _permit = connect.acquire().await?;
        let socket = TcpSocket::new_v4()?;
        socket
            .bind(SocketAddr::from((ip, 0)))
            .with_context(|| format!("binding {ip}"))?;
        let mut stream = socket.connect(server).await.context("connecting")?;
        stream.set_nodelay(true)?;
        preface::offer(&mut stream, preface::PROTOCOL_VERSION, None)
            .await
            .context("the preface")?;
        stream
    };
    let (read, mut write) = stream.split();
    let mut read = BufReader::with_capacity(16 << 10, read);
    let (mut after, mut id, mut parked) = (0, 0u64, false);
    let mut buf = Vec::new();
    loop {
        id += 1;
        let poll = Envelope {
            id,
            body: Request::Client(ClientRequest::Follow {
                after,
                wait_ms: POLL_WAIT_MS,
            }),
        };
        write.write_all(&frame::encode(&poll)?).await?;
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = frame::read(&mut read, &mut buf) => r.context("reading an answer")?,
        }
        let at = Instant::now();
        let answer: Envelope<Response> = frame::decode(&buf)?;
        if answer.id != id {
            bail!("answer {} to poll {id}", answer.id);
        }
        board.answers.fetch_add(1, Ordering::Relaxed);
        let Response::Client(ClientResponse::Follow(answer)) = answer.body else {
            bail!("a follow poll answered with {}", answer.body.kind());
        };
        match answer.catch_up {
            CatchUp::Entries(entries) if entries.is_empty() => {
                if !parked {
                    parked = true;
                    board.parked.fetch_add(1, Ordering::SeqCst);
                }
            }
            CatchUp::Entries(entries) => {
                for entry in &entries {
                    for w in entry.commands.iter().filter_map(write_number) {
                        board.record(w, at);
                    }
                    after = entry.index;
                }
            }
            // Behind the history: a client agent would fetch the state; the
            // run needs only what follows it.
            CatchUp::Snapshot(offer) => after = offer.index,
            CatchUp::Unavailable(why) => bail!("the server cannot catch a follower up: {why}"),
        }
    }
}

/// The agent and its HTTP client.
struct Target {
    agent: Agent,
    http: reqwest::Client,
}

impl Target {
    fn cpu(&self) -> f64 {
        procs::cpu_seconds(&[self.agent.pid()])
    }

    /// Registers node `fanout-w{w}`; when the PUT was sent and when its
    /// answer was complete.
    async fn register(&self, w: usize) -> anyhow::Result<(Instant, Instant)> {
        let body = serde_json::json!({
            "Node": format!("{NODE_PREFIX}{w}"),
            "Address": "10.25.0.1",
            "Service": {"Service": "fanout", "Port": 8080},
        });
        let sent = Instant::now();
        let resp = self
            .http
            .put(self.agent.url("/v1/catalog/register"))
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        let answered = Instant::now();
        if !status.is_success() || text.trim() != "true" {
            bail!("register {w}: {status} {text}");
        }
        Ok((sent, answered))
    }
}

/// One size's figures.
#[derive(Debug)]
struct Figures {
    followers: usize,
    /// Every (write, follower), from the PUT sent.
    from_send: Vec<Duration>,
    /// The same from the PUT's answer (0 when the follower was first).
    from_answer: Vec<Duration>,
    /// Per write, until the last follower had it, from the PUT sent.
    all_reached: Vec<Duration>,
    /// Server CPU seconds per second with the followers parked.
    idle_cpu: f64,
    /// Polls answered per second while parked.
    idle_polls: f64,
    /// Server CPU seconds per write, raw and less the idle rate.
    cpu_per_write: f64,
    cpu_per_write_net: f64,
    /// This process's CPU seconds per write (the load tool's share).
    tool_per_write: f64,
}

async fn measure_size(
    t: &Target,
    s: &Settings,
    followers: usize,
    first_write: usize,
) -> anyhow::Result<Figures> {
    let server = t.agent.rpc();
    let board = Arc::new(Board::new(first_write + s.writes));
    let stop = CancellationToken::new();
    let connect = Arc::new(Semaphore::new(CONNECT_AT_ONCE));
    let mut tasks = JoinSet::new();
    for i in 0..followers {
        tasks.spawn(follower(
            follower_ip(i),
            server,
            board.clone(),
            connect.clone(),
            stop.clone(),
        ));
    }
    let started = Instant::now();
    while board.parked.load(Ordering::SeqCst) < followers {
        if let Some(done) = tasks.try_join_next() {
            done.context("a follower")?.context("a follower")?;
            bail!("a follower stopped before the run");
        }
        if started.elapsed() > DEADLINE {
            bail!(
                "{} of {followers} followers parked within {} s",
                board.parked.load(Ordering::SeqCst),
                DEADLINE.as_secs()
            );
        }
        t.agent.check_running()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parking = started.elapsed();

    let (cpu0, polls0, at0) = (
        t.cpu(),
        board.answers.load(Ordering::SeqCst),
        Instant::now(),
    );
    tokio::time::sleep(s.idle).await;
    let idle_secs = at0.elapsed().as_secs_f64();
    let idle_cpu = (t.cpu() - cpu0) / idle_secs;
    let idle_polls = (board.answers.load(Ordering::SeqCst) - polls0) as f64 / idle_secs;

    // On stderr, for whoever profiles the server during the writes.
    eprintln!("  {followers} followers parked: writing");
    let (mut from_send, mut from_answer, mut all_reached) = (Vec::new(), Vec::new(), Vec::new());
    let (cpu0, tool0, at0) = (
        t.cpu(),
        procs::cpu_seconds(&[std::process::id()]),
        Instant::now(),
    );
    for w in first_write..first_write + s.writes {
        let (sent, answered) = t.register(w).await?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let notified = board.arrived.notified();
            if board.count(w) >= followers {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "write {w} reached {} of {followers} followers within {} s",
                    board.count(w),
                    DEADLINE.as_secs()
                );
            }
            // A timeout guards against an arrival between the count and
            // the wait, and lets a dead follower be noticed.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
            if let Some(done) = tasks.try_join_next() {
                done.context("a follower")?.context("a follower")?;
                bail!("a follower stopped during the writes");
            }
        }
        let arrivals = board.arrivals(w);
        from_send.extend(arrivals.iter().map(|a| a.duration_since(sent)));
        from_answer.extend(
            arrivals
                .iter()
                .map(|a| a.saturating_duration_since(answered)),
        );
        all_reached.push(
            arrivals
                .iter()
                .map(|a| a.duration_since(sent))
                .max()
                .unwrap_or_default(),
        );
        tokio::time::sleep(s.gap).await;
    }
    let secs = at0.elapsed().as_secs_f64();
    let cpu = t.cpu() - cpu0;
    let tool = procs::cpu_seconds(&[std::process::id()]) - tool0;
    let writes = s.writes as f64;
    stop.cancel();
    while let Some(done) = tasks.join_next().await {
        done.context("a follower")?.context("a follower")?;
    }
    println!(
        "  {followers} followers parked in {:.2} s; idle {idle_secs:.1} s",
        parking.as_secs_f64()
    );
    Ok(Figures {
        followers,
        from_send,
        from_answer,
        all_reached,
        idle_cpu,
        idle_polls,
        cpu_per_write: cpu / writes,
        cpu_per_write_net: (cpu - idle_cpu * secs).max(0.0) / writes,
        tool_per_write: tool / writes,
    })
}

/// The `q` quantile (0 to 1) of `v`, unsorted, nearest rank.
fn quantile(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    stats::percentile(&v, q)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn triple(v: &[Duration]) -> String {
    format!(
        "{:7.2} {:7.2} {:7.2}",
        ms(quantile(v, 0.5)),
        ms(quantile(v, 0.99)),
        ms(quantile(v, 1.0))
    )
}

fn print(f: &Figures) {
    println!("  followers {}:", f.followers);
    println!(
        "    write → follower, from PUT sent     p50/p99/max ms {}",
        triple(&f.from_send)
    );
    println!(
        "    write → follower, from PUT answered p50/p99/max ms {}",
        triple(&f.from_answer)
    );
    println!(
        "    write → every follower (per write)  p50/p99/max ms {}",
        triple(&f.all_reached)
    );
    println!(
        "    server CPU per write {:.3} ms ({:.3} ms less idle), load tool {:.3} ms; \
         parked: server CPU {:.2} % of a core, {:.0} polls/s",
        f.cpu_per_write * 1e3,
        f.cpu_per_write_net * 1e3,
        f.tool_per_write * 1e3,
        f.idle_cpu * 100.0,
        f.idle_polls,
    );
}

async fn run(s: Settings) -> anyhow::Result<()> {
    // One socket here and one in the agent per follower.
    let nofile = mem::raise_nofile((s.followers + 1024) as u64)?;
    let dir = tempfile::Builder::new()
        .prefix("trellis-follow-fanout-")
        .tempdir()
        .context("creating a temp dir")?;
    let log = dir.path().join("agent.log");
    let agent = Trellis::from_env_or("TRELLIS_BIN", TRELLIS)
        .dev()
        .node("fanout")
        .ip(IP.into())
        .log_file(&log)
        .log_filter(None)
        .start_async()
        .await?;
    let t = Target {
        agent,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
    };
    let r = report(&s, &t, nofile).await;
    r.map_err(|e| {
        anyhow!(
            "{e:#}\n--- agent log (last lines) ---\n{}",
            t.agent.log_handle().tail(30)
        )
    })
}

async fn report(s: &Settings, t: &Target, nofile: u64) -> anyhow::Result<()> {
    println!(
        "follow_fanout: {} writes to one server followed by {} and by {} client replicas",
        s.writes, s.small, s.followers
    );
    println!(
        "machine: {} CPUs, load average {}; open-file limit {nofile}",
        std::thread::available_parallelism().map_or(1, usize::from),
        procs::load_average()
    );
    println!(
        "trellis: agent --dev (pid {}), server RPC on {}",
        t.agent.pid(),
        t.agent.rpc()
    );
    let small = measure_size(t, s, s.small, 0).await?;
    let large = measure_size(t, s, s.followers, s.writes).await?;
    print(&small);
    print(&large);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let p99 = |f: &Figures| ms(quantile(&f.all_reached, 0.99));
    println!(
        "ratios {} / {} followers: write → every follower p99 {:.1}× ({:.2} ms, yardstick {} ms), \
         server CPU per write {:.1}× ({:.1} µs per follower per write), parked CPU {:.1}×",
        s.followers,
        s.small,
        ratio(p99(&large), p99(&small)),
        p99(&large),
        YARDSTICK_P99.as_millis(),
        ratio(large.cpu_per_write_net, small.cpu_per_write_net),
        large.cpu_per_write_net / large.followers as f64 * 1e6,
        ratio(large.idle_cpu, small.idle_cpu),
    );
    Ok(())
}

fn self_check() {
    let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    let s = Settings::parse(&args(
        "--bench --followers 2000 --writes 10 --gap 5 --idle 3",
    ))
    .expect("parses");
    assert_eq!(
        s,
        Settings {
            followers: 2000,
            small: 6,
            writes: 10,
            gap: Duration::from_millis(5),
            idle: Duration::from_secs(3),
        }
    );
    assert!(Settings::parse(&args("--followers 0")).is_err());
    assert!(Settings::parse(&args("--followers 70000")).is_err());
    assert!(Settings::parse(&args("--writes")).is_err());
    assert!(Settings::parse(&args("--what")).is_err());
    // Every follower its own address, all in 127.25.0.0/16.
    let ips: std::collections::BTreeSet<_> = (0..62_500).map(follower_ip).collect();
    assert_eq!(ips.len(), 62_500);
    assert!(
        ips.iter()
            .all(|ip| ip.octets()[..2] == [127, 25] && ip.octets()[3] != 0)
    );
    let ds: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    assert_eq!(quantile(&ds, 0.5), Duration::from_millis(50));
    assert_eq!(quantile(&ds, 0.99), Duration::from_millis(99));
    assert_eq!(quantile(&ds, 1.0), Duration::from_millis(100));
    assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    let reg = Command::register(trellis::catalog::Registration {
        node: format!("{NODE_PREFIX}17"),
        id: String::new(),
        address: "10.25.0.1".into(),
        datacenter: String::new(),
        tagged_addresses: Default::default(),
        node_meta: Default::default(),
        skip_node_update: false,
        service: None,
        checks: Vec::new(),
    });
    assert_eq!(write_number(&reg), Some(17));
}
