//! The whole decision for one request, as a pure function.
//!
//! [`Responder::respond`] takes the current [`View`], the raw request, the
//! transport and the peer ([`Responder::respond_as`] also who is asking,
//! with ACLs on), and says what to send back: a finished response
//! (already fitted to the client's packet size), a request to forward to the
//! recursors, a request for another datacenter's servers, or nothing at all. The socket code, the fuzzer and the tests all
//! call it; it never awaits and never panics on any input.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::DNSClass;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::DnsError;
use super::access::Caller;
use super::answer::{Answer, Authority, Found};
use super::fit::{self, MAX_AMPLIFICATION, MAX_TCP, MAX_UDP, MIN_UDP, Transport};
use super::name::parse_reverse;
use super::wire::{Scratch, Wire};
use super::zones::Zones;
use crate::catalog::view::View;
use crate::config::DnsSettings;

/// The fewest bytes `request` can have taken on the wire: the header and
/// its questions written out, no records. The question name is the first
/// in the message, so it can only be compressed against the 12-byte
/// header, which [`Responder::respond`] refuses: the raw request is this
/// long or longer.
fn request_floor(request: &Message) -> usize {
    let questions: usize = request
        .queries
        .iter()
        .map(|q| q.name.iter().map(|label| 1 + label.len()).sum::<usize>() + 1 + 4)
        .sum();
    12 + questions
}

/// What to do with one request.
#[derive(Debug)]
pub enum Reply {
    /// Send this response (already fitted to the transport).
    Respond(Message),
    /// The name is not ours: ask the recursors, then [`Responder::relay`]
    /// their answer. Holds the parsed request.
    Forward(Message),
    /// The name belongs to datacenter `dc` (as asked): that datacenter's
    /// servers answer it. Holds the parsed request; the server asks them
    /// off the worker threads, and answers [`Responder::no_path`] for a
    /// datacenter nobody knows.
    OtherDatacenter {
        /// The datacenter label of the name.
        dc: String,
        /// The parsed request.
        request: Message,
    },
    /// Send nothing: the bytes are not a DNS query we can answer.
    Drop,
    /// A prepared query of ours (`name.query.<domain>`): the server
    /// executes it off the worker threads (it may fail over to other
    /// datacenters) and answers with [`Responder::prepared_query`].
    PreparedQuery {
        /// The query's ID or name as asked.
        name: String,
        /// The parsed request.
        request: Message,
    },
}

/// What [`Responder::lookup`] found among our own names.
enum Own {
    /// An answer, and whether it comes from the catalog (for the UDP answer
    /// limit) rather than a zone file.
    Answer(Answer, bool),
    /// A name of another datacenter.
    OtherDatacenter(String),
    /// A prepared query of ours, by the ID or name asked.
    PreparedQuery(String),
}

/// Everything needed to answer, fixed at start-up: settings and zones.
#[derive(Debug, Clone)]
pub struct Responder {
    /// Our domain's answers.
    authority: Authority,
    /// Static zones.
    zones: Zones,
    /// Whether forwarding is possible; without recursors foreign names are REFUSED.
    has_recursors: bool,
    /// Consul's `udp_answer_limit`.
    udp_answer_limit: usize,
    /// Consul's `enable_truncate`.
    enable_truncate: bool,
    /// The fast path for the bulk of our own names (`wire/`).
    wire: Wire,
}

impl Responder {
    /// Validates `settings` and the `datacenter` (this agent's: names may
    /// carry it, any other is another datacenter's) and loads the zone
    /// files the settings name.
    pub fn new(settings: &DnsSettings, datacenter: &str) -> Result<Self, DnsError> {
        Self::with_zones(settings, datacenter, Zones::load(&settings.zone_dirs)?)
    }

    pub(crate) fn with_zones(
        settings: &DnsSettings,
        datacenter: &str,
        zones: Zones,
    ) -> Result<Self, DnsError> {
        Ok(Self {
            authority: Authority::new(settings, datacenter)?,
            zones,
            has_recursors: !settings.recursors.is_empty(),
            udp_answer_limit: settings.udp_answer_limit,
            enable_truncate: settings.enable_truncate,
            wire: Wire::new(settings, datacenter)?,
        })
    }

