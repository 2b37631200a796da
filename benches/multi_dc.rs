//! Several datacenters, measured: how fast a prepared query fails over to
//! another datacenter and back, how fast a call to a datacenter that went
//! silent fails and how fast it works again, how fast a write in dc2 wakes
//! a blocking query parked in dc1, and whether dc1's own DNS notices that
//! dc2 is dead.
//!
//! Runs the release `trellis` binary (the one cargo built for this bench):
//! two datacenters of three servers on loopback (dc1 on 127.0.1.x, dc2 on
//! 127.0.2.x, the test kit's federation), joined by one WAN join. `web` is
//! registered on dc1's s1 and dc2's s1 with a TTL check; dc1 holds the
//! prepared query `web` (`OnlyPassing`, `Failover.Datacenters = ["dc2"]`).
//!
//! - **Failover.** `--trials N` (10) times: fail dc1's TTL check, poll
//!   `web.query.consul A` on dc1's s2 every 2 ms until it answers dc2's
//!   address; pass the check, poll until dc1's again. The check is a TTL
//!   check, so there is no interval to wait out: the figure is what comes
//!   on top of the check's interval (target: ≤ 1 s).
//! - **Blocking query across datacenters.** N times: park
//!   `GET /v1/kv/bench/wake?dc=dc2&index=…` on dc1's s2, then PUT that key
//!   on dc2's s1; the time from the PUT sent to the parked answer (target:
//!   ≤ 100 ms).
//! - **A silent datacenter.** dc2's servers are stopped (SIGSTOP: they
//!   keep their sockets and answer nothing, as behind a blackhole), then
//!   killed. Each `GET /v1/catalog/nodes?dc=dc2` on dc1's s2 is timed until
//!   it fails (target: ≤ 2 s each; Consul: up to 10 s), then dc2 resumes
//!   (SIGCONT) and the time until it works again is taken (target: ≤ 10 s).
//! - **dc1's DNS while dc2 is silent or dead.** `web.service.consul A`
//!   asked of dc1's s3 one at a time for `--dns-secs S` (5) seconds at a
//!   time while 4 tasks keep asking the same server for `?dc=dc2`: three
//!   rounds of dc2 answering then dc2 stopped, then dc2 killed. p50, p99
//!   and the p99 ratio to dc2 answering (target: within 5 %).
//!
//! Run: `cargo bench --bench multi_dc -- --trials 10`. Without `--bench` (as
//! `cargo test --benches` runs it) it checks only its own helpers.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use hickory_proto::rr::RecordType;
use serde_json::json;
use tokio::net::UdpSocket;
use trellis_testkit::dns::{a_records, query_message};
use trellis_testkit::federation::Federation;
use trellis_testkit::{Agent, Trellis, try_wait_until_async};

/// The binary under test.
const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
/// How long any one condition may take before the run is called broken.
const DEADLINE: Duration = Duration::from_secs(30);

/// Command-line settings.
struct Settings {
    trials: usize,
    dns_secs: u64,
}

fn settings() -> anyhow::Result<Settings> {
    let mut s = Settings {
        trials: 10,
        dns_secs: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--trials" => s.trials = usize::try_from(value("--trials")?)?,
            "--dns-secs" => s.dns_secs = value("--dns-secs")?,
            _ => {}
        }
    }
    Ok(s)
}

/// The p-th percentile (0–100) of `samples`, which it sorts.
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

