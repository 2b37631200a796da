//! Replicated writes of a 3-server trellis cluster against a 3-member etcd
//! cluster, driven the same way, in one run.
//!
//! `cargo bench --bench cluster_vs_etcd` (or `benches/cluster_vs_etcd/run.sh`,
//! which installs etcd first):
//!
//! 1. starts three etcd 3.4 members on 127.0.3.1–3 (`etcd`) and three
//!    `trellis agent --server --bootstrap-expect 3` on 127.0.3.11–13
//!    (`trellis`), data in a temp dir on disk, both with default durability
//!    (an fsync per commit), and waits until each has one leader, three
//!    voters and takes writes through every member;
//! 2. for 1, 16 and 64 concurrent clients, alternating between the systems,
//!    runs a write load (`load`): each client sends one write at a time on
//!    its own keep-alive connection, clients spread round-robin over the
//!    members starting with the leader; trellis gets catalog registrations
//!    (`PUT /v1/catalog/register`, a new node and service each), etcd gets
//!    the same JSON as a value (`POST /v3/kv/put`). 1 s warm-up, then 5 s
//!    in which only completed writes count;
//! 3. runs the same sweep with KV puts (`cluster::Workload::Kv`): a new key
//!    with a 100-byte value per write, `PUT /v1/kv/<key>` on trellis and
//!    etcd's put of the same key and value;
//! 4. runs 10 failover trials on each (`failover`): SIGKILL the leader
//!    while writing through a follower, time until writes succeed again,
//!    restart the killed member with its data, wait until it is a healthy
//!    voter again;
//! 5. prints the tables with the trellis/etcd ratios (and the issue's
//!    targets for KV puts).
//!
//! Every process it starts is SIGKILLed and the temp dir removed on every
//! exit path, Ctrl-C included (the test kit's `Process`, `tempfile::TempDir`).
//!
//! Run without `--bench` (as `cargo test --benches` does) it only checks its
//! own helpers, in milliseconds.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

mod cluster;
mod etcd;
mod failover;
mod load;
#[path = "../common/procs.rs"]
mod procs;
#[path = "../common/stats.rs"]
mod stats;
mod trellis;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use trellis_testkit::Log;

use crate::cluster::{Cluster, Workload};
use crate::etcd::Etcd;
use crate::failover::{Trial, median_max};
use crate::load::StepResult;
use crate::trellis::Trellis;

/// How long a fresh cluster may take to elect a leader and take writes.
const FORM_WITHIN: Duration = Duration::from_secs(30);
/// The reference figures from the issue (etcd 3.4, CI-class machine):
/// concurrency, writes/s, p99 ms.
const ETCD_REFERENCE: &[(usize, u32, f64)] = &[(1, 1389, 1.7), (16, 5410, 8.1), (64, 8724, 16.4)];

fn main() -> ExitCode {
    // The settings come from the environment and the flags `run` reads.
    let parse = |args: &[String]| Ok(args.to_vec());
    procs::bench_main("cluster_vs_etcd", self_checks, parse, |args| async move {
        run(&args).await
    })
}

fn self_checks() {
    cluster::self_check();
    etcd::self_check();
    load::self_check();
    failover::self_check();
}

/// Which systems to run.
#[derive(Clone, Copy, PartialEq)]
enum Only {
    Both,
    Etcd,
    Trellis,
}

/// Issues 12 (KV puts) and 15 (catalog writes) share their targets:
/// trellis/etcd writes/s at a concurrency.
const TARGETS: &[(usize, f64)] = &[(1, 1.0), (64, 2.0)];

