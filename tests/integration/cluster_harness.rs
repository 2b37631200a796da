//! A cluster of real `trellis` servers for tests, built on [`TestAgent`].
//!
//! Every server gets its own address and a server RPC port chosen before it
//! starts, so a restarted server comes back at the same address, as it would
//! on a real machine. Servers find each other with `--retry-join`, and the
//! cluster bootstraps once all `--bootstrap-expect N` know each other.
//!
//! The cluster talks HTTP to its members either directly (loopback) or, for
//! members inside a network namespace, by running `curl` in that namespace.
//! Every wait has a deadline and reports the last thing it saw; when a test
//! fails, the cluster prints each member's log as it is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{TestAgent, next_loopback, temp_dir};

/// How long a client waits for one HTTP answer. Servers answer writes that
/// cannot commit within their own 5 s request timeout, and "No cluster leader"
/// at once; a request that takes longer than this is a hang.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// Bootstrap of a fresh cluster, and a restarted cluster's first election.
pub(crate) const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// An election after a failure, or a member catching up.
pub(crate) const SETTLE_DEADLINE: Duration = Duration::from_secs(20);

/// Where one member runs.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    /// The address the member binds everything to.
    pub(crate) ip: IpAddr,
    /// Its server RPC port, fixed for the member's life.
    pub(crate) server_port: u16,
    /// Its LAN gossip port, fixed for the member's life.
    pub(crate) serf_port: u16,
    /// The network namespace it runs in; `None` for the test's own.
    pub(crate) netns: Option<String>,
}

impl Placement {
    /// A fresh loopback address with a server port that was free a moment ago.
    pub(crate) fn loopback() -> Self {
        let ip = next_loopback();
        // Bind port 0 to learn a free port, then let it go for the server.
        let l = TcpListener::bind((ip, 0)).expect("bind a probe socket");
        let server_port = l.local_addr().expect("probe address").port();
        let u = std::net::UdpSocket::bind((ip, 0)).expect("bind a probe socket");
        let serf_port = u.local_addr().expect("probe address").port();
        Self {
            ip,
            server_port,
            serf_port,
            netns: None,
        }
    }

    /// The member's server RPC address.
    pub(crate) fn rpc(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.server_port)
    }

    /// The member's LAN gossip address.
    pub(crate) fn serf(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.serf_port)
    }
}

/// Whether a member's process is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    Paused,
    Dead,
}

/// One server of the cluster.
struct Member {
    agent: TestAgent,
    place: Placement,
    /// Its data dir, inside the cluster's temporary directory.
    data: PathBuf,
    life: Life,
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    /// The status code.
    pub(crate) status: u16,
    /// `X-Consul-Index`, when present.
    pub(crate) index: Option<u64>,
    /// `X-Consul-KnownLeader`, when present.
    pub(crate) known_leader: Option<bool>,
    /// The body as text.
    pub(crate) text: String,
}

impl Resp {
    /// The body as JSON (`Null` when it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// Whether the status is 2xx.
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What a catalog read of one service returned: the instance IDs and the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceView {
    /// `ServiceID` of every instance.
    pub(crate) ids: BTreeSet<String>,
    /// `X-Consul-Index` of the read.
    pub(crate) index: u64,
}

/// N `trellis` servers forming one Raft cluster.
pub(crate) struct Cluster {
    members: Vec<Member>,
    client: reqwest::Client,
    /// Holds every member's data dir; removed when the cluster is dropped.
    _dir: tempfile::TempDir,
}

/// The `--retry-join` addresses one member uses: every other member's LAN
/// gossip address.
fn join_addrs(places: &[Placement], me: usize) -> Vec<String> {
    places
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .map(|(_, p)| p.serf().to_string())
        .collect()
}

impl Cluster {
    /// Starts `n` servers on loopback and waits until they elected a leader
    /// that all of them know, with all `n` as voters.
    pub(crate) async fn start(n: usize) -> Self {
        Self::start_with(n, &[]).await
    }

    /// [`Cluster::start`] with extra agent flags for every member.
    pub(crate) async fn start_with(n: usize, extra: &[&str]) -> Self {
        let c = Self::launch_with((0..n).map(|_| Placement::loopback()).collect(), extra);
        c.wait_formed().await;
        c
    }

