//! Leader failover: SIGKILL the leader while writes go on through another
//! member, and measure how long until writes succeed again.
//!
//! Two clocks start at the kill, both writing to the same surviving member
//! (the one after the leader, in member order):
//! - the *writer*: one client sending one write at a time, each with a
//!   client timeout (`BENCH_WRITE_TIMEOUT_MS`, default 1 s) and retried 1 ms
//!   after a failure, as an application would; its figure is the completion
//!   of the first write it sent after the kill that succeeded. A request
//!   that hangs until the timeout shows up here.
//! - the *probe*: a new write every 10 ms regardless of earlier ones (each
//!   with a 3 s timeout); its figure is the earliest completion of any
//!   successful write sent after the kill, which is when the cluster took
//!   writes again whatever a client's timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cluster::{Api, Cluster, send};

/// Time between probe writes.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// A probe write's timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long writes may stay impossible before the trial fails.
const RECOVER_WITHIN: Duration = Duration::from_secs(30);
/// How long the killed member may take to be a healthy voter again.
const HEAL_WITHIN: Duration = Duration::from_secs(60);

/// One trial's figures.
#[derive(Debug, Clone)]
pub(crate) struct Trial {
    /// The member killed (it led).
    pub(crate) killed: usize,
    /// When it was killed, by the wall clock (to read the logs by).
    pub(crate) killed_wall: SystemTime,
    /// The member written to.
    pub(crate) target: usize,
    /// Kill to the writer's first successful write.
    pub(crate) writer: Duration,
    /// Kill to the earliest successful write of any kind.
    pub(crate) earliest: Duration,
    /// Writes the writer saw fail after the kill.
    pub(crate) failed: u32,
    /// The failures of writes sent after the kill, writer's and probes',
    /// by message (URLs left out), with their counts.
    pub(crate) errors: BTreeMap<String, u32>,
    /// The longest of the writer's requests sent after the kill.
    pub(crate) longest: Duration,
    /// How long the restarted member took to be a healthy voter again.
    pub(crate) heal: Duration,
}

/// A write's send and completion times and whether it succeeded.
type Outcome = (Instant, Instant, Result<(), String>);

/// Runs one trial on a healthy cluster and leaves it healthy again.
pub(crate) async fn trial<C: Cluster>(
    cluster: &mut C,
    http: &reqwest::Client,
    n: usize,
    write_timeout: Duration,
) -> anyhow::Result<Trial> {
    let leader = cluster.wait_healthy(http, HEAL_WITHIN).await?;
    let target = (leader + 1) % cluster.members();
    let api = cluster.api();
    let stop = Arc::new(AtomicBool::new(false));

    let (tx, mut rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(writer(
        api.clone(),
        target,
        format!("fo{n}-w"),
        write_timeout,
        tx,
        stop.clone(),
    ));
    let prober = tokio::spawn(prober(api, target, format!("fo{n}-p"), stop.clone()));
    let result = measure(cluster, &mut rx, leader).await;
    // Let probes sent around the writer's success finish their race.
    tokio::time::sleep(PROBE_EVERY * 10).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.context("the writer task")?;
    let probes = prober.await.context("the prober task")?;
    let (killed_at, mut t) = result?;

    for (sent, _, r) in &probes {
        if let (true, Err(e)) = (*sent >= killed_at, r) {
            *t.errors.entry(error_kind(e)).or_default() += 1;
        }
    }
    if let Some(p) = probes
        .iter()
        .filter(|(sent, _, r)| *sent >= killed_at && r.is_ok())
        .map(|(_, done, _)| *done - killed_at)
        .min()
    {
        t.earliest = t.earliest.min(p);
    }
    let healing = Instant::now();
    cluster.restart(leader).await?;
    cluster.wait_healthy(http, HEAL_WITHIN).await?;
    t.heal = healing.elapsed();
    t.target = target;
    Ok(t)
}

/// Waits for the writer's first success, kills `leader`, and follows the
/// writer until it succeeds again. Returns the kill's instant and the
/// writer's figures.
async fn measure<C: Cluster>(
    cluster: &mut C,
    rx: &mut mpsc::UnboundedReceiver<Outcome>,
    leader: usize,
) -> anyhow::Result<(Instant, Trial)> {
    let warm = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some((_, _, r)) = rx.recv().await {
            if r.is_ok() {
                return true;
            }
        }
        false
    });
    if !warm.await.unwrap_or(false) {
        bail!(
            "{}: the writer had no success before the kill",
            cluster.name()
        );
    }
    let killed_wall = SystemTime::now();
    let killed_at = Instant::now();
    cluster.kill(leader);
    let mut t = Trial {
        killed: leader,
        killed_wall,
        target: 0,
        writer: Duration::ZERO,
        earliest: Duration::ZERO,
        failed: 0,
        errors: BTreeMap::new(),
        longest: Duration::ZERO,
        heal: Duration::ZERO,
    };
    let deadline = killed_at + RECOVER_WITHIN;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), rx.recv()).await;
        let (sent, done, r) = next
            .map_err(|_| {
                anyhow!(
                    "{}: no write succeeded within {} s of killing the leader ({} failed: {:?})",
                    cluster.name(),
                    RECOVER_WITHIN.as_secs(),
                    t.failed,
                    t.errors
                )
            })?
            .ok_or_else(|| anyhow!("the writer stopped"))?;
        if sent < killed_at {
            continue;
        }
        t.longest = t.longest.max(done - sent);
        match r {
            Ok(()) => {
                t.writer = done - killed_at;
                t.earliest = t.writer;
                return Ok((killed_at, t));
            }
            Err(e) => {
                t.failed += 1;
                *t.errors.entry(error_kind(&e)).or_default() += 1;
            }
        }
    }
}

