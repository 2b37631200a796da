//! How fast a client machine that dies leaves every server's DNS answers,
//! and whether a loaded machine makes the pool declare live agents failed.
//!
//! Runs the release `trellis` binary (the one cargo built for this bench, or
//! `TRELLIS_BIN`): three servers on 127.0.4.1–3 (`--bootstrap-expect 3`)
//! and three client agents on 127.0.4.11–13, every port picked free for the
//! run and kept across restarts (a restarted agent is the same machine at the
//! same address), data and logs in a temp dir. Each client registers a `db`
//! service through its own agent API. Then one mode:
//!
//! - default: `--trials N` (10) times, SIGKILL a client (rotating), poll
//!   `db.service.consul A` on every server's DNS over UDP every 5 ms, and
//!   record when the client's address is first absent on each; the trial's
//!   figure is the last server's. Then restart the client with its data dir
//!   and wait until it is answered by every server again.
//! - `--stop`: the same with SIGSTOP (time to absent), then SIGCONT (time
//!   until present again on every server).
//! - `--soak [SECONDS]` (300): `--hog N` (2) threads spin on the CPU for the
//!   whole run while every server's `/v1/agent/members` is read every 200 ms;
//!   every member reported failed (Status 4) is a false positive, since all
//!   six agents stay alive throughout.
//!
//! Run: `cargo bench --bench kill_to_absent -- --trials 10` (or `-- --stop`,
//! `-- --soak 60 --hog 2`). Without `--bench` (as `cargo test --benches`
//! runs it) it only checks its own helpers.

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

// Shared with cluster_vs_etcd, which uses the helpers this program does not.
#[allow(dead_code)]
#[path = "common/procs.rs"]
mod procs;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use trellis_testkit::dns::{a_records, query_message};
use trellis_testkit::net::{free_dns_port, free_tcp_port, free_udp_port};
use trellis_testkit::{Agent, AgentBuilder, Trellis, try_wait_until_async};

/// The binary under test.
const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
/// Servers and clients, clear of the tests' 127.0.0.x and of cluster_vs_etcd's
/// 127.0.3.x.
const SERVER_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 4, 1),
    Ipv4Addr::new(127, 0, 4, 2),
    Ipv4Addr::new(127, 0, 4, 3),
];
const CLIENT_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 4, 11),
    Ipv4Addr::new(127, 0, 4, 12),
    Ipv4Addr::new(127, 0, 4, 13),
];
/// The targets for kill-to-absent.
const TARGET_MEDIAN: Duration = Duration::from_millis(1000);
const TARGET_MAX: Duration = Duration::from_millis(1500);
/// How often each server's DNS is asked during a trial.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// How long one DNS answer may take before the question is asked again.
const DNS_TIMEOUT: Duration = Duration::from_millis(200);
/// How often the soak reads the members.
const SOAK_POLL_EVERY: Duration = Duration::from_millis(200);
/// A condition that is not met in this time is a failure, not a slow trial.
const DEADLINE: Duration = Duration::from_secs(30);
/// The service every client runs; the name asked for.
const SERVICE: &str = "db";
const QUESTION: &str = "db.service.consul.";

fn main() -> ExitCode {
    procs::bench_main(
        "kill_to_absent",
        self_check,
        Settings::parse,
        |s| async move { run(&s).await },
    )
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// SIGKILL, restart.
    Kill,
    /// SIGSTOP, SIGCONT.
    Stop,
    /// No failures: count false ones under CPU load.
    Soak { secs: u64, hogs: usize },
}

#[derive(Debug, PartialEq)]
struct Settings {
    mode: Mode,
    trials: usize,
}