    /// Starts one server per placement, without waiting for a leader.
    pub(crate) fn launch(places: Vec<Placement>) -> Self {
        Self::launch_with(places, &[])
    }

    /// [`Cluster::launch`] with extra agent flags for every member.
    pub(crate) fn launch_with(places: Vec<Placement>, extra: &[&str]) -> Self {
        let dir = temp_dir();
        let n = places.len();
        let members = places
            .iter()
            .enumerate()
            .map(|(i, place)| {
                let data = dir.path().join(format!("s{}", i + 1));
                std::fs::create_dir_all(&data).expect("create data dir");
                let node = format!("s{}", i + 1);
                let expect = n.to_string();
                let port = place.server_port.to_string();
                let serf_port = place.serf_port.to_string();
                let data_s = data.display().to_string();
                let mut args: Vec<&str> = vec![
                    "--server",
                    "--bootstrap-expect",
                    &expect,
                    "--node",
                    &node,
                    "--data-dir",
                    &data_s,
                    "--server-port",
                    &port,
                    "--serf-lan-port",
                    &serf_port,
                ];
                args.extend_from_slice(extra);
                let joins = join_addrs(&places, i);
                for j in &joins {
                    args.extend(["--retry-join", j.as_str()]);
                }
                let prefix: Vec<String> = match &place.netns {
                    Some(ns) => vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()],
                    None => Vec::new(),
                };
                let agent = TestAgent::start_in(&prefix, &args, place.ip);
                assert_eq!(
                    agent.server,
                    Some(place.rpc()),
                    "server {node} reports its RPC address"
                );
                Member {
                    agent,
                    place: place.clone(),
                    data,
                    life: Life::Running,
                }
            })
            .collect();
        let client = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .expect("http client");
        Self {
            members,
            client,
            _dir: dir,
        }
    }

    /// Number of members, whatever their state.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// The member's agent (its addresses).
    pub(crate) fn agent(&self, i: usize) -> &TestAgent {
        &self.members[i].agent
    }

    /// Member `i`'s LAN gossip address, which others join through.
    pub(crate) fn serf(&self, i: usize) -> SocketAddr {
        self.members[i].place.serf()
    }

    /// Member `i`'s server RPC address, which is what the cluster calls it.
    pub(crate) fn rpc(&self, i: usize) -> SocketAddr {
        self.members[i].place.rpc()
    }

