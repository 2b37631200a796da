//! The write load, the same for both systems: N clients, each sending one
//! write at a time over its own keep-alive HTTP/1.1 connection (no
//! pipelining, no batching), spread round-robin over the members; a
//! warm-up, then a measured window in which only completed writes count.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::task::JoinSet;

use crate::cluster::{Api, Workload, send};
use crate::stats::percentile;

/// What one step measured, or several rounds of the same step pooled.
#[derive(Debug, Clone)]
pub(crate) struct StepResult {
    /// Accepted (2xx) writes that completed in the window.
    pub(crate) ok: u64,
    /// Writes that failed (non-2xx or transport error) in the window.
    pub(crate) errors: u64,
    /// The first error seen, to show what went wrong.
    pub(crate) first_error: Option<String>,
    /// The window's length (summed over rounds).
    pub(crate) window: Duration,
    /// Latencies of the accepted writes, microseconds, sorted.
    samples: Vec<u32>,
    /// CPU seconds the servers used in the window.
    pub(crate) cpu: f64,
    /// Accepted writes per second of each round, in order.
    pub(crate) rounds: Vec<f64>,
    /// The slowest accepted writes, slowest first: to find in the servers'
    /// logs what held them up.
    pub(crate) slowest: Vec<Slow>,
}

/// How many of the slowest writes a step keeps.
const SLOWEST: usize = 3;

/// One slow write: how long it took, when it was sent (wall clock, as the
/// servers' logs are stamped) and to which member's HTTP address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slow {
    pub(crate) took: Duration,
    pub(crate) sent: SystemTime,
    pub(crate) to: SocketAddr,
}

impl std::fmt::Display for Slow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} ms, sent {} to {}",
            self.took.as_secs_f64() * 1e3,
            humantime::format_rfc3339_millis(self.sent),
            self.to
        )
    }
}

/// Keeps the [`SLOWEST`] slowest of `slow`, slowest first.
fn keep_slowest(slow: &mut Vec<Slow>) {
    slow.sort_by_key(|s| std::cmp::Reverse(s.took));
    slow.truncate(SLOWEST);
}

impl StepResult {
    /// Accepted writes per second.
    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// Median latency of accepted writes.
    pub(crate) fn p50(&self) -> Duration {
        micros(percentile(&self.samples, 0.50))
    }

    /// 99th percentile latency of accepted writes.
    pub(crate) fn p99(&self) -> Duration {
        micros(percentile(&self.samples, 0.99))
    }

    /// 99.9th percentile latency of accepted writes: where a stall that
    /// hits one write in a thousand (a snapshot written in the log's way)
    /// shows.
    pub(crate) fn p999(&self) -> Duration {
        micros(percentile(&self.samples, 0.999))
    }

    /// The slowest accepted write.
    pub(crate) fn max(&self) -> Duration {
        micros(self.samples.last().copied().unwrap_or(0))
    }

    /// Pools `other`, another round of the same step, into `self`: counts,
    /// windows and CPU add up, latencies are merged.
    pub(crate) fn pool(&mut self, other: Self) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.window += other.window;
        self.samples.extend(other.samples);
        self.samples.sort_unstable();
        self.cpu += other.cpu;
        self.rounds.extend(other.rounds);
        self.slowest.extend(other.slowest);
        keep_slowest(&mut self.slowest);
    }

    /// Server CPU time per accepted write, in microseconds.
    pub(crate) fn cpu_per_write_us(&self) -> f64 {
        self.cpu * 1e6 / (self.ok.max(1) as f64)
    }
}

/// What one client saw in the window.
#[derive(Default)]
struct ClientResult {
    /// Latencies of accepted writes, in microseconds.
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    /// Its slowest accepted write.
    slowest: Option<Slow>,
}

