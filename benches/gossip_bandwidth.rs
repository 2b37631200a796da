//! Gossip bandwidth at steady state, per member, for pools of 6, 50 and
//! 1,000 members (`MEMBERS=6,50,1000`, the default), in one process on
//! loopback (member k on 127.25.101.1 on, 250 per /24), with and without
//! encryption; and, for comparison, what memberlist's LAN defaults send.
//!
//! Each run starts the members, joins them to the first, waits until every
//! member sees the whole pool alive, lets the join updates die out
//! (`SETTLE_SECS`, default 3, and 10 for pools over 100), then counts the
//! UDP payload bytes each member sends and receives over `SECS` (default
//! 10) seconds, and the process's CPU time over the same window: per
//! member-second it is the cost of one member, and when the process uses
//! close to both cores the members are starved (their timers fire late,
//! which local health answers by probing less) and the figures are not a
//! real pool's. The line says so when the process used over 1.5 cores.
//!
//! The memberlist figure is a model, not a measurement (there is no Go
//! toolchain here): memberlist's LAN defaults probe one member per second
//! (a ping and its ack) and exchange full state over TCP every 30 s
//! (push/pull, stretched for pools over 32 members). Its periodic gossip (3
//! members every 200 ms) sends nothing at steady state: memberlist gossips
//! only when it has broadcasts queued. Message sizes come from the msgpack
//! encodings of memberlist's `ping`, `ackResp` and `pushNodeState` structs
//! (go-msgpack writes structs as maps, field names included) with 6-letter
//! node names, plus the 5-byte CRC header of protocol 5 and, when encrypted,
//! 29 bytes per packet. "Consul" adds what Consul puts on top of
//! memberlist: a network coordinate (about 130 bytes) in every ack, and
//! Serf tags (about 170 bytes) per member in every push/pull.
//!
//! memberlist's steady state is one probe a second; ours is five (the
//! price of detection within a second, see `src/gossip/profile.rs`), so
//! ours is larger per member in small pools even with 35-byte packets, and
//! comparable to Consul's real footprint from 50 members on.
//!
//! Two more parts run on request:
//!
//! - `DETECT_TRIALS=n` kills a member of a 6-member pool n times (stops it
//!   without leaving) and prints how long until every other member has
//!   declared it failed; with `DETECT_LARGE=N` (say 1000) also n kills in
//!   one pool of N members, one after the other (the next once every
//!   other member has seen the last one failed), each timed until all
//!   N − 1 others declared it failed, with the median over members too.
//! - `SOAK_SECS=s` runs 6 encrypted members for s seconds with
//!   `LOSS_PER_MILLE` (default 50) of their datagrams dropped on send and
//!   `HOG_THREADS` (default 4) threads spinning on the CPU, and counts every
//!   suspicion, failure and renewed identity the members see: a live member
//!   declared failed shows up as a failure or a renewal.
//!
//! - `WAN=1` measures WAN pools instead (`Profile::wan`, servers named
//!   `nodeNN.dcK`): 2 datacenters of 3 servers and 5 of 5, with and
//!   without encryption; with `DETECT_TRIALS` the kills, and with
//!   `SOAK_SECS` the soak, are in a WAN pool of 6.
//!
//! Run: `cargo bench --bench gossip_bandwidth`. Under `cargo test` it runs a
//! two-second smoke test of 6 members.

#![allow(clippy::print_stdout, missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use trellis::gossip::{
    Gossip, GossipConfig, GossipStats, Key, Member, MemberStatus, Profile, Role,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Which pool the members form: the LAN pool of one datacenter, or the WAN
/// pool of `dcs` datacenters' servers (member k in datacenter k mod dcs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Lan,
    Wan { dcs: u8 },
}

/// `WAN=1`: every part runs on WAN pools.
fn kind_from_env(dcs: u8) -> Kind {
    if env_u64("WAN", 0) == 1 {
        Kind::Wan { dcs }
    } else {
        Kind::Lan
    }
}

fn profile_of(kind: Kind) -> Profile {
    match kind {
        Kind::Lan => Profile::lan(),
        Kind::Wan { .. } => Profile::wan(),
    }
}

/// Member `host`'s address (1-based): 127.25.101.1 on, 250 to a /24, in
/// this bench's own part of loopback.
fn member_ip(host: u16) -> Ipv4Addr {
    let k = host.saturating_sub(1);
    // k / 250 ≤ 262 for any u16, but pools stay far below 250 · 150.
    Ipv4Addr::new(127, 25, (101 + k / 250).min(255) as u8, (1 + k % 250) as u8)
}

