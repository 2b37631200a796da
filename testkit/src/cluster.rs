//! A cluster of real agents with named members: servers `s1`..`sN` forming
//! one Raft cluster, and client agents the test adds by name (`c1`) in
//! their LAN gossip pool. A test says `cluster.node("s2").pause()`, never
//! "member 1".
//!
//! Every member gets its own address, and server RPC and gossip ports chosen
//! before it starts, so a restarted member comes back at the same address,
//! as it would on a real machine. Servers find each other with
//! `--retry-join` and bootstrap once all `--bootstrap-expect N` know each
//! other. Every wait has a deadline and reports the last thing it saw; when
//! a test fails, the cluster prints each member's log as it is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::{Agent, AgentBuilder, Role, Trellis};
use crate::api::{Consistency, ServiceView};
use crate::net::Placement;
use crate::process::Life;
use crate::wait::{CLIENT_TIMEOUT, FORM_DEADLINE, SETTLE_DEADLINE, wait_until_async};

/// A change applied to how every member is launched.
type Change = Arc<dyn Fn(AgentBuilder) -> AgentBuilder + Send + Sync>;

/// How to launch a cluster.
pub struct ClusterBuilder {
    trellis: Trellis,
    servers: Vec<Placement>,
    each: Vec<Change>,
}

impl Trellis {
    /// A cluster of this binary's agents.
    pub fn cluster(&self) -> ClusterBuilder {
        ClusterBuilder {
            trellis: self.clone(),
            servers: Vec::new(),
            each: Vec::new(),
        }
    }
}

impl ClusterBuilder {
    /// `n` servers on loopback.
    pub fn servers(self, n: usize) -> Self {
        self.servers_at((0..n).map(|_| Placement::loopback()).collect())
    }

    /// One server per placement.
    pub fn servers_at(mut self, places: Vec<Placement>) -> Self {
        self.servers.extend(places);
        self
    }

    /// Applies `change` to every member, including clients added later.
    pub fn each(
        mut self,
        change: impl Fn(AgentBuilder) -> AgentBuilder + Send + Sync + 'static,
    ) -> Self {
        self.each.push(Arc::new(change));
        self
    }

    /// Starts every server and waits for each one's `listening` line, not
    /// for a leader. Client agents join with [`Cluster::add_client`].
    pub fn launch(self) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let n = self.servers.len();
        let mut c = Cluster {
            trellis: self.trellis,
            members: Vec::new(),
            each: self.each,
            dir,
        };
        for (i, place) in self.servers.iter().enumerate() {
            let name = format!("s{}", i + 1);
            let mut b = c
                .trellis
                .server()
                .node(&name)
                .bootstrap_expect(n)
                .place(place);
            for (j, other) in self.servers.iter().enumerate() {
                if j != i {
                    b = b.retry_join(other.serf());
                }
            }
            let agent = c.launch_member(&name, b);
            assert_eq!(
                agent.addrs().server,
                Some(place.rpc()),
                "server {name} reports its RPC address"
            );
            c.members.push(agent);
        }
        c
    }

    /// [`Self::launch`], then waits until the servers elected a leader that
    /// all of them know, with all of them as voters.
    pub async fn start(self) -> Cluster {
        let c = self.launch();
        c.wait_formed().await;
        c
    }
}

/// Servers and client agents, killed when dropped.
pub struct Cluster {
    trellis: Trellis,
    /// Servers first, in order, then clients; dropped (killed) before
    /// `dir` is removed.
    members: Vec<Agent>,
    each: Vec<Change>,
    /// Holds every member's data dir.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// `b` for member `name`, with its data dir in the cluster's directory
    /// and every `each` change, started.
    fn launch_member(&self, name: &str, b: AgentBuilder) -> Agent {
        let mut b = b
            .data_dir(self.dir.path().join(name))
            .http_timeout(CLIENT_TIMEOUT);
        for change in &self.each {
            b = change(b);
        }
        b.start()
    }

    /// Starts client agent `name` on loopback with `change` applied after
    /// the cluster's own; returns it once it reported its listeners (not
    /// once it joined).
    pub fn add_client(
        &mut self,
        name: &str,
        change: impl FnOnce(AgentBuilder) -> AgentBuilder,
    ) -> &Agent {
        self.add_client_at(name, Placement::loopback(), change)
    }

    /// [`Self::add_client`] at `place`. It is told every server's gossip
    /// address, a different one first for each client, so that they do not
    /// all join through the same server.
    pub fn add_client_at(
        &mut self,
        name: &str,
        place: Placement,
        change: impl FnOnce(AgentBuilder) -> AgentBuilder,
    ) -> &Agent {
        let k = self.clients().count();
        let servers: Vec<_> = self.servers().map(Agent::serf).collect();
        let mut b = self.trellis.client().node(name).place(&place);
        for j in 0..servers.len() {
            b = b.retry_join(servers[(k + j) % servers.len()]);
        }
        // The cluster's changes first, then this client's own (its key may
        // differ from everyone's).
        let mut b = b
            .data_dir(self.dir.path().join(name))
            .http_timeout(CLIENT_TIMEOUT);
        for c in &self.each {
            b = c(b);
        }
        let agent = change(b).start();
        assert_eq!(
            agent.addrs().server,
            None,
            "client {name} runs no server RPC"
        );
        self.members.push(agent);
        self.members.last().expect("just pushed")
    }