/// One UDP question to `server`, its A records (empty on any failure).
async fn ask_a(socket: &UdpSocket, server: SocketAddr, name: &str) -> Vec<IpAddr> {
    let Ok(bytes) = query_message(name, RecordType::A, None).to_vec() else {
        return Vec::new();
    };
    if socket.send_to(&bytes, server).await.is_err() {
        return Vec::new();
    }
    let mut buf = vec![0; 4096];
    match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => hickory_proto::op::Message::from_vec(&buf[..n])
            .map(|m| a_records(&m))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Registers `web` on `agent` with a TTL check, passing.
async fn register_web(agent: &Agent, address: &str) -> anyhow::Result<()> {
    let body = json!({
        "Name": "web", "ID": "web", "Address": address, "Port": 80,
        "Check": {"CheckID": "web-ttl", "TTL": "1h"},
    });
    let r = agent
        .put("/v1/agent/service/register", &body)
        .await
        .map_err(|e| anyhow!(e))?;
    if !r.ok() {
        bail!("register web on {}: {r:?}", agent.name());
    }
    set_check(agent, "pass").await
}

/// Sets `agent`'s `web-ttl` check to `state` (pass, warn, fail).
async fn set_check(agent: &Agent, state: &str) -> anyhow::Result<()> {
    let r = agent
        .request("PUT", &format!("/v1/agent/check/{state}/web-ttl"), None)
        .await
        .map_err(|e| anyhow!(e))?;
    if !r.ok() {
        bail!("check {state} on {}: {r:?}", agent.name());
    }
    Ok(())
}

/// Polls `name` on `server` every 2 ms until its A records are `want`;
/// how long that took.
async fn until_answer(server: SocketAddr, name: &str, want: IpAddr) -> anyhow::Result<Duration> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let started = Instant::now();
    while started.elapsed() < DEADLINE {
        if ask_a(&socket, server, name).await == [want] {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("{name} on {server} never answered {want}")
}

async fn failover(f: &Federation, trials: usize) -> anyhow::Result<()> {
    let (dc1, dc2) = (f.dc("dc1"), f.dc("dc2"));
    let here = dc1.node("s1");
    let (ip1, ip2) = (here.ip(), dc2.node("s1").ip());
    let dns = dc1.node("s2").addrs().dns;
    let query = json!({
        "Name": "web",
        "Service": {"Service": "web", "OnlyPassing": true, "Failover": {"Datacenters": ["dc2"]}},
    });
    let r = here
        .request("POST", "/v1/query", Some(&query))
        .await
        .map_err(|e| anyhow!(e))?;
    if !r.ok() {
        bail!("create the prepared query: {r:?}");
    }
    until_answer(dns, "web.query.consul", ip1).await?;
    let (mut away, mut back) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        set_check(here, "fail").await?;
        away.push(until_answer(dns, "web.query.consul", ip2).await?);
        set_check(here, "pass").await?;
        back.push(until_answer(dns, "web.query.consul", ip1).await?);
    }
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    println!(
        "failover   dc1's last instance critical -> web.query.consul answers dc2: p50 {} max {} \
         (target <= interval + 1 s; a TTL check has no interval)",
        ms(percentile(&mut away.clone(), 50.0)),
        ms(max(&away)),
    );
    println!(
        "failback   dc1's instance passing again -> web.query.consul answers dc1:  p50 {} max {}",
        ms(percentile(&mut back.clone(), 50.0)),
        ms(max(&back)),
    );
    Ok(())
}

async fn blocking_wake(f: &Federation, trials: usize) -> anyhow::Result<()> {
    let watcher = f.dc("dc1").node("s2");
    let writer = f.dc("dc2").node("s1");
    let put = |value: usize| async move {
        let r = writer
            .request("PUT", "/v1/kv/bench/wake", Some(&json!(value)))
            .await
            .map_err(|e| anyhow!(e))?;
        if r.ok() {
            Ok(())
        } else {
            Err(anyhow!("PUT on dc2: {r:?}"))
        }
    };
    let mut woke = Vec::new();
    for k in 0..trials {
        put(k).await?;
        let r = watcher
            .get("/v1/kv/bench/wake?dc=dc2")
            .await
            .map_err(|e| anyhow!(e))?;
        let index: u64 = r
            .headers
            .get("x-consul-index")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no index: {r:?}"))?;
        let path = format!("/v1/kv/bench/wake?dc=dc2&index={index}&wait=30s");
        let parked = async {
            let r = watcher.get(&path).await;
            (Instant::now(), r)
        };
        let write = async {
            // Let the query reach dc2 and park there: its answer comes
            // only with the write, so this wait cannot shrink the figure.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let sent = Instant::now();
            (sent, put(k + 1000).await)
        };
        let ((answered, r), (sent, wrote)) = tokio::join!(parked, write);
        wrote?;
        let r = r.map_err(|e| anyhow!(e))?;
        if !r.ok() {
            bail!("the parked query: {r:?}");
        }
        woke.push(answered.saturating_duration_since(sent));
    }
    println!(
        "blocking   a dc2 write wakes a dc1 watcher of ?dc=dc2:                  p50 {} max {} (target <= 100 ms)",
        ms(percentile(&mut woke.clone(), 50.0)),
        ms(woke.iter().max().copied().unwrap_or_default()),
    );
    Ok(())
}

/// `GET /v1/catalog/nodes?dc=dc2` on `agent`: its status and how long it took.
async fn call_dc2(agent: &Agent) -> (u16, Duration) {
    let started = Instant::now();
    let status = agent
        .get("/v1/catalog/nodes?dc=dc2")
        .await
        .map_or(0, |r| r.status);
    (status, started.elapsed())
}

async fn silent_datacenter(f: &Federation) -> anyhow::Result<()> {
    let caller = f.dc("dc1").node("s2");
    let (status, took) = call_dc2(caller).await;
    if status != 200 {
        bail!("?dc=dc2 before the silence: {status}");
    }
    println!(
        "silent dc  ?dc=dc2 with dc2 up:                                       {}",
        ms(took)
    );
    for s in f.dc("dc2").servers() {
        s.pause();
    }
    let stopped = Instant::now();
    let mut failing = Vec::new();
    while failing.len() < 5 && stopped.elapsed() < DEADLINE {
        let (status, took) = call_dc2(caller).await;
        if status != 200 {
            failing.push((status, took));
        }
    }
    let worst = failing.iter().map(|(_, t)| *t).max().unwrap_or_default();
    println!(
        "silent dc  ?dc=dc2 with dc2 stopped (SIGSTOP), 5 calls: statuses {:?}, slowest {} \
         (target <= 2 s; Consul: up to 10 s per call)",
        failing.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        ms(worst),
    );
    for s in f.dc("dc2").servers() {
        s.resume();
    }
    let resumed = Instant::now();
    try_wait_until_async("?dc=dc2 after dc2 resumed", DEADLINE, || async {
        match call_dc2(caller).await {
            (200, _) => Ok(()),
            (status, _) => Err(format!("{status}")),
        }
    })
    .await
    .map_err(|e| anyhow!("{e}"))?;
    println!(
        "silent dc  ?dc=dc2 works again after dc2 resumed:                      {} (target <= 10 s)",
        ms(resumed.elapsed()),
    );
    Ok(())
}

/// `web.service.consul A` asked of `server` one at a time for `secs`: the
/// latency of each answer that came.
async fn dns_latencies(server: SocketAddr, secs: u64) -> anyhow::Result<Vec<Duration>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        let asked = Instant::now();
        if !ask_a(&socket, server, "web.service.consul")
            .await
            .is_empty()
        {
            samples.push(asked.elapsed());
        }
    }
    Ok(samples)
}

