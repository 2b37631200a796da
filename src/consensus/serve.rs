//! What this server answers over server RPC: the handler of each request
//! family (`rpc::raft`, `rpc::cluster`, `rpc::client`), implemented on
//! [`Consensus`] by handing each call to the method that carries it out.

use std::future::Future;
use std::sync::Arc;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::Consensus;
use crate::catalog::{Command, Outcome, Replica};
use crate::rpc::catchup::SnapshotCache;
use crate::rpc::client::{ClientHandler, ServerStatus};
use crate::rpc::cluster::{ClusterHandler, Configuration, Hello, RaftServer};
use crate::rpc::raft::RaftHandler;
use crate::rpc::types::{RaftId, TypeConfig};
use crate::rpc::{MembershipError, ReadError, WriteError};

impl RaftHandler for Consensus {
    fn raft_id(&self) -> RaftId {
        self.raft_id
    }

    async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>> {
        let leader = rpc.vote.leader_id().voted_for();
        let result = self.raft.append_entries(rpc).await;
        // Entries accepted from a leader: it is live, as far as this
        // follower's reads and `X-Consul-LastContact` are concerned.
        if let (Ok(r), Some(leader)) = (&result, leader)
            && !matches!(r, AppendEntriesResponse::HigherVote(_))
        {
            self.contact.heard_from(leader);
        }
        result
    }

    fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> impl Future<
        Output = Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>,
    > + Send {
        self.raft.install_snapshot(rpc)
    }

    fn vote(
        &self,
        rpc: VoteRequest<RaftId>,
    ) -> impl Future<Output = Result<VoteResponse<RaftId>, RaftError<RaftId>>> + Send {
        self.raft.vote(rpc)
    }
}

impl ClusterHandler for Consensus {
    fn hello(&self, hello: Hello) -> Hello {
        Self::hello(self, hello)
    }

    fn join(&self, server: RaftServer) -> impl Future<Output = Result<(), MembershipError>> + Send {
        Self::join(self, server)
    }

    fn remove(&self, id: RaftId) -> impl Future<Output = Result<(), MembershipError>> + Send {
        self.remove_server(id)
    }

    async fn write_as_leader(&self, cmd: Command) -> Result<Outcome, WriteError> {
        refuse_leader_only(&cmd)?;
        Self::write_as_leader(self, cmd).await
    }

    fn read_index_as_leader(&self) -> impl Future<Output = Result<u64, ReadError>> + Send {
        Self::read_index_as_leader(self)
    }

    fn wan_address(&self) -> Option<std::net::SocketAddr> {
        self.wan_gossip_addr()
    }
}

impl ClientHandler for Consensus {
    async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        refuse_leader_only(&cmd)?;
        Self::write(self, cmd).await
    }

    fn linearizable_read(&self) -> impl Future<Output = Result<(), ReadError>> + Send {
        Self::linearizable_read(self)
    }

    fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    fn snapshot_cache(&self) -> &SnapshotCache {
        &self.snapshot_cache
    }

    fn status(&self) -> ServerStatus {
        ServerStatus {
            leader: self.leader(),
            leader_live: self.leader_live(),
            last_contact_ms: u64::try_from(self.last_contact().as_millis()).unwrap_or(u64::MAX),
            peers: self.peers(),
        }
    }

    fn configuration(&self) -> Configuration {
        Self::configuration(self)
    }

    async fn remove_peer(&self, id: RaftId, token: Option<String>) -> Result<(), MembershipError> {
        // With ACLs on (this server resolves tokens), the caller's token
        // decides, from this server's own replica, as Consul's servers
        // check the token an RPC carries.
        if let Some(tokens) = self.replica.tokens() {
            let caller = match token.as_deref().filter(|t| !t.is_empty()) {
                None => tokens.anonymous(),
                Some(secret) => tokens
                    .by_secret(secret)
                    .ok_or_else(|| MembershipError::PermissionDenied("ACL not found".into()))?,
            };
            if !caller.authorizer.operator_write() {
                return Err(MembershipError::PermissionDenied(format!(
                    "Permission denied: token with AccessorID '{}' lacks permission 'operator:write'",
                    caller.accessor_id
                )));
            }
        }
        self.remove_server(id).await
    }

    fn datacenters(&self) -> Vec<String> {
        self.datacenter_names()
    }

    fn coordinate_datacenters(&self) -> Vec<crate::coordinate::DatacenterCoordinates> {
        self.wan
            .get()
            .map_or_else(Vec::new, |w| w.datacenters.coordinates())
    }
}

/// Session expiry and tombstone reaping are the leader's own decisions, by
/// its clock: a peer that sends one over RPC is refused, so no client agent
/// can end others' sessions or reap tombstones early.
fn refuse_leader_only(cmd: &Command) -> Result<(), WriteError> {
    if cmd.leader_only() {
        return Err(WriteError::Fatal(
            "session expiry and tombstone reaping are proposed by the leader only".into(),
        ));
    }
    Ok(())
}
