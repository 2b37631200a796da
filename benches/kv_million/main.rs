//! A million KV keys in one durable trellis server, next to one etcd
//! member holding the same keys: memory, disk, restart-to-serving time and
//! read latency.
//!
//! `cargo bench --bench kv_million` (`-- --keys N` for another count): for
//! etcd, then trellis, one after the other so they never share the CPUs:
//!
//! 1. starts the store with its data in a temp dir on disk (`BENCH_DIR` to
//!    choose where): one etcd 3.4 member on 127.0.3.42, every setting at
//!    its default; one `trellis agent --server --bootstrap-expect 1` on
//!    127.0.3.41 (`--raft-snapshot-threshold 1024` unless told otherwise,
//!    so that a snapshot holds the keys: the default 16,384 entries is more
//!    than the ~7,800 transactions of the load);
//! 2. loads keys `bench/million/0000000`… with 100-byte values in
//!    transactions of 128 writes (`PUT /v1/txn` with `set` ops; etcd's
//!    `txn` of puts, its default limit being 128 ops too), 16 clients at
//!    once, and times it;
//! 3. waits until the process is idle, reads its memory (`VmRSS`,
//!    `RssAnon`), then reads 10,000 random keys one at a time on one
//!    keep-alive connection (the same keys for both), checking each value;
//! 4. stops it (SIGTERM), measures the data dir (`du`) and the snapshot
//!    (trellis: its stored Raft snapshot; etcd: its db file), starts it
//!    again and times from the start until a read of a known key returns
//!    it; reads its memory once idle again;
//! 5. prints both side by side with the trellis/etcd ratios.
//!
//! Every process is SIGKILLed and the temp dir removed on every exit path
//! (`BENCH_KEEP=1` keeps the files). Without `--bench` (as `cargo test
//! --benches` runs it) it only checks its own helpers.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

mod etcd;
#[allow(dead_code)] // raise_nofile is for kv_fanout
#[path = "../common/mem.rs"]
mod mem;
// Shared with the cluster benchmarks, which use helpers this one does not.
#[allow(dead_code)]
#[path = "../common/procs.rs"]
mod procs;
mod store;
mod trellis;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::etcd::Etcd;
use crate::mem::{Memory, mib};
use crate::store::{Store, key};
use crate::trellis::Trellis;

fn main() -> ExitCode {
    procs::bench_main("kv_million", self_check, Settings::parse, run)
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Settings {
    /// `--keys N`.
    keys: usize,
    /// `--value-bytes N`.
    value_bytes: usize,
    /// `--batch N`: writes per transaction.
    batch: usize,
    /// `--clients N`: transactions in flight at once while loading.
    clients: usize,
    /// `--gets N`: random reads timed.
    gets: usize,
    /// `--snapshot-threshold N`: trellis's `--raft-snapshot-threshold`; 0
    /// leaves trellis's default.
    snapshot_threshold: u64,
    /// `--only etcd|trellis`.
    only: Option<String>,
}

impl Settings {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut s = Self {
            keys: 1_000_000,
            value_bytes: 100,
            batch: 128,
            clients: 16,
            gets: 10_000,
            snapshot_threshold: 1024,
            only: None,
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
                "--keys" => s.keys = n()?,
                "--value-bytes" => s.value_bytes = n()?,
                "--batch" => s.batch = n()?,
                "--clients" => s.clients = n()?,
                "--gets" => s.gets = n()?,
                "--snapshot-threshold" => s.snapshot_threshold = n()? as u64,
                "--only" if v == "etcd" || v == "trellis" => s.only = Some(v.clone()),
                _ => bail!(
                    "unknown argument {a} {v}; use --keys N, --value-bytes N, --batch N, \
                     --clients N, --gets N, --snapshot-threshold N, --only etcd|trellis"
                ),
            }
        }
        if s.keys == 0 || s.batch == 0 || s.clients == 0 || s.value_bytes < 8 {
            bail!("--keys, --batch and --clients must be at least 1, --value-bytes at least 8");
        }
        Ok(s)
    }

    fn runs(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == name)
    }
}

/// What was measured of one store.
struct Figures {
    load: Duration,
    loaded: Memory,
    /// Sorted latencies of the random reads.
    gets: Vec<Duration>,
    disk: u64,
    snapshot: (u64, String),
    restart: Duration,
    restarted: Memory,
}

async fn run(s: Settings) -> anyhow::Result<()> {
    let etcd_version = if s.runs("etcd") {
        Some(etcd::version()?)
    } else {
        None
    };
    println!(
        "kv_million: {} keys of {} bytes, transactions of {}, {} clients loading; {} random reads",
        s.keys, s.value_bytes, s.batch, s.clients, s.gets
    );
    println!(
        "machine: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        procs::load_average()
    );
    if let Some(v) = &etcd_version {
        println!("etcd: {v}, one member, defaults");
    }
    let threshold = (s.snapshot_threshold > 0).then_some(s.snapshot_threshold);
    println!(
        "trellis: one server, --raft-snapshot-threshold {}",
        threshold.map_or("default".into(), |n| n.to_string())
    );

    let mut builder = tempfile::Builder::new();
    builder.prefix("trellis-kv-million-");
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .context("creating a temp dir")?;
    // Dropping `_guard` removes the temp dir, unless BENCH_KEEP=1 kept it.
    let (dir_path, _guard) = if std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1") {
        let kept = dir.keep();
        println!("data and logs kept in {} (BENCH_KEEP=1)", kept.display());
        (kept, None)
    } else {
        (dir.path().to_path_buf(), Some(dir))
    };

    let mut etcd = None;
    if s.runs("etcd") {
        let mut e = Etcd::start(&dir_path, s.value_bytes)?;
        let f = measure(&mut e, &s).await;
        etcd = Some(f.map_err(|err| anyhow!("etcd: {err:#}\n--- etcd log ---\n{}", e.log_tail()))?);
    }
    let mut trellis = None;
    if s.runs("trellis") {
        let mut t = Trellis::start(&dir_path, threshold, s.value_bytes).await?;
        let f = measure(&mut t, &s).await;
        trellis =
            Some(f.map_err(|err| {
                anyhow!("trellis: {err:#}\n--- trellis log ---\n{}", t.log_tail())
            })?);
    }
    print_table(&s, etcd.as_ref(), trellis.as_ref());
    Ok(())
}