/// Runs `measure` while 4 tasks keep asking `caller` for dc2's nodes
/// (`?dc=dc2`), as clients of a busy agent would; its result.
async fn with_dc2_callers<T>(caller: &Agent, measure: impl Future<Output = T>) -> T {
    let stop = AtomicBool::new(false);
    let callers = async {
        let one = || async {
            while !stop.load(Ordering::Relaxed) {
                let _ = call_dc2(caller).await;
            }
        };
        tokio::join!(one(), one(), one(), one());
    };
    let measured = async {
        let out = measure.await;
        stop.store(true, Ordering::Relaxed);
        out
    };
    tokio::join!(callers, measured).1
}

/// dc1's DNS with dc2 answering, then silent (stopped), then again, for
/// `rounds` rounds of `secs` seconds each, the same callers of dc2 busy
/// in both; then with dc2 killed.
async fn dns_with_dc2_dead(f: &Federation, secs: u64, rounds: usize) -> anyhow::Result<()> {
    let caller = f.dc("dc1").node("s3");
    let dns = caller.addrs().dns;
    let (mut up, mut silent) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        up.extend(with_dc2_callers(caller, dns_latencies(dns, secs)).await?);
        for s in f.dc("dc2").servers() {
            s.pause();
        }
        silent.extend(with_dc2_callers(caller, dns_latencies(dns, secs)).await?);
        for s in f.dc("dc2").servers() {
            s.resume();
        }
    }
    for s in f.dc("dc2").servers() {
        s.kill();
    }
    let mut dead = with_dc2_callers(caller, dns_latencies(dns, secs * rounds as u64)).await?;
    let p99_up = percentile(&mut up, 99.0);
    let line = |label: &str, samples: &mut Vec<Duration>| {
        let p99 = percentile(samples, 99.0);
        println!(
            "dc1 DNS    web.service.consul, dc2 {label:<8} {:>7} answers, p50 {} p99 {}  (p99 ratio {:.2}; target <= 1.05)",
            samples.len(),
            us(percentile(samples, 50.0)),
            us(p99),
            p99.as_secs_f64() / p99_up.as_secs_f64().max(f64::MIN_POSITIVE),
        );
    };
    line("up:", &mut up);
    line("stopped:", &mut silent);
    line("dead:", &mut dead);
    Ok(())
}

async fn run(s: Settings) -> anyhow::Result<()> {
    let f = Trellis::new(TRELLIS)
        .federation(&["dc1", "dc2"], 3)
        .start()
        .await;
    let (dc1, dc2) = (f.dc("dc1").node("s1"), f.dc("dc2").node("s1"));
    register_web(dc1, &dc1.ip().to_string()).await?;
    register_web(dc2, &dc2.ip().to_string()).await?;
    failover(&f, s.trials).await?;
    blocking_wake(&f, s.trials).await?;
    silent_datacenter(&f).await?;
    dns_with_dc2_dead(&f, s.dns_secs, 3).await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches`: the helpers only.
        let mut v = vec![
            Duration::from_millis(3),
            Duration::from_millis(1),
            Duration::from_millis(2),
        ];
        assert_eq!(percentile(&mut v, 50.0), Duration::from_millis(2));
        assert_eq!(percentile(&mut v, 100.0), Duration::from_millis(3));
        assert_eq!(percentile(&mut [], 99.0), Duration::ZERO);
        return ExitCode::SUCCESS;
    }
    match settings() {
        Ok(s) => match run(s).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("multi_dc: {e:#}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("multi_dc: {e:#}");
            ExitCode::FAILURE
        }
    }
}
