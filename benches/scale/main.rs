//! Memory and start-up at datacenter scale: 100,000 instances (33,334
//! services × 3 on 10,000 nodes) in one agent, on the release binary.
//!
//! `cargo bench --bench scale` (`-- --services N --nodes N` for another
//! size, `--only idle,memory,restart,install` for some of the parts,
//! `--rounds N` for the timed parts). Every agent binds 127.0.24.x.
//!
//! 1. idle: a fresh `agent --dev`; `VmRSS` 1 s after its start (target
//!    ≤ 10 MB), median of `--rounds` starts; the same of a client agent
//!    joined to a dev agent, 1 s after it knows the leader (each round a
//!    client of its own name); and how many of the functions
//!    `link/text-order.txt` lays out first the binary has (`build.rs`),
//!    next to how many the file's writer found in each build.
//! 2. memory: for a dev agent and for a durable single server (`--server
//!    --bootstrap-expect 1 --data-dir …`), each with bare instances (node
//!    and instance only) and rich ones (two tags, one meta key and one
//!    passing check each): `RssAnon` once the agent is idle before and
//!    after loading the catalog through `PUT /v1/catalog/register`
//!    (`--in-flight` requests at once), read 20 s after the load (the
//!    allocator returns freed pages over about 10 s, in steps), divided by
//!    the instances (target ≤ 1 KB each).
//! 3. restart: the durable server with the rich catalog, SIGTERM, start
//!    again; time from the exec until a UDP question for a known service
//!    (polled every 2 ms) gets every one of its instances (target 1 s).
//!    The server's `start-up` log line breaks the time down.
//! 4. install: a second server (no bootstrap, joining the first) and a
//!    client agent (joining it), each started empty: time from the exec
//!    until it answers DNS for the last service registered, every instance
//!    (target 2 s).
//! 5. stall: one client re-registers one instance on the durable server,
//!    a write at a time, for 20 s, while the server snapshots its state
//!    (a single server snapshots whenever one is due; pass
//!    `--raft-snapshot-threshold 2000` for one every few seconds): the
//!    writes' latency percentiles, and the snapshots' own log lines (how
//!    long marking the state held applying up, how long encoding took).
//!    `BENCH_SLOW=1` prints every write over 5 ms with the time it ended.
//! 6. catchup: the same writes while three client agents join the durable
//!    server one after another, each empty, so the server encodes its state
//!    for them: the writes' latency percentiles.
//!
//! Without `--bench` (as `cargo test --benches` runs it) it only checks its
//! own helpers.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

mod breakdown;
#[allow(dead_code)] // disk_usage, raise_nofile are for the KV benchmarks
#[path = "../common/mem.rs"]
mod mem;
#[allow(dead_code)] // on_path is for the benchmarks with peers
#[path = "../common/procs.rs"]
mod procs;
#[path = "../common/stats.rs"]
mod stats;

#[global_allocator]
static COUNTING: breakdown::Counting = breakdown::Counting;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use trellis_testkit::net::{free_dns_port, free_tcp_port, free_udp_port};
use trellis_testkit::{Agent, Trellis as Bin};

use crate::mem::{Memory, mib};
use crate::stats::percentile;

/// The binary cargo built for this benchmark (release profile).
const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

/// The agents' addresses: 127.0.24.x, this benchmark's own.
fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 24, last))
}