/// Runs `clients` writers of `workload` against `api` for `warmup` then `window`; client
/// `c` writes to member `(first + c) % members`. Writes are tagged with
/// `label` so that no two writes of the run register the same node. The
/// servers' CPU time in the window is read with `cpu`.
#[allow(clippy::too_many_arguments)] // The step's whole description, named.
pub(crate) async fn step(
    workload: Workload,
    api: &Api,
    cpu: impl Fn() -> f64,
    first: usize,
    clients: usize,
    warmup: Duration,
    window: Duration,
    label: &str,
) -> anyhow::Result<StepResult> {
    let begin = Instant::now() + Duration::from_millis(50);
    let counted_from = begin + warmup;
    let end = counted_from + window;
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        // One client per task, so one connection per task: the pool keeps
        // the single idle connection alive between its sequential requests.
        let http = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()
            .context("building an HTTP client")?;
        let api = api.clone();
        let member = (first + c) % api.members();
        let to = api.addr(member);
        let prefix = format!("{label}-{c}");
        tasks.spawn(async move {
            tokio::time::sleep_until(begin.into()).await;
            let mut r = ClientResult::default();
            let mut seq = 0u64;
            while Instant::now() < end {
                seq += 1;
                let req = api.request(workload, &http, member, &format!("{prefix}-{seq}"));
                let sent = Instant::now();
                let sent_at = SystemTime::now();
                let outcome = send(req).await;
                let done = Instant::now();
                let counted = done >= counted_from && done <= end;
                match outcome {
                    Ok(()) if counted => {
                        let took = done - sent;
                        let us = took.as_micros();
                        r.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                        if r.slowest.is_none_or(|s| took > s.took) {
                            r.slowest = Some(Slow {
                                took,
                                sent: sent_at,
                                to,
                            });
                        }
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if counted {
                            r.errors += 1;
                            r.first_error.get_or_insert(e);
                        }
                        // Do not spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            r
        });
    }
    tokio::time::sleep_until(counted_from.into()).await;
    let cpu_before = cpu();
    tokio::time::sleep_until(end.into()).await;
    let cpu_used = cpu() - cpu_before;
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut slowest = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.context("a client task failed")?;
        latencies.extend(r.latencies);
        slowest.extend(r.slowest);
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    latencies.sort_unstable();
    keep_slowest(&mut slowest);
    let ok = latencies.len() as u64;
    Ok(StepResult {
        ok,
        errors,
        first_error,
        window,
        samples: latencies,
        cpu: cpu_used,
        rounds: vec![ok as f64 / window.as_secs_f64()],
        slowest,
    })
}

fn micros(v: u32) -> Duration {
    Duration::from_micros(u64::from(v))
}

/// Checks the percentile arithmetic; run without `--bench`.
pub(crate) fn self_check() {
    assert_eq!(percentile::<u32>(&[], 0.5), 0);
    assert_eq!(percentile(&[7], 0.99), 7);
    let v: Vec<u32> = (1..=100).collect();
    assert_eq!(percentile(&v, 0.50), 50);
    assert_eq!(percentile(&v, 0.99), 99);
    assert_eq!(percentile(&v, 1.0), 100);
    assert_eq!(percentile(&v, 0.0), 1);

    let round = |lat: Vec<u32>| StepResult {
        ok: lat.len() as u64,
        errors: 0,
        first_error: None,
        window: Duration::from_secs(1),
        rounds: vec![lat.len() as f64],
        slowest: lat
            .iter()
            .map(|&us| Slow {
                took: micros(us),
                sent: SystemTime::UNIX_EPOCH,
                to: SocketAddr::from(([127, 0, 0, 1], 0)),
            })
            .collect(),
        samples: lat,
        cpu: 0.5,
    };
    let mut a = round(vec![1, 3]);
    a.pool(round(vec![2, 4, 5, 6]));
    let slowest: Vec<u32> = a
        .slowest
        .iter()
        .map(|s| s.took.as_micros() as u32)
        .collect();
    assert_eq!(slowest, [6, 5, 4], "the three slowest, slowest first");
    assert_eq!(a.rate(), 3.0);
    assert_eq!(a.rounds, vec![2.0, 4.0]);
    assert_eq!(a.p50(), Duration::from_micros(3));
    assert_eq!(a.max(), Duration::from_micros(6));
    assert_eq!(a.cpu_per_write_us(), 1e6 / 6.0);
}
