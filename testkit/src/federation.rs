//! Several datacenters of real agents, federated through the WAN pool: one
//! [`Cluster`] per datacenter, the servers of datacenter k on
//! 127.0.k.0/24 (so an address says which datacenter it is in), each
//! datacenter formed on its own, then joined with ONE WAN join per
//! datacenter (`PUT /v1/agent/join/<addr>?wan=1` from its first server to
//! the first datacenter's), as an operator would; join flooding brings in
//! the rest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{Agent, AgentBuilder, Trellis};
use crate::cluster::Cluster;
use crate::net::Placement;
use crate::wait::{FORM_DEADLINE, wait_until_async};

/// A change applied to how every member of every datacenter is launched.
type Change = Arc<dyn Fn(AgentBuilder) -> AgentBuilder + Send + Sync>;

/// How to launch several datacenters.
pub struct FederationBuilder {
    trellis: Trellis,
    datacenters: Vec<String>,
    servers: usize,
    each: Vec<Change>,
    /// Where each datacenter's servers run, when not on loopback.
    placed: Option<Vec<Vec<Placement>>>,
}

impl Trellis {
    /// `servers` servers in each of `datacenters` (the first is where the
    /// others WAN-join).
    pub fn federation(&self, datacenters: &[&str], servers: usize) -> FederationBuilder {
        FederationBuilder {
            trellis: self.clone(),
            datacenters: datacenters.iter().map(|d| d.to_string()).collect(),
            servers,
            each: Vec::new(),
            placed: None,
        }
    }
}

impl FederationBuilder {
    /// Applies `change` to every member of every datacenter.
    pub fn each(
        mut self,
        change: impl Fn(AgentBuilder) -> AgentBuilder + Send + Sync + 'static,
    ) -> Self {
        self.each.push(Arc::new(change));
        self
    }

    /// Runs datacenter k's servers at `places[k]` (hosts of a test
    /// [`Net`](crate::netns::Net), say) instead of on loopback.
    pub fn placed(mut self, places: Vec<Vec<Placement>>) -> Self {
        assert_eq!(
            places.len(),
            self.datacenters.len(),
            "one list per datacenter"
        );
        assert!(
            places.iter().all(|p| p.len() == self.servers),
            "one place per server"
        );
        self.placed = Some(places);
        self
    }

    /// Starts every datacenter and waits until each has formed, without
    /// joining them in the WAN pool.
    pub async fn start_apart(mut self) -> Federation {
        let mut dcs = Vec::new();
        let mut placed = self.placed.take().map(Vec::into_iter);
        for (k, dc) in self.datacenters.iter().enumerate() {
            let subnet = u8::try_from(k + 1).expect("at most 255 datacenters");
            let places = match placed.as_mut().and_then(Iterator::next) {
                Some(places) => places,
                None => (0..self.servers)
                    .map(|_| Placement::loopback_in(subnet))
                    .collect(),
            };
            let mut b = self.trellis.cluster().servers_at(places);
            let name = dc.clone();
            b = b.each(move |a| a.datacenter(&name));
            for change in &self.each {
                let change = change.clone();
                b = b.each(move |a| change(a));
            }
            dcs.push((dc.clone(), subnet, b.start().await));
        }
        Federation { dcs }
    }

    /// [`Self::start_apart`], then one WAN join per datacenter after the
    /// first (its `s1` joins the first datacenter's `s1`), then waits until
    /// every server lists every server alive in the WAN pool.
    pub async fn start(self) -> Federation {
        let f = self.start_apart().await;
        let hub = f.dcs[0].2.node("s1");
        for (_, _, c) in &f.dcs[1..] {
            f.join_wan(c.node("s1"), hub).await;
        }
        f.wait_wan_alive(FORM_DEADLINE).await;
        f
    }
}

/// Datacenters of servers (and the client agents tests add), killed when
/// dropped.
pub struct Federation {
    /// Each datacenter's name, subnet and cluster, in the builder's order.
    dcs: Vec<(String, u8, Cluster)>,
}

/// A WAN member as `/v1/agent/members?wan=1` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WanMember {
    /// `node.dc`.
    pub name: String,
    /// Serf's status code: 1 alive, 3 left, 4 failed.
    pub status: u64,
    /// Its `dc` tag.
    pub dc: String,
}

impl Federation {
    /// The cluster of datacenter `dc`; panics if there is none.
    pub fn dc(&self, dc: &str) -> &Cluster {
        &self.entry(dc).2
    }

