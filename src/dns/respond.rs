//! The whole decision for one request, as a pure function.
//!
//! [`Responder::respond`] takes the current [`View`], the raw request, the
//! transport and the peer, and says what to send back: a finished response
//! (already fitted to the client's packet size), a request to forward to the
//! recursors, or nothing at all. The socket code, the fuzzer and the tests all
//! call it; it never awaits and never panics on any input.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::DNSClass;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::DnsError;
use super::answer::{Answer, Authority};
use super::config::DnsConfig;
use super::fit::{self, MAX_TCP, MAX_UDP, MIN_UDP};
use super::name::parse_reverse;
use super::zones::Zones;
use crate::catalog::view::View;

/// The transport a request arrived on; it decides the response size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the client's EDNS size up to 4096.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// What to do with one request.
#[derive(Debug)]
pub enum Reply {
    /// Send this response (already fitted to the transport).
    Respond(Message),
    /// The name is not ours: ask the recursors, then [`Responder::relay`]
    /// their answer. Holds the parsed request.
    Forward(Message),
    /// Send nothing: the bytes are not a DNS query we can answer.
    Drop,
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
}

impl Responder {
    /// Validates `cfg` and loads the zone files it names.
    pub fn new(cfg: &DnsConfig) -> Result<Self, DnsError> {
        Ok(Self::with_zones(cfg, Zones::load(&cfg.zone_dirs)?)?)
    }

    pub(crate) fn with_zones(cfg: &DnsConfig, zones: Zones) -> Result<Self, DnsError> {
        Ok(Self {
            authority: Authority::new(cfg)?,
            zones,
            has_recursors: !cfg.recursors.is_empty(),
            udp_answer_limit: cfg.udp_answer_limit,
            enable_truncate: cfg.enable_truncate,
        })
    }

    /// Decides the reply to the raw request `bytes` from `peer`.
    pub fn respond(
        &self,
        view: &View,
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
        self.respond_to(view, request, transport)
    }

    /// [`Self::respond`] for an already parsed request.
    pub fn respond_to(&self, view: &View, request: Message, transport: Transport) -> Reply {
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
        match self.lookup(view, query) {
            Some(answer) => Reply::Respond(self.finish(&request, answer, true, transport)),
            None if self.has_recursors => Reply::Forward(request),
            None if parse_reverse(&query.name).is_some() => {
                // Consul answers unknown reverse names itself when it cannot recurse.
                let answer = self.authority.nxdomain(view);
                Reply::Respond(self.finish(&request, answer, true, transport))
            }
            None => Reply::Respond(self.error(&request, ResponseCode::Refused, transport)),
        }
    }

    /// Our own answer for `query`, or `None` when it belongs to the recursors.
    fn lookup(&self, view: &View, query: &Query) -> Option<Answer> {
        let (qname, qtype) = (&query.name, query.query_type);
        if let Some(answer) = self.authority.lookup(view, qname, qtype) {
            return Some(answer);
        }
        if let Some(ip) = parse_reverse(qname)
            && let Some(answer) = self.authority.reverse(view, qname, qtype, ip)
        {
            return Some(answer);
        }
        self.zones.lookup(qname, qtype)
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
        let mut m = self.finish(request, answer, false, transport);
        m.metadata.recursion_available = true;
        m.metadata.authentic_data = upstream.metadata.authentic_data;
        m
    }

    fn error(&self, request: &Message, rcode: ResponseCode, transport: Transport) -> Message {
        self.finish(
            request,
            Answer {
                rcode,
                ..Answer::default()
            },
            false,
            transport,
        )
    }

    /// Wraps `answer` into a response to `request` and fits it to the
    /// transport. `authoritative` answers are ours: AA is set and Consul's
    /// UDP answer limit applies.
    fn finish(
        &self,
        request: &Message,
        answer: Answer,
        authoritative: bool,
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
            Transport::Udp => request.edns.as_ref().map_or(MIN_UDP, |e| {
                usize::from(e.max_payload()).clamp(MIN_UDP, MAX_UDP)
            }),
        };
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP as u16);
            m.set_edns(edns);
        }
        // Consul's answer limit applies to plain (non-EDNS) UDP only.
        let answer_limit = (authoritative && transport == Transport::Udp && request.edns.is_none())
            .then_some(self.udp_answer_limit);
        fit::fit(&mut m, limit, answer_limit, self.enable_truncate);
        m
    }
}