/// Settings from the command line and the environment.
struct Settings {
    /// `BENCH_SECONDS`: measured window per step.
    window: Duration,
    /// `BENCH_WARMUP`: seconds of unmeasured load before each window.
    warmup: Duration,
    /// `BENCH_CLIENTS`: the concurrency steps.
    clients: Vec<usize>,
    /// `BENCH_ROUNDS`: how many times the sweep runs; rounds are pooled.
    rounds: usize,
    /// `BENCH_TRIALS`: failover trials per system.
    trials: usize,
    /// `BENCH_WRITE_TIMEOUT_MS`: the failover writer's client timeout.
    write_timeout: Duration,
    /// `BENCH_ONLY=etcd|trellis`.
    only: Only,
    /// `BENCH_TRELLIS=dev`: one `--dev` agent instead of a cluster, to check
    /// the driver; no trellis failover then.
    dev: bool,
    /// `BENCH_TRELLIS=tls`: the three servers talk server RPC over TLS
    /// (`verify_incoming`, `verify_outgoing`, `verify_server_hostname`), to
    /// compare with a run without.
    tls: bool,
    /// `--throughput` (catalog writes), `--kv` (KV puts), `--failover`:
    /// the parts to run; none named runs all three.
    throughput: bool,
    /// See `throughput`.
    kv: bool,
    /// See `throughput`.
    failover: bool,
    /// `BENCH_DIR`: where the temp dir goes (default: the system's).
    dir: Option<PathBuf>,
    /// `BENCH_KEEP=1`: leave the temp dir (data and logs) behind.
    keep: bool,
}

impl Settings {
    fn from_env(args: &[String]) -> anyhow::Result<Self> {
        fn num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
                Err(_) => Ok(default),
            }
        }
        let clients = match std::env::var("BENCH_CLIENTS") {
            Ok(v) => v
                .split(',')
                .map(|c| c.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .filter(|c| !c.is_empty() && !c.contains(&0))
                .with_context(|| format!("BENCH_CLIENTS={v:?}: want e.g. 1,16,64"))?,
            Err(_) => vec![1, 16, 64],
        };
        let only = match std::env::var("BENCH_ONLY").as_deref() {
            Ok("etcd") => Only::Etcd,
            Ok("trellis") => Only::Trellis,
            Ok(other) => bail!("BENCH_ONLY={other:?}: the choices are `etcd` and `trellis`"),
            Err(_) => Only::Both,
        };
        let (dev, tls) = match std::env::var("BENCH_TRELLIS").as_deref() {
            Ok("dev") => (true, false),
            Ok("tls") => (false, true),
            Ok(other) => bail!("BENCH_TRELLIS={other:?}: the choices are `dev` and `tls`"),
            Err(_) => (false, false),
        };
        let has = |f: &str| args.iter().any(|a| a == f);
        let (t, k, f) = (has("--throughput"), has("--kv"), has("--failover"));
        let all = !t && !k && !f;
        Ok(Self {
            window: Duration::from_secs_f64(num("BENCH_SECONDS", 5.0)?),
            warmup: Duration::from_secs_f64(num("BENCH_WARMUP", 1.0)?),
            clients,
            rounds: num("BENCH_ROUNDS", 3)?.max(1),
            trials: num("BENCH_TRIALS", 10)?,
            write_timeout: Duration::from_millis(num("BENCH_WRITE_TIMEOUT_MS", 1000)?),
            only,
            dev,
            tls,
            throughput: t || all,
            kv: k || all,
            failover: f || all,
            dir: std::env::var_os("BENCH_DIR").map(PathBuf::from),
            keep: std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1"),
        })
    }
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let s = Settings::from_env(args)?;
    let etcd_version = match s.only {
        Only::Trellis => None,
        _ => Some(etcd::version()?),
    };
    print_header(&s, etcd_version.as_deref());

    let mut builder = tempfile::Builder::new();
    builder.prefix("trellis-cluster-bench-");
    let dir = match &s.dir {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .context("creating a temp dir")?;
    if s.keep {
        // Every server is still killed on the way out; only files stay.
        let kept = dir.keep();
        println!("data and logs kept in {} (BENCH_KEEP=1)", kept.display());
        return run_in(&s, &kept).await;
    }
    run_in(&s, dir.path()).await
}

