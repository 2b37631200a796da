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

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::{A, AAAA};

use super::super::DnsError;
use super::super::access::DnsToken;
use super::super::fit;
use super::super::fit::Transport;
use super::super::respond::{Reply, Responder};
use crate::catalog::view::View;
use crate::catalog::{Replica, State};
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
        Ok(other) => other.kind().to_string(),
        Err(e) => return failed(responder, &view(), request, transport, &e),
    };
    tracing::debug!(dc, "DNS: the other datacenter gave {failed}");
    responder.servfail(request, transport)
}

/// The answer when a datacenter could not answer `request`: NXDOMAIN (with
/// our SOA) for one nobody knows, as Consul answers, SERVFAIL otherwise.
pub(super) fn failed(
    responder: &Responder,
    view: &View,
    request: &Message,
    transport: Transport,
    e: &ForwardError,
) -> Message {
    tracing::debug!(dc = e.datacenter(), "DNS for another datacenter: {e}");
    match e {
        ForwardError::Unknown(_) => responder.no_path(view, request, transport),
        _ => responder.servfail(request, transport),
    }
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
    /// Our datacenter, what a prepared query's answer is stamped with.
    datacenter: String,
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
            datacenter: datacenter.to_string(),
        })
    }

    /// The response's bytes to the query `bytes` (sent over TCP if `tcp`,
    /// which sets the size limit), with the nodes' and services' WAN
    /// addresses if `translate_wan`; `None` when there is none to give (not
    /// a query).
    pub fn answer(&self, bytes: &[u8], tcp: bool, translate_wan: bool) -> Option<Vec<u8>> {
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
        let mut m = match self
            .responder
            .respond_as(&view, caller, bytes, transport, peer)
        {
            Reply::Respond(m) => m,
            // Not a name of ours after all (another domain, a third
            // datacenter): the asking server answers SERVFAIL.
            Reply::Forward(request) | Reply::OtherDatacenter { request, .. } => {
                self.responder.servfail(&request, transport)
            }
            // A prepared query of ours, asked from another datacenter: run
            // here, from this replica, without failing over again (the
            // asking side owns failover), so nothing waits.
            Reply::PreparedQuery { name, request } => {
                let authz = match &self.acl {
                    None => Some(Arc::new(crate::acl::Authorizer::management())),
                    Some(token) => token.resolve_shared(tokens.as_deref()),
                };
                let executed = match authz {
                    None => Err(crate::prepared_query::ExecuteError::Unauthorized),
                    Some(authz) => crate::prepared_query::execute_in_state(
                        &self.replica.read(),
                        &self.datacenter,
                        &name,
                        &authz,
                    ),
                };
                self.responder
                    .prepared_query(&view, &request, executed, transport)
            }
            Reply::Drop => return None,
        };
        if translate_wan {
            // Off the local DNS path (a call from another datacenter), so
            // reading the catalog under its read lock is fine here.
            let wan = wan_addresses(&self.replica.read(), &addresses(&m));
            translate(&mut m, |ip| wan.get(&ip).copied());
        }
        fit::encode(&m)
    }
}

/// Every address in `m`'s A and AAAA records.
fn addresses(m: &Message) -> HashSet<IpAddr> {
    m.answers
        .iter()
        .chain(&m.additionals)
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The WAN address of each of `ips` that is a node's or a service's
/// address, as Consul translates (`translate_addr.go`): a service's
/// `TaggedAddresses.wan`, else its node's `wan_ipv4` / `wan_ipv6` (by the
/// address's family), else `wan`; one of another family is not used.
fn wan_addresses(state: &State, ips: &HashSet<IpAddr>) -> HashMap<IpAddr, IpAddr> {
    let mut wan = HashMap::new();
    if ips.is_empty() {
        return wan;
    }
    let same_family = |a: IpAddr, b: IpAddr| a.is_ipv4() == b.is_ipv4();
    for node in state.nodes() {
        let tagged = |key: &str| node.tagged_addresses.get(key)?.parse::<IpAddr>().ok();
        if let Ok(ip) = node.address.parse::<IpAddr>()
            && ips.contains(&ip)
        {
            let family = if ip.is_ipv4() { "wan_ipv4" } else { "wan_ipv6" };
            if let Some(to) = tagged(family)
                .or_else(|| tagged("wan"))
                .filter(|to| same_family(ip, *to))
            {
                wan.insert(ip, to);
            }
        }
        for svc in state.node_services(&node.name) {
            let (Ok(ip), Some(to)) = (
                svc.address.parse::<IpAddr>(),
                svc.tagged_addresses
                    .get("wan")
                    .and_then(|a| a.address.parse::<IpAddr>().ok()),
            ) else {
                continue;
            };
            if ips.contains(&ip) && same_family(ip, to) {
                wan.insert(ip, to);
            }
        }
    }
    wan
}

/// Replaces each A and AAAA record's address that `wan_of` knows a WAN
/// address for.
fn translate(m: &mut Message, wan_of: impl Fn(IpAddr) -> Option<IpAddr>) {
    for record in m.answers.iter_mut().chain(m.additionals.iter_mut()) {
        let to = match &record.data {
            RData::A(a) => wan_of(IpAddr::V4(a.0)),
            RData::AAAA(a) => wan_of(IpAddr::V6(a.0)),
            _ => None,
        };
        match to {
            Some(IpAddr::V4(v4)) if matches!(record.data, RData::A(_)) => {
                record.data = RData::A(A(v4));
            }
            Some(IpAddr::V6(v6)) if matches!(record.data, RData::AAAA(_)) => {
                record.data = RData::AAAA(AAAA(v6));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use hickory_proto::rr::{Name, Record};

    use super::*;

    fn a(name: &str, ip: Ipv4Addr) -> Record {
        Record::from_rdata(Name::from_ascii(name).unwrap(), 0, RData::A(A(ip)))
    }

    #[test]
    fn translation_swaps_only_the_addresses_it_knows_and_keeps_families() {
        let lan = Ipv4Addr::new(10, 0, 2, 1);
        let other = Ipv4Addr::new(10, 0, 2, 9);
        let wan = Ipv4Addr::new(203, 0, 113, 1);
        let mut m = Message::query();
        m.answers.push(a("web.service.dc2.consul.", lan));
        m.answers.push(a("web.service.dc2.consul.", other));
        m.additionals.push(a("n1.node.dc2.consul.", lan));
        m.additionals.push(Record::from_rdata(
            Name::from_ascii("n2.node.dc2.consul.").unwrap(),
            0,
            RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
        ));
        translate(&mut m, |ip| match ip {
            IpAddr::V4(v4) if v4 == lan => Some(IpAddr::V4(wan)),
            // A v4 WAN address for a v6 record is not used.
            IpAddr::V6(_) => Some(IpAddr::V4(wan)),
            _ => None,
        });
        let ips: Vec<IpAddr> = m
            .answers
            .iter()
            .chain(&m.additionals)
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        assert_eq!(
            ips,
            [
                IpAddr::V4(wan),
                IpAddr::V4(other),
                IpAddr::V4(wan),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
    }
}