/// Steps 2 to 4 on one store.
async fn measure<S: Store>(store: &mut S, s: &Settings) -> anyhow::Result<Figures> {
    let name = store.name();
    wait_ready(store).await?;
    eprintln!("{name}: loading {} keys", s.keys);
    let loaded = store::load(store, s.keys, s.batch, s.clients).await?;
    eprintln!(
        "{name}: loaded in {:.1} s ({:.0} keys/s); waiting until idle",
        loaded.took.as_secs_f64(),
        loaded.keys as f64 / loaded.took.as_secs_f64()
    );
    store::quiet(store).await?;
    let mem_loaded = Memory::of(store.pid())?;
    let gets = store::read_random(store, s.keys, s.gets).await?;
    eprintln!("{name}: {} random reads done; restarting", gets.len());
    store.stop();
    let disk = mem::disk_usage(store.data_dir())?;
    let snapshot = store.snapshot_size()?;
    let restart = store::restart_to_serving(store, s.keys - 1).await?;
    eprintln!(
        "{name}: serving {} again {:.2} s after its start",
        key(s.keys - 1),
        restart.as_secs_f64()
    );
    store::quiet(store).await?;
    let restarted = Memory::of(store.pid())?;
    store.stop();
    Ok(Figures {
        load: loaded.took,
        loaded: mem_loaded,
        gets,
        disk,
        snapshot,
        restart,
        restarted,
    })
}

/// Waits until the store answers reads: trellis with 200 or 404 (a leader
/// serves them), etcd with 200.
async fn wait_ready<S: Store>(store: &mut S) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let api = store.api();
    let start = Instant::now();
    loop {
        store.check_running()?;
        if let Ok(resp) = api.read(&http, 0).send().await {
            let status = resp.status().as_u16();
            if status == 200 || status == 404 {
                return Ok(());
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{} does not answer reads after 60 s", store.name());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_table(s: &Settings, etcd: Option<&Figures>, trellis: Option<&Figures>) {
    println!(
        "\n| {} keys × {} B | etcd | trellis | trellis/etcd |",
        s.keys, s.value_bytes
    );
    println!("|---|---:|---:|---:|");
    let row = |label: &str, f: &dyn Fn(&Figures) -> f64, digits: usize| {
        let cell = |x: Option<&Figures>| x.map_or("–".into(), |x| format!("{:.*}", digits, f(x)));
        let ratio = match (etcd, trellis) {
            (Some(e), Some(t)) if f(e) > 0.0 => format!("{:.2}", f(t) / f(e)),
            _ => "–".into(),
        };
        println!("| {label} | {} | {} | {ratio} |", cell(etcd), cell(trellis));
    };
    let pct = |v: &[Duration], p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let rank = (p * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1].as_secs_f64() * 1e3
    };
    row("load, keys/s", &|f| s.keys as f64 / f.load.as_secs_f64(), 0);
    row("RSS after load, MiB (VmRSS)", &|f| mib(f.loaded.rss), 1);
    row(
        "anonymous RSS after load, MiB (RssAnon)",
        &|f| mib(f.loaded.anon),
        1,
    );
    row("data dir on disk, MiB (du)", &|f| mib(f.disk), 1);
    row("snapshot, MiB", &|f| mib(f.snapshot.0), 1);
    row("restart to serving, s", &|f| f.restart.as_secs_f64(), 2);
    row(
        "RSS after restart, MiB (VmRSS)",
        &|f| mib(f.restarted.rss),
        1,
    );
    row(
        "anonymous RSS after restart, MiB (RssAnon)",
        &|f| mib(f.restarted.anon),
        1,
    );
    row("GET p50, ms", &|f| pct(&f.gets, 0.50), 3);
    row("GET p99, ms", &|f| pct(&f.gets, 0.99), 3);
    for (name, f) in [("etcd", etcd), ("trellis", trellis)] {
        if let Some(f) = f {
            println!("{name} snapshot: {}", f.snapshot.1);
        }
    }
    println!(
        "ratios: trellis/etcd (below 1 is better for trellis, except load keys/s); restart to \
         serving = process start until a GET of {} returns its value",
        key(s.keys - 1)
    );
}

/// Checks the parsers and generators; run without `--bench`.
fn self_check() {
    mem::self_check();
    store::self_check();
    let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    let d = Settings::parse(&args("--bench")).expect("defaults");
    assert_eq!(
        (d.keys, d.batch, d.value_bytes, d.snapshot_threshold),
        (1_000_000, 128, 100, 1024)
    );
    let s = Settings::parse(&args("--bench --keys 200_000 --only trellis --clients 8"))
        .expect("parses");
    assert_eq!((s.keys, s.clients), (200_000, 8));
    assert!(s.runs("trellis") && !s.runs("etcd"));
    assert!(Settings::parse(&args("--keys")).is_err());
    assert!(Settings::parse(&args("--keys 0")).is_err());
    assert!(Settings::parse(&args("--only consul")).is_err());
}
