//! The shutdown order of a serving agent, in one place ([`Running::stop`];
//! the module doc of `agent` says it in words).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::Background;
use super::server::ServerParts;
use crate::delegate::Delegate;
use crate::gossip::Gossip;
use crate::local::{self, checks};

/// Everything a serving agent stops, and [`Running::stop`], the one place
/// that says in which order.
pub(super) struct Running {
    /// The parent of the DNS and HTTP servers' tokens and the upkeep's.
    pub(super) serving: CancellationToken,
    /// The DNS and HTTP servers and the Raft watcher.
    pub(super) tasks: JoinSet<Result<(), String>>,
    pub(super) checks: checks::CheckRunner,
    pub(super) upkeep: JoinHandle<()>,
    pub(super) background: Background,
    pub(super) gossip: Arc<Gossip>,
    /// The WAN pool; servers only, and not with `ports.serf_wan = -1`.
    pub(super) wan: Option<Arc<Gossip>>,
    pub(super) leave_on_terminate: bool,
    pub(super) local: Arc<local::LocalAgent>,
    pub(super) delegate: Delegate,
    pub(super) server: Option<ServerParts>,
}

impl Running {
    /// The shutdown order of the module doc.
    pub(super) async fn stop(self) {
        let Self {
            serving,
            mut tasks,
            checks,
            upkeep,
            mut background,
            gossip,
            wan,
            leave_on_terminate,
            local,
            delegate,
            server,
        } = self;
        // 1. Stop accepting and drain in-flight requests.
        serving.cancel();
        while let Some(res) = tasks.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!("while stopping: {e}");
            }
        }
        // 2. Health checks: their writes need Raft, so they stop before it.
        checks.stop().await;
        let _ = upkeep.await;
        // 3. The tasks beside serving (the reconciler and the expiry timers
        //    write through Raft too), then the gossip pools, WAN first as
        //    Consul's: leave gracefully (others see Left and deregister
        //    this node) or just stop (others declare it failed), as
        //    configured.
        background.token.cancel();
        while background.tasks.join_next().await.is_some() {}
        if leave_on_terminate && let Some(wan) = &wan {
            super::wan::leave(wan).await;
        }
        if let Some(wan) = wan {
            match Arc::try_unwrap(wan) {
                Ok(wan) => wan.shutdown().await,
                Err(_) => tracing::warn!("WAN gossip still in use at shutdown; dropping it"),
            }
        }
        if leave_on_terminate {
            match tokio::time::timeout(Duration::from_secs(5), gossip.leave()).await {
                Ok(Ok(())) => tracing::info!("left the LAN pool"),
                Ok(Err(e)) => tracing::debug!(error = %e, "leaving the LAN pool"),
                Err(_) => tracing::warn!("leaving the LAN pool timed out"),
            }
        }
        match Arc::try_unwrap(gossip) {
            Ok(gossip) => gossip.shutdown().await,
            Err(_) => tracing::warn!("gossip still in use at shutdown; dropping it"),
        }
        // 4. Raft and its storage, then the server RPC it talked through.
        drop((local, delegate));
        if let Some(server) = server {
            server.shutdown().await;
        }
        // 5.
        tracing::info!("shutdown complete");
    }
}