    /// The member named `name`; panics if there is none.
    pub fn node(&self, name: &str) -> &Agent {
        self.members
            .iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no member named {name}"))
    }

    /// Every member, servers first.
    pub fn members(&self) -> impl Iterator<Item = &Agent> {
        self.members.iter()
    }

    /// The servers, in order.
    pub fn servers(&self) -> impl Iterator<Item = &Agent> {
        self.members.iter().filter(|m| m.role() == Role::Server)
    }

    /// The client agents, in order.
    pub fn clients(&self) -> impl Iterator<Item = &Agent> {
        self.members.iter().filter(|m| m.role() == Role::Client)
    }

    /// Servers whose process runs (not killed, not paused, not exited).
    pub fn running_servers(&self) -> Vec<&Agent> {
        self.servers()
            .filter(|m| m.life() == Life::Running)
            .collect()
    }

    /// The server whose RPC address is `addr`.
    pub fn by_rpc(&self, addr: &str) -> Option<&Agent> {
        self.servers().find(|m| m.rpc().to_string() == addr)
    }

    /// Panics if any member's log (across restarts) shows a panic: an agent
    /// that panicked inside is broken even when the cluster recovered.
    pub fn assert_no_panics(&self) {
        for m in &self.members {
            if let Some(p) = m.log_handle().first_panic() {
                panic!("{} panicked: {p}", m.name());
            }
        }
    }

    // ---- waiting for conditions ----

    /// Waits until every server in `who` names the same leader, which is one
    /// of `who`; returns it.
    pub async fn wait_leader_among(&self, who: &[&Agent], deadline: Duration) -> &Agent {
        let names: Vec<&str> = who.iter().map(|m| m.name()).collect();
        let what = format!("one leader known by all of {names:?}");
        wait_until_async(&what, deadline, || async {
            let mut seen = BTreeMap::new();
            for m in who {
                seen.insert(m.name(), m.leader_seen().await);
            }
            let first = seen.values().next().cloned().flatten().unwrap_or_default();
            match self.by_rpc(&first) {
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

    /// Waits until all running servers agree on a leader; returns it.
    pub async fn leader(&self) -> &Agent {
        self.wait_leader_among(&self.running_servers(), SETTLE_DEADLINE)
            .await
    }

    /// The running servers other than `leader`.
    pub fn followers(&self, leader: &Agent) -> Vec<&Agent> {
        self.running_servers()
            .into_iter()
            .filter(|m| *m != leader)
            .collect()
    }

    /// Waits until all running servers agree on a leader and the leader's
    /// Raft configuration has every server as a voter, at its address.
    pub async fn wait_formed(&self) -> &Agent {
        let leader = self
            .wait_leader_among(&self.running_servers(), FORM_DEADLINE)
            .await;
        self.wait_voters(leader, FORM_DEADLINE).await;
        self.wait_leader_among(&self.running_servers(), FORM_DEADLINE)
            .await
    }

    /// Waits until `on`'s Raft configuration lists exactly the cluster's
    /// servers as voters, at their addresses; returns the servers.
    pub async fn wait_voters(&self, on: &Agent, deadline: Duration) -> Vec<Value> {
        let want: BTreeSet<String> = self.servers().map(|m| m.rpc().to_string()).collect();
        wait_until_async("every server a voter", deadline, || async {
            let servers = on.raft_servers().await?;
            let voters: BTreeSet<String> = servers
                .iter()
                .filter(|s| s["Voter"] == json!(true))
                .filter_map(|s| s["Address"].as_str().map(String::from))
                .collect();
            if voters == want && servers.len() == want.len() {
                Ok(servers)
            } else {
                Err(format!("configuration on {}: {servers:?}", on.name()))
            }
        })
        .await
    }

    /// Waits until every agent in `who` has applied the same `service`
    /// instances at the same index (read with `?stale`, so each answers from
    /// its own state); returns that view.
    pub async fn wait_converged(
        &self,
        who: &[&Agent],
        service: &str,
        deadline: Duration,
    ) -> ServiceView {
        let names: Vec<&str> = who.iter().map(|m| m.name()).collect();
        let what = format!("{service} converged on {names:?}");
        wait_until_async(&what, deadline, || async {
            let mut views = Vec::new();
            for m in who {
                views.push(m.service(service, Consistency::Stale).await?);
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // The test failed: show what every member said (its tail), since the
        // cause is usually on another member than the one asserted about.
        let mut out = String::new();
        for m in &self.members {
            let label = format!("{} ({}, {:?})", m.name(), m.ip(), m.life());
            out.push_str(&m.log_handle().report(&label));
        }
        eprintln!("{out}");
    }
}
