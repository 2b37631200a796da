//! Where the other datacenters are: which datacenters this server knows,
//! their servers as the WAN pool sees them, and which of those to call
//! first.
//!
//! Fed by the WAN pool's membership (a second `gossip` pool that only
//! servers join, member names `node.dc`), read by whatever sends a request
//! to another datacenter (HTTP `?dc=`, DNS names of another datacenter,
//! prepared-query failover). A route is a list of server RPC addresses to
//! try in order within one deadline: servers gossip calls alive first (in
//! an order that spreads the load), those that failed a call in the last
//! [`PENALTY`] after them, and failed or departed members never. Consul
//! keeps calling a dead remote server until its 2–3 minute rebalance, at a
//! 10 s dial each (Consul #9185, #5595); here one failed call moves that
//! server to the back at once, and the WAN pool's verdict removes it.
//!
//! Unknown and unreachable are told apart: a datacenter no member names is
//! unknown ([`RouteError::Unknown`], Consul's `No path to datacenter`); one
//! whose servers are all failed or departed is unreachable
//! ([`RouteError::Unreachable`], Consul's `Remote DC has no server currently
//! reachable`).
//!
//! The order of [`Datacenters::names`] (own first, then by estimated round
//! trip, then by name) comes from the distances network coordinates give
//! ([`Datacenters::set_distances`]); without them, by name. The WAN
//! coordinates those distances came from are kept beside them
//! ([`Datacenters::set_coordinates`]), for `/v1/coordinate/datacenters`
//! here and on the client agents that ask this server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tokio::sync::watch;

use crate::coordinate::DatacenterCoordinates;
use crate::gossip::{Member, MemberStatus, Role};

/// How long a server that failed a call is tried only after the others.
pub const PENALTY: Duration = Duration::from_secs(30);

/// Why a request cannot be sent to a datacenter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No member of the WAN pool is of this datacenter (Consul's text,
    /// which clients match).
    #[error("No path to datacenter")]
    Unknown(String),
    /// The datacenter is known, but none of its servers is alive.
    #[error("Remote DC has no server currently reachable")]
    Unreachable(String),
}

impl RouteError {
    /// The datacenter the error is about.
    pub fn datacenter(&self) -> &str {
        match self {
            Self::Unknown(dc) | Self::Unreachable(dc) => dc,
        }
    }
}

/// The datacenters this agent can reach, and how.
#[derive(Debug)]
pub struct Datacenters {
    /// This agent's datacenter.
    local: String,
    /// The WAN pool's membership; `None` where there is no WAN pool (a
    /// client agent, which goes through its servers).
    wan: Option<watch::Receiver<Arc<Vec<Member>>>>,
    /// Servers (by RPC address) that failed a call, and when.
    penalties: Mutex<HashMap<SocketAddr, Instant>>,
    /// Estimated round trip to each datacenter, in seconds.
    distances: Mutex<HashMap<String, f64>>,
    /// The WAN coordinates of every datacenter's servers, by datacenter.
    coordinates: Mutex<Vec<DatacenterCoordinates>>,
}

impl Datacenters {
    /// The datacenters seen through `wan` (a WAN pool's membership), for an
    /// agent of datacenter `local`.
    pub fn new(local: impl Into<String>, wan: Option<watch::Receiver<Arc<Vec<Member>>>>) -> Self {
        Self {
            local: local.into(),
            wan,
            penalties: Mutex::default(),
            distances: Mutex::default(),
            coordinates: Mutex::default(),
        }
    }

    /// This agent's datacenter.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The WAN pool's members now; empty without a pool.
    pub fn members(&self) -> Arc<Vec<Member>> {
        self.wan
            .as_ref()
            .map_or_else(Arc::default, |w| Arc::clone(&w.borrow()))
    }

    /// Every known datacenter: this one first, then by estimated round
    /// trip, then by name. A datacenter whose servers all left is still
    /// known until the pool forgets them, as Consul's.
    pub fn names(&self) -> Vec<String> {
        let members = self.members();
        let mut others: Vec<String> = members
            .iter()
            .filter(|m| m.role == Role::Server && m.dc != self.local)
            .map(|m| m.dc.clone())
            .collect();
        others.sort();
        others.dedup();
        let distances = lock(&self.distances);
        let far = |dc: &String| distances.get(dc).copied().unwrap_or(f64::INFINITY);
        others.sort_by(|a, b| far(a).total_cmp(&far(b)));
        let mut names = vec![self.local.clone()];
        names.extend(others);
        names
    }

    /// The RPC addresses of `dc`'s servers to try, in order.
    pub fn route(&self, dc: &str) -> Result<Vec<SocketAddr>, RouteError> {
        let members = self.members();
        let of_dc: Vec<&Member> = members
            .iter()
            .filter(|m| m.role == Role::Server && m.dc == dc)
            .collect();
        if of_dc.is_empty() {
            return Err(RouteError::Unknown(dc.to_owned()));
        }
        let mut live: Vec<SocketAddr> = of_dc
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .filter_map(|m| m.rpc_addr)
            .collect();
        if live.is_empty() {
            return Err(RouteError::Unreachable(dc.to_owned()));
        }
        live.shuffle(&mut rand::rng());
        let now = Instant::now();
        let mut penalties = lock(&self.penalties);
        penalties.retain(|_, at| now.duration_since(*at) < PENALTY);
        // Penalised servers last, the most recently failed at the very end.
        live.sort_by_key(|addr| penalties.get(addr).copied());
        Ok(live)
    }