    /// Members whose process is running (not killed, not paused).
    pub(crate) fn running(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.members[i].life == Life::Running)
            .collect()
    }

    /// The member with this RPC address.
    fn by_rpc(&self, addr: &str) -> Option<usize> {
        (0..self.len()).find(|&i| self.rpc(i).to_string() == addr)
    }

    /// Panics if any member's log (across restarts) shows a panic: a server
    /// that panicked inside is broken even when the cluster recovered.
    pub(crate) fn assert_no_server_panicked(&self) {
        for (i, m) in self.members.iter().enumerate() {
            if let Some(p) = first_panic(&m.agent) {
                panic!("s{} panicked: {p}", i + 1);
            }
        }
    }

    // ---- process control ----

    /// SIGKILL member `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        self.members[i].agent.kill();
        self.members[i].life = Life::Dead;
    }

    /// SIGSTOP member `i`.
    pub(crate) fn pause(&mut self, i: usize) {
        self.members[i].agent.pause();
        self.members[i].life = Life::Paused;
    }

    /// SIGCONT member `i` after [`Self::pause`].
    pub(crate) fn resume(&mut self, i: usize) {
        self.members[i].agent.resume();
        self.members[i].life = Life::Running;
    }

    /// Restarts member `i` (killing it first if it runs) with the same
    /// arguments, address, server port and data dir.
    pub(crate) fn restart(&mut self, i: usize) {
        self.members[i].agent.restart();
        self.members[i].life = Life::Running;
        assert_eq!(self.members[i].agent.server, Some(self.rpc(i)));
    }

    /// Kills member `i`, empties its data dir and starts it again: a server
    /// that lost its disk and comes back at the same address.
    pub(crate) fn wipe_and_restart(&mut self, i: usize) {
        self.kill(i);
        let data = &self.members[i].data;
        std::fs::remove_dir_all(data).expect("wipe data dir");
        std::fs::create_dir_all(data).expect("recreate data dir");
        self.restart(i);
    }

    // ---- HTTP ----

    /// One HTTP request to member `i`. `Err` when no answer came (refused,
    /// reset, or [`CLIENT_TIMEOUT`] passed).
    pub(crate) async fn http(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let m = &self.members[i];
        http_to(
            &self.client,
            &m.agent,
            m.place.netns.as_deref(),
            method,
            path,
            body,
        )
        .await
    }

    /// GET on member `i`.
    pub(crate) async fn get(&self, i: usize, path: &str) -> Result<Resp, String> {
        self.http(i, "GET", path, None).await
    }

    /// PUT JSON on member `i`.
    pub(crate) async fn put(&self, i: usize, path: &str, body: &Value) -> Result<Resp, String> {
        self.http(i, "PUT", path, Some(body)).await
    }

    /// Registers one instance of `service` through member `i` with the
    /// catalog endpoint: its own node `<id>-node` at `addr`, port `port`.
    pub(crate) async fn register(
        &self,
        i: usize,
        service: &str,
        id: &str,
        addr: &str,
        port: u16,
    ) -> Result<Resp, String> {
        self.put(
            i,
            "/v1/catalog/register",
            &register_body(service, id, addr, port),
        )
        .await
    }

    /// Registers like [`Self::register`] and asserts it is acknowledged,
    /// repeating the same (idempotent) registration while the answer is
    /// "No cluster leader": an election a slow machine provoked is not what
    /// the callers test. Any other failure, or no answer, fails at once.
    pub(crate) async fn register_acked(
        &self,
        i: usize,
        service: &str,
        id: &str,
        addr: &str,
        port: u16,
    ) {
        let what = format!("registration of {id} through s{}", i + 1);
        self.wait_until(&what, SETTLE_DEADLINE, || async {
            let r = self
                .register(i, service, id, addr, port)
                .await
                .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
            match r.status {
                s if (200..300).contains(&s) => Ok(()),
                500 if r.text.contains("No cluster leader") => Err(r.text),
                _ => panic!("{what}: {r:?}"),
            }
        })
        .await;
    }

    /// Who member `i` says leads: `Some("")` when it knows none, `None` when
    /// it did not answer.
    pub(crate) async fn leader_seen_by(&self, i: usize) -> Option<String> {
        let r = self.get(i, "/v1/status/leader").await.ok()?;
        (r.status == 200).then(|| r.json().as_str().unwrap_or_default().to_string())
    }

    /// Member `i`'s `/v1/operator/raft/configuration` servers.
    pub(crate) async fn raft_servers(&self, i: usize) -> Result<Vec<Value>, String> {
        let r = self.get(i, "/v1/operator/raft/configuration").await?;
        if r.status != 200 {
            return Err(format!("raft configuration: {} {}", r.status, r.text));
        }
        match r.json()["Servers"].as_array() {
            Some(s) => Ok(s.clone()),
            None => Err(format!("raft configuration without Servers: {}", r.text)),
        }
    }

    /// Reads `service` from member `i` with the given consistency (`stale`,
    /// `consistent`, or `""` for the default).
    pub(crate) async fn service(
        &self,
        i: usize,
        service: &str,
        mode: &str,
    ) -> Result<ServiceView, String> {
        let q = if mode.is_empty() {
            String::new()
        } else {
            format!("?{mode}")
        };
        let r = self
            .get(i, &format!("/v1/catalog/service/{service}{q}"))
            .await?;
        if r.status != 200 {
            return Err(format!(
                "read {service}{q} on s{}: {} {}",
                i + 1,
                r.status,
                r.text
            ));
        }
        let ids = r
            .json()
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["ServiceID"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ServiceView {
            ids,
            index: r.index.unwrap_or(0),
        })
    }

    // ---- waiting for conditions ----

    /// Waits until every member in `who` names the same leader, which is one
    /// of `who`; returns its index.
    pub(crate) async fn wait_leader_among(&self, who: &[usize], deadline: Duration) -> usize {
        let what = format!(
            "one leader known by all of {:?}",
            who.iter()
                .map(|i| format!("s{}", i + 1))
                .collect::<Vec<_>>()
        );
        self.wait_until(&what, deadline, || async {
            let mut seen = BTreeMap::new();
            for &i in who {
                seen.insert(i, self.leader_seen_by(i).await);
            }
            let first = seen.values().next().cloned().flatten().unwrap_or_default();
            let leader = self.by_rpc(&first);
            match leader {
                Some(l)
                    if who.contains(&l) && seen.values().all(|v| v.as_deref() == Some(&first)) =>
                {
                    Ok(l)
                }
                _ => Err(format!("leader seen by each: {seen:?}")),
            }
        })
        .await
    }

    /// Waits until all running members agree on a leader; returns it.
    pub(crate) async fn leader(&self) -> usize {
        self.wait_leader_among(&self.running(), SETTLE_DEADLINE)
            .await
    }

    /// The running members other than `leader`.
    pub(crate) fn followers(&self, leader: usize) -> Vec<usize> {
        self.running()
            .into_iter()
            .filter(|&i| i != leader)
            .collect()
    }

    /// Waits until all running members agree on a leader and the leader's
    /// Raft configuration has every member as a voter, at its address.
    pub(crate) async fn wait_formed(&self) -> usize {
        let leader = self.wait_leader_among(&self.running(), FORM_DEADLINE).await;
        self.wait_voters(leader, FORM_DEADLINE).await;
        self.wait_leader_among(&self.running(), FORM_DEADLINE).await
    }

    /// Waits until member `i`'s Raft configuration lists exactly the cluster's
    /// members as voters, at their addresses; returns the servers.
    pub(crate) async fn wait_voters(&self, i: usize, deadline: Duration) -> Vec<Value> {
        let want: BTreeSet<String> = (0..self.len()).map(|j| self.rpc(j).to_string()).collect();
        self.wait_until("every member a voter", deadline, || async {
            let servers = self.raft_servers(i).await?;
            let voters: BTreeSet<String> = servers
                .iter()
                .filter(|s| s["Voter"] == json!(true))
                .filter_map(|s| s["Address"].as_str().map(String::from))
                .collect();
            if voters == want && servers.len() == want.len() {
                Ok(servers)
            } else {
                Err(format!("configuration on s{}: {servers:?}", i + 1))
            }
        })
        .await
    }

    /// Waits until every member in `who` has applied the same `service`
    /// instances at the same index (read with `?stale`, so each answers from
    /// its own state); returns that view.
    pub(crate) async fn wait_converged(
        &self,
        who: &[usize],
        service: &str,
        deadline: Duration,
    ) -> ServiceView {
        let what = format!("{service} converged on {who:?}");
        self.wait_until(&what, deadline, || async {
            let mut views = Vec::new();
            for &i in who {
                views.push(self.service(i, service, "stale").await?);
            }
            if views.windows(2).all(|w| w[0] == w[1]) {
                Ok(views.swap_remove(0))
            } else {
                Err(format!(
                    "views (index, count): {:?}",
                    views
                        .iter()
                        .map(|v| (v.index, v.ids.len()))
                        .collect::<Vec<_>>()
                ))
            }
        })
        .await
    }

    /// Polls `f` until it returns `Ok` or `deadline` passes; then panics with
    /// `what` and the last error.
    pub(crate) async fn wait_until<T, F, Fut>(&self, what: &str, deadline: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let end = Instant::now() + deadline;
        loop {
            match f().await {
                Ok(v) => return v,
                Err(last) => assert!(
                    Instant::now() < end,
                    "timed out after {deadline:?} waiting for {what}; last: {last}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // The test failed: show what every server said (its tail), since the
        // cause is usually on another member than the one asserted about.
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let label = format!("s{} ({}, {:?})", i + 1, m.place.rpc(), m.life);
            write_tail(&mut out, &label, &m.agent);
        }
        eprintln!("{out}");
    }
}

/// One client agent of [`Clients`].
struct ClientMember {
    agent: TestAgent,
    /// Its node name.
    name: String,
    /// The network namespace it runs in; `None` for the test's own.
    netns: Option<String>,
    life: Life,
}

/// Client agents (no `--server`) in a [`Cluster`]'s LAN gossip pool, each
/// on its own loopback address with its own data dir. Its gossip port is
/// fixed for its life, as on a real machine, unless moved on purpose
/// ([`Clients::restart_moved`]); DNS and HTTP ports are 0, so a restarted
/// client answers on new ones. A client finds the servers through the pool
/// and serves DNS and HTTP from its own replica of the catalog; it has no
/// server RPC listener.
pub(crate) struct Clients {
    members: Vec<ClientMember>,
    client: reqwest::Client,
    /// Holds every client's data dir; removed when dropped.
    dir: tempfile::TempDir,
}

impl Clients {
    /// No clients yet.
    pub(crate) fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .expect("http client");
        Self {
            members: Vec::new(),
            client,
            dir: temp_dir(),
        }
    }

    /// Starts clients `c1` to `cn` in `servers`' pool, each with `extra`
    /// flags, and waits until each reported its listeners (not until it
    /// joined: see [`Self::wait_in_pool`]).
    pub(crate) fn start(servers: &Cluster, n: usize, extra: &[&str]) -> Self {
        let mut c = Self::new();
        for k in 1..=n {
            c.add(servers, &format!("c{k}"), extra);
        }
        c
    }

    /// Starts client `name` with `extra` flags, told every server's gossip
    /// address (a different one first for each client, so that they do
    /// not all join through the same server); returns its index.
    pub(crate) fn add(&mut self, servers: &Cluster, name: &str, extra: &[&str]) -> usize {
        self.add_at(servers, name, Placement::loopback(), extra)
    }

    /// [`Self::add`] at `place` (its address, gossip port and namespace).
    pub(crate) fn add_at(
        &mut self,
        servers: &Cluster,
        name: &str,
        place: Placement,
        extra: &[&str],
    ) -> usize {
        let i = self.members.len();
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(&data).expect("create data dir");
        let data = data.display().to_string();
        let joins: Vec<String> = (0..servers.len())
            .map(|k| servers.serf((i + k) % servers.len()).to_string())
            .collect();
        let serf_port = place.serf_port.to_string();
        let mut args: Vec<&str> = vec![
            "--node",
            name,
            "--data-dir",
            &data,
            "--serf-lan-port",
            &serf_port,
        ];
        args.extend_from_slice(extra);
        for j in &joins {
            args.extend(["--retry-join", j.as_str()]);
        }
        let prefix: Vec<String> = match &place.netns {
            Some(ns) => vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()],
            None => Vec::new(),
        };
        let agent = TestAgent::start_in(&prefix, &args, place.ip);
        assert_eq!(agent.server, None, "client {name} runs no server RPC");
        self.members.push(ClientMember {
            agent,
            name: name.to_string(),
            netns: place.netns,
            life: Life::Running,
        });
        i
    }

    /// Number of clients, whatever their state.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Client `i`'s agent (its addresses).
    pub(crate) fn agent(&self, i: usize) -> &TestAgent {
        &self.members[i].agent
    }

    /// Client `i`'s node name.
    pub(crate) fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Client `i`'s address, which its services are registered at.
    pub(crate) fn ip(&self, i: usize) -> IpAddr {
        self.members[i].agent.ip
    }

    /// Panics if any client's log (across restarts) shows a panic.
    pub(crate) fn assert_no_client_panicked(&self) {
        for m in &self.members {
            if let Some(p) = first_panic(&m.agent) {
                panic!("client {} panicked: {p}", m.name);
            }
        }
    }

    // ---- process control ----

    /// SIGKILL client `i`: its machine died.
    pub(crate) fn kill(&mut self, i: usize) {
        self.members[i].agent.kill();
        self.members[i].life = Life::Dead;
    }

    /// SIGSTOP client `i`: its machine hangs.
    pub(crate) fn pause(&mut self, i: usize) {
        self.members[i].agent.pause();
        self.members[i].life = Life::Paused;
    }

    /// SIGCONT client `i` after [`Self::pause`].
    pub(crate) fn resume(&mut self, i: usize) {
        self.members[i].agent.resume();
        self.members[i].life = Life::Running;
    }

    /// SIGTERM client `i` and wait for its exit status.
    pub(crate) fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let status = self.members[i].agent.terminate();
        self.members[i].life = Life::Dead;
        status
    }

    /// Waits up to `timeout` for client `i` to exit on its own.
    pub(crate) fn wait_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let status = self.members[i].agent.wait_exit(timeout);
        if status.is_some() {
            self.members[i].life = Life::Dead;
        }
        status
    }

    /// Restarts client `i` (killing it first if it runs) with the same
    /// arguments, address and data dir.
    pub(crate) fn restart(&mut self, i: usize) {
        self.members[i].agent.restart();
        self.members[i].life = Life::Running;
        assert_eq!(self.members[i].agent.server, None);
    }

    /// Restarts client `i` like [`Self::restart`], but gossiping from another
    /// port: the same node at a new gossip address.
    pub(crate) fn restart_moved(&mut self, i: usize) {
        let ip = self.ip(i);
        let port = std::net::UdpSocket::bind((ip, 0))
            .and_then(|u| u.local_addr())
            .expect("probe a free gossip port")
            .port();
        self.members[i]
            .agent
            .restart_with("--serf-lan-port", &port.to_string());
        self.members[i].life = Life::Running;
        assert_eq!(self.members[i].agent.server, None);
    }

    // ---- HTTP ----

    /// One HTTP request to client `i`; `Err` when no answer came.
    pub(crate) async fn http(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let m = &self.members[i];
        http_to(
            &self.client,
            &m.agent,
            m.netns.as_deref(),
            method,
            path,
            body,
        )
        .await
    }

    /// GET on client `i`.
    pub(crate) async fn get(&self, i: usize, path: &str) -> Result<Resp, String> {
        self.http(i, "GET", path, None).await
    }

    /// PUT JSON on client `i`.
    pub(crate) async fn put(&self, i: usize, path: &str, body: &Value) -> Result<Resp, String> {
        self.http(i, "PUT", path, Some(body)).await
    }

    /// Registers service `name` (ID = name) on client `i`'s own node through
    /// its agent API, at the client's address.
    pub(crate) async fn register_service(
        &self,
        i: usize,
        name: &str,
        port: u16,
    ) -> Result<Resp, String> {
        let body = json!({"Name": name, "ID": name, "Port": port});
        self.put(i, "/v1/agent/service/register", &body).await
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut out = String::new();
        for m in &self.members {
            let label = format!("client {} ({}, {:?})", m.name, m.agent.ip, m.life);
            write_tail(&mut out, &label, &m.agent);
        }
        eprintln!("{out}");
    }
}