    fn entry(&self, dc: &str) -> &(String, u8, Cluster) {
        self.dcs
            .iter()
            .find(|(name, _, _)| name == dc)
            .unwrap_or_else(|| panic!("no datacenter named {dc}"))
    }

    /// The datacenters' names, in the builder's order.
    pub fn names(&self) -> Vec<String> {
        self.dcs.iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// Starts client agent `name` in datacenter `dc`, on its subnet, with
    /// `change` applied after the cluster's own.
    pub fn add_client(
        &mut self,
        dc: &str,
        name: &str,
        change: impl FnOnce(AgentBuilder) -> AgentBuilder,
    ) -> &Agent {
        let subnet = self.entry(dc).1;
        self.add_client_at(dc, name, Placement::loopback_in(subnet), change)
    }

    /// As [`Self::add_client`], at `place` (a host of a test net, say).
    pub fn add_client_at(
        &mut self,
        dc: &str,
        name: &str,
        place: Placement,
        change: impl FnOnce(AgentBuilder) -> AgentBuilder,
    ) -> &Agent {
        let (_, _, cluster) = self
            .dcs
            .iter_mut()
            .find(|(n, _, _)| n == dc)
            .unwrap_or_else(|| panic!("no datacenter named {dc}"));
        cluster.add_client_at(name, place, change)
    }

    /// Every server of every datacenter.
    pub fn servers(&self) -> impl Iterator<Item = &Agent> {
        self.dcs.iter().flat_map(|(_, _, c)| c.servers())
    }

    /// Has `from` WAN-join `to` over HTTP (`?wan=1`); panics if it fails.
    pub async fn join_wan(&self, from: &Agent, to: &Agent) {
        let path = format!("/v1/agent/join/{}?wan=1", to.serf_wan());
        let r = from
            .request("PUT", &path, None)
            .await
            .unwrap_or_else(|e| panic!("WAN join from {}: {e}", from.name()));
        assert_eq!(r.status, 200, "WAN join from {}: {}", from.name(), r.text);
    }

    /// Waits until every running server lists every server of every
    /// datacenter alive in the WAN pool.
    pub async fn wait_wan_alive(&self, deadline: Duration) {
        let want: Vec<String> = self
            .dcs
            .iter()
            .flat_map(|(dc, _, c)| c.servers().map(move |s| format!("{}.{dc}", s.name())))
            .collect();
        for (_, _, c) in &self.dcs {
            for s in c.running_servers() {
                let what = format!("{} lists {} alive WAN members", s.name(), want.len());
                wait_until_async(&what, deadline, || async {
                    let seen = wan_members(s).await?;
                    let alive: Vec<&str> = seen
                        .values()
                        .filter(|m| m.status == 1)
                        .map(|m| m.name.as_str())
                        .collect();
                    if want.iter().all(|w| alive.contains(&w.as_str())) {
                        Ok(())
                    } else {
                        Err(format!("seen: {seen:?}"))
                    }
                })
                .await;
            }
        }
    }
}

/// `agent`'s WAN members by name, as `/v1/agent/members?wan=1` lists them
/// (none for a client agent's `null`).
pub async fn wan_members(agent: &Agent) -> Result<BTreeMap<String, WanMember>, String> {
    let r = agent.get("/v1/agent/members?wan=1").await?;
    if r.status != 200 {
        return Err(format!("members?wan=1: {} {}", r.status, r.text));
    }
    let list = r.json();
    if list.is_null() {
        // A client agent's answer, as Consul's: none.
        return Ok(BTreeMap::new());
    }
    let list = list.as_array().ok_or("members?wan=1 is not a list")?;
    Ok(list
        .iter()
        .map(|m| {
            let name = m["Name"].as_str().unwrap_or_default().to_string();
            let member = WanMember {
                name: name.clone(),
                status: m["Status"].as_u64().unwrap_or_default(),
                dc: m["Tags"]["dc"].as_str().unwrap_or_default().to_string(),
            };
            (name, member)
        })
        .collect())
}

/// `agent`'s `/v1/catalog/datacenters`.
pub async fn datacenters(agent: &Agent) -> Result<Vec<String>, String> {
    let r = agent.get("/v1/catalog/datacenters").await?;
    if r.status != 200 {
        return Err(format!("catalog/datacenters: {} {}", r.status, r.text));
    }
    serde_json::from_value::<Vec<String>>(r.json()).map_err(|e| format!("{e}: {}", r.text))
}