    /// The fast path: writes the response to the raw request `bytes` into
    /// `out` and returns true when it is a question the fast path answers
    /// (see `wire/`), with the bytes [`Self::respond_as`] would have
    /// given up to the shuffle; false leaves it to [`Self::respond_as`].
    pub fn respond_wire(
        &self,
        view: &View,
        caller: Caller<'_>,
        bytes: &[u8],
        transport: Transport,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> bool {
        self.wire
            .answer(view, caller, bytes, transport, scratch, out)
    }

    /// Decides the reply to the raw request `bytes` from `peer`, with
    /// ACLs off.
    pub fn respond(
        &self,
        view: &View,
        bytes: &[u8],
        transport: Transport,
        peer: SocketAddr,
    ) -> Reply {
        self.respond_as(view, Caller::Anyone, bytes, transport, peer)
    }

    /// Decides the reply to the raw request `bytes` from `peer`, answering
    /// from what `caller` may see of the catalog.
    pub fn respond_as(
        &self,
        view: &View,
        caller: Caller<'_>,
        bytes: &[u8],
        transport: Transport,
        peer: SocketAddr,
    ) -> Reply {
        let mut decoder = BinDecoder::new(bytes);
        let Ok(header) = Header::read(&mut decoder) else {
            return Reply::Drop;
        };
        // Answering responses would let anyone bounce traffic off us.
        if header.metadata.message_type == MessageType::Response {
            return Reply::Drop;
        }
        let request = match Message::from_vec(bytes) {
            // A question compressed against the header is shorter than its
            // floor, which would lift the amplification cap; no client does it.
            Ok(m) if bytes.len() < request_floor(&m) => {
                tracing::debug!(%peer, "DNS request with a compressed question");
                return Reply::Respond(Message::error_msg(
                    header.metadata.id,
                    header.metadata.op_code,
                    ResponseCode::FormErr,
                ));
            }
            Ok(m) => m,
            Err(error) => {
                tracing::debug!(%peer, %error, "malformed DNS request");
                let mut m = Message::error_msg(
                    header.metadata.id,
                    header.metadata.op_code,
                    ResponseCode::FormErr,
                );
                m.metadata.recursion_desired = header.metadata.recursion_desired;
                return Reply::Respond(m);
            }
        };
        self.respond_to_as(view, caller, request, transport)
    }

    /// [`Self::respond`] for an already parsed request.
    pub fn respond_to(&self, view: &View, request: Message, transport: Transport) -> Reply {
        self.respond_to_as(view, Caller::Anyone, request, transport)
    }

    /// [`Self::respond_as`] for an already parsed request.
    pub fn respond_to_as(
        &self,
        view: &View,
        caller: Caller<'_>,
        request: Message,
        transport: Transport,
    ) -> Reply {
        if request.metadata.message_type == MessageType::Response {
            return Reply::Drop;
        }
        if request.metadata.op_code != OpCode::Query {
            return Reply::Respond(self.error(&request, ResponseCode::NotImp, transport));
        }
        if request.queries.len() != 1 {
            return Reply::Respond(self.error(&request, ResponseCode::FormErr, transport));
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Reply::Respond(self.error(&request, ResponseCode::BADVERS, transport));
        }
        let query = &request.queries[0];
        if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
            return Reply::Respond(self.error(&request, ResponseCode::Refused, transport));
        }
        match self.lookup(view, caller, query) {
            Some(Own::Answer(answer, catalog)) => {
                Reply::Respond(self.finish(&request, answer, true, catalog, transport))
            }
            Some(Own::OtherDatacenter(dc)) => Reply::OtherDatacenter { dc, request },
            Some(Own::PreparedQuery(name)) => Reply::PreparedQuery { name, request },
            None if self.has_recursors => Reply::Forward(request),
            None if parse_reverse(&query.name).is_some() => {
                // Consul answers unknown reverse names itself when it cannot recurse.
                let answer = self.authority.nxdomain(view);
                Reply::Respond(self.finish(&request, answer, true, true, transport))
            }
            None => Reply::Respond(self.error(&request, ResponseCode::Refused, transport)),
        }
    }

    /// Our own answer for `query` (or the other datacenter it names);
    /// `None` when it belongs to the recursors.
    fn lookup(&self, view: &View, caller: Caller<'_>, query: &Query) -> Option<Own> {
        let (qname, qtype) = (&query.name, query.query_type);
        match self.authority.lookup(view, caller, qname, qtype) {
            Some(Found::Answer(answer)) => return Some(Own::Answer(answer, true)),
            Some(Found::OtherDatacenter(dc)) => return Some(Own::OtherDatacenter(dc)),
            Some(Found::PreparedQuery(name)) => return Some(Own::PreparedQuery(name)),
            None => {}
        }
        if let Some(ip) = parse_reverse(qname)
            && let Some(answer) = self.authority.reverse(view, caller, qname, qtype, ip)
        {
            return Some(Own::Answer(answer, true));
        }
        self.zones
            .lookup(qname, qtype)
            .map(|a| Own::Answer(a, false))
    }

    /// The answer for a name of another datacenter while there is no path
    /// to it: the name does not exist (NXDOMAIN with our SOA), as Consul
    /// answers when it cannot reach the datacenter.
    pub fn no_path(&self, view: &View, request: &Message, transport: Transport) -> Message {
        self.finish(
            request,
            self.authority.nxdomain(view),
            true,
            true,
            transport,
        )
    }