/// Appends the last 150 lines of `agent`'s log to `out` under a header
/// naming it `label`, after any panic it logged.
fn write_tail(out: &mut String, label: &str, agent: &TestAgent) {
    let log = agent.log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(150)..];
    let _ = writeln!(out, "==== {label} last {} log lines ====", tail.len());
    // A panic inside an agent scrolls out of the tail under the errors it
    // causes; show it (and its message line) first.
    for (k, l) in lines.iter().enumerate() {
        if l.contains("panicked at") {
            let msg = lines.get(k + 1).copied().unwrap_or_default();
            let _ = writeln!(out, "PANIC in {label}: {l}\n  {msg}");
        }
    }
    for l in tail {
        let _ = writeln!(out, "{l}");
    }
}

/// The first panic `agent` logged (across restarts), with its message line.
fn first_panic(agent: &TestAgent) -> Option<String> {
    let log = agent.log();
    let lines: Vec<&str> = log.lines().collect();
    let k = lines.iter().position(|l| l.contains("panicked at"))?;
    Some(format!(
        "{}\n  {}",
        lines[k],
        lines.get(k + 1).copied().unwrap_or_default()
    ))
}

/// One HTTP request to `agent` over loopback with `client`.
async fn request(
    client: &reqwest::Client,
    agent: &TestAgent,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Resp, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, agent.url(path));
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    let index = header(r.headers(), "x-consul-index").and_then(|v| v.parse().ok());
    let known_leader = header(r.headers(), "x-consul-knownleader").map(|v| v == "true");
    let text = r.text().await.map_err(|e| format!("{e:?}"))?;
    Ok(Resp {
        status,
        index,
        known_leader,
        text,
    })
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(String::from)
}

