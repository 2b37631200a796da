//! Blocking-query fan-out on one KV key: how long after a write every
//! parked `GET ?index` on that key has its answer, what the parked queries
//! cost in memory, and that a write to another key wakes none of them
//! (Consul #9449).
//!
//! Runs the release `trellis` binary (the one cargo built for this bench, or
//! `TRELLIS_BIN`) as one `agent --dev` on 127.0.3.31, logs in a temp dir:
//!
//! 1. writes the key `bench/fanout/k` and a second key `bench/fanout/j`,
//!    and reads their indexes and that of a missing key;
//! 2. reads the agent's memory (`VmRSS`, `RssAnon`), then parks `--parked
//!    N` (10,000) blocking GETs `GET /v1/kv/bench/fanout/k?index=I&wait=5m`,
//!    each on its own HTTP/1.1 connection (raw requests, all read by one
//!    thread on one poll: `fleet.rs`), plus `--missing N` (16)
//!    on the missing key and one on `j`; waits until the agent is quiet
//!    (no answer and under 5 ms of its CPU time per 100 ms, three times in
//!    a row) and reads its memory again. Answers that came back before any
//!    write are counted by status: 503 is the agent shedding load
//!    (`MAX_BLOCKING` parked queries, `src/http/admit.rs`);
//! 3. writes `j`, waits until the query parked on `j` answers and the
//!    agent is quiet again, and counts the queries on `k` and on the missing
//!    key that answered: the issue says none may;
//! 4. writes `k` and records, for every query parked on `k`, the time from
//!    the write sent to its complete answer (200, index past `I`); prints
//!    the first, p50, p99 and max against the target (p99 ≤ 100 ms), the
//!    same from the write's own response (not judged), and the agent's
//!    memory once every connection is closed;
//! 5. measures the floor under that on this machine (`floor.rs`): one
//!    thread writing an answer of the same size to each of up to 10,000
//!    loopback sockets and reading them back, with nothing else running.
//!
//! Run: `cargo bench --bench kv_fanout` (or `-- --parked 4000 --missing
//! 16`). Without `--bench` (as `cargo test --benches` runs it) it only
//! checks its own helpers.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

mod fleet;
mod floor;
#[allow(dead_code)] // disk_usage is for kv_million
#[path = "../common/mem.rs"]
mod mem;
// Shared with the cluster benchmarks, which use helpers this one does not.
#[allow(dead_code)]
#[path = "../common/procs.rs"]
mod procs;
#[path = "../common/stats.rs"]
mod stats;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use trellis_testkit::{Agent, Trellis};

use crate::fleet::{Answer, Group, Head, find, whole};
use crate::mem::{Memory, mib};

/// The binary under test.
const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
/// The agent's address, clear of the tests' 127.0.0.x and of the other
/// benchmarks' addresses.
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 31);
/// The key the queries park on, the other key that is written, and a key
/// that never exists.
const KEY: &str = "bench/fanout/k";
const OTHER: &str = "bench/fanout/j";
const MISSING: &str = "bench/fanout/missing";
/// The target for the fan-out.
const TARGET_P99: Duration = Duration::from_millis(100);
/// Any condition not met in this time is a failure.
const DEADLINE: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    procs::bench_main("kv_fanout", self_check, Settings::parse, run)
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Settings {
    /// `--parked N`: blocking GETs on the key that is written.
    parked: usize,
    /// `--missing N`: blocking GETs on a key that does not exist.
    missing: usize,
    /// `--wait D`: each query's `wait`, as sent.
    wait: String,
}

impl Settings {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut s = Self {
            parked: 10_000,
            missing: 16,
            wait: "5m".into(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{name} needs a value"))
            };
            let count = |name: &str, v: String| -> anyhow::Result<usize> {
                v.parse().map_err(|_| anyhow!("{name} {v:?}: want a count"))
            };
            match a.as_str() {
                "--bench" => {}
                "--parked" => s.parked = count("--parked", value("--parked")?)?,
                "--missing" => s.missing = count("--missing", value("--missing")?)?,
                "--wait" => s.wait = value("--wait")?,
                other => {
                    bail!("unknown argument {other:?}; use --parked N, --missing N, --wait 5m")
                }
            }
        }
        if s.parked == 0 {
            bail!("--parked must be at least 1");
        }
        Ok(s)
    }
}

