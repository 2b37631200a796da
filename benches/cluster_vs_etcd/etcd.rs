//! The reference: a three-member etcd cluster (Debian's etcd-server, 3.4)
//! on loopback, every setting at its default (fsync on every commit,
//! heartbeat 100 ms, election timeout 1 s), driven through its JSON
//! gateway.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use trellis_testkit::net::free_tcp_port;
use trellis_testkit::{Log, Process};

use crate::cluster::{Api, Cluster, send};
use crate::procs::on_path;

/// The members' addresses: 127.0.3.1 to .3, clear of the tests' 127.0.0.x.
const IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 3, 1),
    Ipv4Addr::new(127, 0, 3, 2),
    Ipv4Addr::new(127, 0, 3, 3),
];

/// How long a member may take to serve its client port.
const START_WITHIN: Duration = Duration::from_secs(20);

/// One member and how to start it again.
struct Member {
    /// `e1`, `e2`, `e3`.
    name: String,
    /// Client (gRPC and JSON gateway) address.
    client: SocketAddr,
    /// Its data directory, kept across restarts.
    data_dir: PathBuf,
    /// Its log.
    log: PathBuf,
    /// Its raft member ID as a decimal string (the gateway's form), learnt
    /// from its first status answer; stable across restarts.
    id: Option<String>,
    /// The process, while it runs.
    proc: Option<Process>,
}

/// The running cluster.
pub(crate) struct Etcd {
    /// In the order of `IPS`.
    members: Vec<Member>,
    /// `--initial-cluster`, the same for every member.
    initial_cluster: String,
}

/// The version line of the installed etcd, or how to install it.
pub(crate) fn version() -> anyhow::Result<String> {
    if !on_path("etcd") {
        bail!(
            "etcd is not installed. On Debian or Ubuntu: `sudo apt-get install -y etcd-server` \
             (3.4; the package may try to start a system etcd on 127.0.0.1:2379, which the \
             benchmark does not use), or run benches/cluster_vs_etcd/run.sh, which installs it"
        );
    }
    let out = Command::new("etcd")
        .arg("--version")
        .output()
        .context("running etcd --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("etcd (unknown version)")
        .to_string())
}