fn main() -> ExitCode {
    procs::bench_main("scale", self_check, Settings::parse, run)
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Settings {
    /// `--services N`.
    services: usize,
    /// `--instances N`: per service, each on another node.
    instances: usize,
    /// `--nodes N`.
    nodes: usize,
    /// `--in-flight N`: registrations in flight at once while loading.
    in_flight: usize,
    /// `--rounds N`: repeats of the idle, restart and install measures.
    rounds: usize,
    /// `--only a,b`: the parts to run (breakdown, idle, memory, restart,
    /// install, stall, catchup).
    only: Vec<String>,
    /// `--raft-snapshot-threshold N` and `--raft-trailing-logs N` for the
    /// servers; 0 leaves the agent's defaults (16,384 and 10,240 entries).
    snapshot_threshold: usize,
    trailing_logs: usize,
}

/// How long after a load an agent's memory is read.
const SETTLE: Duration = Duration::from_secs(20);

const PARTS: [&str; 7] = [
    "breakdown",
    "idle",
    "memory",
    "restart",
    "install",
    "stall",
    "catchup",
];

impl Settings {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut s = Self {
            services: 33_334,
            instances: 3,
            nodes: 10_000,
            in_flight: 128,
            rounds: 3,
            only: PARTS.iter().map(|p| p.to_string()).collect(),
            snapshot_threshold: 0,
            trailing_logs: 0,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--bench" {
                continue;
            }
            let v = it.next().ok_or_else(|| anyhow!("{a} needs a value"))?;
            let n = || -> anyhow::Result<usize> {
                v.replace(['_', ','], "")
                    .parse()
                    .map_err(|_| anyhow!("{a} {v:?}: want a number"))
            };
            match a.as_str() {
                "--services" => s.services = n()?,
                "--instances" => s.instances = n()?,
                "--nodes" => s.nodes = n()?,
                "--in-flight" => s.in_flight = n()?,
                "--rounds" => s.rounds = n()?,
                "--raft-snapshot-threshold" => s.snapshot_threshold = n()?,
                "--raft-trailing-logs" => s.trailing_logs = n()?,
                "--only" => {
                    s.only = v.split(',').map(str::to_string).collect();
                    if let Some(bad) = s.only.iter().find(|p| !PARTS.contains(&p.as_str())) {
                        bail!("--only {bad:?}: the parts are {}", PARTS.join(","));
                    }
                }
                _ => bail!(
                    "unknown argument {a} {v}; use --services N, --instances N, --nodes N, \
                     --in-flight N, --rounds N, --raft-snapshot-threshold N, \
                     --raft-trailing-logs N, --only {}",
                    PARTS.join(",")
                ),
            }
        }
        if s.services == 0 || s.nodes < s.instances || s.in_flight == 0 || s.rounds == 0 {
            bail!(
                "want services, in-flight and rounds ≥ 1 and at least as many nodes as instances"
            );
        }
        Ok(s)
    }

    fn runs(&self, part: &str) -> bool {
        self.only.iter().any(|p| p == part)
    }

    fn total(&self) -> usize {
        self.services * self.instances
    }
}

/// One instance of the generated catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instance {
    service: usize,
    index: usize,
    node: usize,
}

/// The catalog: instance `i` of service `k` on node `(7k + i·⌊nodes/n⌋) mod
/// nodes`, so a service's instances land on distinct nodes and every node
/// carries about the same number.
fn catalog(s: &Settings) -> Vec<Instance> {
    let step = s.nodes / s.instances;
    let mut out = Vec::with_capacity(s.total());
    for service in 0..s.services {
        for index in 0..s.instances {
            let node = (service * 7 + index * step) % s.nodes;
            out.push(Instance {
                service,
                index,
                node,
            });
        }
    }
    out
}