impl Settings {
    /// Parses the arguments after the program name (`--bench` included, as
    /// cargo passes it).
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut trials = 10;
        let mut stop = false;
        let mut soak = None;
        let mut hogs = 2;
        let mut it = args.iter().peekable();
        let number = |flag: &str, v: Option<&String>| -> anyhow::Result<u64> {
            let v = v.ok_or_else(|| anyhow!("{flag} needs a number"))?;
            v.parse()
                .map_err(|_| anyhow!("{flag} {v:?}: not a whole number"))
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                "--bench" => {}
                "--trials" => trials = number("--trials", it.next())?.max(1) as usize,
                "--stop" => stop = true,
                "--hog" => hogs = number("--hog", it.next())? as usize,
                "--soak" => {
                    // The length is optional: `--soak` alone soaks 300 s.
                    let secs = match it.peek() {
                        Some(v) if !v.starts_with("--") => number("--soak", it.next())?,
                        _ => 300,
                    };
                    soak = Some(secs.max(1));
                }
                other => bail!(
                    "unknown argument {other:?}; use --trials N, --stop, --soak [SECONDS], --hog N"
                ),
            }
        }
        let mode = match (soak, stop) {
            (Some(_), true) => bail!("--soak and --stop are separate runs"),
            (Some(secs), false) => Mode::Soak { secs, hogs },
            (None, true) => Mode::Stop,
            (None, false) => Mode::Kill,
        };
        Ok(Self { mode, trials })
    }
}

async fn run(s: &Settings) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("trellis-kill-to-absent-")
        .tempdir()
        .context("creating a temp dir")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let bin = std::env::var("TRELLIS_BIN").unwrap_or_else(|_| TRELLIS.to_string());
    println!(
        "kill_to_absent: 3 servers on 127.0.4.1-3, 3 clients on 127.0.4.11-13, each client \
         registers `{SERVICE}`; binary {bin}"
    );
    let mut agents = Agents::start(&bin, dir.path()).await?;
    let formed = agents.form(&http).await;
    if let Err(e) = formed {
        return Err(agents.with_logs(e));
    }
    let result = match s.mode {
        Mode::Kill | Mode::Stop => trials(&mut agents, &http, s).await,
        Mode::Soak { secs, hogs } => soak(&mut agents, &http, secs, hogs).await,
    };
    result.map_err(|e| agents.with_logs(e))
}

// ---- the agents ----

/// The six agents, killed when dropped.
struct Agents {
    servers: Vec<Agent>,
    clients: Vec<Agent>,
}

impl Agents {
    /// Picks every address, starts all six agents and waits until each
    /// prints its `listening` line.
    async fn start(bin: &str, dir: &Path) -> anyhow::Result<Self> {
        let trellis = Trellis::new(bin);
        let serf: Vec<SocketAddr> = SERVER_IPS
            .iter()
            .map(|ip| Ok(SocketAddr::from((*ip, free_udp_port(*ip)?))))
            .collect::<anyhow::Result<_>>()?;
        let mut servers = Vec::new();
        for (i, ip) in SERVER_IPS.iter().enumerate() {
            let mut b = trellis
                .server()
                .bootstrap_expect(SERVER_IPS.len())
                .server_port(free_tcp_port(*ip)?)
                .serf_lan_port(serf[i].port());
            for (j, s) in serf.iter().enumerate() {
                if j != i {
                    b = b.retry_join(*s);
                }
            }
            servers.push(machine(b, &format!("s{}", i + 1), *ip, dir)?);
        }
        let mut clients = Vec::new();
        for (i, ip) in CLIENT_IPS.iter().enumerate() {
            let mut b = trellis.client().serf_lan_port(free_udp_port(*ip)?);
            // Every server, a different one first for each client.
            for k in 0..serf.len() {
                b = b.retry_join(serf[(i + k) % serf.len()]);
            }
            clients.push(machine(b, &format!("c{}", i + 1), *ip, dir)?);
        }
        let mut agents = Self {
            servers: Vec::new(),
            clients: Vec::new(),
        };
        for b in servers {
            agents.servers.push(b.start_async().await?);
        }
        for b in clients {
            agents.clients.push(b.start_async().await?);
        }
        Ok(agents)
    }

    fn all(&self) -> impl Iterator<Item = &Agent> {
        self.servers.iter().chain(self.clients.iter())
    }

