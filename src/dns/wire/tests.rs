//! The fast path held to the full responder: whenever it answers, hickory
//! must read the same header, question and record sets from its bytes as
//! from the responder's; plus the wire details the differential cannot
//! see (pointers, the OPT record) and inputs that must never panic.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, Record, RecordType};
use proptest::prelude::*;

use super::Scratch;
use crate::catalog::view::View;
use crate::catalog::{HealthStatus, Replica};
use crate::config::DnsSettings;
use crate::config::defaults::DATACENTER;
use crate::dns::access::Caller;
use crate::dns::fit;
use crate::dns::fit::Transport;
use crate::dns::fixture::{self, Reg};
use crate::dns::respond::{Reply, Responder};
use crate::dns::zones::Zones;

/// The DNS fixture plus what the fast path must tell apart: two instances
/// on one node (one SRV target), instances sharing an IP that is not their
/// node's (one `addr` target), a dual-stack service, a node name of
/// several labels, an IPv6 address spelled two ways (one address).
static CATALOG: LazyLock<(Arc<Replica>, Arc<View>)> = LazyLock::new(|| {
    let replica = fixture::replica();
    let regs = [
        ("m1", "10.2.0.1", "multi", "m-a", "", 81),
        ("m1", "10.2.0.1", "multi", "m-b", "", 82),
        ("m2", "10.2.0.2", "multi", "m-c", "10.2.9.9", 83),
        ("m3", "10.2.0.3", "multi", "m-d", "10.2.9.9", 84),
        ("d4", "10.2.0.4", "dual", "d-a", "", 90),
        ("d6", "2001:db8::6", "dual", "d-b", "", 91),
        ("d6", "2001:db8::6", "dual", "d-c", "2001:db8::7", 92),
        ("rack.host", "10.2.0.8", "dotted", "dotted", "", 93),
        (
            "d7",
            "2001:db8::8",
            "dual",
            "d-d",
            "2001:DB8:0:0:0:0:0:7",
            94,
        ),
    ];
    for (i, (node, address, service, id, service_address, port)) in regs.into_iter().enumerate() {
        fixture::register(
            &replica,
            500 + i as u64,
            Reg {
                node,
                address,
                service: Some((service, id, port)),
                service_address,
                tags: &["Blue"],
                status: if i % 3 == 2 {
                    HealthStatus::Warning
                } else {
                    HealthStatus::Passing
                },
                ..Reg::default()
            },
        );
    }
    let view = replica.view();
    (replica, view)
});

fn responder(cfg: &DnsSettings) -> Responder {
    Responder::with_zones(cfg, DATACENTER, Zones::default()).unwrap()
}

fn request(
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
    id: u16,
    rd: bool,
    cd: bool,
) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = rd;
    m.metadata.checking_disabled = cd;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// The responder's bytes for `bytes`, as the server sends them.
fn slow(r: &Responder, view: &View, bytes: &[u8], transport: Transport) -> Vec<u8> {
    let peer: SocketAddr = "192.0.2.1:5353".parse().unwrap();
    match r.respond(view, bytes, transport, peer) {
        Reply::Respond(m) => fit::encode(&m).unwrap(),
        other => panic!("the fast path answered what the responder hands on: {other:?}"),
    }
}

/// A record as comparable text: names in lowercase (hickory compares
/// names case-insensitively; the fast path points at the question's case).
fn text(r: &Record) -> String {
    r.to_string().to_ascii_lowercase()
}

fn sorted(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(text).collect();
    v.sort();
    v
}

