//! DNS throughput of trellis against NSD, on the same data, in one run.
//!
//! `cargo bench --bench dns_vs_nsd` (or `benches/run.sh`, which installs the
//! tools first):
//!
//! 1. measures the idle memory of a fresh `trellis agent --dev`;
//! 2. starts a trellis dev agent on CPU 0 and registers a catalog of 1,000
//!    services × 3 instances over 300 nodes through the HTTP API
//!    (`workload`);
//! 3. starts NSD on CPU 0 with a zone holding the same records (`nsd`), and
//!    checks with dig that both answer sample questions alike (`dig`);
//! 4. runs dnsperf on CPU 1 against each for `BENCH_SECONDS` (default 15):
//!    50 % A, 40 % SRV, 10 % names that do not exist (`dnsperf`);
//! 5. prints queries per second, loss, response codes, latency and memory,
//!    and exits non-zero if either server answered with the wrong response
//!    codes or different data.
//!
//! Every process it starts is stopped and every file removed on the way out,
//! including on errors and Ctrl-C (the test kit's `Process`, `tempfile::TempDir`).
//!
//! Run without `--bench` (as `cargo test --benches` does) it only checks its
//! own parsers and generators, in milliseconds.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

mod dig;
mod dnsperf;
mod nsd;
mod procs;
mod workload;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use trellis_testkit::{Log, OnDrop, Process};

use crate::dnsperf::Stats;
use crate::nsd::Nsd;
use crate::procs::{Memory, Trellis};

/// The CPU the servers run on, one at a time under load.
const SERVER_CPU: usize = 0;
/// The CPU dnsperf runs on.
const CLIENT_CPU: usize = 1;
/// trellis's client interfaces; NSD gets its own loopback address so the two
/// can never collide on a port.
const TRELLIS_IP: &str = "127.0.0.2";
const NSD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Registrations in flight while loading the catalog.
const LOAD_CONCURRENCY: usize = 32;
/// The idle-memory target for a dev agent, bytes (10 MB).
const IDLE_RSS_TARGET: u64 = 10_000_000;
/// Tools the benchmark runs, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("nsd", "nsd"),
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

/// Settings read from the environment.
struct Settings {
    /// Length of each dnsperf run.
    seconds: u64,
    /// CPU for the servers, if the machine has two.
    server_cpu: Option<usize>,
    /// CPU for dnsperf, if the machine has two.
    client_cpu: Option<usize>,
    /// `BENCH_ONLY=nsd`: only the reference half, to check the harness
    /// without a trellis build that serves DNS.
    nsd_only: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let seconds = match std::env::var("BENCH_SECONDS") {
            Ok(v) => v
                .parse()
                .with_context(|| format!("BENCH_SECONDS={v:?} is not a number of seconds"))?,
            Err(_) => 15,
        };
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let two = cpus > CLIENT_CPU;
        if !two {
            eprintln!("warning: only {cpus} CPU available: nothing is pinned, figures mean little");
        }
        let nsd_only = match std::env::var("BENCH_ONLY").as_deref() {
            Ok("nsd") => true,
            Ok(other) => bail!("BENCH_ONLY={other:?}: the only choice is `nsd`"),
            Err(_) => false,
        };
        Ok(Self {
            nsd_only,
            seconds,
            server_cpu: two.then_some(SERVER_CPU),
            client_cpu: two.then_some(CLIENT_CPU),
        })
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    check_tools()?;
    print_header(&settings);