/// The agent, its HTTP address, and a client for single requests.
struct Target {
    agent: Agent,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `PUT /v1/kv/key` with `value`; the time its answer was complete and
    /// the index it reported (the issue has writes return it).
    async fn put(&self, key: &str, value: &str) -> anyhow::Result<(Instant, Option<u64>)> {
        let resp = self
            .http
            .put(self.url(&format!("/v1/kv/{key}")))
            .body(value.to_string())
            .send()
            .await?;
        let index = index_of(&resp);
        let status = resp.status();
        let body = resp.text().await?;
        let done = Instant::now();
        if !status.is_success() || body.trim() != "true" {
            bail!("PUT {key}: {status} {body}");
        }
        Ok((done, index))
    }

    /// The `X-Consul-Index` a GET of `key` reports (present or missing).
    async fn index(&self, key: &str) -> anyhow::Result<u64> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/kv/{key}")))
            .send()
            .await?;
        index_of(&resp)
            .ok_or_else(|| anyhow!("GET {key}: {} without X-Consul-Index", resp.status()))
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.agent.pid())
    }

    /// The agent's CPU time so far (user and system), in seconds.
    fn cpu(&self) -> f64 {
        procs::cpu_seconds(&[self.agent.pid()])
    }

    /// Waits until `groups` get no answer and the agent uses under 5 ms of
    /// CPU in each of three consecutive 100 ms polls: whatever it was doing
    /// for the last step is done.
    async fn quiet(&self, groups: &[&Group]) -> anyhow::Result<()> {
        let pid = [self.agent.pid()];
        let answered = || groups.iter().map(|g| g.answered()).sum::<usize>();
        let start = Instant::now();
        let (mut cpu, mut seen, mut calm) = (procs::cpu_seconds(&pid), answered(), 0);
        while calm < 3 {
            if start.elapsed() > DEADLINE {
                bail!("the agent did not settle within {} s", DEADLINE.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.agent.check_running()?;
            let (c, a) = (procs::cpu_seconds(&pid), answered());
            calm = if c - cpu < 0.005 && a == seen {
                calm + 1
            } else {
                0
            };
            (cpu, seen) = (c, a);
        }
        Ok(())
    }
}

fn index_of(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn run(s: Settings) -> anyhow::Result<()> {
    // Each query is one socket here and one in the agent, which inherits
    // the limit.
    let nofile = mem::raise_nofile((s.parked + s.missing + 1024) as u64)?;
    let dir = tempfile::Builder::new()
        .prefix("trellis-kv-fanout-")
        .tempdir()
        .context("creating a temp dir")?;
    let log = dir.path().join("agent.log");
    // Every parked query comes from this one process, one address: the
    // per-client caps, there to stop one client from starving the others,
    // would refuse all but a few hundred of them.
    let config = dir.path().join("limits.toml");
    std::fs::write(
        &config,
        "[limits]\nhttp_max_conns_per_client = 0\nhttp_max_blocking_per_client = 0\n",
    )
    .context("writing the agent's config")?;
    let agent = Trellis::from_env_or("TRELLIS_BIN", TRELLIS)
        .dev()
        .node("fanout")
        .ip(IP.into())
        .config_file(&config)
        .log_file(&log)
        .log_filter(None)
        .start_async()
        .await?;
    let t = Target {
        addr: agent.addrs().http,
        agent,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
    };
    let r = measure(&s, &t, nofile).await;
    r.map_err(|e| {
        anyhow!(
            "{e:#}\n--- agent log (last lines) ---\n{}",
            t.agent.log_handle().tail(30)
        )
    })
}

async fn measure(s: &Settings, t: &Target, nofile: u64) -> anyhow::Result<()> {
    println!(
        "kv_fanout: {} blocking GETs on one key, then one PUT",
        s.parked
    );
    println!(
        "machine: {} CPUs, load average {}; open-file limit {nofile}",
        std::thread::available_parallelism().map_or(1, usize::from),
        procs::load_average()
    );
    println!("trellis: agent --dev on {}", t.addr);

    t.put(KEY, "v0").await?;
    t.put(OTHER, "v0").await?;
    let (k_index, j_index, m_index) = (
        t.index(KEY).await?,
        t.index(OTHER).await?,
        t.index(MISSING).await?,
    );
    t.quiet(&[]).await?;
    let before = t.memory()?;

    let wait = &s.wait;
    let parked = Group::park(
        t.addr,
        &format!("/v1/kv/{KEY}?index={k_index}&wait={wait}"),
        s.parked,
    )?;
    let missing = Group::park(
        t.addr,
        &format!("/v1/kv/{MISSING}?index={m_index}&wait={wait}"),
        s.missing,
    )?;
    let sentinel = Group::park(
        t.addr,
        &format!("/v1/kv/{OTHER}?index={j_index}&wait={wait}"),
        1,
    )?;
    let cpu_parking = t.cpu();
    let start = Instant::now();
    while parked.sent() + missing.sent() + sentinel.sent() < s.parked + s.missing + 1 {
        if start.elapsed() > DEADLINE {
            bail!(
                "only {} of {} queries sent within {} s",
                parked.sent(),
                s.parked,
                DEADLINE.as_secs()
            );
        }
        t.agent.check_running()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let parking = start.elapsed();
    t.quiet(&[&parked, &missing, &sentinel]).await?;
    let during = t.memory()?;
    let cpu_parking = t.cpu() - cpu_parking;
    let early = (parked.answered(), missing.answered(), sentinel.answered());

    // A write to another key: the query on it answers, none of the others.
    let cpu_j = t.cpu();
    let j_at = Instant::now();
    let (j_done, _) = t.put(OTHER, "v1").await?;
    let (sentinel_answers, _) = sentinel.collect(DEADLINE).await?;
    let sentinel_after = sentinel_answers
        .first()
        .map(|a| a.at.saturating_duration_since(j_at));
    t.quiet(&[&parked, &missing]).await?;
    let woken = (parked.answered() - early.0, missing.answered() - early.1);
    // Up to the end of the quiet check: three idle polls of the agent's CPU
    // are included, under 15 ms.
    let cpu_j = t.cpu() - cpu_j;

    // The write to the key: time until every query parked on it answered.
    let (cpu_k, client_k) = (t.cpu(), own_cpu());
    let k_sent = Instant::now();
    let (k_done, k_put_index) = t.put(KEY, "v1").await?;
    let (answers, open) = parked.collect(DEADLINE).await?;
    let (cpu_k, client_k) = (t.cpu() - cpu_k, own_cpu() - client_k);
    drop(open);
    drop(missing); // stops its thread, which closes its connections
    t.quiet(&[]).await?;
    let after = t.memory()?;

    // The answers before the write: shed (503) or otherwise early.
    let before_write: Vec<&Answer> = answers.iter().filter(|a| a.at < j_at).collect();
    let shed = before_write.iter().filter(|a| a.status == 503).count();
    let other_early = before_write.len() - shed;
    let between = answers
        .iter()
        .filter(|a| a.at >= j_at && a.at < k_sent)
        .count();
    let woke: Vec<&Answer> = answers.iter().filter(|a| a.at >= k_sent).collect();
    let bad = woke
        .iter()
        .filter(|a| a.status != 200 || a.index.is_none_or(|i| i <= k_index))
        .count();
    // Two clocks: from the moment the PUT was sent (which counts the
    // write's own commit; the target is judged on it) and from the PUT's
    // answer (what a writer that then waits for its readers sees). The
    // second reads 0 for every answer that came before the PUT's own, so
    // an agent that answered the writer last would meet any target on it.
    let sorted = |from: Instant| {
        let mut v: Vec<Duration> = woke
            .iter()
            .map(|a| a.at.saturating_duration_since(from))
            .collect();
        v.sort_unstable();
        v
    };
    let (from_done, from_sent) = (sorted(k_done), sorted(k_sent));
    let before_put_answer = woke.iter().filter(|a| a.at < k_done).count();
    let n_parked = s.parked - early.0;

    println!(
        "\nparked: {n_parked} of {} on {KEY} (sent in {:.2} s); answered before any write: {shed} \
         shed with 503, {other_early} other{}",
        s.parked,
        parking.as_secs_f64(),
        if shed > 0 {
            " — the agent parks at most MAX_BLOCKING blocking queries at once \
             (src/http/admit.rs, a constant, no setting) and sheds the rest"
        } else {
            ""
        }
    );
    println!(
        "PUT {OTHER} (another key): answered in {:.1} ms, the query parked on it after {}; queries on {KEY} \
         answered: {} of {n_parked}, on the missing key {MISSING}: {} of {} (issue: none; Consul #9449)",
        ms(j_done - j_at),
        sentinel_after.map_or("–".into(), |d| format!("{:.1} ms", ms(d))),
        woken.0,
        woken.1,
        s.missing - early.1,
    );
    if between != woken.0 {
        println!("  ({between} answers on {KEY} arrived between the two writes)");
    }
    println!(
        "PUT {KEY}: answered in {:.1} ms (index {}); {} parked queries answered, {bad} of them not \
         200 with an index past {k_index}",
        ms(k_done - k_sent),
        k_put_index.map_or("–".into(), |i| i.to_string()),
        woke.len(),
    );
    println!(
        "\n| {} parked queries, time to their answer | first ms | p50 ms | p99 ms | max ms | target p99 ≤ {} ms |\n|---|---:|---:|---:|---:|---|",
        woke.len(),
        TARGET_P99.as_millis()
    );
    for (label, lat, judged) in [
        ("from the PUT sent", &from_sent, true),
        ("from the PUT's response", &from_done, false),
    ] {
        let p99 = stats::percentile(lat, 0.99);
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            ms(lat.first().copied().unwrap_or_default()),
            ms(stats::percentile(lat, 0.50)),
            ms(p99),
            ms(lat.last().copied().unwrap_or_default()),
            match (judged, p99 <= TARGET_P99 && !lat.is_empty()) {
                (false, _) => "– (not judged: see below)",
                (true, true) => "met",
                (true, false) => "NOT met",
            }
        );
    }
    println!(
        "answer = a parked query's complete response; {before_put_answer} answered before the PUT's \
         own response arrived (0 ms on the first clock)"
    );

    let per = |a: u64, b: u64| (b as f64 - a as f64) / n_parked.max(1) as f64;
    println!("\n| agent memory | VmRSS MiB | RssAnon MiB |\n|---|---:|---:|");
    for (label, m) in [
        ("before parking", before),
        ("parked", during),
        ("after (all answered, connections closed)", after),
    ] {
        println!("| {label} | {:.1} | {:.1} |", mib(m.rss), mib(m.anon));
    }
    println!(
        "per parked query ({n_parked} parked, {} on other keys): {:.1} KiB VmRSS, {:.1} KiB RssAnon",
        s.missing + 1 - early.1 - early.2,
        per(before.rss, during.rss) / 1024.0,
        per(before.anon, during.anon) / 1024.0
    );
    println!(
        "agent CPU time: parking {:.0} ms ({:.0} µs per query); the PUT to {OTHER} until quiet {:.0} ms \
         ({:.1} µs per parked query); the PUT to {KEY} until every answer {:.0} ms ({:.1} µs per \
         parked query)",
        cpu_parking * 1e3,
        cpu_parking * 1e6 / (s.parked + s.missing + 1) as f64,
        cpu_j * 1e3,
        cpu_j * 1e6 / n_parked.max(1) as f64,
        cpu_k * 1e3,
        cpu_k * 1e6 / n_parked.max(1) as f64,
    );
    // The kernel's own share of an answer, with nothing else running.
    if let Some(len) = woke.first().map(|a| a.len) {
        let n = n_parked.min((nofile.saturating_sub(256) / 2) as usize);
        let ip = std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 3, 32));
        let f = tokio::task::spawn_blocking(move || floor::measure(ip, n, len)).await??;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / f.n.max(1) as f64;
        println!(
            "loopback floor on this machine: {} answers of {len} B written from one thread in {:.1} ms \
             ({:.2} µs each) and read back in {:.1} ms ({:.2} µs each); for {n_parked}: {:.0} ms",
            f.n,
            ms(f.write),
            per(f.write),
            ms(f.read),
            per(f.read),
            (per(f.write) + per(f.read)) * n_parked as f64 / 1e3,
        );
    }
    // Both share the machine's cores: together they bound how soon the
    // last answer can arrive.
    println!(
        "this benchmark's own CPU time receiving those answers: {:.0} ms ({:.1} µs per answer); \
         agent and client together {:.0} ms on {} CPUs",
        client_k * 1e3,
        client_k * 1e6 / n_parked.max(1) as f64,
        (cpu_k + client_k) * 1e3,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    if woken != (0, 0) || bad > 0 || other_early > 0 {
        bail!(
            "wrong answers: {} woken by another key's write, {bad} bad answers, {other_early} early answers other than 503",
            woken.0 + woken.1
        );
    }
    Ok(())
}

/// This process's CPU time so far (user and system), in seconds: the
/// client's share of the machine.
fn own_cpu() -> f64 {
    procs::cpu_seconds(&[std::process::id()])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Checks the parsers and the arithmetic; run without `--bench`.
fn self_check() {
    mem::self_check();
    let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    let s = Settings::parse(&args("--bench --parked 4000 --missing 2 --wait 90s")).expect("parses");
    assert_eq!(
        s,
        Settings {
            parked: 4000,
            missing: 2,
            wait: "90s".into()
        }
    );
    assert_eq!(
        Settings::parse(&args("--bench")).expect("defaults").parked,
        10_000
    );
    assert!(Settings::parse(&args("--parked")).is_err());
    assert!(Settings::parse(&args("--parked 0")).is_err());
    assert!(Settings::parse(&args("--what")).is_err());

    let h = Head::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Consul-Index: 42\r\n\r\n")
        .expect("a head parses");
    assert_eq!(
        h,
        Head {
            status: 200,
            length: Some(12),
            index: Some(42)
        }
    );
    let h = Head::parse(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n")
        .expect("a head parses");
    assert_eq!((h.status, h.length, h.index), (503, None, None));
    assert!(Head::parse(b"garbage\r\n\r\n").is_err());
    assert_eq!(find(b"ab\r\n\r\ncd", b"\r\n\r\n"), Some(2));
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Consul-Index: 7\r\n\r\n";
    assert_eq!(whole(&ok[..20]).expect("a partial head"), None);
    assert_eq!(whole(ok).expect("a head without its body"), None);
    let answer = [&ok[..], b"abc"].concat();
    assert_eq!(
        whole(&answer).expect("a whole answer").map(|h| h.index),
        Some(Some(7))
    );
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n";
    assert_eq!(whole(chunked).expect("an unfinished chunked body"), None);
    assert!(
        whole(&[&chunked[..], b"0\r\n\r\n"].concat())
            .expect("parses")
            .is_some()
    );

    let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    assert_eq!(stats::percentile(&v, 0.5), Duration::from_millis(50));
    assert_eq!(stats::percentile(&v, 0.99), Duration::from_millis(99));
    assert_eq!(stats::percentile::<Duration>(&[], 0.99), Duration::ZERO);
}
