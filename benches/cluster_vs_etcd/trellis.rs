//! The system under test: three `trellis agent --server` processes on
//! loopback that find each other with `--retry-join` and bootstrap with
//! `--bootstrap-expect 3`, every Raft and storage setting at its default.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::process::Command;

use crate::cluster::{Api, Cluster, send};
use crate::procs::{Proc, count_lines, free_port, free_udp_port};

/// The trellis binary cargo built for this benchmark (release profile).
pub(crate) const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

/// The servers' addresses: 127.0.3.11 to .13, clear of the tests' 127.0.0.x
/// and of etcd's 127.0.3.1–3.
const IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 3, 11),
    Ipv4Addr::new(127, 0, 3, 12),
    Ipv4Addr::new(127, 0, 3, 13),
];

/// How long a server may take to print its `listening` line.
const START_WITHIN: Duration = Duration::from_secs(20);

/// What the agent prints once its listeners serve.
const LISTENING: &str = "listening dns=";

/// One server and how to start it again with the same identity.
struct Member {
    /// `--node`: `s1`, `s2`, `s3`.
    node: String,
    /// HTTP API address, fixed so that a restarted server keeps it.
    http: SocketAddr,
    /// Server RPC address, fixed likewise (the Raft peers know it).
    server: SocketAddr,
    /// LAN gossip address (UDP), fixed likewise: the others join through it.
    serf_lan: SocketAddr,
    /// `--data-dir`, kept across restarts.
    data_dir: PathBuf,
    /// Its log, appended across restarts.
    log: PathBuf,
    /// The process, while it runs.
    proc: Option<Proc>,
}

/// The running servers.
pub(crate) struct Trellis {
    /// In the order of `IPS`.
    members: Vec<Member>,
    /// One `--dev` agent instead of a cluster (`BENCH_TRELLIS=dev`), to
    /// check the driver against a build without clustering.
    dev: bool,
}

/// The address a server gives in `--retry-join` to reach `server`: its LAN
/// gossip address, through which the servers also find each other for Raft.
fn join_addr(server: &Member) -> String {
    server.serf_lan.to_string()
}

impl Trellis {
    /// Starts three servers (or one dev agent) with data under `dir` and
    /// waits for each one's `listening` line (not for a leader: see
    /// `wait_healthy`).
    pub(crate) async fn start(dir: &Path, dev: bool) -> anyhow::Result<Self> {
        let n = if dev { 1 } else { IPS.len() };
        let mut members = Vec::new();
        for (i, ip) in IPS.iter().take(n).enumerate() {
            let node = format!("s{}", i + 1);
            members.push(Member {
                http: SocketAddr::from((*ip, free_port(*ip)?)),
                server: SocketAddr::from((*ip, free_port(*ip)?)),
                serf_lan: SocketAddr::from((*ip, free_udp_port(*ip)?)),
                data_dir: dir.join(&node),
                log: dir.join(format!("{node}.log")),
                node,
                proc: None,
            });
        }
        let mut t = Self { members, dev };
        for i in 0..n {
            t.spawn(i)?;
        }
        for i in 0..n {
            t.wait_listening(i, 0).await?;
        }
        Ok(t)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        let ip = m.http.ip().to_string();
        let mut cmd = Command::new(TRELLIS);
        cmd.arg("agent");
        if self.dev {
            cmd.arg("--dev");
        } else {
            std::fs::create_dir_all(&m.data_dir)
                .with_context(|| format!("creating {}", m.data_dir.display()))?;
            cmd.args(["--server", "--bootstrap-expect"])
                .arg(self.members.len().to_string())
                .arg("--data-dir")
                .arg(&m.data_dir);
            for (j, other) in self.members.iter().enumerate() {
                if j != i {
                    cmd.arg("--retry-join").arg(join_addr(other));
                }
            }
        }
        cmd.args(["--node", &m.node, "--bind", &ip, "--client", &ip])
            .arg("--http-port")
            .arg(m.http.port().to_string())
            .arg("--server-port")
            .arg(m.server.port().to_string())
            .arg("--serf-lan-port")
            .arg(m.serf_lan.port().to_string())
            .args(["--dns-port", "0", "--serf-wan-port", "0"])
            .env("NO_COLOR", "1");
        let proc = Proc::spawn(&format!("trellis {}", m.node), &mut cmd, &m.log)?;
        self.members[i].proc = Some(proc);
        Ok(())
    }

