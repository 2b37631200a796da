//! DNS abuse through UDP, as an attacker spoofing a victim would try it,
//! against a real dev agent: response-rate limiting per source prefix
//! (`dns_config.rrl_*`), and the amplification cap on plain UDP answers.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use trellis_testkit::Agent;
use trellis_testkit::dns::query_message;

use crate::harness::{temp_dir, trellis};

/// The flooding source (the victim an attacker would spoof).
const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 88, 2));
/// Another client, in another /24 (the default IPv4 prefix), so in a
/// bucket of its own.
const NEIGHBOUR: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 89, 3));

/// Responses per second per prefix in the flood test.
const RATE: usize = 5;
/// Queries in the flood.
const FLOOD: usize = 100;
/// Longest wait for anything the agent should send: far above every
/// interval in these tests, so it only ends a broken one.
const DEADLINE: Duration = Duration::from_secs(10);
/// After the flood, this long with nothing arriving means the agent is done
/// answering it: UDP drops are silent, so silence is the only end signal.
const QUIET: Duration = Duration::from_secs(2);

/// A dev agent with `dns_config` set to `table`.
fn dev_with_dns(table: &str) -> (Agent, tempfile::TempDir) {
    let dir = temp_dir();
    let file = dir.path().join("dns.toml");
    std::fs::write(&file, format!("[dns_config]\n{table}")).expect("write config");
    (trellis().dev().config_file(&file).start(), dir)
}

fn udp_from(ip: IpAddr) -> UdpSocket {
    let sock = UdpSocket::bind((ip, 0)).expect("bind the client address");
    sock.set_read_timeout(Some(DEADLINE)).expect("timeout");
    sock
}

/// What came back for a flood.
#[derive(Debug, Default)]
struct Tally {
    /// Real answers (records, no TC).
    answered: usize,
    /// Empty truncated answers (the slips).
    slipped: usize,
}

/// Sends `n` queries for `name` from `sock` to `server` at once, then reads
/// what comes back until the agent falls quiet. Also returns how long from
/// the first query to the last response: the window the bucket refilled in.
fn flood(sock: &UdpSocket, server: SocketAddr, name: &str, n: usize) -> (Tally, Duration) {
    let started = Instant::now();
    let mut ids = HashSet::new();
    for i in 0..n {
        let mut q = query_message(name, RecordType::A, None);
        q.metadata.id = u16::try_from(i).expect("a small flood");
        ids.insert(q.metadata.id);
        sock.send_to(&q.to_vec().expect("encode"), server)
            .expect("send");
    }
    let mut window = started.elapsed();
    sock.set_read_timeout(Some(QUIET)).expect("timeout");
    let mut tally = Tally::default();
    let mut buf = [0u8; 4096];
    while let Ok((len, _)) = sock.recv_from(&mut buf) {
        window = started.elapsed();
        let m = Message::from_vec(&buf[..len]).expect("a DNS response");
        assert!(ids.remove(&m.metadata.id), "one response per query: {m:?}");
        if m.metadata.truncation {
            assert!(
                m.answers.is_empty() && m.additionals.is_empty(),
                "a slip is empty: {m:?}"
            );
            assert_eq!(
                m.queries[0].name.to_ascii(),
                name,
                "and echoes the question"
            );
            tally.slipped += 1;
        } else {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
            assert!(!m.answers.is_empty(), "{m:?}");
            tally.answered += 1;
        }
    }
    (tally, window)
}

/// One query over TCP from `from`: answered in full.
async fn tcp_query_from(from: IpAddr, server: SocketAddr, name: &str) -> Message {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the client address");
    let mut stream = tokio::time::timeout(DEADLINE, socket.connect(server))
        .await
        .expect("connect in time")
        .expect("connect");
    let q = query_message(name, RecordType::A, None)
        .to_vec()
        .expect("encode");
    let mut framed = u16::try_from(q.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut len))
        .await
        .expect("answered in time")
        .expect("read length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.expect("read answer");
    Message::from_vec(&buf).expect("parse answer")
}