/// The catalog registration of one instance on its own node.
pub(crate) fn register_body(service: &str, id: &str, addr: &str, port: u16) -> Value {
    json!({
        "Node": format!("{id}-node"),
        "Address": addr,
        "Service": {"ID": id, "Service": service, "Port": port},
    })
}

/// One HTTP request through `curl` inside network namespace `ns`.
/// One HTTP request to `agent`: through curl inside its network namespace
/// when it runs in one (the test's own sockets cannot reach it there).
async fn http_to(
    client: &reqwest::Client,
    agent: &TestAgent,
    netns: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Resp, String> {
    match netns {
        Some(ns) => curl_in(ns, agent.http, method, path, body).await,
        None => request(client, agent, method, path, body).await,
    }
}

async fn curl_in(
    ns: &str,
    http: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Resp, String> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", ns, "curl", "-sS", "-i", "--max-time"])
        .arg(CLIENT_TIMEOUT.as_secs().to_string())
        // No `Expect: 100-continue` round trip: one request, one answer.
        .args(["-H", "Expect:", "-X", method]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(b.to_string());
    }
    let out = cmd
        .arg(format!("http://{http}{path}"))
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("run curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl {method} {path} in {ns}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_http(&String::from_utf8_lossy(&out.stdout))
}

/// Splits `curl -i` output into status, the headers we use, and body.
fn parse_http(raw: &str) -> Result<Resp, String> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {raw:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {raw:?}"))?;
    let mut resp = Resp {
        status,
        index: None,
        known_leader: None,
        text: body.to_string(),
    };
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "x-consul-index" => resp.index = v.trim().parse().ok(),
            "x-consul-knownleader" => resp.known_leader = Some(v.trim() == "true"),
            _ => {}
        }
    }
    Ok(resp)
}

