//! What ACLs cost: DNS throughput and HTTP read latency of one trellis with
//! ACLs off against one with ACLs on (`default_policy = "deny"`, 1,000
//! tokens), same catalog, same run, interleaved.
//!
//! `cargo bench --bench acl_overhead` (dnsperf and taskset needed, as for
//! `dns_vs_nsd`; `benches/run.sh` installs them):
//!
//! 1. starts two dev agents on CPU 0: `off` without ACLs, `on` with
//!    `acl { enabled = true, default_policy = "deny" }` and an initial
//!    management token;
//! 2. loads `dns_vs_nsd`'s catalog (1,000 services × 3 instances on 300
//!    nodes) into both; on `on`, creates 1,000 policies and 1,000 tokens
//!    (token K may read `svcK` and every node) and gives the anonymous
//!    token a policy that reads every service and node, which DNS answers
//!    with;
//! 3. per round (`BENCH_ROUNDS`, default 2), `off` then `on`: dnsperf on
//!    CPU 1 for `BENCH_SECONDS` (default 10) with `dns_vs_nsd`'s query mix,
//!    then `BENCH_READS` (default 20,000) `GET /v1/health/service/svcK`
//!    from 8 keep-alive connections at once, on `on` each with token K
//!    (concurrent, so the agent's CPU never idles between reads: on a
//!    quiet VM a lone sequential reader measures the CPU waking up);
//! 4. prints DNS queries per second, HTTP reads per second, the agent's CPU
//!    time per read and read latency (p50, p99, mean) per agent, and the
//!    ratio on / off against the target (at most 5 % slower), and
//!    fails if an answer was wrong (a read refused, DNS with other response
//!    codes than the query mix gives).
//!
//! Run without `--bench` (as `cargo test --benches` does) it only checks
//! its own arithmetic, in milliseconds.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

#[path = "../common/procs.rs"]
#[allow(
    dead_code,
    reason = "only its run lock and the load average: the other benches share the rest"
)]
mod common;
#[path = "../dns_vs_nsd/dnsperf.rs"]
mod dnsperf;
#[path = "../dns_vs_nsd/procs.rs"]
#[allow(dead_code, reason = "shared with dns_vs_nsd, which uses all of it")]
mod procs;
#[path = "../dns_vs_nsd/workload.rs"]
#[allow(dead_code, reason = "shared with dns_vs_nsd, which uses all of it")]
mod workload;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};
use trellis_testkit::Agent;

/// The CPU the agents run on.
const SERVER_CPU: usize = 0;
/// The CPU the load generators run on.
const CLIENT_CPU: usize = 1;
/// Tokens (and policies) created on the agent with ACLs on.
const TOKENS: usize = 1_000;
/// The management token of the agent with ACLs on.
const ROOT: &str = "8c6a1e2f-bench-root-0000-000000000000";
/// The anonymous token's AccessorID.
const ANONYMOUS: &str = "00000000-0000-0000-0000-000000000002";
/// The target: ACLs on at most 5 % slower.
const TARGET: f64 = 0.05;

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        self_check();
        eprintln!("acl_overhead: self-checks passed (run `cargo bench --bench acl_overhead`)");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One loopback benchmark at a time, as the others.
    let _lock = match common::RunLock::acquire() {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
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

/// Settings read from the environment.
struct Settings {
    seconds: u64,
    rounds: usize,
    reads: usize,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let two = cpus > CLIENT_CPU;
        if !two {
            eprintln!("warning: only {cpus} CPU available: nothing is pinned");
        }
        Ok(Self {
            seconds: env_number("BENCH_SECONDS", 10)?,
            rounds: env_number("BENCH_ROUNDS", 2)?,
            reads: env_number("BENCH_READS", 20_000)?,
            server_cpu: two.then_some(SERVER_CPU),
            client_cpu: two.then_some(CLIENT_CPU),
        })
    }
}

/// One agent under test.
struct Side {
    name: &'static str,
    agent: Agent,
    /// The token each read presents: none with ACLs off, token K for
    /// `svcK` with them on.
    tokens: Vec<Option<String>>,
    /// The management token to load with, when ACLs are on.
    root: Option<&'static str>,
}

async fn start(
    settings: &Settings,
    dir: &Path,
    name: &'static str,
    ip: &str,
    acl: bool,
) -> anyhow::Result<Side> {
    let ip: IpAddr = ip.parse().context("address")?;
    let mut b = trellis_testkit::Trellis::new(procs::TRELLIS)
        .dev()
        .ip(ip)
        .log_file(dir.join(format!("{name}.log")))
        .log_filter(None);
    if acl {
        let config = dir.join(format!("{name}.json"));
        let body = json!({
            "acl": {
                "enabled": true,
                "default_policy": "deny",
                "tokens": { "initial_management": ROOT },
            }
        });
        std::fs::write(&config, body.to_string()).context("writing the ACL config")?;
        b = b.config_file(config);
    }
    if let Some(cpu) = settings.server_cpu {
        b = b.run_via(&["taskset", "-c", &cpu.to_string()]);
    }
    let agent = b.start_async().await?;
    Ok(Side {
        name,
        agent,
        tokens: vec![None; workload::SERVICES],
        root: acl.then_some(ROOT),
    })
}