    /// The answer to a prepared query's name from what executing it gave:
    /// its instances; NXDOMAIN for a query that does not exist or found
    /// none; SERVFAIL when it could not be run.
    pub fn prepared_query(
        &self,
        view: &View,
        request: &Message,
        executed: Result<crate::prepared_query::QueryResult, crate::prepared_query::ExecuteError>,
        transport: Transport,
    ) -> Message {
        let answer = match executed {
            Ok(result) => {
                let query = &request.queries[0];
                self.authority
                    .prepared_query(view, &query.name, query.query_type, &result)
            }
            Err(crate::prepared_query::ExecuteError::NotFound) => self.authority.nxdomain(view),
            Err(e) => {
                tracing::debug!(error = %e, "prepared query failed");
                return self.error(request, ResponseCode::ServFail, transport);
            }
        };
        self.finish(request, answer, true, true, transport)
    }

    /// SERVFAIL for `request`: another datacenter's servers, known but
    /// unreachable, gave no answer.
    pub fn servfail(&self, request: &Message, transport: Transport) -> Message {
        self.error(request, ResponseCode::ServFail, transport)
    }

    /// Adapts a recursor's `upstream` response to `request`'s client: its ID,
    /// its EDNS, its transport's size. `None` (upstream failed) is SERVFAIL.
    pub fn relay(
        &self,
        request: &Message,
        upstream: Option<Message>,
        transport: Transport,
    ) -> Message {
        let Some(upstream) = upstream else {
            return self.error(request, ResponseCode::ServFail, transport);
        };
        let answer = Answer {
            rcode: upstream.metadata.response_code,
            answers: upstream.answers,
            authorities: upstream.authorities,
            additionals: upstream.additionals,
        };
        let mut m = self.finish(request, answer, false, false, transport);
        m.metadata.recursion_available = true;
        m.metadata.authentic_data = upstream.metadata.authentic_data;
        m
    }

    fn error(&self, request: &Message, rcode: ResponseCode, transport: Transport) -> Message {
        let answer = Answer {
            rcode,
            ..Answer::default()
        };
        self.finish(request, answer, false, false, transport)
    }

