//! What only a server runs: its Raft member, on storage opened from the
//! node's settings, and the server RPC it talks through.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AgentError;
use super::settings::consensus_config;
use crate::catalog::Replica;
use crate::config::{NodeSettings, RaftSettings};
use crate::consensus::Consensus;
use crate::rpc::server::ConnLimits;

/// Commands a server keeps in its replica's history for following clients;
/// a client further behind is sent the whole catalog.
const FOLLOW_HISTORY: usize = 8192;

/// What only a server runs: its Raft member and the server RPC it talks
/// through.
pub(super) struct ServerParts {
    pub(super) consensus: Arc<Consensus>,
    /// Where server RPC finds what answers other datacenters; the agent
    /// fills it once its HTTP router exists.
    pub(super) datacenters: Arc<crate::rpc::datacenter::Slot>,
    /// Stops server RPC; cancelled after Raft has shut down.
    rpc_stop: CancellationToken,
    rpc_task: JoinHandle<std::io::Result<()>>,
}

impl ServerParts {
    /// Opens the Raft storage, starts Raft, and serves RPC on `listener`
    /// under `limits`, answering other datacenters with what the agent
    /// installs in [`Self::datacenters`] once it has built it.
    pub(super) async fn start(
        node: &NodeSettings,
        raft: &RaftSettings,
        rpc_addr: SocketAddr,
        listener: TcpListener,
        credentials: crate::rpc::Credentials,
        limits: ConnLimits,
    ) -> Result<Self, AgentError> {
        let datacenters = Arc::new(crate::rpc::datacenter::Slot::default());
        let replica = Arc::new(Replica::with_history(FOLLOW_HISTORY));
        let consensus = Consensus::start(
            consensus_config(node, raft, rpc_addr, credentials.clone()),
            replica,
        )
        .await?;
        // Raft needs server RPC from the start (votes, the bootstrap), and
        // until it has shut down: it gets its own token, cancelled last.
        let rpc_stop = CancellationToken::new();
        let rpc_task = tokio::spawn(crate::rpc::server::serve_with(
            listener,
            consensus.clone(),
            datacenters.clone(),
            credentials,
            limits,
            rpc_stop.clone(),
        ));
        Ok(Self {
            consensus,
            datacenters,
            rpc_stop,
            rpc_task,
        })
    }

    /// Shuts Raft down, then the server RPC it talked through.
    pub(super) async fn shutdown(self) {
        self.consensus.shutdown().await;
        self.rpc_stop.cancel();
        if let Ok(Err(e)) = self.rpc_task.await {
            tracing::warn!("while stopping server RPC: {e}");
        }
    }
}