/// The benchmark proper, with its files under `dir`.
async fn run_in(s: &Settings, dir: &Path) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;

    let mut etcd = None;
    if s.only != Only::Trellis {
        let e = etcd.insert(Etcd::start(&dir.join("etcd")).await?);
        let l = e.wait_healthy(&http, FORM_WITHIN).await?;
        println!("etcd: 3 members on 127.0.3.1-3, leader e{}", l + 1);
    }
    let mut trellis = None;
    if s.only != Only::Etcd {
        let t = trellis.insert(Trellis::start(&dir.join("trellis"), s.dev, s.tls).await?);
        let formed = t.wait_healthy(&http, FORM_WITHIN).await;
        match formed {
            Ok(_) if s.dev => println!("trellis: one dev agent on 127.0.3.11 (BENCH_TRELLIS=dev)"),
            Ok(l) if s.tls => println!(
                "trellis: 3 servers on 127.0.3.11-13 with server RPC over TLS (BENCH_TRELLIS=tls), leader s{}",
                l + 1
            ),
            Ok(l) => println!("trellis: 3 servers on 127.0.3.11-13, leader s{}", l + 1),
            Err(e) => return Err(with_logs(e, &t.logs())),
        }
    }

    let workloads = [(s.throughput, Workload::Catalog), (s.kv, Workload::Kv)];
    for (_, workload) in workloads.into_iter().filter(|(on, _)| *on) {
        let rows = throughput(s, workload, etcd.as_mut(), trellis.as_mut(), &http).await;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => return Err(with_all_logs(e, etcd.as_ref(), trellis.as_ref())),
        };
        print_throughput(workload, &rows);
    }
    if s.failover {
        let mut etcd_trials = Vec::new();
        let mut trellis_trials = Vec::new();
        println!(
            "\nfailover: {} trials each; SIGKILL the leader while one client writes through \
             the next member (client timeout {} ms) and a probe writes there every 10 ms",
            s.trials,
            s.write_timeout.as_millis()
        );
        if let Some(e) = etcd.as_mut() {
            etcd_trials = trials(e, s, &http)
                .await
                .map_err(|err| with_logs(err, &e.logs()))?;
        }
        if let Some(t) = trellis.as_mut() {
            if t.is_dev() {
                println!("trellis: a dev agent has no failover; skipped");
            } else {
                trellis_trials = trials(t, s, &http)
                    .await
                    .map_err(|err| with_logs(err, &t.logs()))?;
            }
        }
        print_failover(&etcd_trials, &trellis_trials);
    }
    Ok(())
}

/// One row per concurrency: etcd's step and trellis's, when run.
type Row = (usize, Option<StepResult>, Option<StepResult>);

