//! DNS throughput and CPU per query of trellis against Knot (and NSD), on
//! the same data, at two catalog sizes, with and without catalog churn, in
//! one run.
//!
//! `cargo bench --bench dns_vs_nsd` (or `benches/run.sh`, which installs the
//! tools first):
//!
//! 1. measures the idle memory of a fresh `trellis agent --dev`;
//! 2. for each catalog size (`BENCH_SIZES`, default `3k,100k`: 1,000
//!    services × 3 on 300 nodes, and 33,334 × 3 on 10,000 nodes), starts a
//!    trellis dev agent on CPU 0 and registers the catalog through the HTTP
//!    API, many registrations in flight (`workload`);
//! 3. starts Knot (`knot`), and NSD if `BENCH_PEERS` names it (`nsd`), on
//!    CPU 0 with a zone holding the same records, and checks with dig that
//!    they answer sample questions as trellis does (`dig`);
//! 4. runs dnsperf on CPU 1 for `BENCH_SECONDS` (default 15) against each,
//!    with a query file over every service (50 % A, 40 % SRV, 10 % names
//!    that do not exist): flat out (queries per second at saturation), and
//!    at a fixed offered load (`BENCH_RATE`, default 40,000 qps: the
//!    server's CPU seconds per answered query); trellis once still and once
//!    under `BENCH_CHURN` (default 50) catalog writes a second (`churn`);
//! 5. prints each run, then one summary line per size with the ratios
//!    trellis/Knot, and exits non-zero if a server answered with the wrong
//!    response codes or different data.
//!
//! Every process it starts is stopped and every file removed on the way out,
//! including on errors and Ctrl-C (the test kit's `Process`, `tempfile::TempDir`).
//!
//! Run without `--bench` (as `cargo test --benches` does) it only checks its
//! own parsers and generators, in well under a second.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

mod churn;
#[path = "../common/procs.rs"]
#[allow(
    dead_code,
    reason = "only the load average: the other benches share the rest"
)]
mod common;
mod dig;
mod dnsperf;
mod knot;
mod nsd;
mod procs;
mod workload;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use trellis_testkit::{Log, OnDrop, Process};

use crate::churn::Churn;
use crate::dnsperf::Stats;
use crate::knot::Knot;
use crate::nsd::Nsd;
use crate::procs::{Memory, Trellis};
use crate::workload::Size;

