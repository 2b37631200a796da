//! DNS across datacenters, both ways: a name of another datacenter asked
//! here is sent, query bytes and all, to a server of that datacenter
//! ([`ask`]); a query another datacenter's server sends here is answered
//! by our own responder from our own view ([`Answerer`]), where the name
//! (`web.service.dc2.consul`) is ours, so SRV targets come out as
//! `<node>.node.dc2.<domain>.` and the answer is exactly what a client of
//! dc2 would get.
//!
//! Asking waits on the network, so it never runs on a UDP worker thread:
//! the worker hands it to the runtime, as it does a query for the
//! recursors, under the same cap.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;

use super::super::access::DnsToken;
use super::super::fit;
use super::super::respond::{Reply, Responder, Transport};
use super::super::DnsError;
use crate::catalog::Replica;
use crate::catalog::view::View;
use crate::config::DnsSettings;
use crate::remote::Remote;
use crate::rpc::datacenter::{DatacenterRequest, DatacenterResponse, DnsRequest, ForwardError};

/// How long the other datacenter may take to answer once reached: DNS
/// clients ask again after a second or two, and a late answer helps none.
const ANSWER_WITHIN: Duration = Duration::from_millis(1500);

/// The answer to `request`, a name of datacenter `dc`, from that
/// datacenter's servers through `remote`: theirs, or NXDOMAIN (with our
/// SOA) when no datacenter of that name is known, as Consul answers, or
/// SERVFAIL when it is known and none of its servers answered in time.
pub(super) async fn ask(
    remote: Option<&Remote>,
    responder: &Responder,
    view: impl FnOnce() -> Arc<View>,
    dc: &str,
    request: &Message,
    transport: Transport,
    translate_wan: bool,
) -> Message {
    let Some(remote) = remote else {
        return responder.no_path(&view(), request, transport);
    };
    let Ok(query) = request.to_vec() else {
        return responder.servfail(request, transport);
    };
    let asked = DatacenterRequest::Dns(DnsRequest {
        query: query.into(),
        tcp: transport == Transport::Tcp,
        translate_wan,
    });
    let failed = match remote.call(dc, asked, ANSWER_WITHIN).await {
        Ok(DatacenterResponse::Dns(Some(bytes))) => match Message::from_vec(&bytes) {
            Ok(mut answer) => {
                // Theirs, for our client: its ID (the same bytes were asked).
                answer.metadata.id = request.metadata.id;
                return answer;
            }
            Err(e) => format!("an undecodable answer: {e}"),
        },
        Ok(DatacenterResponse::Dns(None)) => "no answer".into(),
        Ok(other) => format!("{}", other.kind()),
        Err(ForwardError::Unknown(_)) => {
            tracing::debug!(dc, "DNS: no path to datacenter");
            return responder.no_path(&view(), request, transport);
        }
        Err(e) => e.to_string(),
    };
    tracing::debug!(dc, "DNS: the other datacenter gave {failed}");
    responder.servfail(request, transport)
}

/// Answers the queries other datacenters' servers send here, as our own
/// DNS server would, from this agent's view.
#[derive(Debug)]
pub struct Answerer {
    /// The same decision our sockets take.
    responder: Responder,
    /// The catalog whose view we answer from.
    replica: Arc<Replica>,
    /// With ACLs on, the token answers are computed as (the agent's
    /// default, as for our own clients).
    acl: Option<DnsToken>,
}

impl Answerer {
    /// Answers as a DNS server of datacenter `datacenter` with `settings`
    /// (the agent's own) would, from `replica`.
    pub fn new(
        settings: &DnsSettings,
        datacenter: &str,
        replica: Arc<Replica>,
    ) -> Result<Self, DnsError> {
        Ok(Self {
            responder: Responder::new(settings, datacenter)?,
            replica,
            acl: DnsToken::new(settings),
        })
    }

    /// The response's bytes to the query `bytes` (sent over TCP if `tcp`,
    /// which sets the size limit); `None` when there is none to give (not a
    /// query, or a name that is not ours).
    pub fn answer(&self, bytes: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let view = self.replica.view();
        let tokens = self.acl.as_ref().and_then(|_| self.replica.tokens());
        let caller = match &self.acl {
            None => super::super::Caller::Anyone,
            Some(token) => token.resolve(tokens.as_deref()),
        };
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        // The peer only names the client in logs; this one is a server of
        // another datacenter.
        let peer = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let m = match self
            .responder
            .respond_as(&view, caller, bytes, transport, peer)
        {
            Reply::Respond(m) => m,
            // Not a name of ours after all (another domain, a third
            // datacenter): the asking server answers SERVFAIL.
            Reply::Forward(request) | Reply::OtherDatacenter { request, .. } => {
                self.responder.servfail(&request, transport)
            }
            Reply::Drop => return None,
        };
        fit::encode(&m)
    }
}