    let dir = tempfile::Builder::new()
        .prefix("trellis-bench-")
        .tempdir()
        .context("creating a temp dir")?;
    let idle = match settings.nsd_only {
        true => None,
        false => Some(idle_memory(dir.path()).await?),
    };
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, workload::query_file()).context("writing the query file")?;
    let catalog = workload::catalog();

    let mut trellis = match settings.nsd_only {
        true => None,
        false => Some(start_loaded(&settings, dir.path(), &catalog).await?),
    };

    let nsd_dir = dir.path().join("nsd");
    std::fs::create_dir(&nsd_dir)?;
    let zone = workload::zone(&catalog, NSD_IP);
    let mut nsd = Nsd::start(settings.server_cpu, &nsd_dir, NSD_IP, &zone).await?;
    println!(
        "nsd: serving the same {} records from a static zone",
        catalog.len() * 2 + workload::NODES
    );

    if let Some((t, _)) = &trellis {
        compare(t.dns, nsd.addr).await?;
    }

    println!(
        "\ndnsperf: {} s per server, UDP, 8 clients, 200 in flight, on CPU {:?}",
        settings.seconds, settings.client_cpu
    );
    let mut rows = Vec::new();
    let mut memories = None;
    if let Some((t, loaded)) = &mut trellis {
        let perf = profile(t)?;
        let pid = t.pid();
        let row = measure("trellis", pid, t.dns, &settings, &queries).await?;
        if let Some(mut p) = perf {
            // perf writes out its samples on SIGTERM, which takes a while.
            p.stop(Duration::from_secs(120));
        }
        t.alive()?;
        let logged = t.log_bytes();
        if logged > 1_000_000 {
            println!(
                "trellis logged {:.0} MB to stderr by the end of its run ({:.0} bytes per query)",
                logged as f64 / 1e6,
                logged as f64 / row.stats.sent.max(1) as f64
            );
        }
        memories = idle.map(|idle| (idle, *loaded, memory(t)));
        rows.push(row);
    }
    let pid = nsd.proc.pid();
    rows.push(measure("nsd", pid, nsd.addr, &settings, &queries).await?);
    print_table(&rows);
    if let Some((idle, loaded, after)) = memories {
        print_memory(idle, loaded, after?);
    }

    nsd.proc.stop(Duration::from_secs(3));
    if let Some((t, _)) = trellis {
        t.stop();
    }

    let wrong: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.stats
                .check_rcodes()
                .err()
                .map(|e| format!("{}: {e}", r.name))
        })
        .collect();
    if !wrong.is_empty() {
        bail!("wrong answers under load:\n  {}", wrong.join("\n  "));
    }
    Ok(())
}

/// Starts the trellis under test on the server CPU and loads the catalog.
/// Returns it with its memory once loaded.
async fn start_loaded(
    settings: &Settings,
    dir: &Path,
    catalog: &[workload::Instance],
) -> anyhow::Result<(Trellis, Memory)> {
    let t = Trellis::start(settings.server_cpu, TRELLIS_IP, dir.join("trellis.log")).await?;
    let loaded_in = match load(&t, catalog).await {
        Ok(d) => d,
        Err(e) => {
            bail!("{e:#}\ntrellis log (last lines):\n{}", t.log_tail());
        }
    };
    println!(
        "trellis: {} registrations ({} services × {} instances on {} nodes) loaded in {:.2} s",
        catalog.len(),
        workload::SERVICES,
        workload::INSTANCES,
        workload::NODES,
        loaded_in.as_secs_f64()
    );
    let loaded = memory(&t)?;
    Ok((t, loaded))
}

/// Fails with the install command when a tool is missing.
fn check_tools() -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| !std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
        .map(|(_, pkg)| *pkg)
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
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "dns_vs_nsd — {}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    println!(
        "machine: {cpus} CPUs, {cpu}; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "servers on CPU {:?}, dnsperf on CPU {:?}; trellis {}",
        s.server_cpu,
        s.client_cpu,
        procs::TRELLIS
    );
}