async fn throughput(
    s: &Settings,
    workload: Workload,
    mut etcd: Option<&mut Etcd>,
    mut trellis: Option<&mut Trellis>,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Row>> {
    println!(
        "\n{}: {} rounds of {:.0} s warm-up + {:.0} s measured per step, pooled; each client \
         one write at a time on its own keep-alive connection; clients round-robin over the \
         members from the leader",
        workload.name(),
        s.rounds,
        s.warmup.as_secs_f64(),
        s.window.as_secs_f64()
    );
    let mut rows: Vec<Row> = s.clients.iter().map(|&c| (c, None, None)).collect();
    for round in 0..s.rounds {
        for (c, e_row, t_row) in &mut rows {
            // Alternating, and swapping who goes first every round, keeps
            // drift in the shared machine's load from favouring one system.
            let etcd_first = round % 2 == 0;
            let mut e = None;
            let mut t = None;
            for turn in 0..2 {
                if (turn == 0) == etcd_first {
                    if let Some(cluster) = etcd.as_deref_mut() {
                        e = Some(step(cluster, s, workload, *c, round, http).await?);
                    }
                } else if let Some(cluster) = trellis.as_deref_mut() {
                    t = Some(step(cluster, s, workload, *c, round, http).await?);
                }
            }
            pool_into(e_row, e);
            pool_into(t_row, t);
        }
    }
    Ok(rows)
}

/// Adds one round's result to the pooled one.
fn pool_into(pooled: &mut Option<StepResult>, round: Option<StepResult>) {
    match (pooled.as_mut(), round) {
        (Some(p), Some(r)) => p.pool(r),
        (None, r) => *pooled = r,
        (Some(_), None) => {}
    }
}

async fn step<C: Cluster>(
    cluster: &mut C,
    s: &Settings,
    workload: Workload,
    clients: usize,
    round: usize,
    http: &reqwest::Client,
) -> anyhow::Result<StepResult> {
    let leader = cluster.wait_healthy(http, FORM_WITHIN).await?;
    let label = match workload {
        Workload::Catalog => format!("r{round}-{clients}c"),
        Workload::Kv => format!("kv-r{round}-{clients}c"),
    };
    let pids = cluster.pids();
    let cpu = || procs::cpu_seconds(&pids);
    let r = load::step(
        workload,
        &cluster.api(),
        cpu,
        leader,
        clients,
        s.warmup,
        s.window,
        &label,
    )
    .await?;
    cluster.check_running()?;
    eprintln!(
        "  {} round {} {:>7} {:>3} clients: {:>8.0} writes/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  errors {}  server CPU {:.0} %, {:.0} µs/write",
        workload.name(),
        round + 1,
        cluster.name(),
        clients,
        r.rate(),
        ms(r.p50()),
        ms(r.p99()),
        ms(r.p999()),
        r.errors,
        r.cpu * 100.0 / r.window.as_secs_f64(),
        r.cpu_per_write_us()
    );
    Ok(r)
}

async fn trials<C: Cluster>(
    cluster: &mut C,
    s: &Settings,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Trial>> {
    let mut out = Vec::new();
    for n in 0..s.trials {
        let t = failover::trial(cluster, http, n, s.write_timeout).await?;
        eprintln!(
            "  {:>7} trial {:>2}: killed member {} at {} UTC writing to {}: writer {:>7.1} ms, earliest \
             {:>7.1} ms, {} failed writes, longest request {:.1} ms, healed in {:.1} s{}",
            cluster.name(),
            n + 1,
            t.killed + 1,
            utc_time(t.killed_wall),
            t.target + 1,
            ms(t.writer),
            ms(t.earliest),
            t.failed,
            ms(t.longest),
            t.heal.as_secs_f64(),
            if t.errors.is_empty() {
                String::new()
            } else {
                let kinds: Vec<String> = t
                    .errors
                    .iter()
                    .map(|(e, n)| format!("{n}× {}", shorten(e)))
                    .collect();
                format!("; failures: {}", kinds.join("; "))
            }
        );
        out.push(t);
    }
    Ok(out)
}

/// `HH:MM:SS.mmm` of `t`, in UTC, to find the moment in the servers' logs.
fn utc_time(t: std::time::SystemTime) -> String {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        since.subsec_millis()
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The first 160 characters of an error message.
fn shorten(e: &str) -> String {
    match e.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &e[..i]),
        None => e.to_string(),
    }
}

fn print_header(s: &Settings, etcd_version: Option<&str>) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!("cluster_vs_etcd: 3-member write benchmark");
    println!(
        "machine: {cpus} CPUs, load average {}",
        procs::load_average()
    );
    if let Some(v) = etcd_version {
        println!("etcd: {v}, defaults (fsync per commit, heartbeat 100 ms, election 1000 ms)");
    }
    if s.only != Only::Etcd {
        println!("trellis: {}", trellis::binary().display());
    }
}