/// Asserts that `fast` says what `slow` says. With TC set for size, the
/// kept answers are a shuffle's prefix: then the counts are compared, and
/// every record must be one the full answer has.
fn same(request: &[u8], fast: &[u8], slow: &[u8], full: &[u8], limit: usize) {
    let f = Message::from_vec(fast).expect("the fast path's bytes parse");
    let s = Message::from_vec(slow).unwrap();
    assert!(
        fast.len() <= limit,
        "{} bytes over a limit of {limit}",
        fast.len()
    );
    assert_eq!(f.metadata, s.metadata, "header");
    assert_eq!(f.queries, s.queries, "question");
    // The question's bytes, its letter case included, are echoed.
    let qend = 12 + (request.len() - 12).min(f.queries[0].name.len() + 5);
    assert_eq!(&fast[12..qend], &request[12..qend]);
    assert_eq!(
        f.edns
            .as_ref()
            .map(|e| (e.max_payload(), e.version(), e.flags().dnssec_ok)),
        s.edns
            .as_ref()
            .map(|e| (e.max_payload(), e.version(), e.flags().dnssec_ok)),
        "OPT"
    );
    assert_eq!(sorted(&f.authorities), sorted(&s.authorities), "authority");
    let full = Message::from_vec(full).unwrap();
    let everything: Vec<String> = sorted(&full.answers);
    if f.metadata.truncation && f.answers.len() != s.answers.len() {
        // The responder's fit estimates; ours is exact: never fewer.
        assert!(
            f.answers.len() >= s.answers.len(),
            "{} < {}",
            f.answers.len(),
            s.answers.len()
        );
    } else {
        assert_eq!(f.answers.len(), s.answers.len());
    }
    let addl: Vec<String> = sorted(&full.additionals);
    for r in &f.answers {
        assert!(everything.contains(&text(r)), "{r} not in the full answer");
    }
    for r in &f.additionals {
        assert!(addl.contains(&text(r)), "{r} not in the full additionals");
    }
    if !f.metadata.truncation || f.answers.len() == full.answers.len() {
        // Whole sets, when nothing was cut (or both cut by the answer
        // limit to the same count of a set that is all the same).
        if f.answers.len() == full.answers.len() {
            assert_eq!(sorted(&f.answers), sorted(&s.answers), "answers");
            assert_eq!(
                sorted(&f.additionals),
                sorted(&s.additionals),
                "additionals"
            );
        }
    }
    // Each kept SRV answer's target has its address, once.
    let targets: std::collections::HashSet<String> = f
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::SRV(srv) => Some(srv.target.to_lowercase().to_string()),
            _ => None,
        })
        .collect();
    let owners: Vec<String> = f
        .additionals
        .iter()
        .map(|r| r.name.to_lowercase().to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = owners.iter().collect();
    assert_eq!(unique.len(), owners.len(), "one additional per target");
    assert_eq!(unique.len(), targets.len(), "an additional per target");
}

fn arb_name() -> impl Strategy<Value = String> {
    let service = prop::sample::select(vec![
        "web", "v6only", "ext", "alt", "consul", "big", "multi", "dual", "dotted", "nope",
    ]);
    let tag = prop::sample::select(vec!["primary", "secondary", "v1", "blue", "nope"]);
    let node = prop::sample::select(vec![
        "n1",
        "n2",
        "n4",
        "n5",
        "big-7",
        "m1",
        "d6",
        "rack.host",
        "nope",
    ]);
    let dc = prop::sample::select(vec!["", "dc1.", "dc2."]);
    let form = 0..7u8;
    (service, tag, node, dc, form).prop_map(|(s, t, n, dc, form)| match form {
        0 | 1 => format!("{s}.service.{dc}consul."),
        2 => format!("{t}.{s}.service.{dc}consul."),
        3 => format!("_{s}._tcp.service.{dc}consul."),
        4 => format!("_{s}._{t}.service.{dc}consul."),
        5 => format!("{n}.node.{dc}consul."),
        _ => format!("x.{t}.{s}.service.{dc}consul."),
    })
}