/// The CPU the servers run on, one at a time under load.
const SERVER_CPU: usize = 0;
/// The CPU dnsperf runs on.
const CLIENT_CPU: usize = 1;
/// Registrations in flight while loading the catalog: enough that the
/// agent commits them in large groups.
const LOAD_CONCURRENCY: usize = 128;
/// The idle-memory target for a dev agent, bytes (10 MB).
const IDLE_RSS_TARGET: u64 = 10_000_000;
/// Tools the benchmark runs, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("knotd", "knot"),
    ("dnsperf", "dnsperf"),
    ("dig", "dnsutils"),
    ("taskset", "util-linux"),
];

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        workload::self_check();
        procs::self_check();
        dig::self_check();
        dnsperf::self_check();
        eprintln!(
            "dns_vs_nsd: self-checks passed (run `cargo bench --bench dns_vs_nsd` to benchmark)"
        );
        return ExitCode::SUCCESS;
    }
    with_sbin_on_path();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C drops `run`, and with it every child process and temp dir.
    let result = rt.block_on(async {
        tokio::select! {
            r = run() => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Makes sure `/usr/sbin`, where Debian puts `nsd`, is searched even when a
/// non-root user's PATH lacks it.
fn with_sbin_on_path() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<_> = std::env::split_paths(&path).collect();
    for extra in ["/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(extra.into());
        }
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        // SAFETY: called from `main` before the runtime or any other thread
        // exists, so nothing can read the environment concurrently.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

/// A reference server the benchmark runs next to trellis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    Knot,
    Nsd,
}

impl PeerKind {
    fn name(self) -> &'static str {
        match self {
            Self::Knot => "knot",
            Self::Nsd => "nsd",
        }
    }
}

/// Settings read from the environment.
struct Settings {
    /// Length of each dnsperf run.
    seconds: u64,
    /// CPU for the servers, if the machine has two.
    server_cpu: Option<usize>,
    /// CPU for dnsperf, if the machine has two.
    client_cpu: Option<usize>,
    /// `BENCH_SIZES`: the catalog sizes, in order.
    sizes: Vec<Size>,
    /// `BENCH_PEERS`: the reference servers (default Knot alone).
    peers: Vec<PeerKind>,
    /// `BENCH_RATE`: the fixed offered load, queries a second.
    rate: u32,
    /// `BENCH_CHURN`: catalog writes a second in the churned runs; 0 skips them.
    churn: u32,
    /// `BENCH_ONLY=peers`: only the reference servers, to check the
    /// harness without a trellis build that serves DNS.
    peers_only: bool,
    /// `BENCH_NET=127.0.22`: the /24 of loopback whose .2 (trellis), .3
    /// (Knot) and .4 (NSD) the servers listen on; default 127.0.0.
    net: [u8; 3],
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let seconds = env_num("BENCH_SECONDS", 15)?;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let two = cpus > CLIENT_CPU;
        if !two {
            eprintln!("warning: only {cpus} CPU available: nothing is pinned, figures mean little");
        }
        let peers_only = match std::env::var("BENCH_ONLY").as_deref() {
            Ok("peers") => true,
            Ok(other) => bail!("BENCH_ONLY={other:?}: the only choice is `peers`"),
            Err(_) => false,
        };
        let sizes = std::env::var("BENCH_SIZES")
            .unwrap_or_else(|_| "3k,100k".into())
            .split(',')
            .map(|s| match s.trim() {
                "3k" => Ok(workload::SMALL),
                "100k" => Ok(workload::LARGE),
                other => bail!("BENCH_SIZES: {other:?} is not a size; the sizes are 3k and 100k"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let peers = std::env::var("BENCH_PEERS")
            .unwrap_or_else(|_| "knot".into())
            .split(',')
            .map(|s| match s.trim() {
                "knot" => Ok(PeerKind::Knot),
                "nsd" => Ok(PeerKind::Nsd),
                other => bail!("BENCH_PEERS: {other:?} is not a peer; the peers are knot and nsd"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let net = std::env::var("BENCH_NET").unwrap_or_else(|_| "127.0.0".into());
        let octets: Vec<u8> = net
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("BENCH_NET={net:?}"))?;
        let [127, b, c] = octets[..] else {
            bail!("BENCH_NET={net:?}: give the first three octets of a loopback /24, as 127.0.22");
        };
        Ok(Self {
            peers_only,
            seconds,
            server_cpu: two.then_some(SERVER_CPU),
            client_cpu: two.then_some(CLIENT_CPU),
            sizes,
            peers,
            rate: env_num("BENCH_RATE", 40_000)?,
            churn: env_num("BENCH_CHURN", 50)?,
            net: [127, b, c],
        })
    }

    fn ip(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.net;
        Ipv4Addr::new(a, b, c, last)
    }
}

/// A running reference server.
struct Peer {
    kind: PeerKind,
    proc: Process,
    addr: SocketAddr,
}

/// How dnsperf loads a server in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// As fast as the server answers: 200 queries in flight.
    Flat,
    /// At most this many queries a second.
    Fixed(u32),
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    check_tools(&settings)?;
    print_header(&settings);

    let dir = tempfile::Builder::new()
        .prefix("trellis-bench-")
        .tempdir()
        .context("creating a temp dir")?;
    let idle = match settings.peers_only {
        true => None,
        false => Some(idle_memory(&settings, dir.path()).await?),
    };
    let mut summaries = Vec::new();
    let mut wrong = Vec::new();
    for &size in &settings.sizes {
        let (summary, bad) = run_size(&settings, size, dir.path(), idle).await?;
        summaries.push(summary);
        wrong.extend(bad);
    }
    print_summary(&settings, &summaries);
    if !wrong.is_empty() {
        bail!("wrong answers under load:\n  {}", wrong.join("\n  "));
    }
    Ok(())
}

/// The figures of one size that the summary compares.
struct Summary {
    size: Size,
    rows: Vec<Row>,
}

/// Loads one catalog size into a fresh trellis, starts the peers on the same
/// zone, and measures every server flat out and at the fixed rate. Returns
/// the rows and the wrong answers seen.
async fn run_size(
    settings: &Settings,
    size: Size,
    dir: &Path,
    idle: Option<Memory>,
) -> anyhow::Result<(Summary, Vec<String>)> {
    let dir = dir.join(size.name);
    std::fs::create_dir_all(&dir)?;
    println!(
        "\n== {}: {} services × {} instances on {} nodes ({} instances)",
        size.name,
        size.services,
        workload::INSTANCES,
        size.nodes,
        size.instances()
    );
    let queries = dir.join("queries.txt");
    std::fs::write(&queries, workload::query_file_of(size)).context("writing the query file")?;
    let catalog = Arc::new(workload::catalog_of(size));

    let mut trellis = match settings.peers_only {
        true => None,
        false => Some(start_loaded(settings, size, &dir, &catalog).await?),
    };

    let mut peers = Vec::new();
    for &kind in &settings.peers {
        let pdir = dir.join(kind.name());
        std::fs::create_dir(&pdir)?;
        let started = Instant::now();
        let ip = settings.ip(match kind {
            PeerKind::Knot => 3,
            PeerKind::Nsd => 4,
        });
        let (cpu, zone) = (settings.server_cpu, workload::zone(&catalog, ip));
        let (proc, addr) = match kind {
            PeerKind::Knot => {
                let k = Knot::start(cpu, &pdir, ip, &zone).await?;
                (k.proc, k.addr)
            }
            PeerKind::Nsd => {
                let n = Nsd::start(cpu, &pdir, ip, &zone).await?;
                (n.proc, n.addr)
            }
        };
        let peer = Peer { kind, proc, addr };
        println!(
            "{}: serving the same {} records from a static zone (ready in {:.2} s)",
            kind.name(),
            catalog.len() * 2 + size.nodes,
            started.elapsed().as_secs_f64()
        );
        if let Some((t, _)) = &trellis {
            compare(size, t.dns, &peer).await?;
        }
        peers.push(peer);
    }

    println!(
        "dnsperf: {} s per run, UDP, 8 clients, 200 in flight, on CPU {:?}; load: flat out, \
         then at most {} qps",
        settings.seconds, settings.client_cpu, settings.rate
    );
    let mut rows = Vec::new();
    for load in [Load::Flat, Load::Fixed(settings.rate)] {
        if let Some((t, _)) = &mut trellis {
            let perf = match load {
                Load::Flat => profile(t, size)?,
                Load::Fixed(_) => None,
            };
            let row = measure("trellis", t.pid(), t.dns, settings, &queries, load, None).await?;
            if let Some(mut p) = perf {
                // perf writes out its samples on SIGTERM, which takes a while.
                p.stop(Duration::from_secs(120));
            }
            rows.push(row);
            if settings.churn > 0 {
                let churn = Some((t.http, catalog.clone(), settings.churn));
                rows.push(
                    measure("trellis", t.pid(), t.dns, settings, &queries, load, churn).await?,
                );
            }
            t.alive()?;
        }
        for p in &peers {
            let pid = p.proc.pid();
            rows.push(measure(p.kind.name(), pid, p.addr, settings, &queries, load, None).await?);
        }
    }
    print_table(&rows);
    if let Some((t, loaded)) = &trellis {
        let logged = t.log_bytes();
        if logged > 1_000_000 {
            println!(
                "trellis logged {:.0} MB to stderr by the end of its runs",
                logged as f64 / 1e6
            );
        }
        if let Some(idle) = idle {
            print_memory(size, idle, *loaded, memory(t)?);
        }
    }
    for mut p in peers {
        p.proc.stop(Duration::from_secs(3));
    }
    if let Some((t, _)) = trellis {
        t.stop();
    }
    let wrong = rows
        .iter()
        .filter_map(|r| {
            r.stats
                .check_rcodes()
                .err()
                .map(|e| format!("{} {} ({}): {e}", size.name, r.name, r.label()))
        })
        .collect();
    Ok((Summary { size, rows }, wrong))
}

/// Starts the trellis under test on the server CPU and loads the catalog.
/// Returns it with its memory once loaded.
async fn start_loaded(
    settings: &Settings,
    size: Size,
    dir: &Path,
    catalog: &[workload::Instance],
) -> anyhow::Result<(Trellis, Memory)> {
    let ip = settings.ip(2).to_string();
    let t = Trellis::start(settings.server_cpu, &ip, dir.join("trellis.log")).await?;
    let loaded_in = match load(&t, size, catalog).await {
        Ok(d) => d,
        Err(e) => {
            bail!("{e:#}\ntrellis log (last lines):\n{}", t.log_tail());
        }
    };
    println!(
        "trellis: {} registrations loaded in {:.2} s ({:.0}/s, {} in flight)",
        catalog.len(),
        loaded_in.as_secs_f64(),
        catalog.len() as f64 / loaded_in.as_secs_f64(),
        LOAD_CONCURRENCY
    );
    let loaded = memory(&t)?;
    Ok((t, loaded))
}

/// Fails with the install command when a tool is missing.
fn check_tools(settings: &Settings) -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let nsd = settings
        .peers
        .contains(&PeerKind::Nsd)
        .then_some(("nsd", "nsd"));
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .chain(nsd)
        .filter(|(tool, _)| !std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
        .map(|(_, pkg)| pkg)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing tools; install them with `apt-get install -y {}` (benches/run.sh does it)",
            missing.join(" ")
        );
    }
    Ok(())
}

fn print_header(s: &Settings) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "dns_vs_nsd — {}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    println!(
        "machine: {cpus} CPUs, {cpu}; load average {}",
        common::load_average()
    );
    println!(
        "servers on CPU {:?}, dnsperf on CPU {:?}; trellis {}",
        s.server_cpu,
        s.client_cpu,
        procs::trellis_bin()
    );
}

