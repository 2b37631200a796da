//! What this server tells others of the WAN pool over server RPC: where it
//! gossips there (asked by the servers of its datacenter, which join it
//! there: join flooding) and which datacenters it knows (asked by client
//! agents for `/v1/catalog/datacenters`). The agent starts the WAN pool
//! beside Raft and hands its facts over with [`Consensus::set_wan`]; until
//! then this server answers as one with no WAN pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Consensus;
use crate::datacenters::Datacenters;
use crate::rpc::cluster::{ClusterRequest, ClusterResponse};
use crate::rpc::{Request, Response};

/// How long asking a server of this datacenter for its WAN address may
/// take: a LAN round trip, with room for a busy server.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The WAN pool as this server tells others of it.
#[derive(Debug)]
pub struct WanFacts {
    /// Where this server gossips in the WAN pool; `None` with
    /// `ports.serf_wan = -1`.
    pub gossip: Option<SocketAddr>,
    /// The datacenters known through the pool.
    pub datacenters: Arc<Datacenters>,
}

impl Consensus {
    /// Hands over the WAN pool's facts; only the first call counts (the
    /// pool is started once per process).
    pub fn set_wan(&self, facts: WanFacts) {
        if self.wan.set(facts).is_err() {
            tracing::warn!("the WAN pool's facts were set twice; keeping the first");
        }
    }

    /// Where this server gossips in the WAN pool, if it has one.
    pub(super) fn wan_gossip_addr(&self) -> Option<SocketAddr> {
        self.wan.get().and_then(|w| w.gossip)
    }

    /// The datacenters this server knows, its own first; only its own
    /// without a WAN pool.
    pub(super) fn datacenter_names(&self) -> Vec<String> {
        self.wan
            .get()
            .map_or_else(|| vec![self.datacenter.clone()], |w| w.datacenters.names())
    }

    /// Asks the server at `rpc` (of this datacenter) where it gossips in
    /// the WAN pool: `Ok(None)` when it has no WAN pool.
    pub async fn ask_wan_address(&self, rpc: SocketAddr) -> Result<Option<SocketAddr>, String> {
        let req = Request::Cluster(ClusterRequest::WanAddress);
        match self.pool.call(rpc, &req, ASK_TIMEOUT).await {
            Ok(Response::Cluster(ClusterResponse::WanAddress(addr))) => Ok(addr),
            Ok(other) => Err(format!("{rpc} answered with {}", other.kind())),
            Err(e) => Err(e.to_string()),
        }
    }
}
