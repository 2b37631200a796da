//! How fast a failing HTTP check takes an instance out of DNS, and what a
//! thousand HTTP checks cost.
//!
//! Runs the real `trellis agent --dev` (the binary cargo built for this
//! bench, or `TRELLIS_BIN`) against an HTTP target inside this process:
//!
//! 1. registers `N` services (default 100), each with an HTTP check at
//!    `INTERVAL_MS` (default 1000) on its own path of the target;
//! 2. waits until DNS answers every one, then flips the target to 503 for
//!    all of them at once and sweeps DNS until every instance is gone;
//! 3. reports, per instance, the time from the flip to absence from DNS and
//!    the time from the target's first 503 for it (the moment its check saw
//!    the failure) to absence: the latter is the cost "beyond the interval";
//! 4. flips back and measures the return the same way;
//! 5. on a fresh agent, registers `CPU_CHECKS` (default 1000) HTTP checks at
//!    1 s and reads the agent's CPU time from `/proc/PID/stat` over
//!    `CPU_SECS` (default 10) seconds.
//!
//! With `DURABLE=1` the agent is a one-server cluster with its Raft log in
//! redb in a temporary directory (fsync on every commit) instead of `--dev`.
//!
//! Run: `cargo bench --bench check_latency` (env vars above tune it). Under
//! `cargo test` it runs as a small smoke test.

#![allow(clippy::print_stdout, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use trellis_testkit::dns::query_message;
use trellis_testkit::{Agent, Trellis};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The target's per-path state: failing or not, and when it first answered
/// 503 since the last flip (nanoseconds since `epoch`, 0 = not yet).
struct Target {
    epoch: Instant,
    failing: AtomicBool,
    first_fail: Vec<AtomicU64>,
    first_ok: Vec<AtomicU64>,
}

