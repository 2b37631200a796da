//! Socket tests: `serve` on loopback, queried over real UDP and TCP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::config::Limits;
use super::server::serve_limited;
use super::{DnsError, Responder, fit, fixture, serve};
use crate::catalog::Replica;
use crate::config::DnsSettings;
use crate::config::defaults::DATACENTER;

/// Long enough for a loaded CI machine, short enough to fail fast.
const DEADLINE: Duration = Duration::from_secs(10);

struct TestServer {
    udp: SocketAddr,
    tcp: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), DnsError>>,
}

impl TestServer {
    async fn start(cfg: DnsSettings, replica: Arc<Replica>) -> Self {
        Self::start_limited(cfg, Limits::default(), replica).await
    }

    async fn start_limited(cfg: DnsSettings, limits: Limits, replica: Arc<Replica>) -> Self {
        // The same port for both, as a recursor has: the forwarder's TCP
        // retry goes to the port it asked over UDP.
        let (udp, tcp) = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            if let Ok(udp) = UdpSocket::bind(tcp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        Self::start_on(udp, tcp, cfg, limits, replica)
    }

    /// Serves on sockets the test bound.
    fn start_on(
        udp: UdpSocket,
        tcp: TcpListener,
        cfg: DnsSettings,
        limits: Limits,
        replica: Arc<Replica>,
    ) -> Self {
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let responder = Responder::new(&cfg, DATACENTER).unwrap();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            serve_limited(
                udp, tcp, responder, &cfg, limits, replica, None, None, token,
            )
            .await
        });
        Self {
            udp: udp_addr,
            tcp: tcp_addr,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = timeout(DEADLINE, self.task).await.expect("serve stops");
        result.unwrap().expect("serve ends cleanly");
    }
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.id = 777;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

/// Sends raw bytes over UDP; `None` if nothing comes back within `wait`.
async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    buf.truncate(n);
    Some(buf)
}

async fn udp(server: SocketAddr, m: &Message) -> (Message, usize) {
    let bytes = udp_raw(server, &fit::encode(m).unwrap(), DEADLINE)
        .await
        .expect("a UDP answer");
    (
        Message::from_vec(&bytes).expect("answer parses"),
        bytes.len(),
    )
}