fn print_throughput(workload: Workload, rows: &[Row]) {
    println!("\n{}:", workload.name());
    println!(
        "| clients | etcd writes/s | trellis writes/s | ratio | etcd p50 ms | trellis p50 ms \
         | etcd p99 ms | trellis p99 ms | p99 ratio | etcd p99.9 ms | trellis p99.9 ms \
         | p99.9/p99 etcd/trellis | errors etcd/trellis | CPU µs/write etcd/trellis |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cell = |r: &Option<StepResult>, f: &dyn Fn(&StepResult) -> String| {
        r.as_ref().map_or_else(|| "–".to_string(), f)
    };
    for (c, e, t) in rows {
        let ratio = |f: &dyn Fn(&StepResult) -> f64| match (e, t) {
            (Some(e), Some(t)) if f(e) > 0.0 => format!("{:.2}", f(t) / f(e)),
            _ => "–".into(),
        };
        println!(
            "| {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {}/{} | {}/{} |",
            cell(e, &|r| format!("{:.0}", r.rate())),
            cell(t, &|r| format!("{:.0}", r.rate())),
            ratio(&StepResult::rate),
            cell(e, &|r| format!("{:.2}", ms(r.p50()))),
            cell(t, &|r| format!("{:.2}", ms(r.p50()))),
            cell(e, &|r| format!("{:.2}", ms(r.p99()))),
            cell(t, &|r| format!("{:.2}", ms(r.p99()))),
            ratio(&|r| ms(r.p99())),
            cell(e, &|r| format!("{:.2}", ms(r.p999()))),
            cell(t, &|r| format!("{:.2}", ms(r.p999()))),
            cell(e, &|r| format!("{:.1}", tail(r))),
            cell(t, &|r| format!("{:.1}", tail(r))),
            cell(e, &|r| r.errors.to_string()),
            cell(t, &|r| r.errors.to_string()),
            cell(e, &|r| format!("{:.0}", r.cpu_per_write_us())),
            cell(t, &|r| format!("{:.0}", r.cpu_per_write_us())),
        );
    }
    println!(
        "ratio = trellis/etcd writes/s (above 1: trellis faster); p99 ratio = trellis/etcd p99 \
         (below 1: trellis faster); p99.9/p99 = each system's own tail (issue 15: \
         at most 3, no snapshot stalls); CPU µs/write = user + system time of \
         all three servers per accepted write"
    );
    print_tail_target(rows);
    if workload == Workload::Kv {
        print_targets(rows, "issue 12");
    } else {
        print_targets(rows, "issue 15");
        print_catalog_reference();
    }
    print_details(rows);
}

/// p99.9 over p99 of one system's accepted writes.
fn tail(r: &StepResult) -> f64 {
    let p99 = ms(r.p99());
    if p99 > 0.0 { ms(r.p999()) / p99 } else { 0.0 }
}

/// Issue 15's tail target: trellis's p99.9 at most 3× its p99 at every step.
fn print_tail_target(rows: &[Row]) {
    let worst = rows
        .iter()
        .filter_map(|(c, _, t)| t.as_ref().map(|t| (*c, tail(t))))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((clients, worst)) = worst {
        println!(
            "target (issue 15): trellis p99.9 ≤ 3× its p99 at every step; worst {worst:.1}× at \
             {clients} clients ({})",
            if worst <= 3.0 { "met" } else { "NOT met" }
        );
    }
}

/// The issues' throughput targets (issue 12 for KV puts, issue 15 for
/// catalog writes; the same figures) against what this run measured.
fn print_targets(rows: &[Row], issue: &str) {
    for &(clients, target) in TARGETS {
        let measured = rows.iter().find_map(|(c, e, t)| match (e, t) {
            (Some(e), Some(t)) if *c == clients && e.rate() > 0.0 => Some(t.rate() / e.rate()),
            _ => None,
        });
        match measured {
            Some(r) => println!(
                "target ({issue}) at {clients} clients: ≥ {target:.0}× etcd; measured {r:.2}× ({})",
                if r >= target { "met" } else { "NOT met" }
            ),
            None => println!(
                "target ({issue}) at {clients} clients: ≥ {target:.0}× etcd; not measured in this run"
            ),
        }
    }
}