/// The process's CPU time so far, user and system, in seconds.
fn process_cpu() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = text.rfind(')').map_or("", |i| &text[i + 1..]);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (field(11) + field(12)) as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

async fn start(host: u16, key: Option<Key>, profile: Profile, kind: Kind) -> Gossip {
    let ip = member_ip(host);
    let socket = UdpSocket::bind(SocketAddr::from((ip, 0)))
        .await
        .expect("bind loopback");
    let (name, role, dc) = match kind {
        Kind::Lan => (format!("node{host:04}"), Role::Client, "dc1".to_owned()),
        Kind::Wan { dcs } => {
            let dc = format!("dc{}", (host - 1) % u16::from(dcs) + 1);
            (format!("node{host:04}.{dc}"), Role::Server, dc)
        }
    };
    Gossip::start(GossipConfig {
        socket,
        name,
        node_id: uuid::Uuid::new_v4(),
        role,
        dc,
        rpc_addr: (role == Role::Server).then(|| SocketAddr::from((ip, 8300))),
        generation_floor: 0,
        key,
        profile,
    })
    .expect("start gossip")
}

async fn wait_for(node: &Gossip, deadline: Duration, pred: impl Fn(&[Member]) -> bool) -> bool {
    let mut rx = node.subscribe();
    let waiting = async {
        loop {
            let holds = pred(rx.borrow_and_update().as_slice());
            if holds {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::time::timeout(deadline, waiting).await.is_ok()
}

async fn pool(n: u16, key: Option<Key>, profile: Profile, kind: Kind) -> Vec<Gossip> {
    let started = Instant::now();
    let mut nodes = Vec::new();
    for i in 1..=n {
        nodes.push(start(i, key.clone(), profile.clone(), kind).await);
    }
    let seed = nodes[0].local_addr();
    for node in &nodes[1..] {
        // As an agent's retry_join does: a seed busy with hundreds of
        // joins may answer one late.
        let mut tries = 0;
        while let Err(e) = node.join(seed).await {
            tries += 1;
            assert!(tries < 10, "join: {e}");
        }
    }
    // A large pool converges through gossip after the joins: give it time
    // in proportion.
    let deadline = Duration::from_secs(60 + u64::from(n) / 5);
    for node in &nodes {
        let converged = wait_for(node, deadline, |ms| {
            ms.len() == usize::from(n) && ms.iter().all(|m| m.status == MemberStatus::Alive)
        })
        .await;
        assert!(converged, "pool of {n} did not converge");
    }
    if n > 100 {
        println!(
            "  pool of {n} formed and converged in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    nodes
}

fn traffic(s: &GossipStats) -> (u64, u64) {
    (
        s.bytes_sent + s.bytes_received,
        s.packets_sent + s.packets_received,
    )
}

async fn measure(n: u16, kind: Kind, encrypted: bool, settle: Duration, window: Duration) -> f64 {
    let key = encrypted.then(Key::generate);
    let nodes = pool(n, key, profile_of(kind), kind).await;
    let settle = if n > 100 {
        settle.max(Duration::from_secs(10))
    } else {
        settle
    };
    tokio::time::sleep(settle).await;
    let before: Vec<_> = nodes.iter().map(|g| traffic(&g.stats())).collect();
    let cpu_before = process_cpu();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    let cpu = (process_cpu() - cpu_before) / secs;
    let after: Vec<_> = nodes.iter().map(|g| traffic(&g.stats())).collect();
    let rates: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.0 - b.0) as f64 / secs)
        .collect();
    let packets: f64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.1 - b.1) as f64 / secs)
        .sum::<f64>()
        / f64::from(n);
    let mean = rates.iter().sum::<f64>() / f64::from(n);
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    let failed: usize = nodes
        .iter()
        .map(|g| {
            g.members()
                .iter()
                .filter(|m| m.status != MemberStatus::Alive)
                .count()
        })
        .sum();
    println!(
        "trellis  {kind:?} members={n:>4} encrypted={:<3}  {mean:>7.0} B/s per member sent+received \
         (min {min:.0}, max {max:.0}), {packets:.1} packets/s, {:.0} B/packet, \
         non-alive entries seen: {failed}; process CPU {cpu:.2} cores, {:.0} µs per member-second{}",
        if encrypted { "yes" } else { "no" },
        mean / packets,
        cpu / f64::from(n) * 1e6,
        if cpu > 1.5 { " (CPU-STARVED)" } else { "" },
    );
    for node in nodes {
        node.shutdown().await;
    }
    mean
}

/// memberlist's steady-state bytes per member per second (sent plus
/// received), from the model in the module doc.
fn memberlist_model(n: u32, encrypted: bool, consul: bool) -> f64 {
    const CRC: f64 = 5.0;
    const PING: f64 = 74.0 + CRC;
    const ACK: f64 = 23.0 + CRC;
    const COORDINATE: f64 = 130.0;
    const NODE_STATE: f64 = 74.0;
    const SERF_TAGS: f64 = 170.0;
    const PUSH_PULL_HEADER: f64 = 30.0;
    const SEAL: f64 = 29.0;
    let seal = if encrypted { SEAL } else { 0.0 };
    let ack = ACK + if consul { COORDINATE } else { 0.0 };
    // Each member sends one ping and answers about one: per second it sends
    // a ping and an ack and receives the same.
    let probing = 2.0 * (PING + ack + 2.0 * seal);
    let per_node = NODE_STATE + if consul { SERF_TAGS } else { 0.0 };
    let state = PUSH_PULL_HEADER + f64::from(n) * per_node + seal;
    let scale = if n <= 32 {
        1.0
    } else {
        (f64::from(n).log2() - 32f64.log2()).ceil() + 1.0
    };
    // A member starts one exchange per interval and is chosen by another
    // about once: four full states per interval, sent plus received.
    let push_pull = 4.0 * state / (30.0 * scale);
    probing + push_pull
}

async fn detection_trials(trials: u64) {
    let mut times = Vec::new();
    for trial in 0..trials {
        let kind = kind_from_env(2);
        let mut nodes = pool(6, None, profile_of(kind), kind).await;
        let victim = nodes.remove(trial as usize % 5 + 1);
        let gone = victim.local_addr();
        let killed = Instant::now();
        victim.shutdown().await;
        let mut slowest = Duration::ZERO;
        for node in &nodes {
            let seen = wait_for(node, Duration::from_secs(30), |ms| {
                ms.iter()
                    .any(|m| m.addr == gone && m.status == MemberStatus::Failed)
            })
            .await;
            assert!(seen, "failure never seen");
            slowest = slowest.max(killed.elapsed());
        }
        times.push(slowest);
        for node in nodes {
            node.shutdown().await;
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "detection (6 members, all others see Failed): median {median:?}, max {:?}, all {times:?}",
        times[times.len() - 1]
    );
}

/// `trials` kills in one pool of `n` members, one after the other: for
/// each, when every other member has declared the victim failed (and the
/// median over those members), all members watched at once.
async fn detection_large(n: u16, trials: u64) {
    let kind = kind_from_env(2);
    let mut nodes = pool(n, None, profile_of(kind), kind).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (mut all, mut medians) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        // Spread the victims over the pool, never the seed.
        let at = 1 + (trial as usize * 7919) % (nodes.len() - 1);
        let victim = nodes.remove(at);
        let gone = victim.local_addr();
        let cpu_before = process_cpu();
        let killed = Instant::now();
        victim.shutdown().await;
        let seen = futures::future::join_all(nodes.iter().map(|node| async move {
            let seen = wait_for(node, Duration::from_secs(60), |ms| {
                ms.iter()
                    .any(|m| m.addr == gone && m.status == MemberStatus::Failed)
            })
            .await;
            assert!(seen, "failure never seen");
            killed.elapsed()
        }))
        .await;
        let cpu = (process_cpu() - cpu_before) / killed.elapsed().as_secs_f64();
        let mut seen = seen;
        seen.sort();
        let (median, last) = (seen[seen.len() / 2], seen[seen.len() - 1]);
        println!(
            "  kill {trial}: every other member saw it failed after {last:?} (median member \
             {median:?}); process CPU {cpu:.2} cores"
        );
        all.push(last);
        medians.push(median);
    }
    all.sort();
    medians.sort();
    println!(
        "detection ({n} members, all others see Failed): median {:?}, max {:?}; median member's \
         median {:?}; all {all:?}",
        all[all.len() / 2],
        all[all.len() - 1],
        medians[medians.len() / 2],
    );
    for node in nodes {
        node.shutdown().await;
    }
}

/// What one member saw of the others during a soak.
#[derive(Debug, Default)]
struct Seen {
    suspicions: u64,
    failures: u64,
    renewals: u64,
}

/// Watches `node` until `stop`, counting every member that turns suspect,
/// turns failed, or comes back with a new generation (which a live member
/// only does after being declared down).
async fn watch_member(node: &Gossip, stop: tokio::sync::watch::Receiver<bool>) -> Seen {
    let mut rx = node.subscribe();
    let mut stop = stop;
    let mut seen = Seen::default();
    let mut last: std::collections::HashMap<SocketAddr, (MemberStatus, u64)> = rx
        .borrow_and_update()
        .iter()
        .map(|m| (m.addr, (m.status, m.generation)))
        .collect();
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
        let members = rx.borrow_and_update().clone();
        for m in members.iter() {
            let before = last.insert(m.addr, (m.status, m.generation));
            let Some((status, generation)) = before else {
                continue;
            };
            if m.generation > generation {
                seen.renewals += 1;
            }
            if m.status != status {
                match m.status {
                    MemberStatus::Suspect => seen.suspicions += 1,
                    MemberStatus::Failed => seen.failures += 1,
                    _ => {}
                }
            }
        }
    }
    seen
}