    fn server_dns(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addrs().dns).collect()
    }

    fn client_ips(&self) -> Vec<IpAddr> {
        self.clients.iter().map(Agent::ip).collect()
    }

    /// Waits for one leader known to every server, registers `db` on every
    /// client, and waits until every server's DNS answers all three.
    async fn form(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        try_wait_until_async("a leader known to all servers", DEADLINE, || async {
            let mut leaders = Vec::new();
            for s in &self.servers {
                leaders.push(leader_of(http, s.addrs().http).await.unwrap_or_default());
            }
            if !leaders[0].is_empty() && leaders.iter().all(|l| *l == leaders[0]) {
                Ok(())
            } else {
                Err(format!("leaders {leaders:?}"))
            }
        })
        .await?;
        for c in 0..self.clients.len() {
            self.register(http, c).await?;
        }
        let mut prober = Prober::new(&self.server_dns()).await?;
        for ip in self.client_ips() {
            prober.wait(ip, true, Instant::now()).await?;
        }
        println!(
            "formed: leader elected, `{SERVICE}` answered for every client by every server after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Registers `db` through client `c`'s agent API, repeating while the
    /// client knows no server yet (a fresh or restarted client).
    async fn register(&self, http: &reqwest::Client, c: usize) -> anyhow::Result<()> {
        let client = &self.clients[c];
        let url = client.url("/v1/agent/service/register");
        let body = json!({"Name": SERVICE, "ID": SERVICE, "Port": 5432});
        let what = format!("registering {SERVICE} on {}", client.name());
        try_wait_until_async(&what, DEADLINE, || async {
            match http.put(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!(
                    "{} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        Ok(())
    }

    /// Fails if any agent has exited.
    fn check_running(&self) -> anyhow::Result<()> {
        for a in self.all() {
            a.check_running()?;
        }
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.all().map(Agent::pid).collect()
    }

    /// `e` with the end of every agent's log.
    fn with_logs(&self, e: anyhow::Error) -> anyhow::Error {
        let mut text = String::new();
        for a in self.all() {
            let path = a.log_handle().path().map(Path::display);
            text.push_str(&format!(
                "\n==== {} ({}) ====\n{}",
                a.name(),
                path.map(|p| p.to_string()).unwrap_or_default(),
                a.log_handle().tail(30)
            ));
        }
        e.context(format!("agents' logs:{text}"))
    }
}

/// `b` as machine `node` on `ip`: its data dir and log in `dir`, its HTTP
/// and DNS ports fixed (a restarted agent is the same machine at the same
/// address).
fn machine(b: AgentBuilder, node: &str, ip: Ipv4Addr, dir: &Path) -> anyhow::Result<AgentBuilder> {
    Ok(b.node(node)
        .data_dir(dir.join(node))
        .ip(ip.into())
        .http_port(free_tcp_port(ip)?)
        // DNS serves UDP and TCP on one port: take one free for both.
        .dns_port(free_dns_port(ip)?)
        .log_file(dir.join(format!("{node}.log"))))
}

/// `GET /v1/status/leader`: the leader's address, `""` when none.
async fn leader_of(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<String> {
    let text = http
        .get(format!("http://{addr}/v1/status/leader"))
        .send()
        .await?
        .text()
        .await?;
    serde_json::from_str(&text).with_context(|| format!("leader {text:?}"))
}

// ---- DNS ----

/// Asks each server's DNS whether an address is among the answers.
struct Prober {
    /// One socket per server, connected to its DNS.
    socks: Vec<UdpSocket>,
    /// Question IDs, so a late answer to an earlier question is not taken
    /// for the answer to this one.
    next_id: u16,
}

impl Prober {
    async fn new(servers: &[SocketAddr]) -> anyhow::Result<Self> {
        let mut socks = Vec::new();
        for s in servers {
            let sock = UdpSocket::bind((s.ip(), 0)).await?;
            sock.connect(s).await?;
            socks.push(sock);
        }
        Ok(Self { socks, next_id: 1 })
    }

    /// Whether server `i` answers `db` with `ip` among the addresses;
    /// `None` when it gave no usable answer in time.
    async fn has(&mut self, i: usize, ip: IpAddr) -> Option<bool> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = question(id).ok()?;
        let sock = &self.socks[i];
        sock.send(&bytes).await.ok()?;
        let mut buf = [0u8; 4096];
        let end = tokio::time::Instant::now() + DNS_TIMEOUT;
        loop {
            let n = tokio::time::timeout_at(end, sock.recv(&mut buf))
                .await
                .ok()?
                .ok()?;
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if m.metadata.id != id {
                continue;
            }
            return match m.metadata.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => Some(a_records(&m).contains(&ip)),
                _ => None,
            };
        }
    }

    /// Polls every server until each shows `ip` as `present` (or not);
    /// returns, per server, the time from `since` to the first poll that
    /// did.
    async fn wait(
        &mut self,
        ip: IpAddr,
        present: bool,
        since: Instant,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut done: Vec<Option<Duration>> = vec![None; self.socks.len()];
        loop {
            for (i, slot) in done.iter_mut().enumerate() {
                if slot.is_none() && self.has(i, ip).await == Some(present) {
                    *slot = Some(since.elapsed());
                }
            }
            if done.iter().all(Option::is_some) {
                return Ok(done.into_iter().flatten().collect());
            }
            if since.elapsed() > DEADLINE {
                bail!(
                    "{ip} still {} on servers {:?} after {DEADLINE:?}",
                    if present { "absent" } else { "present" },
                    done.iter()
                        .enumerate()
                        .filter(|(_, d)| d.is_none())
                        .map(|(i, _)| format!("s{}", i + 1))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// The question for `db.service.consul A`, with ID `id`.
fn question(id: u16) -> anyhow::Result<Vec<u8>> {
    let mut m = query_message(QUESTION, RecordType::A, None);
    m.metadata.id = id;
    Ok(m.to_vec()?)
}

// ---- kill and stop trials ----

/// One trial: per-server times to absent, and to present again.
struct Trial {
    client: String,
    absent: Vec<Duration>,
    back: Vec<Duration>,
}

impl Trial {
    /// When the last server stopped answering the address.
    fn absent_all(&self) -> Duration {
        self.absent.iter().copied().max().unwrap_or_default()
    }

    /// When the last server answered it again.
    fn back_all(&self) -> Duration {
        self.back.iter().copied().max().unwrap_or_default()
    }
}

async fn trials(agents: &mut Agents, http: &reqwest::Client, s: &Settings) -> anyhow::Result<()> {
    let stop = s.mode == Mode::Stop;
    let (fail, recover) = if stop {
        (
            "SIGSTOP",
            "SIGCONT; back = from SIGCONT until answered again",
        )
    } else {
        (
            "SIGKILL",
            "restart with its data dir; back = from the restart until answered again",
        )
    };
    println!(
        "{} trials: {fail} a client (rotating), then poll `{QUESTION}` A on every server's DNS \
         over UDP every {} ms until its address is absent from all three; then {recover}\n",
        s.trials,
        POLL_EVERY.as_millis()
    );
    println!(
        "{:>5}  {:<6} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "trial", "client", "s1 ms", "s2 ms", "s3 ms", "absent ms", "back ms"
    );
    let mut prober = Prober::new(&agents.server_dns()).await?;
    let ips = agents.client_ips();
    let mut done = Vec::new();
    for t in 0..s.trials {
        let c = t % agents.clients.len();
        let ip = ips[c];
        // Every client answered everywhere before the failure.
        for &other in &ips {
            prober.wait(other, true, Instant::now()).await?;
        }
        let failed_at = Instant::now();
        if stop {
            agents.clients[c].pause();
        } else {
            agents.clients[c].kill();
        }
        let absent = prober.wait(ip, false, failed_at).await?;
        let back = if stop {
            let resumed = Instant::now();
            agents.clients[c].resume();
            prober.wait(ip, true, resumed).await?
        } else {
            let restarted = Instant::now();
            agents.clients[c].restart_async().await?;
            // Whether or not the restarted agent kept its registration, it
            // runs `db`: register again (idempotent) as its operator would.
            agents.register(http, c).await?;
            prober.wait(ip, true, restarted).await?
        };
        agents.check_running()?;
        let trial = Trial {
            client: agents.clients[c].name().to_string(),
            absent,
            back,
        };
        println!(
            "{:>5}  {:<6} {:>8} {:>8} {:>8} {:>9} {:>9}",
            t + 1,
            trial.client,
            ms(trial.absent[0]),
            ms(trial.absent[1]),
            ms(trial.absent[2]),
            ms(trial.absent_all()),
            ms(trial.back_all()),
        );
        done.push(trial);
    }
    let absent: Vec<Duration> = done.iter().map(Trial::absent_all).collect();
    let back: Vec<Duration> = done.iter().map(Trial::back_all).collect();
    let (median, max) = median_max(&absent);
    let (back_median, back_max) = median_max(&back);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "\nabsent from every server: median {:.3} s (target <= {:.1} s: {}), max {:.3} s \
         (target <= {:.1} s: {})",
        median.as_secs_f64(),
        TARGET_MEDIAN.as_secs_f64(),
        verdict(median <= TARGET_MEDIAN),
        max.as_secs_f64(),
        TARGET_MAX.as_secs_f64(),
        verdict(max <= TARGET_MAX),
    );
    println!(
        "answered again everywhere ({}): median {:.3} s, max {:.3} s",
        if stop {
            "after SIGCONT"
        } else {
            "after the restart"
        },
        back_median.as_secs_f64(),
        back_max.as_secs_f64()
    );
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// Median (the upper one of an even count) and maximum.
fn median_max(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    let median = s.get(s.len() / 2).copied().unwrap_or_default();
    (median, s.last().copied().unwrap_or_default())
}

// ---- soak ----

/// What the soak saw.
#[derive(Debug, Default, PartialEq)]
struct SoakCount {
    /// Reads of `/v1/agent/members` (one per server per round).
    polls: u64,
    /// Members listed, over all polls.
    seen: u64,
    /// Members reported failed (Status 4): false positives.
    failed: u64,
    /// Members reported neither alive nor failed, or missing from a list.
    other: u64,
    /// Node names ever reported failed.
    failed_names: std::collections::BTreeSet<String>,
}

impl SoakCount {
    /// Counts one members list that should hold `expected` live members.
    fn add(&mut self, members: &[Value], expected: usize) {
        self.polls += 1;
        self.seen += members.len() as u64;
        self.other += expected.saturating_sub(members.len()) as u64;
        for m in members {
            match m["Status"].as_u64() {
                Some(1) => {}
                Some(4) => {
                    self.failed += 1;
                    let name = m["Name"].as_str().unwrap_or("?").to_string();
                    self.failed_names.insert(name);
                }
                _ => self.other += 1,
            }
        }
    }
}

async fn soak(
    agents: &mut Agents,
    http: &reqwest::Client,
    secs: u64,
    hogs: usize,
) -> anyhow::Result<()> {
    println!(
        "soak: {secs} s, {hogs} threads spinning on the CPU, every server's /v1/agent/members \
         read every {} ms; all 6 agents stay alive, so every Status 4 is a false positive",
        SOAK_POLL_EVERY.as_millis()
    );
    println!(
        "packet loss is not injected: this kernel has no netem and there is no iptables/nft; \
         the in-process soak of benches/gossip_bandwidth.rs (LOSS_PER_MILLE) covers loss"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..hogs)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let pids = agents.pids();
    let cpu_before = procs::cpu_seconds(&pids);
    let result = soak_polls(agents, http, Duration::from_secs(secs)).await;
    let cpu = procs::cpu_seconds(&pids) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let count = result?;
    println!(
        "\n{} polls, {} member entries: {} false positives (Status 4){}, {} other anomalies \
         (left, missing); agents used {:.1} CPU-seconds ({:.1} % of one core)",
        count.polls,
        count.seen,
        count.failed,
        if count.failed_names.is_empty() {
            String::new()
        } else {
            format!(" for {:?}", count.failed_names)
        },
        count.other,
        cpu,
        cpu / secs as f64 * 100.0
    );
    Ok(())
}

async fn soak_polls(
    agents: &mut Agents,
    http: &reqwest::Client,
    length: Duration,
) -> anyhow::Result<SoakCount> {
    let urls: Vec<String> = agents
        .servers
        .iter()
        .map(|s| s.url("/v1/agent/members"))
        .collect();
    let expected = agents.servers.len() + agents.clients.len();
    let mut count = SoakCount::default();
    let started = Instant::now();
    let mut next_report = Duration::from_secs(60);
    while started.elapsed() < length {
        let round = Instant::now();
        for url in &urls {
            let members: Vec<Value> = match http.get(url).send().await {
                Ok(r) => r.json().await.context("members JSON")?,
                // A server too starved to answer in 2 s is not a false
                // positive of gossip; count it and go on.
                Err(_) => {
                    count.other += 1;
                    continue;
                }
            };
            let before = count.failed;
            count.add(&members, expected);
            if count.failed > before {
                println!(
                    "  {:>5.1} s: {url} reports failed: {:?}",
                    started.elapsed().as_secs_f64(),
                    members
                        .iter()
                        .filter(|m| m["Status"] == json!(4))
                        .map(|m| m["Name"].clone())
                        .collect::<Vec<_>>()
                );
            }
        }
        agents.check_running()?;
        if started.elapsed() >= next_report {
            println!(
                "  {:>5.0} s: {} polls, {} false positives so far",
                started.elapsed().as_secs_f64(),
                count.polls,
                count.failed
            );
            next_report += Duration::from_secs(60);
        }
        tokio::time::sleep(SOAK_POLL_EVERY.saturating_sub(round.elapsed())).await;
    }
    Ok(count)
}

// ---- self-checks ----

fn self_check() {
    let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    let parsed = |s: &str| Settings::parse(&args(s)).expect(s);
    assert_eq!(
        parsed("--bench"),
        Settings {
            mode: Mode::Kill,
            trials: 10
        }
    );
    assert_eq!(parsed("--bench --trials 3 --stop").mode, Mode::Stop);
    assert_eq!(parsed("--bench --trials 3 --stop").trials, 3);
    assert_eq!(
        parsed("--soak --hog 4").mode,
        Mode::Soak { secs: 300, hogs: 4 }
    );
    assert_eq!(parsed("--soak 60").mode, Mode::Soak { secs: 60, hogs: 2 });
    assert!(Settings::parse(&args("--trials x")).is_err());
    assert!(Settings::parse(&args("--soak 5 --stop")).is_err());
    assert!(Settings::parse(&args("--what")).is_err());

    let d = |v: &[u64]| -> Vec<Duration> { v.iter().map(|&m| Duration::from_millis(m)).collect() };
    assert_eq!(
        median_max(&d(&[900, 100, 500])),
        (Duration::from_millis(500), Duration::from_millis(900))
    );
    assert_eq!(median_max(&[]), (Duration::ZERO, Duration::ZERO));

    let q = question(7).expect("question");
    let m = Message::from_vec(&q).expect("parses");
    assert_eq!(m.metadata.id, 7);
    assert_eq!(m.queries.len(), 1);

    let mut c = SoakCount::default();
    c.add(
        &[
            json!({"Name": "s1", "Status": 1}),
            json!({"Name": "c2", "Status": 4}),
            json!({"Name": "c3", "Status": 3}),
        ],
        4,
    );
    assert_eq!((c.polls, c.seen, c.failed, c.other), (1, 3, 1, 2));
    assert!(c.failed_names.contains("c2"));
}
