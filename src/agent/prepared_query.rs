//! The WAN side of prepared queries: [`Wan`] is the
//! `prepared_query::Failover` of an agent that has other datacenters. It
//! lists them nearest first (a server from its WAN pool's
//! `Datacenters::names()`, a client agent by asking a server, as
//! `/v1/catalog/datacenters` does) and runs a rendered query in one of
//! them through the cross-datacenter family (`remote::Remote`, which gives
//! up on a dead datacenter within its reach deadline): the query is posted
//! to that datacenter's `POST /v1/internal/query/execute`, which runs it
//! there without failing over again, filtered by the caller's token (or
//! the query's own). And [`near_sort`]: `Near` by the LAN coordinates.

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::PreparedQuery;
use crate::delegate::Delegate;
use crate::gossip::Gossip;
use crate::prepared_query::{BoxFuture, Entry, Failover, NearSort, QueryResult};
use crate::remote::Remote;
use crate::rpc::datacenter::{DatacenterRequest, DatacenterResponse, HttpRequest};

/// How long the remote execution may take once a server of the datacenter
/// is reached: it reads that server's replica and answers at once.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Other datacenters, reached through the cross-datacenter family.
#[derive(Debug)]
pub(super) struct Wan {
    /// The one way to another datacenter.
    remote: Arc<Remote>,
    /// How a client agent learns the datacenters (from a server).
    delegate: Delegate,
    /// This agent's datacenter, left out of the candidates.
    local: String,
}

impl Wan {
    /// Failover through `remote`, for an agent of `local`.
    pub(super) fn new(remote: Arc<Remote>, delegate: Delegate, local: String) -> Self {
        Self {
            remote,
            delegate,
            local,
        }
    }
}

impl Failover for Wan {
    fn other_datacenters(&self) -> BoxFuture<'static, Vec<String>> {
        let (remote, delegate, local) = (
            self.remote.clone(),
            self.delegate.clone(),
            self.local.clone(),
        );
        Box::pin(async move {
            let names = match &delegate {
                Delegate::Client(link) => link.datacenters().await.unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "no datacenter list for a prepared query's failover");
                    Vec::new()
                }),
                Delegate::Server(_) => remote.datacenters().names(),
            };
            names.into_iter().filter(|dc| *dc != local).collect()
        })
    }

    fn execute_in(
        &self,
        dc: String,
        query: PreparedQuery,
        limit: usize,
        token: Option<String>,
    ) -> BoxFuture<'static, Result<QueryResult, String>> {
        let remote = self.remote.clone();
        Box::pin(async move {
            let body = serde_json::to_vec(&query).map_err(|e| e.to_string())?;
            let mut headers = vec![(
                "content-type".to_string(),
                b"application/json".to_vec().into(),
            )];
            if let Some(token) = token {
                headers.push(("x-consul-token".to_string(), token.into_bytes().into()));
            }
            let req = DatacenterRequest::Http(HttpRequest {
                method: "POST".into(),
                path_and_query: format!("/v1/internal/query/execute?limit={limit}"),
                headers,
                body: body.into(),
            });
            match remote.call(&dc, req, ANSWER_WITHIN).await {
                Ok(DatacenterResponse::Http(a)) if a.status == 200 => {
                    let mut result: QueryResult =
                        serde_json::from_slice(&a.body).map_err(|e| e.to_string())?;
                    // Another datacenter's answer, as `?dc=` reads are:
                    // with translate_wan_addrs, its WAN addresses (for
                    // HTTP execute and DNS alike, as Consul's).
                    if remote.translate_wan() {
                        result.nodes.iter_mut().for_each(translate_wan);
                    }
                    Ok(result)
                }
                Ok(DatacenterResponse::Http(a)) => Err(format!(
                    "{dc} answered {}: {}",
                    a.status,
                    String::from_utf8_lossy(&a.body)
                )),
                Ok(other) => Err(format!("{dc} answered {}", other.kind())),
                Err(e) => Err(format!("{dc}: {e}")),
            }
        })
    }
}

/// Consul's `translate_addr.go` on one instance of another datacenter:
/// the node's address becomes its `wan` tagged address, the instance's
/// address and port its own `wan` one, where they have them.
fn translate_wan(entry: &mut Entry) {
    if let Some(wan) = entry
        .node
        .tagged_addresses
        .get("wan")
        .filter(|a| !a.is_empty())
    {
        entry.node.address = wan.clone();
    }
    if let Some(wan) = entry
        .service
        .tagged_addresses
        .get("wan")
        .filter(|a| !a.address.is_empty())
    {
        entry.service.address = wan.address.as_str().into();
        entry.service.port = wan.port;
    }
}

/// Orders prepared query answers by the LAN pool's network coordinates
/// from the `near` node (stably; nodes with no coordinate last; nothing
/// moves when the near node has none), as `?near` on catalog reads does.
pub(super) fn near_sort(gossip: Arc<Gossip>) -> NearSort {
    Arc::new(move |near, nodes| {
        let known = gossip.coordinates();
        crate::coordinate::near::sort_by_distance(nodes, known.by_name.get(near), |e| {
            known.by_name.get(&e.node.name).cloned()
        });
    })
}