/// Six members under simulated loss and a CPU hog; counts false alarms.
async fn soak(secs: u64, loss_per_mille: u16, hogs: u64) {
    let stop_hogs = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog_threads: Vec<_> = (0..hogs)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop_hogs);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let kind = kind_from_env(2);
    let profile = Profile {
        simulated_loss_per_mille: loss_per_mille,
        ..profile_of(kind)
    };
    let nodes = pool(6, Some(Key::generate()), profile, kind).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let watching =
        futures::future::join_all(nodes.iter().map(|n| watch_member(n, stop_rx.clone())));
    let timer = async {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let _ = stop_tx.send(true);
    };
    let (seen, ()) = tokio::join!(watching, timer);
    stop_hogs.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in hog_threads {
        let _ = t.join();
    }
    let total = |f: fn(&Seen) -> u64| seen.iter().map(f).sum::<u64>();
    let dropped: u64 = nodes.iter().map(|n| n.stats().dropped_bad_key).sum();
    println!(
        "soak: 6 members, {:.0} s, {:.1}% simulated loss, {hogs} CPU hog threads: \
         suspicions seen {}, false failures {}, renewed identities {}, bad packets {dropped}",
        started.elapsed().as_secs_f64(),
        f64::from(loss_per_mille) / 10.0,
        total(|s| s.suspicions),
        total(|s| s.failures),
        total(|s| s.renewals),
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let window = Duration::from_secs(env_u64("SECS", if bench { 10 } else { 2 }));
    let settle = Duration::from_secs(env_u64("SETTLE_SECS", if bench { 3 } else { 1 }));
    let wan = kind_from_env(1) != Kind::Lan;
    // (members, datacenters): the WAN pools of 2 × 3 and 5 × 5 servers.
    let lan: Vec<(u16, u8)> = std::env::var("MEMBERS")
        .unwrap_or_else(|_| "6,50,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|&n| n >= 2)
        .map(|n| (n, 1))
        .collect();
    let sizes: &[(u16, u8)] = match (wan, bench) {
        (false, true) => &lan,
        (false, false) => &[(6, 1)],
        (true, true) => &[(6, 2), (25, 5)],
        (true, false) => &[(6, 2)],
    };
    for &(n, dcs) in sizes {
        for encrypted in [false, true] {
            measure(n, kind_from_env(dcs), encrypted, settle, window).await;
            if !bench {
                break;
            }
        }
    }
    for &(n, _) in sizes.iter().filter(|_| !wan) {
        for encrypted in [false, true] {
            println!(
                "memberlist members={n:>4} encrypted={:<3}  {:>7.0} B/s per member (model); with Consul's additions {:.0} B/s",
                if encrypted { "yes" } else { "no" },
                memberlist_model(u32::from(n), encrypted, false),
                memberlist_model(u32::from(n), encrypted, true),
            );
        }
    }
    let soak_secs = env_u64("SOAK_SECS", 0);
    if soak_secs > 0 {
        let loss = u16::try_from(env_u64("LOSS_PER_MILLE", 50)).unwrap_or(50);
        soak(soak_secs, loss, env_u64("HOG_THREADS", 4)).await;
    }
    let trials = env_u64("DETECT_TRIALS", 0);
    if trials > 0 {
        detection_trials(trials).await;
        let large = u16::try_from(env_u64("DETECT_LARGE", 0)).unwrap_or(0);
        if large > 6 {
            detection_large(large, trials).await;
        }
    }
}