#[tokio::test]
async fn a_flooding_prefix_is_limited_and_slipped_while_another_is_answered() {
    let (agent, _dir) = dev_with_dns(&format!("rrl_rate = {RATE}\nrrl_slip = 2\n"));
    let server = agent.addrs().dns;
    let name = "consul.service.consul.";

    let flooder = udp_from(FLOODER);
    let (tally, window) = flood(&flooder, server, name, FLOOD);
    eprintln!("flood of {FLOOD}, answered within {window:?}: {tally:?}");
    // A full bucket, plus what refilled while the flood was answered.
    let most = RATE + RATE * (window.as_millis() as usize) / 1000 + 1;
    assert!(
        (RATE..=most).contains(&tally.answered),
        "{tally:?}: between {RATE} and {most} answered"
    );
    // Of the rest, every second one slips: never more (a lost datagram
    // can only make fewer).
    let limited = FLOOD - tally.answered;
    assert!(
        tally.slipped <= limited.div_ceil(2) && tally.slipped >= limited * 2 / 5,
        "{tally:?}: about {} of {limited} limited should slip",
        limited / 2
    );

    // Another /24 has its own bucket: answered, all of its rate.
    let neighbour = udp_from(NEIGHBOUR);
    for i in 0..RATE {
        let mut q = query_message(name, RecordType::A, None);
        q.metadata.id = 1000 + u16::try_from(i).expect("small");
        neighbour
            .send_to(&q.to_vec().expect("encode"), server)
            .expect("send");
        let mut buf = [0u8; 4096];
        let (len, _) = neighbour
            .recv_from(&mut buf)
            .expect("the neighbour is answered");
        let m = Message::from_vec(&buf[..len]).expect("parse");
        assert_eq!(m.metadata.id, q.metadata.id);
        assert!(!m.metadata.truncation && !m.answers.is_empty(), "{m:?}");
    }

    // The flooded source itself still gets answers over TCP, which the
    // slips point it at: TCP is not limited (it cannot be spoofed).
    for _ in 0..2 * RATE {
        let m = tcp_query_from(FLOODER, server, name).await;
        assert!(!m.answers.is_empty() && !m.metadata.truncation, "{m:?}");
    }
}

#[tokio::test]
async fn rrl_is_off_by_default() {
    let agent = trellis().dev().start();
    let (tally, _) = flood(
        &udp_from(FLOODER),
        agent.addrs().dns,
        "consul.service.consul.",
        FLOOD / 2,
    );
    assert_eq!((tally.answered, tally.slipped), (FLOOD / 2, 0), "{tally:?}");
}

#[tokio::test]
async fn plain_udp_answers_amplify_at_most_ten_times() {
    // Consul's answer limit off, so only the size cap bounds an answer.
    let (agent, _dir) = dev_with_dns("udp_answer_limit = 1000\n");
    for i in 0..12 {
        let node = format!("{}-{i:02}", "n".repeat(59));
        let r = agent
            .put(
                "/v1/catalog/register",
                &json!({"Node": node, "Address": format!("10.5.0.{i}"),
                        "Service": {"Service": "s", "ID": format!("s{i}"), "Port": 80}}),
            )
            .await
            .expect("PUT");
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let server = agent.addrs().dns;
    let sock = udp_from(FLOODER);
    let forms = [
        ("s.service.consul.", RecordType::A),
        ("s.service.consul.", RecordType::SRV),
        ("_s._tcp.service.consul.", RecordType::SRV),
        ("s.service.consul.", RecordType::ANY),
        ("missing.service.consul.", RecordType::A),
        ("n.node.consul.", RecordType::A),
        ("consul.", RecordType::ANY),
    ];
    let mut worst = (0.0f64, "");
    let mut cut = 0;
    for (name, qtype) in forms {
        let q = query_message(name, qtype, None).to_vec().expect("encode");
        sock.send_to(&q, server).expect("send");
        let mut buf = [0u8; 4096];
        let (len, _) = sock.recv_from(&mut buf).expect("an answer");
        let m = Message::from_vec(&buf[..len]).expect("parse");
        let ratio = len as f64 / q.len() as f64;
        eprintln!("{name} {qtype}: {} -> {len} bytes, {ratio:.2}x", q.len());
        // The cap is ten times the request, inclusive (`fit::MAX_AMPLIFICATION`):
        // an answer packed to the byte may reach it, never pass it.
        assert!(len <= 10 * q.len(), "{name} {qtype}: {ratio:.2}x");
        if ratio > worst.0 {
            worst = (ratio, name);
        }
        // A cut answer says so; TCP carries it whole.
        let full = agent.query_tcp(name, qtype);
        if full.answers.len() > m.answers.len() {
            assert!(m.metadata.truncation, "{name} {qtype} cut without TC");
            cut += 1;
        }
    }
    eprintln!(
        "worst plain-UDP amplification: {:.2}x ({})",
        worst.0, worst.1
    );
    assert!(cut > 0, "some answer needed the cap");
}
