//! DNS questions to an agent with hickory-proto messages over plain UDP and
//! TCP sockets, `dig` for what the README promises, and readers of answers.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// A recursion-desired query for `name`, optionally with an EDNS buffer of
/// `edns_size`; its ID is random, and callers that match answers to
/// questions set their own (`metadata.id`).
pub fn query_message(name: &str, rtype: RecordType, edns_size: Option<u16>) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap_or_else(|e| panic!("query name {name:?}: {e}")),
        rtype,
    ));
    if let Some(size) = edns_size {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    use std::time::SystemTime;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    (nanos & 0xffff) as u16
}

/// One UDP exchange with `server`, from the server's own address (so an
/// agent on 127.0.0.x is asked from 127.0.0.x).
pub fn udp_exchange(server: SocketAddr, question: &[u8]) -> Message {
    let sock = UdpSocket::bind((server.ip(), 0)).expect("bind udp");
    sock.set_read_timeout(Some(EXCHANGE_TIMEOUT))
        .expect("timeout");
    sock.send_to(question, server).expect("send");
    let mut buf = [0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).expect("dns answer over udp");
    Message::from_vec(&buf[..n]).expect("parse answer")
}

/// One TCP exchange (2-byte length prefix) with `server`.
pub fn tcp_exchange(server: SocketAddr, question: &[u8]) -> Message {
    let mut s = TcpStream::connect_timeout(&server, EXCHANGE_TIMEOUT).expect("connect tcp");
    s.set_read_timeout(Some(EXCHANGE_TIMEOUT)).expect("timeout");
    let len = u16::try_from(question.len()).expect("a question fits 64 KiB");
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(question);
    s.write_all(&framed).expect("write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("read length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).expect("read answer");
    Message::from_vec(&buf).expect("parse answer")
}

/// Asks `server` for `name` over UDP.
pub fn query_udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let q = query_message(name, rtype, None);
    udp_exchange(server, &q.to_vec().expect("encode query"))
}

/// Asks `server` for `name` over TCP (no truncation).
pub fn query_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let q = query_message(name, rtype, None);
    tcp_exchange(server, &q.to_vec().expect("encode query"))
}

/// Runs `dig` against `server` with `args`; returns its stdout.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The addresses (A and AAAA) of an answer, sorted.
pub fn a_records(m: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The SRV ports of an answer, sorted.
pub fn srv_ports(m: &Message) -> Vec<u16> {
    let mut v: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_round_trips() {
        let mut q = query_message("web.service.consul.", RecordType::SRV, Some(4096));
        q.metadata.id = 7;
        let m = Message::from_vec(&q.to_vec().expect("encodes")).expect("parses");
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.queries.len(), 1);
        assert!(m.metadata.recursion_desired);
        assert!(a_records(&m).is_empty() && srv_ports(&m).is_empty());
    }
}