/// The etcd figures issue 4 quoted for catalog writes.
fn print_catalog_reference() {
    let reference: Vec<String> = ETCD_REFERENCE
        .iter()
        .map(|(c, w, p)| format!("{c}: {w} writes/s, p99 {p} ms"))
        .collect();
    println!(
        "etcd reference (issue 4, CI-class machine): {}",
        reference.join("; ")
    );
}

/// Per step: the first error, the count of writes, the slowest, each round.
fn print_details(rows: &[Row]) {
    for (c, e, t) in rows {
        for (name, r) in [("etcd", e), ("trellis", t)] {
            if let Some(err) = r.as_ref().and_then(|r| r.first_error.as_deref()) {
                println!("{name} at {c} clients, first error: {}", shorten(err));
            }
        }
        for (name, r) in [("etcd", e), ("trellis", t)] {
            if let Some(r) = r {
                let rounds: Vec<String> = r.rounds.iter().map(|w| format!("{w:.0}")).collect();
                println!(
                    "{name} at {c} clients: {} writes in {:.1} s, slowest {:.1} ms; \
                     writes/s by round: {}",
                    r.ok,
                    r.window.as_secs_f64(),
                    ms(r.max()),
                    rounds.join(", ")
                );
                let slowest: Vec<String> = r.slowest.iter().map(ToString::to_string).collect();
                println!("  slowest writes: {}", slowest.join("; "));
            }
        }
    }
}

fn print_failover(etcd: &[Trial], trellis: &[Trial]) {
    println!(
        "\n| system | trials | writer median ms | writer max ms | earliest median ms \
         | earliest max ms | failed writes (total) | longest request ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, ts) in [("etcd", etcd), ("trellis", trellis)] {
        if ts.is_empty() {
            continue;
        }
        let (wm, wx) = median_max(&ts.iter().map(|t| t.writer).collect::<Vec<_>>());
        let (em, ex) = median_max(&ts.iter().map(|t| t.earliest).collect::<Vec<_>>());
        let failed: u32 = ts.iter().map(|t| t.failed).sum();
        let longest = ts.iter().map(|t| t.longest).max().unwrap_or_default();
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {failed} | {:.0} |",
            ts.len(),
            ms(wm),
            ms(wx),
            ms(em),
            ms(ex),
            ms(longest)
        );
    }
    if !etcd.is_empty() && !trellis.is_empty() {
        let w = |ts: &[Trial]| median_max(&ts.iter().map(|t| t.writer).collect::<Vec<_>>()).0;
        println!(
            "writer median trellis/etcd: {:.2} (below 1: trellis recovers faster); \
             target ≤ 300 ms; etcd reference (issue 4): 1,181 ms median",
            ms(w(trellis)) / ms(w(etcd)).max(f64::MIN_POSITIVE)
        );
    }
}

/// `e` with the end of every log in `logs` appended.
fn with_logs(e: anyhow::Error, logs: &[&Path]) -> anyhow::Error {
    let mut text = String::new();
    for log in logs {
        text.push_str(&format!(
            "\n--- {} (last lines) ---\n{}",
            log.display(),
            Log::file(*log).tail(30)
        ));
    }
    anyhow::anyhow!("{e:#}{text}")
}

fn with_all_logs(
    e: anyhow::Error,
    etcd: Option<&Etcd>,
    trellis: Option<&Trellis>,
) -> anyhow::Error {
    let mut logs = Vec::new();
    if let Some(e) = etcd {
        logs.extend(e.logs());
    }
    if let Some(t) = trellis {
        logs.extend(t.logs());
    }
    with_logs(e, &logs)
}