/// With `BENCH_PERF=FILE`, samples trellis's stacks into FILE.SIZE while
/// dnsperf loads it flat out without churn (`perf report -i FILE.SIZE`
/// afterwards). CPU-clock sampling, which works in VMs without hardware
/// counters; DWARF unwinding because release builds keep no frame pointers.
fn profile(t: &Trellis, size: Size) -> anyhow::Result<Option<Process>> {
    let Some(out) = std::env::var_os("BENCH_PERF") else {
        return Ok(None);
    };
    let mut out = out;
    out.push(format!(".{}", size.name));
    let pid = t.pid();
    let mut cmd = std::process::Command::new("perf");
    cmd.args([
        "record",
        "-e",
        "cpu-clock",
        "-F",
        "499",
        "--call-graph",
        "dwarf,16384",
        "-q",
    ])
    .arg("-o")
    .arg(&out)
    .args(["-p", &pid.to_string()]);
    let p = Process::spawn("perf", &mut cmd, &Log::captured())?
        .on_drop(OnDrop::Terminate(Duration::from_secs(3)));
    println!("perf: recording trellis into {}", Path::new(&out).display());
    Ok(Some(p))
}

/// The memory of a fresh, unloaded dev agent once it has settled.
async fn idle_memory(settings: &Settings, dir: &Path) -> anyhow::Result<Memory> {
    let ip = settings.ip(2).to_string();
    let t = Trellis::start(None, &ip, dir.join("trellis-idle.log")).await?;
    // Let start-up allocations (the first election, self-registration) finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    t.alive()?;
    let m = memory(&t)?;
    t.stop();
    Ok(m)
}

