//! Raw bytes through the DNS responder and its fast path, over both
//! transports: neither may panic, whatever the responder answers must
//! encode, parse back, and fit the transport's size, and whatever the
//! fast path answers must parse, fit, and say what the responder says
//! (the same RCODE and question).

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use trellis::catalog::view::View;
use trellis::catalog::{
    CheckRegistration, Command, HealthStatus, Registration, Replica, ServiceRegistration,
};
use trellis::config::DnsSettings;
use trellis::config::defaults::DATACENTER;
use trellis::dns::{Caller, Reply, Responder, Scratch, Transport};

struct Fixture {
    responder: Responder,
    view: Arc<View>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    // The agent's defaults, with a recursor that is never contacted: the
    // pure responder only says "forward".
    let cfg = DnsSettings {
        recursors: vec!["127.0.0.1:53".parse().expect("literal address")],
        ..DnsSettings::default()
    };
    let replica = Replica::new();
    let instances = [
        ("n1", "10.0.0.1", "web", "", HealthStatus::Passing),
        ("n2", "10.0.0.2", "web", "", HealthStatus::Warning),
        ("n3", "10.0.0.3", "web", "", HealthStatus::Critical),
        ("n4", "2001:db8::4", "v6", "", HealthStatus::Passing),
        (
            "n5",
            "10.0.0.5",
            "ext",
            "db.example.com",
            HealthStatus::Passing,
        ),
        ("n1", "10.0.0.1", "consul", "", HealthStatus::Passing),
    ];
    for (i, (node, address, service, service_address, status)) in instances.into_iter().enumerate()
    {
        let cmd = Command::register(Registration {
            node: node.into(),
            id: String::new(),
            address: address.into(),
            datacenter: "dc1".into(),
            tagged_addresses: Default::default(),
            node_meta: [("rack".to_owned(), "r1".to_owned())].into(),
            skip_node_update: false,
            service: Some(ServiceRegistration {
                id: format!("{service}-{i}"),
                service: service.into(),
                tags: vec!["primary".into()],
                address: service_address.into(),
                tagged_addresses: Default::default(),
                meta: Default::default(),
                port: 8000 + i as u16,
                weights: None,
                enable_tag_override: false,
            }),
            checks: vec![CheckRegistration {
                check_id: format!("c{i}"),
                name: format!("c{i}"),
                status,
                notes: String::new(),
                output: String::new(),
                service_id: format!("{service}-{i}"),
                kind: "ttl".into(),
            }],
        });
        replica.apply(i as u64 + 1, &cmd);
    }
    for i in 0..40u64 {
        let cmd = Command::register(Registration {
            node: format!("big-{i}"),
            id: String::new(),
            address: format!("10.1.0.{i}"),
            datacenter: "dc1".into(),
            tagged_addresses: Default::default(),
            node_meta: Default::default(),
            skip_node_update: false,
            service: Some(ServiceRegistration {
                id: "big".into(),
                service: "big".into(),
                tags: Vec::new(),
                address: String::new(),
                tagged_addresses: Default::default(),
                meta: Default::default(),
                port: 80,
                weights: None,
                enable_tag_override: false,
            }),
            checks: Vec::new(),
        });
        replica.apply(100 + i, &cmd);
    }
    Fixture {
        responder: Responder::new(&cfg, DATACENTER).expect("the default config is valid"),
        view: replica.view(),
    }
});

fn check(response: &Message, transport: Transport) {
    let bytes = response.to_vec().expect("a response always encodes");
    let limit = match transport {
        Transport::Udp => 4096,
        Transport::Tcp => 65535,
    };
    assert!(
        bytes.len() <= limit,
        "{} bytes over {transport:?}",
        bytes.len()
    );
    let back = Message::from_vec(&bytes).expect("a response always parses back");
    assert_eq!(back.metadata.id, response.metadata.id);
    assert_eq!(back.answers.len(), response.answers.len());
}

/// The fast path's answer, if it gives one, checked against the responder's.
fn check_wire(f: &Fixture, data: &[u8], transport: Transport, peer: SocketAddr) {
    let mut scratch = Scratch::new(data.len() as u64);
    let mut out = Vec::new();
    if !f
        .responder
        .respond_wire(&f.view, Caller::Anyone, data, transport, &mut scratch, &mut out)
    {
        return;
    }
    let limit = match transport {
        Transport::Udp => 4096,
        Transport::Tcp => 65535,
    };
    assert!(out.len() <= limit, "{} bytes over {transport:?}", out.len());
    let fast = Message::from_vec(&out).expect("the fast path's answer parses");
    let Reply::Respond(slow) = f.responder.respond(&f.view, data, transport, peer) else {
        panic!("the fast path answered what the responder hands on");
    };
    assert_eq!(fast.metadata.response_code, slow.metadata.response_code);
    assert_eq!(fast.metadata.id, slow.metadata.id);
    assert_eq!(fast.queries, slow.queries);
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let peer: SocketAddr = ([127, 0, 0, 1], 5353).into();
    for transport in [Transport::Udp, Transport::Tcp] {
        check_wire(f, data, transport, peer);
        match f.responder.respond(&f.view, data, transport, peer) {
            Reply::Respond(m) => check(&m, transport),
            Reply::Forward(request) => {
                check(&f.responder.relay(&request, None, transport), transport);
                // The request itself as an upstream answer: arbitrary records.
                let mut upstream = request.clone();
                upstream.metadata.message_type = hickory_proto::op::MessageType::Response;
                check(
                    &f.responder.relay(&request, Some(upstream), transport),
                    transport,
                );
            }
            Reply::OtherDatacenter { request, .. } => {
                check(
                    &f.responder.no_path(&f.view, &request, transport),
                    transport,
                );
            }
            Reply::PreparedQuery { request, .. } => {
                // What the server answers for a query that does not exist.
                let none = Err(trellis::prepared_query::ExecuteError::NotFound);
                check(
                    &f.responder.prepared_query(&f.view, &request, none, transport),
                    transport,
                );
            }
            Reply::Drop => {}
        }
    }
});
