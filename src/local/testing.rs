//! An agent inside the test process, for unit tests of the local state, the
//! check runners and the HTTP API: a replica, a one-server in-memory
//! consensus over it, the delegate that writes through it and a
//! [`LocalAgent`] with a test identity, built in one call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{LocalAgent, NodeIdentity};
use crate::catalog::{HealthStatus, Replica};
use crate::consensus::Consensus;
use crate::definition::CheckDefinition;
use crate::delegate::Delegate;

impl NodeIdentity {
    /// An identity with the defaults tests do not care about.
    pub(crate) fn for_tests(node_name: &str, advertise_addr: &str, server: bool) -> Self {
        Self {
            node_name: node_name.into(),
            node_id: "00000000-0000-4000-8000-000000000001".into(),
            datacenter: "dc1".into(),
            advertise_addr: advertise_addr.into(),
            server,
            version: "0.1.0".into(),
            tagged_addresses: BTreeMap::new(),
            meta: Default::default(),
            server_port: 8300,
            serf_lan_port: 8301,
        }
    }
}

/// One agent's catalog side in this process: what the real agent wires
/// together at start, minus sockets and gossip.
pub(crate) struct InProcess {
    /// The catalog replica the consensus applies to.
    pub(crate) replica: Arc<Replica>,
    /// The way to the consensus (a server's own, here).
    pub(crate) delegate: Delegate,
    /// The agent's local state, writing through `delegate`.
    pub(crate) local: Arc<LocalAgent>,
}

impl InProcess {
    /// A server of its own one-server cluster, named after `identity`, with
    /// a local agent as `configure` leaves it (check settings, a definitions
    /// file). Nothing is registered yet.
    pub(crate) async fn start(
        identity: NodeIdentity,
        configure: impl FnOnce(LocalAgent) -> LocalAgent,
    ) -> Self {
        let replica = Arc::new(Replica::new());
        let consensus = Consensus::single_in_memory(&identity.node_name, replica.clone()).await;
        let delegate = Delegate::Server(consensus);
        let local = Arc::new(configure(LocalAgent::new(identity, delegate.clone())));
        Self {
            replica,
            delegate,
            local,
        }
    }

    /// [`Self::start`] with the test identity of node `n1` at 10.0.0.1 and
    /// the local agent as it comes.
    pub(crate) async fn node(server: bool) -> Self {
        Self::start(NodeIdentity::for_tests("n1", "10.0.0.1", server), |l| l).await
    }
}

/// [`InProcess::node`], as the replica and the local agent.
pub(crate) async fn agent(server: bool) -> (Arc<Replica>, Arc<LocalAgent>) {
    let InProcess { replica, local, .. } = InProcess::node(server).await;
    (replica, local)
}

/// A TTL check of 10 s, starting in `status` (Consul's default when `None`).
pub(crate) fn ttl_check(status: Option<HealthStatus>) -> CheckDefinition {
    CheckDefinition {
        ttl: Some(Duration::from_secs(10)),
        status,
        ..CheckDefinition::default()
    }
}