impl Etcd {
    /// Starts three members with data under `dir` and waits until each
    /// serves its client port (not for a leader: see `wait_healthy`).
    pub(crate) async fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut peers = Vec::new();
        let mut members = Vec::new();
        for (i, ip) in IPS.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let peer = SocketAddr::from((*ip, free_tcp_port(*ip)?));
            let client = SocketAddr::from((*ip, free_tcp_port(*ip)?));
            peers.push(format!("{name}=http://{peer}"));
            let data_dir = dir.join(&name);
            members.push((
                Member {
                    name: name.clone(),
                    client,
                    data_dir,
                    log: dir.join(format!("{name}.log")),
                    id: None,
                    proc: None,
                },
                peer,
            ));
        }
        let initial_cluster = peers.join(",");
        let mut etcd = Self {
            members: Vec::new(),
            initial_cluster,
        };
        for (m, peer) in members {
            etcd.members.push(m);
            let i = etcd.members.len() - 1;
            etcd.spawn(i, peer)?;
        }
        for i in 0..etcd.members.len() {
            etcd.wait_serving(i).await?;
        }
        Ok(etcd)
    }

    /// The peer address of member `i`, from `--initial-cluster`.
    fn peer(&self, i: usize) -> anyhow::Result<SocketAddr> {
        let name = &self.members[i].name;
        self.initial_cluster
            .split(',')
            .find_map(|e| e.strip_prefix(&format!("{name}=http://")))
            .ok_or_else(|| anyhow!("{name} is not in {}", self.initial_cluster))?
            .parse()
            .context("a peer address")
    }

    fn spawn(&mut self, i: usize, peer: SocketAddr) -> anyhow::Result<()> {
        let m = &self.members[i];
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg(format!("--listen-client-urls=http://{}", m.client))
            .arg(format!("--advertise-client-urls=http://{}", m.client))
            .arg(format!("--listen-peer-urls=http://{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            // Ignored once the data dir exists, as on a restart.
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=trellis-bench");
        let proc = Process::spawn(&format!("etcd {}", m.name), &mut cmd, &Log::file(&m.log))?;
        self.members[i].proc = Some(proc);
        Ok(())
    }

    /// Waits until member `i` answers a status request, and learns its ID.
    async fn wait_serving(&mut self, i: usize) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if let Some(p) = self.members[i].proc.as_mut() {
                p.check_running()?;
            }
            if let Ok(s) = self.status(&http, i).await {
                self.members[i].id = Some(s.member);
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.members[i].proc.as_ref().map(|p| p.log().tail(30));
                bail!(
                    "etcd {} does not answer on {} after {} s; log:\n{}",
                    self.members[i].name,
                    self.members[i].client,
                    START_WITHIN.as_secs(),
                    log.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /v3/maintenance/status` on member `i`.
    async fn status(&self, http: &reqwest::Client, i: usize) -> anyhow::Result<Status> {
        let url = format!("http://{}/v3/maintenance/status", self.members[i].client);
        let text = http
            .post(url)
            .body("{}")
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Status::parse(&text)
    }

    /// The member whose ID is `id`.
    fn by_id(&self, id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.id.as_deref() == Some(id))
    }

    /// The log files, for the report.
    pub(crate) fn logs(&self) -> Vec<&Path> {
        self.members.iter().map(|m| m.log.as_path()).collect()
    }
}

impl Cluster for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn api(&self) -> Api {
        Api::Etcd(self.members.iter().map(|m| m.client).collect())
    }

    async fn healthy(&mut self, http: &reqwest::Client) -> anyhow::Result<usize> {
        let mut leader = None;
        for i in 0..self.members.len() {
            let s = self
                .status(http, i)
                .await
                .with_context(|| format!("status of {}", self.members[i].name))?;
            let l = self
                .by_id(&s.leader)
                .ok_or_else(|| anyhow!("{} knows no leader", self.members[i].name))?;
            if leader.is_some_and(|x| x != l) {
                bail!("members disagree on the leader");
            }
            leader = Some(l);
        }
        // A 3-member cluster whose members all follow one leader has three
        // voters: etcd 3.4 has no learners unless asked for.
        let leader = leader.ok_or_else(|| anyhow!("no members"))?;
        let api = self.api();
        for i in 0..self.members.len() {
            send(api.write(http, i, &format!("health-{i}")))
                .await
                .map_err(|e| anyhow!("write through {}: {e}", self.members[i].name))?;
        }
        // Caught up: every member has applied what the leader had committed.
        let want = self.status(http, leader).await?.committed;
        for i in 0..self.members.len() {
            let have = self.status(http, i).await?.applied;
            if have < want {
                bail!(
                    "{} has applied up to {have}, the leader committed {want}",
                    self.members[i].name
                );
            }
        }
        Ok(leader)
    }

    fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.proc.as_ref().map(Process::pid))
            .collect()
    }

    fn kill(&mut self, member: usize) {
        if let Some(mut p) = self.members[member].proc.take() {
            p.kill();
        }
    }

    async fn restart(&mut self, member: usize) -> anyhow::Result<()> {
        self.kill(member);
        let peer = self.peer(member)?;
        self.spawn(member, peer)?;
        self.wait_serving(member).await
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

/// What a member says about itself and the leader.
#[derive(Debug, PartialEq)]
struct Status {
    /// Its own ID (decimal string: the gateway writes uint64 as strings).
    member: String,
    /// The leader's ID; "0" when none.
    leader: String,
    /// The Raft index it knows committed.
    committed: u64,
    /// The Raft index it has applied.
    applied: u64,
}

impl Status {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("status {text:?}"))?;
        let field = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let index = |key: &str| -> anyhow::Result<u64> {
            field(&v[key])
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("no {key} in {text:?}"))
        };
        Ok(Self {
            member: field(&v["header"]["member_id"])
                .ok_or_else(|| anyhow!("no header.member_id in {text:?}"))?,
            leader: field(&v["leader"]).unwrap_or_else(|| "0".into()),
            committed: index("raftIndex")?,
            applied: index("raftAppliedIndex")?,
        })
    }
}

/// Standard base64 with padding, as the gateway's `bytes` fields want.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * k)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Checks the encoder and the status parser; run without `--bench`.
pub(crate) fn self_check() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    let s = Status::parse(
        r#"{"header":{"cluster_id":"4","member_id":"1086","revision":"1","raft_term":"2"},
            "version":"3.4.23","leader":"1007","raftIndex":"8","raftAppliedIndex":"7"}"#,
    )
    .expect("a status parses");
    assert_eq!(
        s,
        Status {
            member: "1086".into(),
            leader: "1007".into(),
            committed: 8,
            applied: 7,
        }
    );
    assert!(Status::parse("{}").is_err());
}
