//! The system under test: three `trellis agent --server` processes on
//! loopback that find each other with `--retry-join` and bootstrap with
//! `--bootstrap-expect 3`, every Raft and storage setting at its default.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use trellis_testkit::net::{free_tcp_port, free_udp_port};
use trellis_testkit::{Agent, AgentBuilder};

use crate::cluster::{Api, Cluster, send};

/// The trellis binary cargo built for this benchmark (release profile).
const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

/// The binary to run: `TRELLIS_BIN` when set (another build, to compare
/// with this harness), else the one cargo built.
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("TRELLIS_BIN").map_or_else(|| PathBuf::from(TRELLIS), PathBuf::from)
}

/// The servers' addresses: 127.0.3.11 to .13, clear of the tests' 127.0.0.x
/// and of etcd's 127.0.3.1–3.
const IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 3, 11),
    Ipv4Addr::new(127, 0, 3, 12),
    Ipv4Addr::new(127, 0, 3, 13),
];

/// One server and how to start it again with the same identity.
struct Member {
    /// `--node`: `s1`, `s2`, `s3`.
    node: String,
    /// HTTP API address, fixed so that a restarted server keeps it.
    http: SocketAddr,
    /// Server RPC address, fixed likewise (the Raft peers know it).
    server: SocketAddr,
    /// How it is launched; every address above is fixed in it.
    spec: AgentBuilder,
    /// Its log, appended across restarts.
    log: PathBuf,
    /// The agent, once started.
    agent: Option<Agent>,
    /// Killed by the benchmark and not restarted since: not expected to run.
    killed: bool,
}

/// The running servers.
pub(crate) struct Trellis {
    /// In the order of `IPS`.
    members: Vec<Member>,
    /// One `--dev` agent instead of a cluster (`BENCH_TRELLIS=dev`), to
    /// check the driver against a build without clustering.
    dev: bool,
}

impl Trellis {
    /// Starts three servers (or one dev agent) with data under `dir` and
    /// waits for each one's `listening` line (not for a leader: see
    /// `wait_healthy`). With `tls`, a CA and a server certificate are made
    /// with `trellis tls` in `dir` and the servers talk RPC over TLS.
    pub(crate) async fn start(dir: &Path, dev: bool, tls: bool) -> anyhow::Result<Self> {
        let trellis = trellis_testkit::Trellis::new(binary());
        let tls_config = if tls {
            Some(tls_config(&trellis, dir)?)
        } else {
            None
        };
        let n = if dev { 1 } else { IPS.len() };
        // Every address first: each server joins through the others'.
        let mut places = Vec::new();
        for ip in IPS.iter().take(n) {
            places.push((
                *ip,
                free_tcp_port(*ip)?,
                free_tcp_port(*ip)?,
                SocketAddr::from((*ip, free_udp_port(*ip)?)),
            ));
        }
        let mut members = Vec::new();
        for (i, &(ip, http, server, serf_lan)) in places.iter().enumerate() {
            let node = format!("s{}", i + 1);
            let mut spec = if dev {
                trellis.dev()
            } else {
                let mut b = trellis
                    .server()
                    .bootstrap_expect(n)
                    .data_dir(dir.join(&node));
                // Snapshots every N entries instead of the default 16,384,
                // so that a short run crosses several (the p99.9 column
                // shows whether one stalls writes).
                if let Ok(threshold) = std::env::var("BENCH_SNAPSHOT_THRESHOLD") {
                    b = b.arg("--raft-snapshot-threshold", threshold);
                }
                for (j, other) in places.iter().enumerate() {
                    if j != i {
                        b = b.retry_join(other.3);
                    }
                }
                b
            };
            let log = dir.join(format!("{node}.log"));
            spec = spec
                .node(&node)
                .ip(ip.into())
                .http_port(http)
                .server_port(server)
                .serf_lan_port(serf_lan.port())
                .log_file(&log)
                .log_filter(None);
            if let Some(config) = &tls_config {
                spec = spec.config_file(config);
            }
            members.push(Member {
                http: SocketAddr::from((ip, http)),
                server: SocketAddr::from((ip, server)),
                node,
                spec,
                log,
                agent: None,
                killed: false,
            });
        }
        let mut t = Self { members, dev };
        for m in &mut t.members {
            let agent = m.spec.clone().start_async().await?;
            check_http(m, &agent)?;
            m.agent = Some(agent);
        }
        Ok(t)
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
            .filter(|m| !m.killed)
            .filter_map(|m| m.agent.as_ref().map(Agent::pid))
            .collect()
    }

    fn kill(&mut self, member: usize) {
        let m = &mut self.members[member];
        if let Some(a) = &m.agent {
            a.kill();
            m.killed = true;
        }
    }

    async fn restart(&mut self, member: usize) -> anyhow::Result<()> {
        let m = &self.members[member];
        let agent = m
            .agent
            .as_ref()
            .ok_or_else(|| anyhow!("{} never started", m.node))?;
        agent.restart_async().await?;
        check_http(m, agent)?;
        self.members[member].killed = false;
        Ok(())
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        for m in self.members.iter().filter(|m| !m.killed) {
            if let Some(a) = &m.agent {
                a.check_running()?;
            }
        }
        Ok(())
    }
}

/// Fails unless `agent` listens on the HTTP address `m` gave it.
fn check_http(m: &Member, agent: &Agent) -> anyhow::Result<()> {
    let http = agent.addrs().http;
    if http != m.http {
        bail!(
            "trellis {} listens on {http}, not on {}; log:\n{}",
            m.node,
            m.http,
            agent.log_handle().tail(30)
        );
    }
    Ok(())
}

/// A CA and a server certificate made by `trellis tls` in `dir`, and a
/// config file there with the three lines that put server RPC under TLS.
fn tls_config(trellis: &trellis_testkit::Trellis, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for args in [
        &["tls", "ca", "create"][..],
        &["tls", "cert", "create", "-server"],
    ] {
        let out = trellis.command().current_dir(dir).args(args).output()?;
        if !out.status.success() {
            bail!("trellis {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let file = |name: &str| dir.join(name).display().to_string();
    let config = format!(
        "[tls.defaults]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n\
         verify_incoming = true\nverify_outgoing = true\n\
         [tls.internal_rpc]\nverify_server_hostname = true\n",
        file("consul-agent-ca.pem"),
        file("dc1-server-consul-0.pem"),
        file("dc1-server-consul-0-key.pem"),
    );
    let path = dir.join("tls.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}