/// Writers that register unique instances of one service through a set of
/// members as fast as they are answered, and remember every acknowledged one.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    /// Failed attempts by kind, to explain a failing test.
    failures: Arc<Mutex<BTreeMap<String, usize>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `writers` writers; writer `w` sends its `k`th write to
    /// `cluster` member `targets[(w + k) % len]`. IDs are `<service>-<w>-<k>`.
    pub(crate) fn start(
        cluster: &Cluster,
        targets: &[usize],
        writers: usize,
        service: &str,
    ) -> Self {
        let urls: Vec<String> = targets
            .iter()
            .map(|&i| cluster.agent(i).url("/v1/catalog/register"))
            .collect();
        // A longer timeout than the checks use: a writer must see the
        // server's own answer to know whether a write was acknowledged.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let failures = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = (0..writers)
            .map(|w| {
                let (urls, client, service) = (urls.clone(), client.clone(), service.to_string());
                let (stop, acked, failures) = (stop.clone(), acked.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut k = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("{service}-{w}-{k}");
                        let url = &urls[(w + k) % urls.len()];
                        k += 1;
                        let body = register_body(&service, &id, "10.200.0.1", 1);
                        let kind = match client.put(url).json(&body).send().await {
                            Ok(r) if r.status().is_success() => {
                                acked.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
                                continue;
                            }
                            Ok(r) => {
                                let s = r.status().as_u16();
                                format!("{s} {}", r.text().await.unwrap_or_default().trim())
                            }
                            Err(e) if e.is_connect() => "connect".to_string(),
                            Err(e) if e.is_timeout() => "client timeout".to_string(),
                            Err(e) => format!("{e}"),
                        };
                        *failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(kind)
                            .or_default() += 1;
                        // Pace retries against a dead or leaderless member
                        // instead of spinning on it.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            acked,
            failures,
            tasks,
        }
    }

    /// Acknowledged writes so far.
    pub(crate) fn acked(&self) -> usize {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Failed attempts so far, by kind.
    pub(crate) fn failures(&self) -> BTreeMap<String, usize> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `n` writes were acknowledged.
    pub(crate) async fn wait_acked(&self, cluster: &Cluster, n: usize, deadline: Duration) {
        let what = format!("{n} acknowledged writes");
        cluster
            .wait_until(&what, deadline, || async {
                let got = self.acked();
                if got >= n {
                    Ok(())
                } else {
                    Err(format!(
                        "{got} acknowledged; failures {:?}",
                        self.failures()
                    ))
                }
            })
            .await;
    }

    /// Stops the writers, waits for their last requests, and returns every
    /// acknowledged ID.
    pub(crate) async fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Shown with --nocapture or when the test fails: how the cluster
        // answered the writes it did not acknowledge.
        eprintln!(
            "load: {} acknowledged; failed attempts by kind: {:?}",
            acked.len(),
            self.failures.lock().unwrap_or_else(|e| e.into_inner())
        );
        acked
    }
}

#[test]
fn curl_output_parses() {
    let r = parse_http(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\nX-Consul-Index: 42\r\n\
         X-Consul-KnownLeader: false\r\n\r\nNo cluster leader",
    )
    .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.index, Some(42));
    assert_eq!(r.known_leader, Some(false));
    assert_eq!(r.text, "No cluster leader");
    assert!(parse_http("garbage").is_err());
}