/// `name` with each letter's case flipped where `mask` says.
fn recase(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Generated queries through both paths: whenever the fast path answers,
/// [`same`] must hold. Counts what it answered and cut, so the property
/// cannot hold vacuously.
#[test]
fn the_fast_path_answers_as_the_responder_does() {
    use proptest::test_runner::{Config, TestRunner};
    let (_, view) = &*CATALOG;
    let strategy = (
        arb_name(),
        any::<u64>(),
        prop::sample::select(vec![
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::ANY,
            RecordType::TXT,
        ]),
        prop::option::of(prop::sample::select(vec![
            0u16, 100, 512, 600, 1232, 4096, 65000,
        ])),
        any::<bool>(),
        prop::sample::select(vec![0usize, 1, 3, 10]),
        (any::<bool>(), any::<bool>()),
        (any::<u16>(), any::<bool>(), any::<bool>()),
    );
    let answered = std::cell::Cell::new(0usize);
    let cut = std::cell::Cell::new(0usize);
    let cases = 4000;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &strategy,
        |(
            name,
            mask,
            qtype,
            edns,
            tcp,
            answer_limit,
            (only_passing, enable_truncate),
            (id, rd, cd),
        )| {
            let cfg = DnsSettings {
                udp_answer_limit: answer_limit,
                only_passing,
                enable_truncate,
                ..DnsSettings::default()
            };
            let r = responder(&cfg);
            let bytes = request(&recase(&name, mask), qtype, edns, id, rd, cd);
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let mut scratch = Scratch::new(mask);
            let mut out = Vec::new();
            if r.respond_wire(
                view,
                Caller::Anyone,
                &bytes,
                transport,
                &mut scratch,
                &mut out,
            ) {
                let limit = match (transport, edns) {
                    (Transport::Tcp, _) => 65535,
                    (Transport::Udp, Some(e)) => usize::from(e).clamp(512, 4096),
                    (Transport::Udp, None) => 512.min(10 * bytes.len()),
                };
                let full = slow(&r, view, &bytes, Transport::Tcp);
                same(
                    &bytes,
                    &out,
                    &slow(&r, view, &bytes, transport),
                    &full,
                    limit,
                );
                answered.set(answered.get() + 1);
                let m = Message::from_vec(&out).unwrap();
                let whole = Message::from_vec(&full).unwrap();
                if m.answers.len() < whole.answers.len() && m.metadata.truncation {
                    cut.set(cut.get() + 1);
                }
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "{} of {cases} answered by the fast path, {} cut",
        answered.get(),
        cut.get()
    );
    // The cases are random: about 1,450 of 4,000 are answered by the fast
    // path, and 10-20 of those cut (six runs: 14-20). The bounds sit far
    // below both, so that only a fast path that stopped answering or
    // cutting fails them; a bound of more than 10 cut failed a clean-clone
    // CI run that cut exactly 10.
    assert!(
        answered.get() * 4 > cases as usize,
        "the fast path answered too few"
    );
    assert!(cut.get() >= 3, "too few answers cut");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn no_bytes_make_it_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let (_, view) = &*CATALOG;
        let r = responder(&DnsSettings::default());
        let mut scratch = Scratch::new(1);
        let mut out = Vec::new();
        for transport in [Transport::Udp, Transport::Tcp] {
            if r.respond_wire(view, Caller::Anyone, &bytes, transport, &mut scratch, &mut out) {
                Message::from_vec(&out).expect("what the fast path answers parses");
            }
        }
    }

    #[test]
    fn mutated_queries_never_panic_and_parse(
        name in arb_name(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        edns in prop::option::of(any::<u16>()),
    ) {
        let (_, view) = &*CATALOG;
        let r = responder(&DnsSettings::default());
        let mut bytes = request(&name, RecordType::SRV, edns, 7, true, false);
        for (at, v) in flips {
            let at = at % bytes.len();
            bytes[at] = v;
        }
        let mut scratch = Scratch::new(1);
        let mut out = Vec::new();
        if r.respond_wire(view, Caller::Anyone, &bytes, Transport::Udp, &mut scratch, &mut out) {
            let f = Message::from_vec(&out).expect("what the fast path answers parses");
            // What it answers, the responder answers alike.
            let s = Message::from_vec(&slow(&r, view, &bytes, Transport::Udp)).unwrap();
            prop_assert_eq!(f.metadata.response_code, s.metadata.response_code);
            prop_assert_eq!(f.queries, s.queries);
        }
    }
}

#[test]
fn the_differential_exercises_the_fast_path() {
    // Runs after (or alongside) the proptest in the same process often
    // enough; on its own it runs a few hundred cases itself.
    let (_, view) = &*CATALOG;
    let mut answered = 0;
    let mut cut = 0;
    let mut asked = 0;
    for (i, name) in [
        "big.service.consul.",
        "web.service.consul.",
        "_multi._tcp.service.consul.",
        "nope.service.consul.",
        "m1.node.dc1.consul.",
    ]
    .iter()
    .enumerate()
    {
        for qtype in [RecordType::A, RecordType::SRV, RecordType::TXT] {
            for edns in [None, Some(512), Some(4096)] {
                asked += 1;
                let bytes = request(name, qtype, edns, i as u16, true, false);
                let cfg = DnsSettings {
                    udp_answer_limit: 0,
                    ..DnsSettings::default()
                };
                if let Some(out) = fast(&cfg, &bytes, Transport::Udp) {
                    answered += 1;
                    let r = responder(&cfg);
                    let limit = edns.map_or(512.min(10 * bytes.len()), usize::from);
                    same(
                        &bytes,
                        &out,
                        &slow(&r, view, &bytes, Transport::Udp),
                        &slow(&r, view, &bytes, Transport::Tcp),
                        limit,
                    );
                    cut += usize::from(out[2] & 0x02 != 0);
                }
            }
        }
    }
    // TXT is never the fast path's; everything else here is.
    assert_eq!(answered, asked * 2 / 3);
    assert!(cut >= 2, "{cut} answers cut for size");
}

fn fast(cfg: &DnsSettings, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let (_, view) = &*CATALOG;
    let mut scratch = Scratch::new(3);
    let mut out = Vec::new();
    responder(cfg)
        .respond_wire(
            view,
            Caller::Anyone,
            bytes,
            transport,
            &mut scratch,
            &mut out,
        )
        .then_some(out)
}

#[test]
fn an_address_spelled_two_ways_is_one_record_in_both_paths() {
    let (_, view) = &*CATALOG;
    let cfg = DnsSettings::default();
    let req = request(
        "dual.service.consul.",
        RecordType::AAAA,
        None,
        1,
        true,
        false,
    );
    let fast = fast(&cfg, &req, Transport::Udp).expect("the fast path answers");
    let slow = slow(&responder(&cfg), view, &req, Transport::Udp);
    for answer in [fast, slow] {
        let m = Message::from_vec(&answer).unwrap();
        let mut ips: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        ips.sort();
        assert_eq!(ips, ["2001:db8::6", "2001:db8::7"]);
    }
}

#[test]
fn answers_point_at_the_question_and_targets_at_its_domain() {
    let req = request("web.service.CONSUL.", RecordType::SRV, None, 1, true, false);
    let out = fast(&DnsSettings::default(), &req, Transport::Udp).unwrap();
    // The question is echoed at 12; `CONSUL` starts 12 bytes into it.
    let q = &req[12..];
    let domain_at = 12 + q.windows(7).position(|w| w == b"\x06CONSUL").unwrap();
    let answers = 12 + q.len();
    assert_eq!(
        &out[answers..answers + 4],
        &[0xc0, 12, 0, 33],
        "owner is 0xC00C"
    );
    // The first target: `n1`/`n2` labels, `node`, `dc1`, then a pointer to the domain.
    let rdata = answers + 12 + 6;
    let label = usize::from(out[rdata]);
    let suffix = rdata + 1 + label;
    assert_eq!(&out[suffix..suffix + 9], b"\x04node\x03dc1");
    assert_eq!(&out[suffix + 9..suffix + 11], &[0xc0, domain_at as u8]);
    // Read back, the target is under the domain, whatever its case.
    let m = Message::from_vec(&out).unwrap();
    let target = match &m.answers[0].data {
        hickory_proto::rr::RData::SRV(srv) => srv.target.to_lowercase().to_string(),
        other => panic!("{other:?}"),
    };
    assert!(target.ends_with(".node.dc1.consul."), "{target}");
    assert_eq!(m.additionals.len(), m.answers.len());
}

#[test]
fn the_opt_record_is_echoed_as_the_responder_writes_it() {
    let req = request("n1.node.consul.", RecordType::A, Some(1232), 9, false, true);
    let out = fast(&DnsSettings::default(), &req, Transport::Udp).unwrap();
    assert_eq!(
        &out[out.len() - 11..],
        &[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(&out[10..12], &[0, 1], "ARCOUNT counts the OPT record");
    let (_, view) = &*CATALOG;
    let slow = slow(
        &responder(&DnsSettings::default()),
        view,
        &req,
        Transport::Udp,
    );
    assert_eq!(out.len(), slow.len());
    assert_eq!(&out[out.len() - 11..], &slow[slow.len() - 11..]);
}

#[test]
fn oversized_answers_are_cut_whole_with_tc_and_full_over_tcp() {
    let cfg = DnsSettings::default();
    let req = request(
        "big.service.consul.",
        RecordType::SRV,
        Some(512),
        1,
        true,
        false,
    );
    let out = fast(&cfg, &req, Transport::Udp).unwrap();
    assert!(out.len() <= 512);
    let m = Message::from_vec(&out).unwrap();
    assert!(m.metadata.truncation);
    assert!(!m.answers.is_empty() && m.answers.len() < 50);
    assert_eq!(m.additionals.len(), m.answers.len());
    let out = fast(&cfg, &req, Transport::Tcp).unwrap();
    let m = Message::from_vec(&out).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!((m.answers.len(), m.additionals.len()), (50, 50));
    // Plain UDP: Consul's answer limit of 3, TC per `enable_truncate`.
    let req = request("big.service.consul.", RecordType::A, None, 1, true, false);
    for enable_truncate in [false, true] {
        let cfg = DnsSettings {
            enable_truncate,
            ..DnsSettings::default()
        };
        let m = Message::from_vec(&fast(&cfg, &req, Transport::Udp).unwrap()).unwrap();
        assert_eq!(m.answers.len(), 3);
        assert_eq!(m.metadata.truncation, enable_truncate);
    }
}

#[test]
fn what_is_not_the_fast_paths_is_left_alone() {
    let cfg = DnsSettings::default();
    for (name, qtype) in [
        ("web.service.consul.", RecordType::TXT),
        ("web.service.consul.", RecordType::ANY),
        ("web.service.dc2.consul.", RecordType::A),
        ("ext.service.consul.", RecordType::A),
        ("0a000001.addr.consul.", RecordType::A),
        ("q.query.consul.", RecordType::A),
        ("consul.", RecordType::SOA),
        ("example.com.", RecordType::A),
        ("1.0.0.10.in-addr.arpa.", RecordType::PTR),
    ] {
        let req = request(name, qtype, None, 1, true, false);
        assert!(fast(&cfg, &req, Transport::Udp).is_none(), "{name} {qtype}");
    }
    // An unknown ACL token is the responder's SERVFAIL.
    let (_, view) = &*CATALOG;
    let req = request("web.service.consul.", RecordType::A, None, 1, true, false);
    let mut out = Vec::new();
    assert!(!responder(&cfg).respond_wire(
        view,
        Caller::Unknown,
        &req,
        Transport::Udp,
        &mut Scratch::new(1),
        &mut out
    ));
}

#[test]
fn answers_grow_no_allocation_once_warm() {
    // The output buffer and the scratch keep their capacity between queries.
    let (_, view) = &*CATALOG;
    let r = responder(&DnsSettings::default());
    let req = request(
        "big.service.consul.",
        RecordType::SRV,
        Some(4096),
        1,
        true,
        false,
    );
    let mut scratch = Scratch::new(5);
    let mut out = Vec::new();
    assert!(r.respond_wire(
        view,
        Caller::Anyone,
        &req,
        Transport::Udp,
        &mut scratch,
        &mut out
    ));
    let caps = (
        out.capacity(),
        scratch.picked.capacity(),
        scratch.extra.capacity(),
    );
    for _ in 0..100 {
        assert!(r.respond_wire(
            view,
            Caller::Anyone,
            &req,
            Transport::Udp,
            &mut scratch,
            &mut out
        ));
    }
    assert_eq!(
        caps,
        (
            out.capacity(),
            scratch.picked.capacity(),
            scratch.extra.capacity()
        )
    );
}

#[test]
fn with_a_token_the_fast_path_leaves_out_what_the_responder_leaves_out() {
    use crate::acl::{Authorizer, DefaultPolicy};
    let (_, view) = &*CATALOG;
    let token = |rules: &str| {
        Authorizer::new(
            &[crate::acl::parse(rules).expect("rules")],
            DefaultPolicy::Deny,
        )
    };
    let tokens = [
        token(""),
        token("service_prefix \"\" { policy = \"read\" }\nnode \"n1\" { policy = \"read\" }"),
        token("node_prefix \"\" { policy = \"read\" }"),
        token(
            "service_prefix \"\" { policy = \"read\" }\nservice \"web\" { policy = \"deny\" }\nnode_prefix \"\" { policy = \"read\" }",
        ),
        token("service_prefix \"\" { policy = \"read\" }\nnode_prefix \"m\" { policy = \"read\" }"),
    ];
    let r = responder(&DnsSettings::default());
    let peer: SocketAddr = "192.0.2.1:5353".parse().unwrap();
    let mut answered = 0;
    for authz in &tokens {
        let caller = Caller::Token(authz);
        for name in [
            "web.service.consul.",
            "primary.web.service.consul.",
            "multi.service.consul.",
            "alt.service.consul.",
            "n1.node.consul.",
            "n2.node.consul.",
            "m1.node.consul.",
        ] {
            for qtype in [RecordType::A, RecordType::SRV] {
                let bytes = request(name, qtype, Some(4096), 3, true, false);
                let mut out = Vec::new();
                if !r.respond_wire(
                    view,
                    caller,
                    &bytes,
                    Transport::Udp,
                    &mut Scratch::new(2),
                    &mut out,
                ) {
                    continue;
                }
                answered += 1;
                let Reply::Respond(m) = r.respond_as(view, caller, &bytes, Transport::Udp, peer)
                else {
                    panic!("{name}");
                };
                let slow = fit::encode(&m).unwrap();
                same(&bytes, &out, &slow, &slow, 4096);
            }
        }
    }
    assert_eq!(answered, tokens.len() * 14);
}