/// A PUT with the side's management token; fails on any status but 200.
async fn put(
    http: &reqwest::Client,
    side: &Side,
    path: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let mut req = http.put(side.agent.url(path)).json(body);
    if let Some(root) = side.root {
        req = req.header("X-Consul-Token", root);
    }
    let resp = req.send().await.with_context(|| format!("PUT {path}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("PUT {path}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits until the management token works (the leader creates it just
/// after it starts leading).
async fn wait_root(http: &reqwest::Client, side: &Side) -> anyhow::Result<()> {
    let Some(root) = side.root else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = http
            .get(side.agent.url("/v1/acl/token/self"))
            .header("X-Consul-Token", root)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the initial management token did not appear within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The catalog, and on the ACL side the policies and tokens.
async fn load(http: &reqwest::Client, side_mut: &mut Side) -> anyhow::Result<()> {
    let side = &*side_mut;
    wait_root(http, side).await?;
    let t0 = Instant::now();
    let catalog = workload::catalog();
    futures::stream::iter(catalog.iter().map(|i| {
        let body = i.register_body();
        async move { put(http, side, "/v1/catalog/register", &body).await }
    }))
    .buffer_unordered(32)
    .try_for_each(|_| async { Ok(()) })
    .await?;
    println!(
        "{}: {} registrations loaded in {:.2} s",
        side.name,
        catalog.len(),
        t0.elapsed().as_secs_f64()
    );
    if side.root.is_none() {
        return Ok(());
    }
    let t0 = Instant::now();
    let policy = json!({
        "Name": "dns-read",
        "Rules": "service_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }",
    });
    let created = put(http, side, "/v1/acl/policy", &policy).await?;
    let id = created["ID"]
        .as_str()
        .context("the policy's ID")?
        .to_string();
    let anonymous = json!({ "AccessorID": ANONYMOUS, "Policies": [{ "ID": id }] });
    put(
        http,
        side,
        &format!("/v1/acl/token/{ANONYMOUS}"),
        &anonymous,
    )
    .await?;
    let tokens: Vec<String> = futures::stream::iter((0..TOKENS).map(|k| async move {
        let policy = json!({
            "Name": format!("svc{k}-read"),
            "Rules": format!(
                "service \"svc{k}\" {{ policy = \"read\" }}\nnode_prefix \"\" {{ policy = \"read\" }}"
            ),
        });
        let p = put(http, side, "/v1/acl/policy", &policy).await?;
        let token = json!({
            "Description": format!("reads svc{k}"),
            "Policies": [{ "ID": p["ID"] }],
        });
        let t = put(http, side, "/v1/acl/token", &token).await?;
        t["SecretID"]
            .as_str()
            .map(str::to_string)
            .context("the token's SecretID")
    }))
    .buffered(16)
    .try_collect()
    .await?;
    for (k, secret) in tokens.into_iter().enumerate() {
        side_mut.tokens[k % workload::SERVICES] = Some(secret);
    }
    let side = &*side_mut;
    println!(
        "{}: {TOKENS} policies and tokens created in {:.2} s",
        side.name,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the reads measured.
#[derive(Debug, Clone, Default)]
struct Reads {
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    /// Reads answered per second, all readers together.
    per_sec: f64,
    /// The agent's CPU time per read, µs.
    cpu_us: f64,
}

/// Readers that read at once: enough to keep the agent's CPU busy, so a
/// read's latency is the agent's work and not a sleeping CPU waking up.
const READERS: usize = 8;

/// `reads` `GET /v1/health/service/svcK` (K cycling) from [`READERS`]
/// keep-alive connections at once, each read with the side's token K.
async fn reads(side: &Side, reads: usize) -> anyhow::Result<Reads> {
    let cpu0 = procs::cpu_seconds(side.agent.pid());
    let t0 = Instant::now();
    let per = reads.div_ceil(READERS);
    let readers = (0..READERS).map(|r| async move {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .context("an HTTP client")?;
        let mut took = Vec::with_capacity(per);
        for n in (r * per)..((r + 1) * per).min(reads) {
            let k = n % workload::SERVICES;
            let mut req = http.get(side.agent.url(&format!("/v1/health/service/svc{k}")));
            if let Some(token) = &side.tokens[k] {
                req = req.header("X-Consul-Token", token);
            }
            let t = Instant::now();
            let resp = req.send().await.context("a read")?;
            let status = resp.status();
            let body = resp.bytes().await.context("a read's body")?;
            took.push(t.elapsed());
            let instances = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.as_array().map(Vec::len))
                .unwrap_or(0);
            if !status.is_success() || instances != workload::INSTANCES {
                bail!(
                    "{}: GET svc{k} answered {status} with {instances} instances: {}",
                    side.name,
                    String::from_utf8_lossy(&body)
                );
            }
        }
        Ok::<_, anyhow::Error>(took)
    });
    let mut took: Vec<Duration> = futures::future::try_join_all(readers)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = procs::cpu_seconds(side.agent.pid()) - cpu0;
    let mut r = summarize(&mut took);
    r.per_sec = took.len() as f64 / wall;
    r.cpu_us = cpu * 1e6 / took.len().max(1) as f64;
    Ok(r)
}

fn summarize(took: &mut [Duration]) -> Reads {
    if took.is_empty() {
        return Reads::default();
    }
    took.sort_unstable();
    let at = |q: f64| {
        let i = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1;
        took[i].as_secs_f64() * 1e6
    };
    let total: Duration = took.iter().sum();
    Reads {
        p50_us: at(0.50),
        p99_us: at(0.99),
        mean_us: total.as_secs_f64() * 1e6 / took.len() as f64,
        ..Reads::default()
    }
}

/// How much slower `on` is than `off`, as a fraction (negative: faster).
fn slower(off: f64, on: f64, higher_is_better: bool) -> f64 {
    if off <= 0.0 || on <= 0.0 {
        return f64::NAN;
    }
    if higher_is_better {
        off / on - 1.0
    } else {
        on / off - 1.0
    }
}

fn verdict(slower: f64) -> &'static str {
    if slower <= TARGET { "met" } else { "NOT met" }
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    println!(
        "acl_overhead — {}; load average {}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        common::load_average()
    );
    println!(
        "agents on CPU {:?}, load on CPU {:?}; {} round(s) of {} s dnsperf and {} reads",
        settings.server_cpu, settings.client_cpu, settings.rounds, settings.seconds, settings.reads
    );
    let dir = tempfile::Builder::new()
        .prefix("trellis-acl-bench-")
        .tempdir()
        .context("a temp dir")?;
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, workload::query_file()).context("writing the query file")?;
    let http = reqwest::Client::new();
    let mut off = start(&settings, dir.path(), "off", "127.0.0.21", false).await?;
    let mut on = start(&settings, dir.path(), "on", "127.0.0.22", true).await?;
    load(&http, &mut off).await?;
    load(&http, &mut on).await?;

    let mut dns: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut http_reads: [Vec<Reads>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=settings.rounds {
        for (i, side) in [&off, &on].into_iter().enumerate() {
            let server: SocketAddr = side.agent.addrs().dns;
            let (stats, _) =
                dnsperf::run(settings.client_cpu, server, &queries, settings.seconds).await?;
            if let Err(e) = stats.check_rcodes() {
                bail!("{}: wrong DNS answers under load: {e}", side.name);
            }
            let r = reads(side, settings.reads).await?;
            println!(
                "round {round} {:>3}: {:>7.0} DNS qps ({:.2} % lost); {:>6.0} reads/s, {:>4.0} µs CPU/read, p50 {:>5.0} µs, p99 {:>5.0} µs",
                side.name,
                stats.qps,
                stats.lost_pct(),
                r.per_sec,
                r.cpu_us,
                r.p50_us,
                r.p99_us,
            );
            dns[i].push(stats.qps);
            http_reads[i].push(r);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let field =
        |i: usize, f: fn(&Reads) -> f64| mean(&http_reads[i].iter().map(f).collect::<Vec<_>>());
    println!(
        "
| measure | ACLs off | ACLs on | on slower by | target ≤ 5 % |"
    );
    println!("|---|---:|---:|---:|---|");
    let qps = (mean(&dns[0]), mean(&dns[1]));
    let s = slower(qps.0, qps.1, true);
    println!(
        "| DNS qps | {:.0} | {:.0} | {:+.1} % | {} |",
        qps.0,
        qps.1,
        s * 100.0,
        verdict(s)
    );
    for (name, f, higher_is_better) in [
        (
            "HTTP reads/s",
            (|r: &Reads| r.per_sec) as fn(&Reads) -> f64,
            true,
        ),
        ("agent CPU µs per read", |r: &Reads| r.cpu_us, false),
        ("read p50 µs", |r: &Reads| r.p50_us, false),
        ("read p99 µs", |r: &Reads| r.p99_us, false),
        ("read mean µs", |r: &Reads| r.mean_us, false),
    ] {
        let (a, b) = (field(0, f), field(1, f));
        let s = slower(a, b, higher_is_better);
        println!(
            "| {name} | {a:.0} | {b:.0} | {:+.1} % | {} |",
            s * 100.0,
            verdict(s)
        );
    }
    off.agent.terminate();
    on.agent.terminate();
    Ok(())
}

fn self_check() {
    dnsperf::self_check();
    let mut took: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
    let r = summarize(&mut took);
    assert!((r.p50_us - 50.0).abs() < 1e-6, "{r:?}");
    assert!((r.p99_us - 99.0).abs() < 1e-6, "{r:?}");
    assert!((r.mean_us - 50.5).abs() < 1e-6, "{r:?}");
    assert!((slower(100.0, 95.0, true) - (100.0 / 95.0 - 1.0)).abs() < 1e-12);
    assert!((slower(100.0, 104.0, false) - 0.04).abs() < 1e-12);
    assert_eq!(verdict(0.04), "met");
    assert_eq!(verdict(0.06), "NOT met");
}