/// One write at a time to `target` until `stop`, each outcome sent to `tx`.
async fn writer(
    api: Api,
    target: usize,
    prefix: String,
    timeout: Duration,
    tx: mpsc::UnboundedSender<Outcome>,
    stop: Arc<AtomicBool>,
) {
    let http = match client(timeout) {
        Ok(h) => h,
        Err(e) => {
            let now = Instant::now();
            let _ = tx.send((now, now, Err(e.to_string())));
            return;
        }
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let sent = Instant::now();
        let r = send(api.write(&http, target, &format!("{prefix}-{seq}"))).await;
        let failed = r.is_err();
        if tx.send((sent, Instant::now(), r)).is_err() {
            return;
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A new write to `target` every `PROBE_EVERY` until `stop`; returns every
/// outcome once the last one is in.
async fn prober(api: Api, target: usize, prefix: String, stop: Arc<AtomicBool>) -> Vec<Outcome> {
    let Ok(http) = client(PROBE_TIMEOUT) else {
        return Vec::new();
    };
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut inflight = JoinSet::new();
    let mut out = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        seq += 1;
        let req = api.write(&http, target, &format!("{prefix}-{seq}"));
        inflight.spawn(async move {
            let sent = Instant::now();
            let r = send(req).await;
            (sent, Instant::now(), r)
        });
        while let Some(Ok(o)) = inflight.try_join_next() {
            out.push(o);
        }
    }
    while let Some(o) = inflight.join_next().await {
        if let Ok(o) = o {
            out.push(o);
        }
    }
    out
}

/// An HTTP client whose requests give up after `timeout`.
fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .timeout(timeout)
        .build()
}

/// An error message without the URL reqwest puts in it, so that the same
/// failure on different members counts as one kind.
fn error_kind(e: &str) -> String {
    const URL: &str = " for url (";
    match e.find(URL) {
        Some(i) => match e[i..].find(')') {
            Some(j) => format!("{}{}", &e[..i], &e[i + j + 1..]),
            None => e[..i].to_string(),
        },
        None => e.to_string(),
    }
}

/// The median and maximum of `v`; zeros when empty.
pub(crate) fn median_max(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort_unstable();
    match s.len() {
        0 => (Duration::ZERO, Duration::ZERO),
        n if n % 2 == 1 => (s[n / 2], s[n - 1]),
        n => ((s[n / 2 - 1] + s[n / 2]) / 2, s[n - 1]),
    }
}

/// Checks the summary arithmetic; run without `--bench`.
pub(crate) fn self_check() {
    let ms = Duration::from_millis;
    assert_eq!(
        error_kind("error sending request for url (http://1.2.3.4:5/v3/kv/put): timed out"),
        "error sending request: timed out"
    );
    assert_eq!(
        error_kind("HTTP 500: No cluster leader"),
        "HTTP 500: No cluster leader"
    );
    assert_eq!(median_max(&[]), (ms(0), ms(0)));
    assert_eq!(median_max(&[ms(3), ms(1), ms(2)]), (ms(2), ms(3)));
    assert_eq!(
        median_max(&[ms(4), ms(1), ms(2), ms(3)]),
        (ms(2) + ms(1) / 2, ms(4))
    );
}