fn memory(t: &Trellis) -> anyhow::Result<Memory> {
    Memory::of(t.pid())
}

/// Registers `catalog` through the HTTP API, `LOAD_CONCURRENCY` at once (the
/// fastest the API allows: `/v1/txn` takes only KV operations, and a
/// registration names one service), and waits until the catalog lists
/// every service. Returns how long it took.
async fn load(t: &Trellis, size: Size, catalog: &[workload::Instance]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("http://{}/v1/catalog/register", t.http);
    futures::stream::iter(catalog)
        .map(|inst| {
            let (client, url) = (&client, &url);
            async move {
                let resp = client.put(url).json(&inst.register_body()).send().await?;
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if !status.is_success() || body.trim() != "true" {
                    bail!(
                        "registering svc{}-{}: {status} {body}",
                        inst.service,
                        inst.index
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect::<()>()
        .await?;

    let url = format!("http://{}/v1/catalog/services", t.http);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let services: serde_json::Map<String, serde_json::Value> = client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let ours = services.keys().filter(|k| k.starts_with("svc")).count();
        if ours == size.services {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "/v1/catalog/services lists {ours} of {} services after 30 s",
                size.services
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks trellis and a peer the same questions and fails unless they agree.
async fn compare(size: Size, trellis: SocketAddr, peer: &Peer) -> anyhow::Result<()> {
    let (mid, last) = (size.services / 2, size.services - 1);
    let samples = [
        ("svc0.service.consul.".to_string(), "A"),
        ("svc0.service.consul.".to_string(), "SRV"),
        (format!("svc{mid}.service.consul."), "A"),
        (format!("svc{mid}.service.consul."), "SRV"),
        (format!("svc{last}.service.consul."), "SRV"),
        ("missing3.service.consul.".to_string(), "A"),
    ];
    let name = peer.kind.name();
    for edns in [true, false] {
        for (q, qtype) in &samples {
            let t = dig::query(trellis, q, qtype, edns).await?;
            let n = dig::query(peer.addr, q, qtype, edns).await?;
            if let Err(e) = dig::same(&t, &n) {
                bail!(
                    "trellis and {name} disagree on {q} {qtype} (EDNS: {edns}): {e}\n  \
                     trellis: {t:?}\n  {name}: {n:?}"
                );
            }
        }
    }
    println!(
        "dig: trellis and {name} answer {} sample questions identically, with and without EDNS \
         (order and TTL aside)",
        samples.len()
    );
    Ok(())
}

/// One dnsperf run against one server.
struct Row {
    /// The server.
    name: &'static str,
    /// How dnsperf loaded it.
    load: Load,
    /// The writes done during the run, for a churned one.
    churn: Option<churn::Done>,
    /// What dnsperf saw.
    stats: Stats,
    /// The server's CPU time over the run, seconds (all its threads).
    cpu_seconds: f64,
    /// System calls the server made (all its threads) while dnsperf sent,
    /// when `perf` could count them.
    syscalls: Option<u64>,
    /// The run's wall time, seconds.
    wall: f64,
    /// The machine's load average as the run ended.
    loadavg: String,
}

impl Row {
    /// The server's CPU use, % of one core: near 100 means the server, not
    /// dnsperf, was the limit.
    fn cpu_pct(&self) -> f64 {
        100.0 * self.cpu_seconds / self.wall.max(1e-9)
    }

    /// The server's system calls per answered query.
    fn syscalls_per_query(&self) -> Option<f64> {
        self.syscalls
            .map(|n| n as f64 / self.stats.completed.max(1) as f64)
    }

    /// The server's CPU time per answered query, µs.
    fn cpu_per_query_us(&self) -> f64 {
        1e6 * self.cpu_seconds / self.stats.completed.max(1) as f64
    }

    fn label(&self) -> String {
        let load = match self.load {
            Load::Flat => "flat out".to_string(),
            Load::Fixed(q) => format!("-Q {q}"),
        };
        match &self.churn {
            Some(c) => format!("{load}, churn {:.0}/s", c.rate()),
            None => load,
        }
    }
}

/// Loads the server at `addr` (process `pid`) with dnsperf, under churn when
/// `churn` names an agent's HTTP API, a catalog and a rate, and measures the
/// CPU it used meanwhile.
async fn measure(
    name: &'static str,
    pid: u32,
    addr: SocketAddr,
    settings: &Settings,
    queries: &Path,
    load: Load,
    churn: Option<(SocketAddr, Arc<Vec<workload::Instance>>, u32)>,
) -> anyhow::Result<Row> {
    let churn = churn.map(|(http, catalog, rate)| Churn::start(http, catalog, rate));
    let (cpu0, t0) = (procs::cpu_seconds(pid), Instant::now());
    let max_qps = match load {
        Load::Flat => None,
        Load::Fixed(q) => Some(q),
    };
    let (result, syscalls) = tokio::join!(
        dnsperf::run_at(
            settings.client_cpu,
            addr,
            queries,
            settings.seconds,
            max_qps,
        ),
        syscalls(pid, settings.seconds)
    );
    let (cpu1, wall) = (procs::cpu_seconds(pid), t0.elapsed().as_secs_f64());
    let churn = match churn {
        Some(c) => Some(c.finish().await?),
        None => None,
    };
    let (stats, _) = result?;
    Ok(Row {
        name,
        load,
        churn,
        stats,
        cpu_seconds: cpu1 - cpu0,
        syscalls,
        wall,
        loadavg: common::load_average(),
    })
}

/// The system calls process `pid` makes (every thread) over the next
/// `seconds`, counted by `perf stat` on the `raw_syscalls:sys_enter`
/// tracepoint, which does not slow the server as `strace` would. `None`
/// when perf is missing or not allowed to trace.
async fn syscalls(pid: u32, seconds: u64) -> Option<u64> {
    let out = tokio::process::Command::new("perf")
        .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p"])
        .arg(pid.to_string())
        .args(["--", "sleep"])
        .arg(seconds.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    // CSV on stderr: "count,unit,event,...".
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<8} {:<24} {:>9} {:>6} {:>8} {:>7} {:>7} {:>9} {:>9} {:>5} {:>9} {:>9} {:>6}  load avg",
        "server",
        "run",
        "qps",
        "cpu %",
        "µs/query",
        "sys/q",
        "lost %",
        "NOERROR",
        "NXDOMAIN",
        "other",
        "avg lat",
        "max lat",
        "resp B",
    );
    for r in rows {
        let s = &r.stats;
        let other = s
            .completed
            .saturating_sub(s.count("NOERROR") + s.count("NXDOMAIN"));
        println!(
            "{:<8} {:<24} {:>9.0} {:>6.0} {:>8.2} {:>7} {:>7.2} {:>9} {:>9} {:>5} {:>7.0}µs {:>7.0}µs {:>6}  {}",
            r.name,
            r.label(),
            s.qps,
            r.cpu_pct(),
            r.cpu_per_query_us(),
            r.syscalls_per_query()
                .map_or("-".into(), |n| format!("{n:.2}")),
            s.lost_pct(),
            s.count("NOERROR"),
            s.count("NXDOMAIN"),
            other,
            s.latency.0 * 1e6,
            s.latency.2 * 1e6,
            s.response_bytes,
            r.loadavg
        );
        if let Load::Fixed(q) = r.load
            && s.qps < 0.95 * f64::from(q)
        {
            println!(
                "         ({} could not keep up with {q} qps: this µs/query is at its saturation)",
                r.name
            );
        }
        if let Some(c) = &r.churn
            && (c.failed > 0 || c.skipped > 0)
        {
            println!(
                "         (churn: {} writes done, {} failed, {} ticks skipped with 16 in flight)",
                c.writes, c.failed, c.skipped
            );
        }
    }
    println!("(µs/query = the server's CPU seconds over the run, all threads, per answered");
    println!(" query; sys/q = its system calls per answered query, from `perf stat`;");
    println!(" cpu % below ~95 flat out means the server was not the limit)");
}

/// The summary: per size, trellis against each peer, flat out (with and
/// without churn) and CPU per query at the fixed load.
fn print_summary(settings: &Settings, sums: &[Summary]) {
    println!(
        "\n== summary (ratios trellis/peer; qps: higher is better for trellis, µs/query: lower)"
    );
    println!(
        "{:<5} {:<5} {:>12} {:>12} {:>10} {:>12} {:>12} {:>10} {:>7} {:>8} {:>8} {:>7}",
        "size",
        "peer",
        "trellis qps",
        "churned qps",
        "peer qps",
        "ratio",
        "churned",
        "µs/q",
        "churned",
        "peer µs/q",
        "ratio",
        "churned"
    );
    let find = |rows: &[Row], name: &str, load: Load, churned: bool| -> Option<(f64, f64)> {
        rows.iter()
            .find(|r| r.name == name && r.load == load && r.churn.is_some() == churned)
            .map(|r| (r.stats.qps, r.cpu_per_query_us()))
    };
    let fixed = Load::Fixed(settings.rate);
    for sum in sums {
        for peer in &settings.peers {
            let p = peer.name();
            let (Some((pq, _)), Some((_, pu))) = (
                find(&sum.rows, p, Load::Flat, false),
                find(&sum.rows, p, fixed, false),
            ) else {
                continue;
            };
            let t = find(&sum.rows, "trellis", Load::Flat, false);
            let tc = find(&sum.rows, "trellis", Load::Flat, true);
            let tf = find(&sum.rows, "trellis", fixed, false);
            let tfc = find(&sum.rows, "trellis", fixed, true);
            let q = |x: Option<(f64, f64)>| x.map_or("-".into(), |(q, _)| format!("{q:.0}"));
            let u = |x: Option<(f64, f64)>| x.map_or("-".into(), |(_, u)| format!("{u:.2}"));
            let rq =
                |x: Option<(f64, f64)>| x.map_or("-".into(), |(q, _)| format!("{:.2}×", q / pq));
            let ru =
                |x: Option<(f64, f64)>| x.map_or("-".into(), |(_, u)| format!("{:.2}×", u / pu));
            println!(
                "{:<5} {:<5} {:>12} {:>12} {:>10.0} {:>12} {:>12} {:>10} {:>7} {:>8.2} {:>8} {:>7}",
                sum.size.name,
                p,
                q(t),
                q(tc),
                pq,
                rq(t),
                rq(tc),
                u(tf),
                u(tfc),
                pu,
                ru(tf),
                ru(tfc)
            );
        }
    }
    println!(
        "(qps flat out; µs/query = server CPU per answered query at -Q {}; targets: trellis ≥ \
         1.0× Knot's qps at 100k with churn, µs/query ≤ Knot's at both sizes)",
        settings.rate
    );
}

fn print_memory(size: Size, idle: Memory, loaded: Memory, after: Memory) {
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let verdict = if idle.rss_kib * 1024 <= IDLE_RSS_TARGET {
        "within"
    } else {
        "OVER"
    };
    println!(
        "trellis RSS idle (fresh --dev, 1 s after ready): {:.1} MB, {verdict} the 10 MB target",
        mb(idle.rss_kib)
    );
    println!(
        "trellis RSS with the {} catalog: {:.1} MB loaded, {:.1} MB after the runs (peak {:.1} MB); \
         {:.2} KB per instance over idle",
        size.name,
        mb(loaded.rss_kib),
        mb(after.rss_kib),
        mb(after.hwm_kib),
        (loaded.rss_kib.saturating_sub(idle.rss_kib)) as f64 * 1.024 / size.instances() as f64
    );
}