/// With `BENCH_PERF=FILE`, samples trellis's stacks into FILE while dnsperf
/// loads it (`perf report -i FILE` afterwards). CPU-clock sampling, which
/// works in VMs without hardware counters; DWARF unwinding because release
/// builds keep no frame pointers.
fn profile(t: &Trellis) -> anyhow::Result<Option<Process>> {
    let Some(out) = std::env::var_os("BENCH_PERF") else {
        return Ok(None);
    };
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
async fn idle_memory(dir: &Path) -> anyhow::Result<Memory> {
    let t = Trellis::start(None, TRELLIS_IP, dir.join("trellis-idle.log")).await?;
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

/// Registers `catalog` through the HTTP API and waits until the catalog
/// lists every service. Returns how long it took.
async fn load(t: &Trellis, catalog: &[workload::Instance]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
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
        if ours == workload::SERVICES {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "/v1/catalog/services lists {ours} of {} services after 30 s",
                workload::SERVICES
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks both servers the same questions and fails unless they agree.
async fn compare(trellis: SocketAddr, nsd: SocketAddr) -> anyhow::Result<()> {
    let samples = [
        ("svc0.service.consul.", "A"),
        ("svc0.service.consul.", "SRV"),
        ("svc517.service.consul.", "A"),
        ("svc999.service.consul.", "SRV"),
        ("missing3.service.consul.", "A"),
    ];
    for edns in [true, false] {
        for (name, qtype) in samples {
            let t = dig::query(trellis, name, qtype, edns).await?;
            let n = dig::query(nsd, name, qtype, edns).await?;
            if let Err(e) = dig::same(&t, &n) {
                bail!(
                    "trellis and nsd disagree on {name} {qtype} (EDNS: {edns}): {e}\n  \
                     trellis: {t:?}\n  nsd:     {n:?}"
                );
            }
        }
    }
    println!(
        "dig: trellis and nsd answer {} sample questions identically, with and without EDNS \
         (order and TTL aside)",
        samples.len()
    );
    Ok(())
}

/// Queries answered per second of the server's own CPU time.
fn per_core(s: &Stats, cpu_pct: f64) -> f64 {
    if cpu_pct > 0.0 {
        s.qps * 100.0 / cpu_pct
    } else {
        0.0
    }
}

/// One server's result.
struct Row {
    /// The server.
    name: &'static str,
    /// What dnsperf saw.
    stats: Stats,
    /// The server's CPU use during the run, % of one core: near 100 means
    /// the server, not dnsperf, was the limit.
    cpu_pct: f64,
}

/// Loads the server at `addr` (process `pid`) with dnsperf and measures the
/// CPU it used meanwhile.
async fn measure(
    name: &'static str,
    pid: u32,
    addr: SocketAddr,
    settings: &Settings,
    queries: &Path,
) -> anyhow::Result<Row> {
    let (cpu0, t0) = (procs::cpu_seconds(pid), Instant::now());
    let (stats, _) = dnsperf::run(settings.client_cpu, addr, queries, settings.seconds).await?;
    let cpu_pct = 100.0 * (procs::cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    Ok(Row {
        name,
        stats,
        cpu_pct,
    })
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<8} {:>10} {:>6} {:>9} {:>7} {:>10} {:>9} {:>6} {:>10} {:>10} {:>7}",
        "server",
        "qps",
        "cpu %",
        "qps/core",
        "lost %",
        "NOERROR",
        "NXDOMAIN",
        "other",
        "avg lat",
        "max lat",
        "resp B"
    );
    for Row {
        name,
        stats: s,
        cpu_pct,
    } in rows
    {
        let other = s
            .completed
            .saturating_sub(s.count("NOERROR") + s.count("NXDOMAIN"));
        println!(
            "{:<8} {:>10.0} {:>6.0} {:>9.0} {:>7.2} {:>10} {:>9} {:>6} {:>8.0}µs {:>8.0}µs {:>7}",
            name,
            s.qps,
            cpu_pct,
            per_core(s, *cpu_pct),
            s.lost_pct(),
            s.count("NOERROR"),
            s.count("NXDOMAIN"),
            other,
            s.latency.0 * 1e6,
            s.latency.2 * 1e6,
            s.response_bytes
        );
    }
    if let [a, b] = rows
        && b.stats.qps > 0.0
    {
        println!(
            "ratio {}/{} qps: {:.2}",
            a.name,
            b.name,
            a.stats.qps / b.stats.qps
        );
        let (pa, pb) = (per_core(&a.stats, a.cpu_pct), per_core(&b.stats, b.cpu_pct));
        if pb > 0.0 {
            println!(
                "ratio {}/{} qps per CPU-second: {:.2}",
                a.name,
                b.name,
                pa / pb
            );
        }
    }
    println!("(cpu % = the server's CPU time over the run, % of one core; below ~95 the");
    println!(" server was not the limit (dnsperf, or other load on its CPU, was), and");
    println!(" qps/core = qps per second of server CPU is the fairer comparison.");
    println!(" nsd's responses also carry the zone's NS record and glue: larger size.)");
}

fn print_memory(idle: Memory, loaded: Memory, after: Memory) {
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let verdict = if idle.rss_kib * 1024 <= IDLE_RSS_TARGET {
        "within"
    } else {
        "OVER"
    };
    println!();
    println!(
        "trellis RSS idle (fresh --dev, 1 s after ready): {:.1} MB, {verdict} the 10 MB target",
        mb(idle.rss_kib)
    );
    println!(
        "trellis RSS after loading the catalog:          {:.1} MB",
        mb(loaded.rss_kib)
    );
    println!(
        "trellis RSS after the dnsperf run:              {:.1} MB (peak {:.1} MB)",
        mb(after.rss_kib),
        mb(after.hwm_kib)
    );
}