    /// Wraps `answer` into a response to `request` and fits it to the
    /// transport. `authoritative` sets AA; Consul's UDP answer limit applies
    /// to `catalog` answers only (zone data and recursion keep whole sets).
    fn finish(
        &self,
        request: &Message,
        answer: Answer,
        authoritative: bool,
        catalog: bool,
        transport: Transport,
    ) -> Message {
        let mut m = Message::response(request.metadata.id, request.metadata.op_code);
        m.metadata.recursion_desired = request.metadata.recursion_desired;
        m.metadata.checking_disabled = request.metadata.checking_disabled;
        m.metadata.authoritative = authoritative;
        m.metadata.response_code = answer.rcode;
        m.queries = request.queries.clone();
        m.answers = answer.answers;
        m.authorities = answer.authorities;
        m.additionals = answer.additionals;
        let limit = match transport {
            Transport::Tcp => MAX_TCP,
            Transport::Udp => match &request.edns {
                Some(e) => usize::from(e.max_payload()).clamp(MIN_UDP, MAX_UDP),
                None => MIN_UDP.min(MAX_AMPLIFICATION * request_floor(request)),
            },
        };
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP as u16);
            m.set_edns(edns);
        }
        // Consul's answer limit applies to plain (non-EDNS) UDP only.
        let answer_limit = (catalog && transport == Transport::Udp && request.edns.is_none())
            .then_some(self.udp_answer_limit);
        fit::fit(&mut m, limit, answer_limit, self.enable_truncate);
        m
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::IpAddr;

    use hickory_proto::rr::rdata::SRV;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;
    use crate::config::defaults::DATACENTER;
    use crate::dns::fixture;

    fn responder(cfg: &DnsSettings) -> Responder {
        Responder::with_zones(cfg, DATACENTER, Zones::default()).unwrap()
    }

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m
    }

    fn ask_with(
        cfg: &DnsSettings,
        name: &str,
        qtype: RecordType,
        transport: Transport,
        edns: Option<u16>,
    ) -> Message {
        let replica = fixture::replica();
        let view = replica.view();
        let responder = responder(cfg);
        let reply = match responder.respond_to(&view, query(name, qtype, edns), transport) {
            // What the server answers for another datacenter's names.
            Reply::OtherDatacenter { request, .. } => {
                Reply::Respond(responder.no_path(&view, &request, transport))
            }
            other => other,
        };
        match reply {
            Reply::Respond(m) => {
                // Whatever we answer must encode and parse back.
                let bytes = fit::encode(&m).expect("response encodes");
                Message::from_vec(&bytes).expect("response parses")
            }
            other => panic!("expected a response for {name}, got {other:?}"),
        }
    }

    fn ask(name: &str, qtype: RecordType) -> Message {
        ask_with(&DnsSettings::default(), name, qtype, Transport::Tcp, None)
    }

    fn ips(m: &Message) -> HashSet<IpAddr> {
        m.answers.iter().filter_map(|r| r.data.ip_addr()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn assert_negative(m: &Message, rcode: ResponseCode) {
        assert_eq!(m.metadata.response_code, rcode);
        assert!(m.answers.is_empty(), "{:?}", m.answers);
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert!(m.metadata.authoritative);
    }

    #[test]
    fn service_a_excludes_critical_instances() {
        let m = ask("web.service.consul.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(ips(&m), HashSet::from([ip("10.0.0.1"), ip("10.0.0.2")]));
    }

    #[test]
    fn only_passing_drops_warning_instances() {
        let cfg = DnsSettings {
            only_passing: true,
            ..DnsSettings::default()
        };
        let m = ask_with(
            &cfg,
            "web.service.consul.",
            RecordType::A,
            Transport::Tcp,
            None,
        );
        assert_eq!(ips(&m), HashSet::from([ip("10.0.0.1")]));
    }

    #[test]
    fn tag_filters_in_both_forms() {
        for name in [
            "primary.web.service.consul.",
            "_web._primary.service.consul.",
            "PRIMARY.WEB.service.dc1.consul.",
        ] {
            let m = ask(name, RecordType::A);
            assert_eq!(ips(&m), HashSet::from([ip("10.0.0.1")]), "{name}");
        }
        let m = ask("_web._tcp.service.consul.", RecordType::A);
        assert_eq!(ips(&m).len(), 2);
        // Only the critical instance has this tag combination: nothing healthy.
        assert_negative(
            &ask("v2.web.service.consul.", RecordType::A),
            ResponseCode::NXDomain,
        );
    }

    #[test]
    fn srv_names_nodes_with_addresses_in_additional() {
        let m = ask("_web._tcp.service.consul.", RecordType::SRV);
        assert_eq!(m.answers.len(), 2);
        let mut targets = HashSet::new();
        for r in &m.answers {
            let RData::SRV(srv) = &r.data else {
                panic!("not SRV: {r:?}")
            };
            assert_eq!(srv.priority, 1);
            assert_eq!(srv.weight, 1);
            targets.insert(srv.target.to_ascii());
        }
        assert_eq!(
            targets,
            HashSet::from([
                "n1.node.dc1.consul.".to_owned(),
                "n2.node.dc1.consul.".to_owned()
            ])
        );
        assert_eq!(m.additionals.len(), 2);
        for r in &m.additionals {
            assert!(targets.contains(&r.name.to_ascii()));
            assert_eq!(r.record_type(), RecordType::A);
        }
    }

    #[test]
    fn srv_for_own_address_and_host_name() {
        let m = ask("alt.service.consul.", RecordType::SRV);
        let srv = srv_of(&m.answers[0]);
        assert_eq!(srv.target.to_ascii(), "0a090909.addr.dc1.consul.");
        assert_eq!(srv.port, 7000);
        assert_eq!(m.additionals[0].data.ip_addr(), Some(ip("10.9.9.9")));
        let m = ask("ext.service.consul.", RecordType::SRV);
        assert_eq!(srv_of(&m.answers[0]).target.to_ascii(), "db.example.com.");
        assert!(m.additionals.is_empty());
    }

    fn srv_of(r: &Record) -> &SRV {
        match &r.data {
            RData::SRV(srv) => srv,
            other => panic!("not SRV: {other:?}"),
        }
    }

    /// Consul's `findWeight` serves service lookups and prepared queries
    /// alike: `Weights.Warning` while a check warns, 0 for a critical
    /// instance that only a query ignoring its check answers with.
    #[test]
    fn prepared_queries_weigh_instances_as_service_lookups_do() {
        use crate::acl::Authorizer;
        use crate::catalog::{HealthStatus, PreparedQuery, ServiceQuery, Weights};
        use crate::prepared_query::{QueryResult, matching};

        let replica = crate::catalog::Replica::new();
        let instances = [
            ("n1", "10.0.0.1", HealthStatus::Passing),
            ("n2", "10.0.0.2", HealthStatus::Warning),
            ("n3", "10.0.0.3", HealthStatus::Critical),
        ];
        for (index, (node, address, status)) in (1..).zip(instances) {
            let reg = fixture::Reg {
                node,
                address,
                service: Some(("db", node, 3306)),
                status,
                weights: Some(Weights {
                    passing: 10,
                    warning: 3,
                }),
                ..fixture::Reg::default()
            };
            fixture::register(&replica, index, reg);
        }
        let view = replica.view();
        let responder = responder(&DnsSettings::default());
        let weights = |m: &Message| -> Vec<(String, u16)> {
            let mut out: Vec<_> = (m.answers.iter())
                .map(|r| (srv_of(r).target.to_ascii(), srv_of(r).weight))
                .collect();
            out.sort();
            out
        };
        let node = |n: &str| format!("{n}.node.dc1.consul.");

        let looked_up = match responder.respond_to(
            &view,
            query("db.service.consul.", RecordType::SRV, None),
            Transport::Udp,
        ) {
            Reply::Respond(m) => m,
            other => panic!("expected a response, got {other:?}"),
        };
        let want = vec![(node("n1"), 10), (node("n2"), 3)];
        assert_eq!(weights(&looked_up), want);

        let mut prepared = PreparedQuery {
            service: ServiceQuery {
                service: "db".into(),
                ..ServiceQuery::default()
            },
            ..PreparedQuery::default()
        };
        let answer = |prepared: &PreparedQuery| {
            let result = QueryResult {
                service: "db".into(),
                nodes: matching(&replica.read(), prepared, &Authorizer::management()),
                datacenter: DATACENTER.into(),
                ..QueryResult::default()
            };
            let request = query("db.query.consul.", RecordType::SRV, None);
            weights(&responder.prepared_query(&view, &request, Ok(result), Transport::Udp))
        };
        assert_eq!(answer(&prepared), want);
        prepared.service.ignore_check_ids = vec!["check-n3".into()];
        let mut with_critical = want.clone();
        with_critical.push((node("n3"), 0));
        assert_eq!(answer(&prepared), with_critical);
    }

    #[test]
    fn host_name_service_is_a_cname() {
        let m = ask("ext.service.consul.", RecordType::A);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    }

    #[test]
    fn nodata_when_the_type_is_missing() {
        assert_negative(
            &ask("web.service.consul.", RecordType::AAAA),
            ResponseCode::NoError,
        );
        assert_negative(
            &ask("v6only.service.consul.", RecordType::A),
            ResponseCode::NoError,
        );
        let m = ask("v6only.service.consul.", RecordType::AAAA);
        assert_eq!(ips(&m), HashSet::from([ip("2001:db8::4")]));
        assert_negative(
            &ask("n2.node.consul.", RecordType::TXT),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn nxdomain_for_unknown_names_and_other_datacenters() {
        assert_negative(
            &ask("nope.service.consul.", RecordType::A),
            ResponseCode::NXDomain,
        );
        assert_negative(
            &ask("nope.node.consul.", RecordType::A),
            ResponseCode::NXDomain,
        );
        assert_negative(
            &ask("web.service.dc2.consul.", RecordType::A),
            ResponseCode::NXDomain,
        );
        assert_negative(&ask("what.consul.", RecordType::A), ResponseCode::NXDomain);
    }

    #[test]
    fn names_of_other_datacenters_are_their_own_reply_even_with_recursors() {
        let replica = fixture::replica();
        let view = replica.view();
        let cfg = DnsSettings {
            recursors: vec!["127.0.0.1:53".parse().unwrap()],
            ..DnsSettings::default()
        };
        for name in [
            "web.service.DC2.consul.",
            "_web._tcp.service.dc2.consul.",
            "n1.node.dc2.consul.",
            "7f000001.addr.dc2.consul.",
        ] {
            let reply =
                responder(&cfg).respond_to(&view, query(name, RecordType::A, None), Transport::Udp);
            assert!(
                matches!(&reply, Reply::OtherDatacenter { dc, .. } if dc == "DC2" || dc == "dc2"),
                "{name}: {reply:?}"
            );
        }
        // Our own datacenter, named or not, is answered here.
        let ours = responder(&cfg).respond_to(
            &view,
            query("web.service.dc1.consul.", RecordType::A, None),
            Transport::Udp,
        );
        assert!(matches!(ours, Reply::Respond(_)));
    }

    #[test]
    fn node_lookups() {
        let m = ask("N1.node.consul.", RecordType::A);
        assert_eq!(ips(&m), HashSet::from([ip("10.0.0.1")]));
        // The answer echoes the name as asked.
        assert_eq!(m.answers[0].name.to_ascii(), "N1.node.consul.");
        let m = ask("n1.node.dc1.consul.", RecordType::TXT);
        let txt: HashSet<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(txt.len(), 2);
        assert!(txt.iter().any(|t| t.contains("rack=r1")), "{txt:?}");
        let m = ask("n1.node.consul.", RecordType::ANY);
        assert_eq!(m.answers.len(), 3);
    }

    #[test]
    fn addr_lookups() {
        let m = ask("0a000001.addr.consul.", RecordType::A);
        assert_eq!(ips(&m), HashSet::from([ip("10.0.0.1")]));
        let m = ask(
            "20010db8000000000000000000000004.addr.dc1.consul.",
            RecordType::AAAA,
        );
        assert_eq!(ips(&m), HashSet::from([ip("2001:db8::4")]));
        assert_negative(
            &ask("0a000001.addr.consul.", RecordType::AAAA),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn reverse_lookups() {
        let m = ask("1.0.0.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), "n1.node.dc1.consul.");
        let m = ask("9.9.9.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(m.answers[0].data.to_string(), "alt.service.dc1.consul.");
        // Unknown address without recursors: NXDOMAIN with our SOA.
        assert_negative(
            &ask("9.9.9.9.in-addr.arpa.", RecordType::PTR),
            ResponseCode::NXDomain,
        );
    }

    #[test]
    fn apex_soa_and_ns() {
        let m = ask("consul.", RecordType::SOA);
        assert_eq!(m.answers.len(), 1);
        let RData::SOA(soa) = &m.answers[0].data else {
            panic!("not SOA")
        };
        assert_eq!(soa.mname.to_ascii(), "ns.consul.");
        assert_eq!(soa.rname.to_ascii(), "hostmaster.consul.");
        assert_eq!(
            (soa.refresh, soa.retry, soa.expire, soa.minimum),
            (3600, 600, 86400, 0)
        );
        assert_eq!(m.authorities.len(), 1, "the server's NS");
        let m = ask("consul.", RecordType::NS);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), "n1.node.dc1.consul.");
        assert_eq!(m.additionals[0].data.ip_addr(), Some(ip("10.0.0.1")));
        assert_negative(&ask("consul.", RecordType::A), ResponseCode::NoError);
    }

    #[test]
    fn ttls_come_from_config() {
        let cfg = DnsSettings {
            node_ttl: std::time::Duration::from_secs(7),
            service_ttl: [("web".to_owned(), std::time::Duration::from_secs(30))].into(),
            ..DnsSettings::default()
        };
        let m = ask_with(
            &cfg,
            "web.service.consul.",
            RecordType::A,
            Transport::Tcp,
            None,
        );
        assert!(m.answers.iter().all(|r| r.ttl == 30));
        let m = ask_with(&cfg, "n1.node.consul.", RecordType::A, Transport::Tcp, None);
        assert_eq!(m.answers[0].ttl, 7);
    }

    #[test]
    fn answers_are_shuffled() {
        let orders: HashSet<Vec<IpAddr>> = (0..20)
            .map(|_| {
                let m = ask("big.service.consul.", RecordType::A);
                m.answers.iter().filter_map(|r| r.data.ip_addr()).collect()
            })
            .collect();
        assert!(orders.len() > 1);
    }

    #[test]
    fn udp_limits() {
        let cfg = DnsSettings {
            enable_truncate: false,
            ..DnsSettings::default()
        };
        // Plain UDP: Consul's answer limit (3), TC only with enable_truncate.
        let m = ask_with(
            &cfg,
            "big.service.consul.",
            RecordType::A,
            Transport::Udp,
            None,
        );
        assert_eq!(m.answers.len(), 3);
        assert!(!m.metadata.truncation);
        let truncating = DnsSettings {
            enable_truncate: true,
            ..DnsSettings::default()
        };
        let m = ask_with(
            &truncating,
            "big.service.consul.",
            RecordType::A,
            Transport::Udp,
            None,
        );
        assert!(m.metadata.truncation);
        // EDNS lifts the answer limit; 50 SRV in 512 bytes are cut by size.
        let m = ask_with(
            &cfg,
            "big.service.consul.",
            RecordType::SRV,
            Transport::Udp,
            Some(512),
        );
        assert!(m.metadata.truncation);
        assert!(fit::encoded_len(&m).unwrap() <= 512);
        assert!(m.edns.is_some(), "OPT echoed");
        let small = m.answers.len();
        let m = ask_with(
            &cfg,
            "big.service.consul.",
            RecordType::SRV,
            Transport::Udp,
            Some(1232),
        );
        assert!(m.answers.len() > small);
        assert!(fit::encoded_len(&m).unwrap() <= 1232);
        // EDNS sizes below 512 count as 512, above 4096 as 4096.
        let m = ask_with(
            &cfg,
            "big.service.consul.",
            RecordType::SRV,
            Transport::Udp,
            Some(100),
        );
        assert_eq!(m.answers.len(), small);
        let m = ask_with(
            &cfg,
            "big.service.consul.",
            RecordType::SRV,
            Transport::Udp,
            Some(65000),
        );
        assert!(fit::encoded_len(&m).unwrap() <= 4096);
        // TCP carries everything.
        let m = ask("big.service.consul.", RecordType::SRV);
        assert_eq!(m.answers.len(), 50);
        assert_eq!(m.additionals.len(), 50);
        assert!(!m.metadata.truncation);
    }

    /// The largest response-to-request ratio over Consul's name forms, plain
    /// UDP, with services whose every answer is long (63-byte node names,
    /// many instances) and Consul's answer limit off: the cap holds it
    /// under [`MAX_AMPLIFICATION`], and a cut answer says TC.
    #[test]
    fn plain_udp_answers_amplify_less_than_ten_times() {
        let replica = fixture::replica();
        for i in 0..20u8 {
            let node = format!("{}-{i:02}", "n".repeat(59));
            let address = format!("10.3.0.{i}");
            fixture::register(
                &replica,
                1000 + u64::from(i),
                fixture::Reg {
                    node: &node,
                    address: &address,
                    service: Some(("s", &node, 80)),
                    ..fixture::Reg::default()
                },
            );
        }
        let view = replica.view();
        let peer: SocketAddr = "192.0.2.1:5353".parse().unwrap();
        let mut worst = (0.0f64, String::new());
        let mut exercised = false;
        for answer_limit in [0, 3] {
            let cfg = DnsSettings {
                udp_answer_limit: answer_limit,
                ..DnsSettings::default()
            };
            let responder = responder(&cfg);
            let forms = [
                ("s.service.consul.", RecordType::A),
                ("s.service.consul.", RecordType::SRV),
                ("s.service.consul.", RecordType::ANY),
                ("_s._tcp.service.consul.", RecordType::SRV),
                ("big.service.consul.", RecordType::A),
                ("big.service.consul.", RecordType::SRV),
                ("web.service.consul.", RecordType::TXT),
                ("nope.service.consul.", RecordType::A),
                ("n1.node.consul.", RecordType::ANY),
                ("0a000001.addr.consul.", RecordType::A),
                ("1.0.0.10.in-addr.arpa.", RecordType::PTR),
                ("consul.", RecordType::ANY),
                ("web.service.dc2.consul.", RecordType::A),
            ];
            for (name, qtype) in forms {
                let request = query(name, qtype, None).to_vec().unwrap();
                let m = match responder.respond(&view, &request, Transport::Udp, peer) {
                    Reply::Respond(m) => m,
                    Reply::OtherDatacenter { request, .. } => {
                        responder.no_path(&view, &request, Transport::Udp)
                    }
                    other => panic!("{name} {qtype}: {other:?}"),
                };
                let response = fit::encode(&m).unwrap();
                let ratio = response.len() as f64 / request.len() as f64;
                if ratio > worst.0 {
                    worst = (
                        ratio,
                        format!("{name} {qtype} (answer limit {answer_limit})"),
                    );
                }
                assert!(
                    response.len() <= MAX_AMPLIFICATION * request.len(),
                    "{name} {qtype}: {} bytes for {}",
                    response.len(),
                    request.len()
                );
                // What did not fit is flagged, so the client asks over TCP.
                let full = responder.respond(&view, &request, Transport::Tcp, peer);
                if let Reply::Respond(full) = full
                    && full.answers.len() > m.answers.len()
                    && answer_limit == 0
                {
                    assert!(m.metadata.truncation, "{name} {qtype} cut without TC");
                    let full_len = fit::encode(&full).unwrap().len();
                    exercised |= full_len > MAX_AMPLIFICATION * request.len();
                }
            }
        }
        eprintln!(
            "worst plain-UDP amplification: {:.2}x, for {}",
            worst.0, worst.1
        );
        assert!(worst.0 < MAX_AMPLIFICATION as f64);
        // Some full answers are far larger: the cap, not the data, held it.
        assert!(exercised, "no answer needed the cap");
    }

    #[test]
    fn a_question_compressed_against_the_header_is_formerr() {
        let replica = fixture::replica();
        let view = replica.view();
        // A query whose name is a pointer to offset 5 of the header: a
        // label of one byte (QDCOUNT's low byte), then ANCOUNT's high byte
        // as the label and its low byte ending the name: 19 bytes of floor
        // in an 18-byte request.
        let mut request = query("consul.", RecordType::A, None).to_vec().unwrap();
        request.truncate(12);
        request.extend_from_slice(&[0xc0, 5, 0, 1, 0, 1]);
        let peer: SocketAddr = "192.0.2.1:5353".parse().unwrap();
        match responder(&DnsSettings::default()).respond(&view, &request, Transport::Udp, peer) {
            Reply::Respond(m) => {
                assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_errors() {
        let r = responder(&DnsSettings::default());
        let replica = fixture::replica();
        let view = replica.view();
        let code = |m: Message| match r.respond_to(&view, m, Transport::Udp) {
            Reply::Respond(m) => m.metadata.response_code,
            other => panic!("{other:?}"),
        };
        let mut two = query("web.service.consul.", RecordType::A, None);
        two.add_query(Query::query(
            Name::from_ascii("x.consul.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(code(two), ResponseCode::FormErr);
        let mut none = query("web.service.consul.", RecordType::A, None);
        none.queries.clear();
        assert_eq!(code(none), ResponseCode::FormErr);
        let mut notify = query("web.service.consul.", RecordType::A, None);
        notify.metadata.op_code = OpCode::Notify;
        assert_eq!(code(notify), ResponseCode::NotImp);
        let mut v1 = query("web.service.consul.", RecordType::A, Some(1232));
        v1.edns.as_mut().unwrap().set_version(1);
        assert_eq!(code(v1), ResponseCode::BADVERS);
        let mut chaos = query("version.bind.", RecordType::TXT, None);
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(code(chaos), ResponseCode::Refused);
        // Foreign names without recursors are refused.
        assert_eq!(
            code(query("example.com.", RecordType::A, None)),
            ResponseCode::Refused
        );
        // With recursors they are handed back for forwarding.
        let cfg = DnsSettings {
            recursors: vec!["127.0.0.1:53".parse().unwrap()],
            ..DnsSettings::default()
        };
        let fwd = responder(&cfg).respond_to(
            &view,
            query("example.com.", RecordType::A, None),
            Transport::Udp,
        );
        assert!(matches!(fwd, Reply::Forward(_)));
    }

    #[test]
    fn garbage_bytes() {
        let r = responder(&DnsSettings::default());
        let replica = fixture::replica();
        let view = replica.view();
        let peer: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        assert!(matches!(
            r.respond(&view, b"", Transport::Udp, peer),
            Reply::Drop
        ));
        assert!(matches!(
            r.respond(&view, b"short", Transport::Udp, peer),
            Reply::Drop
        ));
        // A header claiming one question that is not there: FORMERR.
        let header = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        match r.respond(&view, &header, Transport::Udp, peer) {
            Reply::Respond(m) => {
                assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
                assert_eq!(m.metadata.id, 0x1234);
            }
            other => panic!("{other:?}"),
        }
        // A response is never answered.
        let mut resp = query("web.service.consul.", RecordType::A, None);
        resp.metadata.message_type = MessageType::Response;
        let bytes = fit::encode(&resp).unwrap();
        assert!(matches!(
            r.respond(&view, &bytes, Transport::Udp, peer),
            Reply::Drop
        ));
    }

    #[test]
    fn relay_adapts_upstream_answers() {
        let r = responder(&DnsSettings::default());
        let request = query("example.com.", RecordType::A, None);
        let m = r.relay(&request, None, Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        let mut upstream = Message::response(999, OpCode::Query);
        upstream.queries = request.queries.clone();
        for i in 0..100u8 {
            let a = hickory_proto::rr::rdata::A::new(192, 0, 2, i);
            upstream.add_answer(Record::from_rdata(
                Name::from_ascii("example.com.").unwrap(),
                60,
                RData::A(a),
            ));
        }
        let m = r.relay(&request, Some(upstream), Transport::Udp);
        assert_eq!(m.metadata.id, 4242);
        assert!(m.metadata.recursion_available);
        assert!(!m.metadata.authoritative);
        assert!(m.metadata.truncation);
        assert!(fit::encoded_len(&m).unwrap() <= 512);
        assert!(
            m.answers.len() > 3,
            "the answer limit is for our own answers"
        );
    }

    /// A rough per-query cost of the pure path (parse, answer, fit, encode).
    /// Run with `cargo test --release --lib throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn throughput() {
        let r = responder(&DnsSettings::default());
        let replica = fixture::replica();
        let view = replica.view();
        let peer: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let cases = [
            ("web A", query("web.service.consul.", RecordType::A, None)),
            ("n1 A", query("n1.node.consul.", RecordType::A, None)),
            (
                "big SRV edns",
                query("big.service.consul.", RecordType::SRV, Some(1232)),
            ),
            (
                "nxdomain",
                query("nope.service.consul.", RecordType::A, None),
            ),
        ];
        for (label, q) in cases {
            let bytes = fit::encode(&q).unwrap();
            let n = 200_000;
            let started = std::time::Instant::now();
            for _ in 0..n {
                let Reply::Respond(m) = r.respond(&view, &bytes, Transport::Udp, peer) else {
                    panic!("{label}")
                };
                std::hint::black_box(fit::encode(&m));
            }
            let per = started.elapsed() / n;
            eprintln!(
                "{label}: {per:?} per query ({:.0} qps)",
                1.0 / per.as_secs_f64()
            );
        }
        let q = query("big.service.consul.", RecordType::SRV, None);
        let Reply::Respond(full) = r.respond_to(&view, q, Transport::Tcp) else {
            panic!("big over TCP")
        };
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(fit::encode(&full));
        }
        eprintln!("encode 50 SRV + 50 A: {:?}", started.elapsed() / 1000);
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            let q = query("big.service.consul.", RecordType::SRV, None);
            std::hint::black_box(r.respond_to(&view, q, Transport::Tcp));
        }
        eprintln!("build 50 SRV + 50 A: {:?}", started.elapsed() / 1000);
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            let mut m = full.clone();
            std::hint::black_box(fit::fit(&mut m, 1232, None, false));
        }
        eprintln!("fit 50 SRV + 50 A to 1232: {:?}", started.elapsed() / 1000);
    }
}