async fn tcp(server: SocketAddr, m: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let bytes = fit::encode(m).unwrap();
    stream
        .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let read = async {
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    let buf = timeout(DEADLINE, read).await.expect("a TCP answer");
    Message::from_vec(&buf).expect("answer parses")
}

#[tokio::test]
async fn every_name_form_over_udp_and_tcp() {
    let server = TestServer::start(DnsSettings::default(), fixture::replica()).await;
    let cases: &[(&str, RecordType, ResponseCode, usize)] = &[
        (
            "web.service.consul.",
            RecordType::A,
            ResponseCode::NoError,
            2,
        ),
        (
            "primary.web.service.consul.",
            RecordType::A,
            ResponseCode::NoError,
            1,
        ),
        (
            "web.service.dc1.consul.",
            RecordType::A,
            ResponseCode::NoError,
            2,
        ),
        (
            "_web._tcp.service.consul.",
            RecordType::SRV,
            ResponseCode::NoError,
            2,
        ),
        (
            "_web._secondary.service.dc1.consul.",
            RecordType::SRV,
            ResponseCode::NoError,
            1,
        ),
        (
            "v6only.service.consul.",
            RecordType::AAAA,
            ResponseCode::NoError,
            1,
        ),
        ("n1.node.consul.", RecordType::A, ResponseCode::NoError, 1),
        (
            "n1.node.dc1.consul.",
            RecordType::TXT,
            ResponseCode::NoError,
            2,
        ),
        (
            "0a000002.addr.consul.",
            RecordType::A,
            ResponseCode::NoError,
            1,
        ),
        (
            "2.0.0.10.in-addr.arpa.",
            RecordType::PTR,
            ResponseCode::NoError,
            1,
        ),
        ("consul.", RecordType::SOA, ResponseCode::NoError, 1),
        ("consul.", RecordType::NS, ResponseCode::NoError, 1),
        (
            "WEB.Service.CONSUL.",
            RecordType::A,
            ResponseCode::NoError,
            2,
        ),
        (
            "nope.service.consul.",
            RecordType::A,
            ResponseCode::NXDomain,
            0,
        ),
        (
            "web.service.dc9.consul.",
            RecordType::A,
            ResponseCode::NXDomain,
            0,
        ),
        (
            "web.service.consul.",
            RecordType::AAAA,
            ResponseCode::NoError,
            0,
        ),
    ];
    for &(name, qtype, rcode, count) in cases {
        let q = query(name, qtype, None);
        let (by_udp, _) = udp(server.udp, &q).await;
        let by_tcp = tcp(server.tcp, &q).await;
        for (m, how) in [(by_udp, "udp"), (by_tcp, "tcp")] {
            assert_eq!(m.metadata.response_code, rcode, "{name} {qtype} over {how}");
            assert_eq!(m.answers.len(), count, "{name} {qtype} over {how}");
            assert!(m.metadata.authoritative, "{name} {qtype} over {how}");
            assert_eq!(m.metadata.id, 777);
            if count == 0 {
                assert_eq!(m.authorities.len(), 1, "SOA with {name} {qtype}");
                assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn truncation_over_udp_full_answer_over_tcp() {
    let cfg = DnsSettings {
        enable_truncate: true,
        ..DnsSettings::default()
    };
    let server = TestServer::start(cfg, fixture::replica()).await;
    // Plain UDP: the answer limit, flagged because enable_truncate is on.
    let (m, len) = udp(
        server.udp,
        &query("big.service.consul.", RecordType::A, None),
    )
    .await;
    assert!(m.metadata.truncation);
    assert_eq!(m.answers.len(), 3);
    assert!(len <= 512);
    // SRV with EDNS: cut by size, whole records only, OPT echoed.
    let mut cut = 0;
    for size in [512u16, 1232] {
        let q = query("big.service.consul.", RecordType::SRV, Some(size));
        let (m, len) = udp(server.udp, &q).await;
        assert!(len <= usize::from(size), "{len} > {size}");
        assert!(m.metadata.truncation, "50 SRV do not fit {size}");
        assert!(m.edns.is_some());
        assert_eq!(m.additionals.len(), m.answers.len());
        assert!(m.answers.len() > cut, "a larger buffer carries more");
        cut = m.answers.len();
    }
    // With compression, all 50 fit in 4096 bytes.
    let q = query("big.service.consul.", RecordType::SRV, Some(4096));
    let (m, len) = udp(server.udp, &q).await;
    assert!(len <= 4096);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 50);
    let m = tcp(
        server.tcp,
        &query("big.service.consul.", RecordType::SRV, None),
    )
    .await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 50);
    assert_eq!(m.additionals.len(), 50);
    server.stop().await;
}

#[tokio::test]
async fn refused_without_recursors() {
    let server = TestServer::start(DnsSettings::default(), fixture::replica()).await;
    let q = query("example.com.", RecordType::A, None);
    assert_eq!(
        udp(server.udp, &q).await.0.metadata.response_code,
        ResponseCode::Refused
    );
    assert_eq!(
        tcp(server.tcp, &q).await.metadata.response_code,
        ResponseCode::Refused
    );
    server.stop().await;
}

#[tokio::test]
async fn servfail_when_the_recursor_never_answers() {
    // Bound, so datagrams are accepted, but never read: every attempt times out.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = DnsSettings {
        recursors: vec![silent.local_addr().unwrap()],
        recursor_timeout: Duration::from_millis(200),
        ..DnsSettings::default()
    };
    let server = TestServer::start(cfg, fixture::replica()).await;
    let (m, _) = udp(server.udp, &query("example.com.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // Our own names still answer while recursion fails.
    let (m, _) = udp(
        server.udp,
        &query("web.service.consul.", RecordType::A, None),
    )
    .await;
    assert_eq!(m.answers.len(), 2);
    server.stop().await;
}

fn zone_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.internal.zone"), text).unwrap();
    dir
}

#[tokio::test]
async fn forwards_to_a_recursor_serving_a_zone() {
    let mut text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("zones/example.internal.zone"),
    )
    .unwrap();
    // Enough addresses that the upstream's UDP answer truncates, forcing TCP.
    for i in 0..100 {
        text.push_str(&format!("many IN A 10.3.0.{i}\n"));
    }
    let dir = zone_dir(&text);
    let upstream_cfg = DnsSettings {
        zone_dirs: vec![dir.path().to_owned()],
        ..DnsSettings::default()
    };
    let upstream = TestServer::start(upstream_cfg, Arc::new(Replica::new())).await;
    // The upstream serves the zone authoritatively itself.
    let m = tcp(
        upstream.tcp,
        &query("www.example.internal.", RecordType::A, None),
    )
    .await;
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 1);

    let cfg = DnsSettings {
        recursors: vec![upstream.udp],
        ..DnsSettings::default()
    };
    let server = TestServer::start(cfg, fixture::replica()).await;
    let (m, _) = udp(
        server.udp,
        &query("www.example.internal.", RecordType::A, None),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.recursion_available);
    assert!(!m.metadata.authoritative);
    assert_eq!(m.metadata.id, 777);
    assert_eq!(
        m.answers[0].data.ip_addr(),
        Some("10.0.0.80".parse().unwrap())
    );
    let (m, _) = udp(
        server.udp,
        &query("nope.example.internal.", RecordType::A, None),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // Upstream truncates over UDP; we retry over TCP and relay all of it.
    let m = tcp(
        server.tcp,
        &query("many.example.internal.", RecordType::A, None),
    )
    .await;
    assert_eq!(m.answers.len(), 100);
    assert!(!m.metadata.truncation);
    // To a UDP client the same answer is cut to fit and flagged.
    let (m, len) = udp(
        server.udp,
        &query("many.example.internal.", RecordType::A, None),
    )
    .await;
    assert!(m.metadata.truncation);
    assert!(len <= 512);
    server.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn garbage_is_answered_or_dropped_and_service_continues() {
    let server = TestServer::start(DnsSettings::default(), fixture::replica()).await;
    let quiet = Duration::from_millis(300);
    // Too short for a header: dropped.
    assert!(udp_raw(server.udp, b"\x01\x02\x03", quiet).await.is_none());
    // A header promising a question that is not there: FORMERR.
    let bytes = udp_raw(
        server.udp,
        &[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff],
        DEADLINE,
    )
    .await
    .expect("FORMERR");
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 0xabcd);
    // Random junk of many lengths: whatever comes back must parse.
    let mut seed = 0x1234_5678_9abc_def0u64;
    for len in [12usize, 13, 40, 100, 511, 512, 1500] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        if let Some(bytes) = udp_raw(server.udp, &junk, Duration::from_millis(100)).await {
            Message::from_vec(&bytes).expect("any answer parses");
        }
    }
    // TCP garbage closes that connection only.
    let mut stream = TcpStream::connect(server.tcp).await.unwrap();
    stream.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    let mut rest = Vec::new();
    timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .expect("closed")
        .ok();
    // Still serving on both transports.
    let q = query("web.service.consul.", RecordType::A, None);
    assert_eq!(udp(server.udp, &q).await.0.answers.len(), 2);
    assert_eq!(tcp(server.tcp, &q).await.answers.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn tcp_carries_several_queries_per_connection() {
    let server = TestServer::start(DnsSettings::default(), fixture::replica()).await;
    let mut stream = TcpStream::connect(server.tcp).await.unwrap();
    for _ in 0..3 {
        let bytes = fit::encode(&query("n1.node.consul.", RecordType::A, None)).unwrap();
        stream
            .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&bytes).await.unwrap();
        let len = timeout(DEADLINE, stream.read_u16()).await.unwrap().unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(Message::from_vec(&buf).unwrap().answers.len(), 1);
    }
    server.stop().await;
}

#[tokio::test]
async fn answers_follow_catalog_changes() {
    let replica = fixture::replica();
    let server = TestServer::start(DnsSettings::default(), replica.clone()).await;
    let q = query("late.service.consul.", RecordType::A, None);
    assert_eq!(
        udp(server.udp, &q).await.0.metadata.response_code,
        ResponseCode::NXDomain
    );
    fixture::register(
        &replica,
        1000,
        fixture::Reg {
            node: "n9",
            address: "10.0.0.9",
            service: Some(("late", "late", 1)),
            ..fixture::Reg::default()
        },
    );
    assert_eq!(udp(server.udp, &q).await.0.answers.len(), 1);
    server.stop().await;
}

/// An ACL write through the replica, at its next index.
fn apply_acl(replica: &Replica, op: crate::catalog::AclOp) {
    let at = replica.applied_index() + 1;
    let outcome = replica.apply(at, &crate::catalog::Command::Acl(op));
    assert!(
        matches!(outcome, crate::catalog::Outcome::Applied(_)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn with_default_deny_the_anonymous_token_answers_once_its_policy_allows() {
    use crate::acl::DefaultPolicy;
    use crate::catalog::{
        ANONYMOUS_ACCESSOR_ID, ANONYMOUS_SECRET_ID, AclContext, AclOp, AclPolicy, AclToken,
        secret_hash,
    };
    let replica = fixture::replica();
    replica.enable_acl(AclContext {
        default: DefaultPolicy::Deny,
        datacenter: DATACENTER.into(),
    });
    // ACLs on, no default token: the anonymous token.
    let cfg = DnsSettings {
        acl_token: Some(String::new()),
        ..DnsSettings::default()
    };
    let server = TestServer::start(cfg, replica.clone()).await;
    let web = query("web.service.consul.", RecordType::A, None);
    let n1 = query("n1.node.consul.", RecordType::A, None);
    let code = |m: &Message| m.metadata.response_code;
    // Twice: a second answer is computed as the first.
    for _ in 0..2 {
        assert_eq!(code(&udp(server.udp, &web).await.0), ResponseCode::NXDomain);
        assert_eq!(code(&tcp(server.tcp, &web).await), ResponseCode::NXDomain);
        assert_eq!(code(&udp(server.udp, &n1).await.0), ResponseCode::NXDomain);
    }

    // The anonymous token gets a policy that reads every service and node
    // n1 only. Neither write touches the view: only the newly resolved
    // tokens change the answers.
    let view_before = replica.view();
    let policy = AclPolicy {
        id: "5f1c8a3e-0000-4000-8000-000000000001".into(),
        name: "dns-read".into(),
        description: String::new(),
        rules: r#"service_prefix "" { policy = "read" }
node "n1" { policy = "read" }"#
            .into(),
        datacenters: Vec::new(),
        create_index: 0,
        modify_index: 0,
    };
    apply_acl(&replica, AclOp::SetPolicy(policy.clone()));
    apply_acl(
        &replica,
        AclOp::SetToken(AclToken {
            accessor_id: ANONYMOUS_ACCESSOR_ID.into(),
            secret_id: ANONYMOUS_SECRET_ID.into(),
            secret_hash: secret_hash(ANONYMOUS_SECRET_ID),
            description: "Anonymous Token".into(),
            policies: vec![policy.id.clone()],
            local: false,
            create_time: 0,
            create_index: 0,
            modify_index: 0,
        }),
    );
    assert!(Arc::ptr_eq(&view_before, &replica.view()));
    for _ in 0..2 {
        let (m, _) = udp(server.udp, &web).await;
        assert_eq!(code(&m), ResponseCode::NoError);
        // web2 runs on n2, which the token may not read.
        let ips: Vec<_> = m.answers.iter().filter_map(|r| r.data.ip_addr()).collect();
        assert_eq!(ips, vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(tcp(server.tcp, &web).await.answers.len(), 1);
        assert_eq!(udp(server.udp, &n1).await.0.answers.len(), 1);
        let n2 = query("n2.node.consul.", RecordType::A, None);
        assert_eq!(code(&udp(server.udp, &n2).await.0), ResponseCode::NXDomain);
    }

    // The policy goes: back to nothing.
    apply_acl(&replica, AclOp::DeletePolicy(policy.id));
    assert_eq!(code(&udp(server.udp, &web).await.0), ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_default_token_is_servfail_until_the_token_exists() {
    use crate::acl::DefaultPolicy;
    use crate::catalog::{AclContext, AclOp, AclToken, secret_hash};
    let replica = fixture::replica();
    replica.enable_acl(AclContext {
        default: DefaultPolicy::Deny,
        datacenter: DATACENTER.into(),
    });
    let secret = "0f7c51a4-0000-4000-8000-00000000d0d0";
    let cfg = DnsSettings {
        acl_token: Some(secret.into()),
        ..DnsSettings::default()
    };
    let server = TestServer::start(cfg, replica.clone()).await;
    let web = query("web.service.consul.", RecordType::A, None);
    for _ in 0..2 {
        let (m, _) = udp(server.udp, &web).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
    // Created as a management token: everything answers.
    apply_acl(
        &replica,
        AclOp::InitialManagement(AclToken {
            accessor_id: "0f7c51a4-0000-4000-8000-00000000acce".into(),
            secret_id: secret.into(),
            secret_hash: secret_hash(secret),
            description: String::new(),
            policies: Vec::new(),
            local: false,
            create_time: 0,
            create_index: 0,
            modify_index: 0,
        }),
    );
    let (m, _) = udp(server.udp, &web).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_bad_zone_file_stops_start_up() {
    let dir = zone_dir("$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n\nbad IN A 300.1.1.1\n");
    let cfg = DnsSettings {
        zone_dirs: vec![dir.path().to_owned()],
        ..DnsSettings::default()
    };
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve(
        udp,
        tcp,
        cfg,
        &crate::config::LimitsSettings::default(),
        crate::prepared_query::Executor::new(
            Arc::new(Replica::new()),
            DATACENTER.into(),
            "n1".into(),
            Arc::new(crate::prepared_query::NoFederation),
        ),
        crate::remote::Remote::alone(DATACENTER),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    match err {
        DnsError::Zone { path, line, .. } => {
            assert!(path.ends_with("example.internal.zone"));
            assert_eq!(line, 4);
        }
        other => panic!("expected a zone error, got {other}"),
    }
}

#[tokio::test]
async fn forwards_beyond_the_cap_are_shed_at_once() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let timeout_per_try = Duration::from_secs(30);
    let cfg = DnsSettings {
        recursors: vec![silent.local_addr().unwrap()],
        recursor_timeout: timeout_per_try,
        ..DnsSettings::default()
    };
    let limits = Limits {
        max_concurrent_forwards: 1,
        ..Limits::default()
    };
    let server = TestServer::start_limited(cfg, limits, fixture::replica()).await;
    let bytes = fit::encode(&query("example.com.", RecordType::A, None)).unwrap();
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    );
    a.send_to(&bytes, server.udp).await.unwrap();
    b.send_to(&bytes, server.udp).await.unwrap();
    // One of the two holds the only slot for 30 s; the other is shed now.
    let started = std::time::Instant::now();
    let (mut ba, mut bb) = (vec![0u8; 512], vec![0u8; 512]);
    let n = tokio::select! {
        r = a.recv(&mut ba) => { let n = r.unwrap(); ba.truncate(n); ba }
        r = b.recv(&mut bb) => { let n = r.unwrap(); bb.truncate(n); bb }
        () = tokio::time::sleep(DEADLINE) => panic!("nothing was shed"),
    };
    assert!(started.elapsed() < timeout_per_try);
    let m = Message::from_vec(&n).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    server.stop().await;
}

#[tokio::test]
async fn tcp_connections_beyond_the_cap_are_closed() {
    let limits = Limits {
        max_tcp_connections: 1,
        ..Limits::default()
    };
    let server =
        TestServer::start_limited(DnsSettings::default(), limits, fixture::replica()).await;
    let q = fit::encode(&query("n1.node.consul.", RecordType::A, None)).unwrap();
    let framed: Vec<u8> = u16::try_from(q.len())
        .unwrap()
        .to_be_bytes()
        .into_iter()
        .chain(q.iter().copied())
        .collect();
    // The first connection is served, proving it holds the only slot.
    let mut first = TcpStream::connect(server.tcp).await.unwrap();
    first.write_all(&framed).await.unwrap();
    timeout(DEADLINE, first.read_u16()).await.unwrap().unwrap();
    let mut rest = vec![0u8; 1024];
    let _ = first.read(&mut rest).await.unwrap();
    // The second is closed without an answer.
    let mut second = TcpStream::connect(server.tcp).await.unwrap();
    let _ = second.write_all(&framed).await;
    let mut buf = Vec::new();
    let read = timeout(DEADLINE, second.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(read.is_err() || buf.is_empty(), "got {} bytes", buf.len());
    // Once the first goes away its slot is free again.
    drop(first);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut third = TcpStream::connect(server.tcp).await.unwrap();
        let _ = third.write_all(&framed).await;
        if let Ok(Ok(_)) = timeout(Duration::from_secs(1), third.read_u16()).await {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
    }
    server.stop().await;
}

/// The address the port-0 `SO_REUSEPORT` test binds, used by no other test:
/// on 127.0.0.1 the agents of other tests, bound with `SO_REUSEPORT` to
/// port 0 as well, may be given the same port (the kernel lets sockets of
/// one owner share it) and would be counted as ours.
const REUSE_PORT_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 1, 53, 1);

/// The UDP sockets bound to `port` on [`REUSE_PORT_IP`], from `/proc/net/udp`
/// (which writes the address as the native-endian hex of its bytes). The
/// kernel writes that table a page at a time, and a socket that other tests
/// open or close between pages shifts the rest: one read can list a socket
/// twice (seen once in CI) or miss one. So sockets are counted by inode,
/// and only once two reads in a row agree.
fn udp_sockets_on(port: u16) -> usize {
    let ip = u32::from_le_bytes(REUSE_PORT_IP.octets());
    let local = format!("{ip:08X}:{port:04X}");
    let inodes = || -> std::collections::BTreeSet<String> {
        let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp is readable");
        table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|fields| fields.get(1) == Some(&local.as_str()))
            .filter_map(|fields| fields.get(9).map(|inode| (*inode).to_owned()))
            .collect()
    };
    let mut last = inodes();
    for _ in 0..100 {
        let now = inodes();
        if now == last {
            break;
        }
        last = now;
    }
    last.len()
}

/// As the agent binds DNS: UDP with `SO_REUSEPORT` on port 0, TCP on the
/// port it got. With 4 workers, the server binds 3 more UDP sockets to that
/// port, and queries from 64 source ports, spread by the kernel over the 4
/// sockets by their source port, are all answered: were any worker's socket
/// unread, about a quarter would go unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reuse_port_worker_answers_on_the_port_zero_gave() {
    use socket2::{Domain, Protocol, Socket, Type};
    let (socket, tcp) = loop {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        super::set_reuse_port(&s).unwrap();
        s.set_nonblocking(true).unwrap();
        let any = SocketAddr::from((REUSE_PORT_IP, 0));
        s.bind(&any.into()).unwrap();
        let socket = UdpSocket::from_std(s.into()).unwrap();
        if let Ok(tcp) = TcpListener::bind(socket.local_addr().unwrap()).await {
            break (socket, tcp);
        }
    };
    let port = socket.local_addr().unwrap().port();
    assert_eq!(udp_sockets_on(port), 1);
    let limits = Limits {
        udp_workers: 4,
        ..Limits::default()
    };
    let server = TestServer::start_on(
        socket,
        tcp,
        DnsSettings::default(),
        limits,
        fixture::replica(),
    );
    assert_eq!(server.udp.port(), port);
    // The workers bind their sockets before `serve` awaits anything, but
    // on the runtime: wait for them to appear.
    let started = std::time::Instant::now();
    while udp_sockets_on(port) < 4 {
        assert!(
            started.elapsed() < DEADLINE,
            "{} sockets on port {port}",
            udp_sockets_on(port)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        udp_sockets_on(port),
        4,
        "one socket per worker, all on one port"
    );

    let asks = (0..64).map(|_| async {
        let (m, _) = udp(
            server.udp,
            &query("web.service.consul.", RecordType::A, None),
        )
        .await;
        (m.metadata.response_code, m.answers.len())
    });
    for (rcode, answers) in futures::future::join_all(asks).await {
        assert_eq!((rcode, answers), (ResponseCode::NoError, 2));
    }
    server.stop().await;
    assert_eq!(
        udp_sockets_on(port),
        0,
        "every worker's socket is closed on stop"
    );
}

/// End-to-end UDP throughput with 64 queries in flight, for a rough number,
/// with response-rate limiting off and then on at a rate never reached (the
/// cost of counting each datagram).
/// Run with `cargo test --release --lib udp_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn udp_throughput() {
    let counted = DnsSettings {
        rrl: crate::config::RrlSettings {
            rate: 1_000_000,
            ..Default::default()
        },
        ..DnsSettings::default()
    };
    // ACLs on under default deny with 1,000 tokens, answering as one that
    // reads everything: what the issue's ≤ 5% target compares.
    let acl_on = DnsSettings {
        acl_token: Some("token-999".into()),
        ..DnsSettings::default()
    };
    for (label, settings, acl) in [
        ("RRL off", DnsSettings::default(), false),
        ("RRL on", counted, false),
        ("ACLs on, 1,000 tokens", acl_on, true),
    ] {
        let replica = fixture::replica();
        if acl {
            with_tokens(&replica, 1000);
        }
        let server = TestServer::start(settings, replica).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(server.udp).await.unwrap();
        let bytes = fit::encode(&query("web.service.consul.", RecordType::A, None)).unwrap();
        for _ in 0..64 {
            client.send(&bytes).await.unwrap();
        }
        let mut buf = vec![0u8; 4096];
        let (mut answered, run) = (0u64, Duration::from_secs(3));
        let started = std::time::Instant::now();
        while started.elapsed() < run {
            // A lost datagram times out; either way another goes in flight.
            if let Ok(Ok(_)) = timeout(Duration::from_millis(200), client.recv(&mut buf)).await {
                answered += 1;
            }
            client.send(&bytes).await.unwrap();
        }
        let qps = answered as f64 / started.elapsed().as_secs_f64();
        eprintln!("UDP web A, {label}: {qps:.0} answers/s with 64 in flight");
        server.stop().await;
    }
}

/// Turns ACLs on in `replica` under default deny and writes `n` tokens
/// (`token-0` …) linking one policy that reads every service and node.
fn with_tokens(replica: &Replica, n: usize) {
    use crate::catalog::{AclContext, AclOp, AclPolicy, AclToken, secret_hash};
    replica.enable_acl(AclContext {
        default: crate::acl::DefaultPolicy::Deny,
        datacenter: DATACENTER.into(),
    });
    let policy = AclPolicy {
        id: "3a9d2f60-0000-4000-8000-000000000001".into(),
        name: "read-all".into(),
        description: String::new(),
        rules: "service_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }"
            .into(),
        datacenters: Vec::new(),
        create_index: 0,
        modify_index: 0,
    };
    apply_acl(replica, AclOp::SetPolicy(policy.clone()));
    for i in 0..n {
        let secret = format!("token-{i}");
        apply_acl(
            replica,
            AclOp::SetToken(AclToken {
                accessor_id: format!("3a9d2f60-0000-4000-8000-{i:012}"),
                secret_hash: secret_hash(&secret),
                secret_id: secret,
                description: String::new(),
                policies: vec![policy.id.clone()],
                local: false,
                create_time: 0,
                create_index: 0,
                modify_index: 0,
            }),
        );
    }
}

/// The same load against a plain recv/respond/send loop over the same pure
/// responder, to separate hickory's per-datagram cost from ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn udp_throughput_plain_loop() {
    let responder = Responder::new(&DnsSettings::default(), DATACENTER).unwrap();
    let replica = fixture::replica();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let serving = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = tokio::select! {
                () = token.cancelled() => return,
                r = socket.recv_from(&mut buf) => r.unwrap(),
            };
            let view = replica.view();
            if let super::Reply::Respond(m) =
                responder.respond(&view, &buf[..n], super::Transport::Udp, peer)
            {
                let out = fit::encode(&m).unwrap();
                let _ = socket.send_to(&out, peer).await;
            }
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(addr).await.unwrap();
    let bytes = fit::encode(&query("web.service.consul.", RecordType::A, None)).unwrap();
    for _ in 0..64 {
        client.send(&bytes).await.unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let (mut answered, run) = (0u64, Duration::from_secs(3));
    let started = std::time::Instant::now();
    while started.elapsed() < run {
        if let Ok(Ok(_)) = timeout(Duration::from_millis(200), client.recv(&mut buf)).await {
            answered += 1;
        }
        client.send(&bytes).await.unwrap();
    }
    let qps = answered as f64 / started.elapsed().as_secs_f64();
    eprintln!("plain loop web A: {qps:.0} answers/s with 64 in flight");
    stop.cancel();
    serving.await.unwrap();
}