    /// Waits until member `i`'s log holds more than `before` `listening`
    /// lines, and checks the line names the HTTP address it was given.
    async fn wait_listening(&mut self, i: usize, before: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_WITHIN;
        let m = &mut self.members[i];
        let proc = m
            .proc
            .as_mut()
            .ok_or_else(|| anyhow!("{} is not running", m.node))?;
        while count_lines(&m.log, LISTENING) <= before {
            proc.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "trellis {} did not report `listening` within {} s; log:\n{}",
                    m.node,
                    START_WITHIN.as_secs(),
                    proc.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = std::fs::read_to_string(proc.log_path()).unwrap_or_default();
        let want = format!("http={}", m.http);
        if !text
            .lines()
            .rfind(|l| l.contains(LISTENING))
            .is_some_and(|l| l.contains(&want))
        {
            bail!(
                "trellis {} listens elsewhere than {want}; log:\n{}",
                m.node,
                proc.log_tail()
            );
        }
        Ok(())
    }

    /// `GET /v1/status/leader` on member `i`: the leader's RPC address, or
    /// `None` when it knows none.
    async fn leader_of(&self, http: &reqwest::Client, i: usize) -> anyhow::Result<Option<String>> {
        let url = format!("http://{}/v1/status/leader", self.members[i].http);
        let text = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let addr: String =
            serde_json::from_str(&text).with_context(|| format!("leader {text:?}"))?;
        Ok((!addr.is_empty()).then_some(addr))
    }

    /// The member whose RPC address is `addr`.
    fn by_server(&self, addr: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.server.to_string() == addr)
    }

    /// How many voters `GET /v1/operator/raft/configuration` on member `i`
    /// lists.
    async fn voters(&self, http: &reqwest::Client, i: usize) -> anyhow::Result<usize> {
        let url = format!(
            "http://{}/v1/operator/raft/configuration",
            self.members[i].http
        );
        let text = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("configuration {text:?}"))?;
        let servers = v["Servers"]
            .as_array()
            .ok_or_else(|| anyhow!("no Servers in {text:?}"))?;
        Ok(servers.iter().filter(|s| s["Voter"] == true).count())
    }

    /// The catalog index member `i` has applied: `X-Consul-Index` of a
    /// `?stale` read, which that server answers from its own state.
    async fn applied_index(&self, http: &reqwest::Client, i: usize) -> anyhow::Result<u64> {
        let url = format!(
            "http://{}/v1/catalog/node/n-health-0?stale",
            self.members[i].http
        );
        let resp = http.get(url).send().await?.error_for_status()?;
        let index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no X-Consul-Index from {}", self.members[i].node))?;
        Ok(index)
    }

    /// The log files, for the report.
    pub(crate) fn logs(&self) -> Vec<&Path> {
        self.members.iter().map(|m| m.log.as_path()).collect()
    }

    /// Whether this is one dev agent rather than a cluster.
    pub(crate) fn is_dev(&self) -> bool {
        self.dev
    }
}

impl Cluster for Trellis {
    fn name(&self) -> &'static str {
        "trellis"
    }

    fn api(&self) -> Api {
        Api::Trellis(self.members.iter().map(|m| m.http).collect())
    }

    async fn healthy(&mut self, http: &reqwest::Client) -> anyhow::Result<usize> {
        let mut leader = None;
        for i in 0..self.members.len() {
            let node = &self.members[i].node;
            let addr = self
                .leader_of(http, i)
                .await
                .with_context(|| format!("leader according to {node}"))?
                .ok_or_else(|| anyhow!("{node} knows no leader"))?;
            if self.dev {
                leader = Some(0);
                continue;
            }
            let l = self
                .by_server(&addr)
                .ok_or_else(|| anyhow!("{node} names an unknown leader {addr}"))?;
            if leader.is_some_and(|x| x != l) {
                bail!("servers disagree on the leader");
            }
            leader = Some(l);
        }
        let leader = leader.ok_or_else(|| anyhow!("no members"))?;
        if !self.dev {
            let voters = self.voters(http, leader).await?;
            if voters != self.members.len() {
                bail!("{voters} voters, not {}", self.members.len());
            }
        }
        let api = self.api();
        for i in 0..self.members.len() {
            send(api.write(http, i, &format!("health-{i}")))
                .await
                .map_err(|e| anyhow!("write through {}: {e}", self.members[i].node))?;
        }
        // Caught up: every server has applied what the leader had, so a
        // trial never starts with a lagging server that cannot win an
        // election.
        let want = self.applied_index(http, leader).await?;
        for i in 0..self.members.len() {
            let have = self.applied_index(http, i).await?;
            if have < want {
                bail!(
                    "{} has applied up to {have}, the leader {want}",
                    self.members[i].node
                );
            }
        }
        Ok(leader)
    }

    fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.proc.as_ref().and_then(Proc::pid))
            .collect()
    }

    fn kill(&mut self, member: usize) {
        if let Some(mut p) = self.members[member].proc.take() {
            p.kill();
        }
    }

    async fn restart(&mut self, member: usize) -> anyhow::Result<()> {
        self.kill(member);
        let before = count_lines(&self.members[member].log, LISTENING);
        self.spawn(member)?;
        self.wait_listening(member, before).await
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(p) = m.proc.as_mut() {
                p.check_running()?;
            }
        }
        Ok(())
    }
}