    /// Whether every live server of `dc` failed a call in the last
    /// [`PENALTY`]: this server cannot reach that datacenter lately,
    /// whatever the WAN pool (which probes indirectly too) says.
    pub fn shunned(&self, dc: &str) -> bool {
        let Ok(route) = self.route(dc) else {
            return false;
        };
        let now = Instant::now();
        let penalties = lock(&self.penalties);
        route.iter().all(|addr| {
            penalties
                .get(addr)
                .is_some_and(|at| now.duration_since(*at) < PENALTY)
        })
    }

    /// A call to the server at `rpc` failed: try it last for a while.
    pub fn failed(&self, rpc: SocketAddr) {
        lock(&self.penalties).insert(rpc, Instant::now());
    }

    /// A call to the server at `rpc` was answered: it is good again.
    pub fn answered(&self, rpc: SocketAddr) {
        lock(&self.penalties).remove(&rpc);
    }

    /// The estimated round trip to each datacenter, in seconds, as network
    /// coordinates give it; replaces the previous estimate whole.
    pub fn set_distances(&self, distances: BTreeMap<String, f64>) {
        *lock(&self.distances) = distances.into_iter().collect();
    }

    /// Replaces the WAN coordinates of every datacenter's servers.
    pub fn set_coordinates(&self, coordinates: Vec<DatacenterCoordinates>) {
        *lock(&self.coordinates) = coordinates;
    }

    /// The WAN coordinates of every datacenter's servers, by datacenter;
    /// empty until coordinates were set (and without a WAN pool).
    pub fn coordinates(&self) -> Vec<DatacenterCoordinates> {
        lock(&self.coordinates).clone()
    }
}

/// A poisoned lock only means another thread panicked while holding it;
/// the maps are valid whatever it did.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, dc: &str, port: u16, status: MemberStatus) -> Member {
        Member {
            name: format!("{name}.{dc}"),
            node_id: uuid::Uuid::new_v4(),
            addr: SocketAddr::from(([127, 0, 0, 1], port + 2)),
            status,
            role: Role::Server,
            dc: dc.into(),
            rpc_addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            generation: 1,
        }
    }

    fn pool(members: Vec<Member>) -> Datacenters {
        let (tx, rx) = watch::channel(Arc::new(members));
        std::mem::forget(tx);
        Datacenters::new("dc1", Some(rx))
    }

    fn rpc(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn an_unknown_datacenter_and_an_unreachable_one_are_told_apart() {
        let dcs = pool(vec![
            server("s1", "dc1", 100, MemberStatus::Alive),
            server("s1", "dc2", 200, MemberStatus::Failed),
            server("s2", "dc2", 210, MemberStatus::Left),
        ]);
        assert_eq!(dcs.route("dc3"), Err(RouteError::Unknown("dc3".into())));
        assert_eq!(dcs.route("dc2"), Err(RouteError::Unreachable("dc2".into())));
        assert_eq!(
            RouteError::Unknown("x".into()).to_string(),
            "No path to datacenter"
        );
        assert_eq!(dcs.route("dc1"), Ok(vec![rpc(100)]));
    }

    #[test]
    fn a_server_that_failed_a_call_is_tried_last_until_it_answers() {
        let dcs = pool(vec![
            server("s1", "dc2", 200, MemberStatus::Alive),
            server("s2", "dc2", 210, MemberStatus::Suspect),
            server("s3", "dc2", 220, MemberStatus::Failed),
        ]);
        dcs.failed(rpc(200));
        for _ in 0..20 {
            assert_eq!(dcs.route("dc2").unwrap(), vec![rpc(210), rpc(200)]);
        }
        assert!(!dcs.shunned("dc2"), "one of two still answers");
        dcs.failed(rpc(210));
        assert!(dcs.shunned("dc2"));
        dcs.answered(rpc(210));
        dcs.answered(rpc(200));
        assert!(!dcs.shunned("dc2"));
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..64 {
            firsts.insert(dcs.route("dc2").unwrap()[0]);
        }
        assert_eq!(firsts.len(), 2, "both live servers take turns first");
    }

    #[test]
    fn names_put_our_own_first_then_the_nearest() {
        let dcs = pool(vec![
            server("s1", "dc1", 100, MemberStatus::Alive),
            server("s1", "dc3", 300, MemberStatus::Alive),
            server("s1", "dc2", 200, MemberStatus::Alive),
            server("s2", "dc2", 210, MemberStatus::Alive),
            server("s1", "dc4", 400, MemberStatus::Alive),
        ]);
        assert_eq!(dcs.names(), ["dc1", "dc2", "dc3", "dc4"]);
        dcs.set_distances(BTreeMap::from([
            ("dc2".to_owned(), 0.080),
            ("dc3".to_owned(), 0.020),
        ]));
        assert_eq!(dcs.names(), ["dc1", "dc3", "dc2", "dc4"]);
    }

    #[test]
    fn without_a_wan_pool_only_our_own_is_known() {
        let dcs = Datacenters::new("dc1", None);
        assert_eq!(dcs.names(), ["dc1"]);
        assert_eq!(dcs.route("dc2"), Err(RouteError::Unknown("dc2".into())));
    }
}