/// How many distinct nodes `catalog` uses.
fn nodes_of(cat: &[Instance]) -> usize {
    cat.iter()
        .map(|i| i.node)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// `10.x.y.z`, unique per node.
fn node_addr(node: usize) -> Ipv4Addr {
    let n = u32::try_from(node).unwrap_or(u32::MAX);
    Ipv4Addr::new(
        10,
        ((n >> 16) & 0xff) as u8,
        ((n >> 8) & 0xff) as u8,
        (n & 0xff) as u8,
    )
}

/// The registration of one instance; `rich` adds two tags, a meta key and
/// a passing check on the instance.
fn register_body(i: Instance, rich: bool) -> serde_json::Value {
    let id = format!("svc{}-{}", i.service, i.index);
    let mut service = serde_json::json!({
        "ID": id,
        "Service": format!("svc{}", i.service),
        "Port": 20_000 + (i.service % 20_000) as u16 + i.index as u16,
    });
    let mut body = serde_json::json!({
        "Node": format!("node{}", i.node),
        "Address": node_addr(i.node).to_string(),
    });
    if rich {
        service["Tags"] = serde_json::json!(["primary", format!("v{}", i.index + 1)]);
        service["Meta"] = serde_json::json!({"version": "1.4.2"});
        body["Checks"] = serde_json::json!([{
            "CheckID": format!("service:{id}"),
            "Name": "Service health",
            "Status": "passing",
            "ServiceID": id,
            "Output": "HTTP GET http://localhost/health: 200 OK",
        }]);
    }
    body["Service"] = service;
    body
}

/// One agent of the run, with the ports a restart keeps.
struct Node {
    agent: Agent,
    dns: SocketAddr,
    http: SocketAddr,
}

impl Node {
    /// Starts `kind` (`dev`, `server`, `join-server`, `client`) on
    /// 127.0.24.`last`; `join` is the LAN gossip address of a server to join.
    async fn start(
        kind: &str,
        last: u8,
        dir: &Path,
        join: Option<SocketAddr>,
        raft: &[(&str, usize)],
    ) -> anyhow::Result<Self> {
        let ip = ip(last);
        let (dns_port, http_port) = (free_dns_port(ip)?, free_tcp_port(ip)?);
        let bin = Bin::from_env_or("TRELLIS_BIN", TRELLIS);
        let mut spec = match kind {
            "dev" => bin.dev(),
            "server" => bin.server().bootstrap_expect(1),
            "join-server" => bin.server(),
            "client" => bin.client(),
            _ => bail!("no agent kind {kind}"),
        };
        let name = format!("{kind}-{last}");
        spec = spec
            .node(&name)
            .ip(ip)
            .dns_port(dns_port)
            .http_port(http_port)
            .no_wan()
            .log_file(dir.join(format!("{name}.log")))
            .log_filter(Some("info,openraft=warn"));
        if kind != "dev" {
            spec = spec
                .data_dir(dir.join(&name))
                .serf_lan_port(free_udp_port(ip)?);
        }
        if kind != "client" && kind != "dev" {
            spec = spec.server_port(free_tcp_port(ip)?);
            for &(flag, n) in raft.iter().filter(|(_, n)| *n > 0) {
                spec = spec.arg(flag, n.to_string());
            }
        }
        if let Some(j) = join {
            spec = spec.retry_join(j);
        }
        let agent = spec.start_async().await?;
        let addrs = agent.addrs();
        Ok(Self {
            dns: addrs.dns,
            http: addrs.http,
            agent,
        })
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        self.agent.check_running()?;
        Memory::of(self.agent.pid())
    }

    /// The memory once the allocator has handed back what it will:
    /// jemalloc returns freed pages over its dirty decay (10 s), in steps
    /// as the agent's own timers allocate, so `RssAnon` falls for a while
    /// after a load: read [`SETTLE`] after the agent went quiet (in runs
    /// here the last step came 14 to 17 s after; read at 300 ms, a durable
    /// server's bare figure was 1,155 bytes per instance, at 20 s 1,014).
    async fn settled_memory(&self) -> anyhow::Result<Memory> {
        let start = Instant::now();
        while start.elapsed() < SETTLE {
            self.agent.check_running()?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.memory()
    }

    /// Waits until a leader is known and writes are taken.
    async fn wait_leader(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("http://{}/v1/status/leader", self.http);
        let start = Instant::now();
        loop {
            self.agent.check_running()?;
            if let Ok(r) = http.get(&url).send().await
                && let Ok(t) = r.text().await
                && t.trim().trim_matches('"').contains(':')
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("no leader after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the process has used under 2 % of a CPU over 300 ms.
    async fn quiet(&self) -> anyhow::Result<()> {
        let pid = self.agent.pid();
        let start = Instant::now();
        loop {
            let before = procs::cpu_seconds(&[pid]);
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.agent.check_running()?;
            if procs::cpu_seconds(&[pid]) - before < 0.006 {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!("still busy after 120 s");
            }
        }
    }
}

/// Registers `catalog` with `in_flight` requests at once; returns the time.
async fn load(
    node: &Node,
    catalog: &[Instance],
    rich: bool,
    in_flight: usize,
) -> anyhow::Result<Duration> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(in_flight)
        .build()?;
    let url = format!("http://{}/v1/catalog/register", node.http);
    let start = Instant::now();
    futures::stream::iter(catalog)
        .map(|&inst| {
            let (http, url) = (&http, &url);
            async move {
                let body = serde_json::to_vec(&register_body(inst, rich))?;
                let resp = http.put(url).body(body).send().await?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if !status.is_success() || text.trim() != "true" {
                    bail!("registering {inst:?}: {status} {text}");
                }
                Ok(())
            }
        })
        .buffer_unordered(in_flight)
        .try_collect::<()>()
        .await?;
    Ok(start.elapsed())
}

/// A DNS question for `name`'s A records, ID `id`.
fn question(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Whether `answer` answers question `id` with NOERROR and at least `want`
/// answer records.
fn answers(answer: &[u8], id: u16, want: u16) -> bool {
    answer.len() >= 12
        && answer[..2] == id.to_be_bytes()
        && answer[3] & 0x0f == 0
        && u16::from_be_bytes([answer[6], answer[7]]) >= want
}

/// Polls `server` every 2 ms from `since` until it answers `name` with
/// `want` A records; returns the time since `since`. Blocking: run it on a
/// thread of its own.
fn poll_dns(
    server: SocketAddr,
    name: &str,
    want: u16,
    since: Instant,
    deadline: Duration,
) -> anyhow::Result<Duration> {
    let sock = UdpSocket::bind((server.ip(), 0)).context("binding a UDP socket")?;
    sock.set_read_timeout(Some(Duration::from_millis(2)))?;
    let mut buf = [0u8; 4096];
    let mut id: u16 = 1;
    loop {
        id = id.wrapping_add(1);
        // Refused while nothing listens yet: poll again.
        let _ = sock.send_to(&question(name, id), server);
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_millis(2) {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if answers(&buf[..n], id, want) => return Ok(since.elapsed()),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if since.elapsed() > deadline {
            bail!("{server} did not answer {name} with {want} records in {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The median of some durations.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn machine() -> String {
    format!(
        "{} CPUs, load average {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        procs::load_average()
    )
}

/// The last `start-up` line of an agent's log (the server's own breakdown
/// of its start), if it printed one.
/// One client's writes to `n`, a write at a time (re-registering one
/// instance), until `meanwhile` is done: their latencies, sorted.
async fn writes_while(
    n: &Node,
    meanwhile: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Vec<Duration>> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        let http = reqwest::Client::new();
        let url = format!("http://{}/v1/catalog/register", n.http);
        let mut took = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let port = 1 + took.len() % 60_000;
            let body = serde_json::json!({
                "Node": "stall-writer",
                "Address": "10.200.0.1",
                "Service": {"ID": "stall", "Service": "stall", "Port": port},
            });
            let t = Instant::now();
            let resp = http.put(&url).json(&body).send().await?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() || text.trim() != "true" {
                bail!("writing: {status} {text}");
            }
            let d = t.elapsed();
            if d > Duration::from_millis(5) && std::env::var("BENCH_SLOW").is_ok() {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
                eprintln!(
                    "slow write: {:.1} ms, done at unix {:.3}",
                    d.as_secs_f64() * 1e3,
                    now.as_secs_f64()
                );
            }
            took.push(d);
        }
        took.sort();
        Ok(took)
    };
    let done = async {
        let r = meanwhile.await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    };
    let (took, done) = tokio::join!(writer, done);
    done?;
    let took = took?;
    if took.is_empty() {
        bail!("no write went in");
    }
    Ok(took)
}

/// A row of sorted write latencies: p50 / p99 / p99.9 / max.
fn latency_row(label: String, took: &[Duration]) -> (String, String, String) {
    let at = |p: f64| percentile(took, p);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p99, p999) = (at(0.99), at(0.999));
    (
        format!("{label} ({} writes): p50 / p99 / p99.9 / max", took.len()),
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} ms (p99.9 = {:.1}× p99)",
            ms(at(0.5)),
            ms(p99),
            ms(p999),
            ms(at(1.0)),
            p999.as_secs_f64() / p99.as_secs_f64()
        ),
        "p99.9 ≤ 3× p99".into(),
    )
}

/// The lines of `agent`'s log that contain `what`.
fn log_lines(agent: &Agent, what: &str) -> Vec<String> {
    agent
        .log()
        .lines()
        .filter(|l| l.contains(what))
        .map(String::from)
        .collect()
}

/// One client's writes to `n` for `span` while it snapshots: their
/// latency, and the snapshots built meanwhile.
async fn writes_during_snapshots(
    n: &Node,
    span: Duration,
) -> anyhow::Result<Vec<(String, String, String)>> {
    const BUILT: &str = "built and stored a snapshot";
    let before = log_lines(&n.agent, BUILT).len();
    let took = writes_while(n, async {
        tokio::time::sleep(span).await;
        Ok(())
    })
    .await?;
    let snapshots: Vec<String> = log_lines(&n.agent, BUILT)
        .into_iter()
        .skip(before)
        .collect();
    // Each line's `mark_ms` (what applying waited for) and `encode_ms`.
    let field = |line: &str, name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let most = |name: &str| {
        snapshots
            .iter()
            .map(|l| field(l, name))
            .fold(0.0_f64, f64::max)
    };
    Ok(vec![
        latency_row(
            format!("one client's writes during {} snapshots", snapshots.len()),
            &took,
        ),
        (
            "  the snapshots: longest mark (applying waits) / longest encoding".into(),
            format!("{:.3} / {:.0} ms", most("mark_ms"), most("encode_ms")),
            "–".into(),
        ),
    ])
}

fn startup_line(agent: &Agent) -> Option<String> {
    log_lines(agent, "start-up").pop()
}

async fn run(s: Settings) -> anyhow::Result<()> {
    println!(
        "scale: {} services × {} instances on {} nodes ({} instances), {} registrations in flight",
        s.services,
        s.instances,
        s.nodes,
        s.total(),
        s.in_flight
    );
    println!("machine: {}", machine());
    let dir = tempfile::Builder::new()
        .prefix("trellis-scale-")
        .tempdir()
        .context("creating a temp dir")?;
    let (dir_path, _guard) = if std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1") {
        let kept = dir.keep();
        println!("data and logs kept in {} (BENCH_KEEP=1)", kept.display());
        (kept, None)
    } else {
        (dir.path().to_path_buf(), Some(dir))
    };
    let dir = dir_path.as_path();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let cat = catalog(&s);
    let total = s.total() as f64;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let raft = [
        ("--raft-snapshot-threshold", s.snapshot_threshold),
        ("--raft-trailing-logs", s.trailing_logs),
    ];
    println!(
        "servers: --raft-snapshot-threshold {}, --raft-trailing-logs {}",
        if s.snapshot_threshold > 0 {
            s.snapshot_threshold.to_string()
        } else {
            "default".into()
        },
        if s.trailing_logs > 0 {
            s.trailing_logs.to_string()
        } else {
            "default".into()
        }
    );

    if s.runs("breakdown") {
        // The follow history a server keeps (src/agent/server.rs).
        breakdown::run(&cat, false, 8192)?;
        breakdown::run(&cat, true, 8192)?;
    }

    if s.runs("idle") {
        let mut rss = Vec::new();
        for round in 0..s.rounds {
            let n = Node::start("dev", 1, dir, None, &[]).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss.push(idle_memory("dev", round, &n)?);
            n.agent.terminate();
        }
        rows.push(idle_row("idle dev agent, VmRSS 1 s after start", rss));
        // A client agent, the kind every machine runs, joined to a dev
        // server: read 1 s after it knows the leader.
        let server = Node::start("dev", 2, dir, None, &[]).await?;
        let mut rss = Vec::new();
        for round in 0..s.rounds {
            let last = 60 + round as u8;
            let c = Node::start("client", last, dir, Some(server.agent.serf()), &[]).await?;
            c.wait_leader(&http).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss.push(idle_memory("client", round, &c)?);
            c.agent.terminate();
        }
        server.agent.terminate();
        rows.push(idle_row(
            "idle client agent joined to a dev agent, VmRSS 1 s after it has a leader",
            rss,
        ));
        let bin = std::env::var("TRELLIS_BIN").unwrap_or_else(|_| TRELLIS.into());
        rows.push((
            "functions of link/text-order.txt the binary has".into(),
            text_order_found(Path::new(&bin)),
            "about its build's count".into(),
        ));
    }

    // The durable server keeps the rich catalog for the restart and install parts.
    let mut durable: Option<Node> = None;
    let need_loaded = ["restart", "install", "stall", "catchup"]
        .iter()
        .any(|p| s.runs(p));
    let kinds: Vec<(&str, bool)> = if s.runs("memory") {
        vec![
            ("dev", false),
            ("dev", true),
            ("server", false),
            ("server", true),
        ]
    } else if need_loaded {
        vec![("server", true)]
    } else {
        vec![]
    };
    for (i, (kind, rich)) in kinds.into_iter().enumerate() {
        let last = 10 + i as u8;
        let n = Node::start(kind, last, dir, None, &raft).await?;
        n.wait_leader(&http).await?;
        n.quiet().await?;
        let before = n.memory()?;
        let took = load(&n, &cat, rich, s.in_flight).await?;
        let last_svc = format!("svc{}.service.consul", s.services - 1);
        let dns = n.dns;
        let want = s.instances as u16;
        tokio::task::spawn_blocking(move || {
            poll_dns(
                dns,
                &last_svc,
                want,
                Instant::now(),
                Duration::from_secs(60),
            )
        })
        .await??;
        n.quiet().await?;
        let after = n.settled_memory().await?;
        let per = (after.anon.saturating_sub(before.anon)) as f64 / total;
        let label = format!(
            "{} {}: RssAnon {:.1} → {:.1} MB, per instance",
            if kind == "dev" {
                "dev agent"
            } else {
                "durable server"
            },
            if rich { "rich" } else { "bare" },
            before.anon as f64 / 1e6,
            after.anon as f64 / 1e6
        );
        eprintln!(
            "{label}: {:.0} B (loaded in {:.1} s, {:.0}/s)",
            per,
            took.as_secs_f64(),
            total / took.as_secs_f64()
        );
        rows.push((label, format!("{per:.0} B"), "≤ 1,024 B".into()));
        rows.push((
            format!("  load time ({} in flight)", s.in_flight),
            format!(
                "{:.1} s ({:.0}/s)",
                took.as_secs_f64(),
                total / took.as_secs_f64()
            ),
            "–".into(),
        ));
        if kind == "server" && rich {
            durable = Some(n);
        } else {
            n.agent.terminate();
        }
    }

    let known = format!("svc{}.service.consul", s.services / 2);
    let last_svc = format!("svc{}.service.consul", s.services - 1);
    let want = s.instances as u16;
    if let Some(n) = &durable
        && s.runs("restart")
    {
        let mut times = Vec::new();
        for round in 0..s.rounds {
            n.agent.terminate();
            let (dns, name) = (n.dns, known.clone());
            let start = Instant::now();
            let poll = tokio::task::spawn_blocking(move || {
                poll_dns(dns, &name, want, start, Duration::from_secs(120))
            });
            n.agent.restart_async().await?;
            let t = poll.await??;
            eprintln!(
                "restart round {round}: {:.3} s; {}",
                t.as_secs_f64(),
                startup_line(&n.agent).unwrap_or_else(|| "no start-up line".into())
            );
            times.push(t);
            n.wait_leader(&http).await?;
            n.quiet().await?;
        }
        let m = n.settled_memory().await?;
        rows.push((
            "restart to serving DNS, rich catalog".into(),
            format!("{:.3} s", median(times).as_secs_f64()),
            "≤ 1 s".into(),
        ));
        rows.push((
            "  RssAnon after restart, per instance".into(),
            format!(
                "{:.0} B ({:.1} MB)",
                m.anon as f64 / total,
                m.anon as f64 / 1e6
            ),
            "–".into(),
        ));
        if let Some(line) = startup_line(&n.agent) {
            println!("last start-up: {line}");
        }
    }

    if let Some(n) = &durable
        && s.runs("install")
    {
        let serf = n.agent.serf();
        for (kind, last) in [("join-server", 30u8), ("client", 40u8)] {
            let mut times = Vec::new();
            for round in 0..s.rounds {
                let last = last + round as u8;
                let start = Instant::now();
                let ipl = ip(last);
                // The DNS port is known only once the agent prints it, so
                // the poll starts then; the time still counts from the exec.
                let j = Node::start(kind, last, dir, Some(serf), &raft).await?;
                let (dns, name) = (j.dns, last_svc.clone());
                let t = tokio::task::spawn_blocking(move || {
                    poll_dns(dns, &name, want, start, Duration::from_secs(120))
                })
                .await??;
                j.quiet().await?;
                let m = j.memory()?;
                eprintln!(
                    "{kind} {ipl} round {round}: serving in {:.3} s, RssAnon {:.1} MB",
                    t.as_secs_f64(),
                    m.anon as f64 / 1e6
                );
                times.push(t);
                if kind == "join-server" {
                    // Out of the Raft configuration before it stops, so the
                    // first server keeps its quorum of one.
                    let url = format!(
                        "http://{}/v1/operator/raft/peer?address={}",
                        n.http,
                        j.agent.rpc()
                    );
                    let r = http.delete(url).send().await?;
                    if !r.status().is_success() {
                        bail!("removing {kind}-{last}: {} {}", r.status(), r.text().await?);
                    }
                }
                j.agent.terminate();
                let url = format!(
                    "http://{}/v1/agent/force-leave/{kind}-{last}?prune=1",
                    n.http
                );
                let _ = http.put(url).send().await;
                n.wait_leader(&http).await?;
            }
            rows.push((
                format!(
                    "{} from exec to serving the catalog",
                    if kind == "client" {
                        "client agent joining"
                    } else {
                        "second server joining (snapshot install)"
                    }
                ),
                format!("{:.3} s", median(times).as_secs_f64()),
                "≤ 2 s".into(),
            ));
        }
    }
    if let Some(n) = &durable
        && s.runs("stall")
    {
        rows.extend(writes_during_snapshots(n, Duration::from_secs(20)).await?);
    }
    if let Some(n) = &durable
        && s.runs("catchup")
    {
        // Client agents join one after another, each started empty, so the
        // server encodes its state for them (`rpc/catchup.rs`; a later one
        // may take the same encoding).
        const ENCODED: &str = "encoded the state for client agents catching up";
        let before = log_lines(&n.agent, ENCODED).len();
        let serf = n.agent.serf();
        let joins = async {
            for round in 0..3u8 {
                let last = 50 + round;
                let start = Instant::now();
                let j = Node::start("client", last, dir, Some(serf), &raft).await?;
                let (dns, name) = (j.dns, last_svc.clone());
                tokio::task::spawn_blocking(move || {
                    poll_dns(dns, &name, want, start, Duration::from_secs(120))
                })
                .await??;
                // Off this task: stopping waits for the process, and the
                // writes run in this task too.
                tokio::task::spawn_blocking(move || j.agent.terminate()).await?;
                let url = format!(
                    "http://{}/v1/agent/force-leave/client-{last}?prune=1",
                    n.http
                );
                let _ = http.put(url).send().await;
            }
            Ok(())
        };
        let took = writes_while(n, joins).await?;
        let encoded = log_lines(&n.agent, ENCODED).len() - before;
        rows.push(latency_row(
            format!("one client's writes while 3 client agents join ({encoded} encodings)"),
            &took,
        ));
    }
    if let Some(n) = durable {
        n.agent.terminate();
    }

    println!("machine at the end: {}", machine());
    println!("\n| measure | figure | target |\n|---|---:|---:|");
    for (m, f, t) in rows {
        println!("| {m} | {f} | {t} |");
    }
    Ok(())
}

/// An idle agent's memory, printed as the round's line.
fn idle_memory(kind: &str, round: usize, node: &Node) -> anyhow::Result<Memory> {
    let m = node.memory()?;
    eprintln!(
        "idle {kind} round {round}: VmRSS {:.1} MB, RssAnon {:.1} MB",
        m.rss as f64 / 1e6,
        m.anon as f64 / 1e6
    );
    Ok(m)
}

/// The row of an idle measure: the median round by `VmRSS`.
fn idle_row(label: &str, mut rss: Vec<Memory>) -> (String, String, String) {
    rss.sort_by_key(|m| m.rss);
    let m = rss[rss.len() / 2];
    (
        label.into(),
        format!(
            "{:.1} MB ({:.1} MiB; anon {:.1} MB)",
            m.rss as f64 / 1e6,
            mib(m.rss),
            m.anon as f64 / 1e6
        ),
        "≤ 10 MB".into(),
    )
}

/// How many of the names `link/text-order.txt` lists the binary has, next
/// to how many the script found in each build (the file's header): names
/// carry a hash of their crate's build, `cargo build --release` and `cargo
/// bench` build with different features, and the file lists both builds'
/// names. Far fewer than the build's own count means a file written for
/// another compiler or other dependencies, and the idle text is spread out
/// again (`build.rs`, `scripts/text_order.py`). Informational: without
/// `nm` it says so.
fn text_order_found(bin: &Path) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/link/text-order.txt");
    let Ok(order) = std::fs::read_to_string(path) else {
        return format!("n/a: no {path}");
    };
    let nm = match std::process::Command::new("nm")
        .arg("--defined-only")
        .arg(bin)
        .output()
    {
        Ok(nm) if nm.status.success() => nm,
        Ok(nm) => return format!("n/a: nm: {}", String::from_utf8_lossy(&nm.stderr).trim()),
        Err(e) => return format!("n/a: nm: {e}"),
    };
    let nm = String::from_utf8_lossy(&nm.stdout);
    let symbols: std::collections::HashSet<&str> = nm
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let found = order
        .lines()
        .filter(|l| !l.starts_with('#') && symbols.contains(l))
        .count();
    let builds: Vec<&str> = order
        .lines()
        .filter_map(|l| l.strip_prefix("# names of the "))
        .collect();
    format!("{found} ({})", builds.join("; "))
}

/// Checks the parsers and generators; run without `--bench`.
fn self_check() {
    mem::self_check();
    let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    let d = Settings::parse(&args("--bench")).expect("defaults");
    assert_eq!((d.services, d.instances, d.nodes), (33_334, 3, 10_000));
    assert_eq!(d.total(), 100_002);
    assert!(PARTS.iter().all(|p| d.runs(p)));
    let s = Settings::parse(&args("--bench --services 10 --nodes 5 --only idle,restart"))
        .expect("parses");
    assert!(s.runs("idle") && s.runs("restart") && !s.runs("memory"));
    assert!(Settings::parse(&args("--only nothing")).is_err());
    assert!(Settings::parse(&args("--nodes 2")).is_err());
    assert!(Settings::parse(&args("--services")).is_err());

    // Every service's instances on distinct nodes; every node used.
    let cat = catalog(&d);
    assert_eq!(cat.len(), d.total());
    for svc in cat.chunks(3) {
        assert!(
            svc[0].node != svc[1].node && svc[1].node != svc[2].node && svc[0].node != svc[2].node
        );
    }
    let used: std::collections::BTreeSet<usize> = cat.iter().map(|i| i.node).collect();
    assert_eq!(used.len(), d.nodes);
    assert_ne!(node_addr(1), node_addr(257));

    let rich = register_body(cat[4], true);
    assert_eq!(rich["Service"]["ID"], "svc1-1");
    assert_eq!(rich["Service"]["Tags"].as_array().map(Vec::len), Some(2));
    assert_eq!(rich["Checks"][0]["ServiceID"], "svc1-1");
    assert!(register_body(cat[4], false).get("Checks").is_none());

    // A question and an answer to it.
    let q = question("svc1.service.consul", 0x1234);
    assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
    assert_eq!(q.len(), 12 + 1 + 4 + 1 + 7 + 1 + 6 + 1 + 4);
    let mut a = q.clone();
    a[2] |= 0x80;
    a[7] = 3;
    assert!(answers(&a, 0x1234, 3));
    assert!(!answers(&a, 0x1235, 3));
    a[3] = 3; // NXDOMAIN
    assert!(!answers(&a, 0x1234, 3));
    assert_eq!(
        median(vec![
            Duration::from_secs(3),
            Duration::from_secs(1),
            Duration::from_secs(2)
        ]),
        Duration::from_secs(2)
    );
}