async fn health(State(t): State<Arc<Target>>, Path(i): Path<usize>) -> (StatusCode, &'static str) {
    let now = u64::try_from(t.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let failing = t.failing.load(Ordering::SeqCst);
    if let Some(slot) = if failing {
        t.first_fail.get(i)
    } else {
        t.first_ok.get(i)
    } {
        let _ = slot.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    }
    if failing {
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    } else {
        (StatusCode::OK, "up")
    }
}

/// An agent for this bench: `--dev`, or with `DURABLE=1` a one-server
/// cluster with its data in a temporary directory (removed with it).
fn start_agent() -> Agent {
    let bin = Trellis::from_env_or("TRELLIS_BIN", env!("CARGO_BIN_EXE_trellis"));
    let b = if env_num("DURABLE", 0) == 1 {
        bin.server().bootstrap_expect(1)
    } else {
        bin.dev()
    };
    b.log_filter(Some("info,openraft=warn,hickory_server=warn"))
        .start()
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = query_message(name, RecordType::A, None);
    m.metadata.id = id;
    m.to_vec().expect("encode")
}

/// Sends one query per name in `names` and returns which answered (NOERROR
/// with an answer), pipelined on one socket.
async fn sweep(sock: &tokio::net::UdpSocket, dns: SocketAddr, names: &[String]) -> Vec<bool> {
    for (i, n) in names.iter().enumerate() {
        let id = u16::try_from(i).expect("fewer than 65536 names");
        let _ = sock.send_to(&query(id, n), dns).await;
    }
    let mut present = vec![None; names.len()];
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while present.iter().any(Option::is_none) {
        let Ok(Ok((len, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
        else {
            break;
        };
        if let Ok(m) = Message::from_vec(&buf[..len])
            && let Some(slot) = present.get_mut(usize::from(m.metadata.id))
        {
            *slot =
                Some(m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty());
        }
    }
    // A lost packet counts as "still present": the next sweep asks again.
    present.into_iter().map(|p| p.unwrap_or(true)).collect()
}

async fn register(
    client: &reqwest::Client,
    http: SocketAddr,
    i: usize,
    target: SocketAddr,
    interval_ms: u64,
) {
    let body = serde_json::json!({
        "ID": format!("svc{i}"),
        "Name": format!("svc{i}"),
        "Address": format!("10.{}.{}.{}", 50 + i / 65536, (i / 256) % 256, i % 256),
        "Port": 80,
        "Check": {"HTTP": format!("http://{target}/svc/{i}"), "Interval": format!("{interval_ms}ms"), "Timeout": "2s"}
    });
    let r = client
        .put(format!("http://{http}/v1/agent/service/register"))
        .json(&body)
        .send()
        .await
        .expect("register");
    assert!(
        r.status().is_success(),
        "register svc{i}: {}",
        r.text().await.unwrap_or_default()
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(what: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{what:<44} n={:<5} p50={:>8.1} ms  p99={:>8.1} ms  max={:>8.1} ms",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

/// Waits until every name's presence in DNS equals `want`; returns, per
/// name, the time (since `epoch`) of the first sweep that saw it so.
async fn wait_all(
    dns: SocketAddr,
    names: &[String],
    want: bool,
    epoch: Instant,
    limit: Duration,
) -> Vec<f64> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut seen: Vec<Option<f64>> = vec![None; names.len()];
    let started = Instant::now();
    while seen.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < limit,
            "DNS never settled: {} left",
            seen.iter().filter(|s| s.is_none()).count()
        );
        let present = sweep(&sock, dns, names).await;
        let now = epoch.elapsed().as_secs_f64() * 1000.0;
        for (s, p) in seen.iter_mut().zip(present) {
            if s.is_none() && p == want {
                *s = Some(now);
            }
        }
    }
    seen.into_iter().map(|s| s.unwrap_or(f64::NAN)).collect()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start after ") ".
    let rest = &stat[stat.rfind(") ").expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (CI) does
    // not, and gets a smoke run that proves the bench works in seconds.
    let full = std::env::args().any(|a| a == "--bench");
    let pick = |name: &str, bench: u64, smoke: u64| env_num(name, if full { bench } else { smoke });
    let n = pick("N", 100, 5) as usize;
    let interval_ms = pick("INTERVAL_MS", 1000, 300);
    let cpu_checks = pick("CPU_CHECKS", 1000, 20) as usize;
    let cpu_secs = pick("CPU_SECS", 10, 1);
    let slots = n.max(cpu_checks);

    let target = Arc::new(Target {
        epoch: Instant::now(),
        failing: AtomicBool::new(false),
        first_fail: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        first_ok: (0..slots).map(|_| AtomicU64::new(0)).collect(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind target");
    let target_addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/svc/{i}", get(health))
        .with_state(target.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let mode = if env_num("DURABLE", 0) == 1 {
        "durable (redb, fsync per commit)"
    } else {
        "--dev (in memory)"
    };
    println!(
        "check_latency: {mode}; N={n} interval={interval_ms}ms; CPU: {cpu_checks} HTTP checks at 1s over {cpu_secs}s"
    );

    // --- Latency: failing checks leave DNS, recovered ones return.
    {
        let agent = start_agent();
        for i in 0..n {
            register(&client, agent.addrs().http, i, target_addr, interval_ms).await;
        }
        let names: Vec<String> = (0..n).map(|i| format!("svc{i}.service.consul.")).collect();
        let epoch = target.epoch;
        wait_all(
            agent.addrs().dns,
            &names,
            true,
            epoch,
            Duration::from_secs(30),
        )
        .await;

        for (phase, failing, want_present) in [("fail", true, false), ("recover", false, true)] {
            for s in target.first_fail.iter().chain(&target.first_ok) {
                s.store(0, Ordering::SeqCst);
            }
            let flip_ms = epoch.elapsed().as_secs_f64() * 1000.0;
            target.failing.store(failing, Ordering::SeqCst);
            let seen = wait_all(
                agent.addrs().dns,
                &names,
                want_present,
                epoch,
                Duration::from_secs(30),
            )
            .await;
            let firsts = if failing {
                &target.first_fail
            } else {
                &target.first_ok
            };
            let total: Vec<f64> = seen.iter().map(|t| t - flip_ms).collect();
            let beyond: Vec<f64> = seen
                .iter()
                .zip(firsts.iter())
                .filter_map(|(t, f)| {
                    let f = f.load(Ordering::SeqCst);
                    (f != 0).then(|| t - f as f64 / 1e6)
                })
                .collect();
            report(
                &format!("{phase}: flip -> DNS (includes the interval)"),
                total,
            );
            report(&format!("{phase}: target's first answer -> DNS"), beyond);
        }
    }

    // --- CPU: many checks on one agent.
    {
        target.failing.store(false, Ordering::SeqCst);
        let agent = start_agent();
        let pid = agent.pid();
        let started = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(16));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..cpu_checks {
            let (client, sem) = (client.clone(), sem.clone());
            let http = agent.addrs().http;
            set.spawn(async move {
                let _p = sem.acquire().await;
                register(&client, http, i, target_addr, 1000).await;
            });
        }
        while set.join_next().await.is_some() {}
        println!(
            "registered {cpu_checks} services with HTTP checks in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // One full interval for the staggered first runs to start.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let hz = 100.0; // USER_HZ on Linux
        let t0 = cpu_ticks(pid);
        let w0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(cpu_secs)).await;
        let ticks = cpu_ticks(pid) - t0;
        let wall = w0.elapsed().as_secs_f64();
        println!(
            "cpu: {cpu_checks} HTTP checks at 1s: {:.1}% of one core ({} ticks over {:.1} s); agent RSS {} KiB",
            ticks as f64 / hz / wall * 100.0,
            ticks,
            wall,
            rss_kb(pid)
        );
    }
}
