//! Fitting a response into the packet size the client can take.
//!
//! Whole records are dropped, never parts of one: first answers from the end
//! (the order is already shuffled), together with additional records that
//! only the dropped answers referred to; then, if even an empty answer does
//! not fit, the additional and authority sections. Any drop sets TC so the
//! client can retry over TCP.

use std::collections::HashSet;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// How many times its request's size a plain (non-EDNS) UDP response may
/// be, so a spoofed query cannot make us an amplifier. EDNS clients keep
/// the size they advertise, as every resolver does: RRL is their guard.
pub(crate) const MAX_AMPLIFICATION: usize = 10;

/// The transport a request arrived on; it decides the response size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: the client's EDNS size up to 4096, or without EDNS, 512 bytes
    /// and at most [`MAX_AMPLIFICATION`] times the request.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// The smallest size every DNS client accepts (RFC 1035).
pub(crate) const MIN_UDP: usize = 512;
/// The largest UDP payload we send even if the client offers more.
pub(crate) const MAX_UDP: usize = 4096;
/// A TCP message's length prefix is 16 bits.
pub(crate) const MAX_TCP: usize = u16::MAX as usize;

/// The encoded size of `msg` (with name compression), or `None` when it does
/// not encode at all.
pub(crate) fn encoded_len(msg: &Message) -> Option<usize> {
    encode(msg).map(|b| b.len())
}

/// Encodes `msg` without a size limit.
pub(crate) fn encode(msg: &Message) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    msg.emit(&mut encoder).ok()?;
    Some(buf)
}

/// Encodes `msg` into `out` (emptied first); false when it does not encode.
pub(crate) fn encode_into(msg: &Message, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    msg.emit(&mut encoder).is_ok()
}

/// A cheap upper bound of the encoded size: every name written in full.
/// When it is within the limit the exact size need not be computed.
fn upper_bound(msg: &Message) -> usize {
    let mut size = 12;
    for q in &msg.queries {
        size += q.name.len() + 1 + 4;
    }
    for r in msg.all_sections() {
        size += r.name.len() + 1 + 10 + rdata_bound(&r.data);
    }
    if msg.edns.is_some() {
        // A bare OPT record; we never add options.
        size += 11;
    }
    size
}

fn rdata_bound(data: &RData) -> usize {
    match data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + srv.target.len() + 1,
        RData::CNAME(n) => n.0.len() + 1,
        RData::NS(n) => n.0.len() + 1,
        RData::PTR(n) => n.0.len() + 1,
        RData::SOA(soa) => soa.mname.len() + soa.rname.len() + 2 + 20,
        // Anything else (zone data): no cheap bound, force an exact check.
        _ => MAX_TCP,
    }
}

/// Makes `msg` fit in `limit` bytes. `answer_limit` first caps the answer
/// count (Consul's `udp_answer_limit`); cutting there sets TC only when
/// `tc_on_limit`. Returns whether anything was dropped.
pub(crate) fn fit(
    msg: &mut Message,
    limit: usize,
    answer_limit: Option<usize>,
    tc_on_limit: bool,
) -> bool {
    let mut dropped = false;
    if let Some(max) = answer_limit
        && max > 0
        && msg.answers.len() > max
    {
        msg.answers.truncate(max);
        sync_additionals(msg);
        msg.metadata.truncation |= tc_on_limit;
        dropped = true;
    }
    if upper_bound(msg) <= limit {
        return dropped;
    }
    let full = match encoded_len(msg) {
        Some(n) if n <= limit => return dropped,
        Some(n) => n,
        None => upper_bound(msg),
    };
    msg.metadata.truncation = true;
    let answers = std::mem::take(&mut msg.answers);
    let additionals = std::mem::take(&mut msg.additionals);
    let size_with = |msg: &mut Message, k: usize| {
        keep(msg, &answers, &additionals, k);
        encoded_len(msg).unwrap_or(usize::MAX)
    };
    let empty = match encoded_len(msg) {
        Some(n) if n <= limit => n,
        _ => {
            // Not even the question and authority fit: keep the question.
            msg.authorities.clear();
            return true;
        }
    };
    // Each encode of a big answer costs tens of microseconds (hickory's name
    // compression is quadratic), so rather than bisect we scale the count by
    // the measured bytes per answer until it fits (a secant step from above,
    // usually once or twice), then try one more. The result may leave room
    // for an answer or two; TC is set either way.
    let n = answers.len();
    let (mut k, mut size) = (n, full);
    while size > limit && k > 0 {
        let scaled = (k as u128 * (limit - empty) as u128 / (size - empty).max(1) as u128) as usize;
        k = scaled.min(k - 1);
        size = size_with(msg, k);
    }
    if k + 1 < n && size_with(msg, k + 1) <= limit {
        k += 1;
    }
    keep(msg, &answers, &additionals, k);
    true
}

/// Sets `msg` to the first `k` answers and the additionals they refer to.
fn keep(msg: &mut Message, answers: &[Record], additionals: &[Record], k: usize) {
    msg.answers.clear();
    msg.answers.extend_from_slice(&answers[..k]);
    msg.additionals.clear();
    msg.additionals.extend_from_slice(additionals);
    sync_additionals(msg);
}

/// Keeps only the additional records whose owner some answer points at.
fn sync_additionals(msg: &mut Message) {
    if msg.additionals.is_empty() {
        return;
    }
    let wanted: HashSet<&Name> = msg
        .answers
        .iter()
        .chain(msg.authorities.iter())
        .filter_map(referenced_name)
        .collect();
    let keep: Vec<Record> = msg
        .additionals
        .iter()
        .filter(|r| wanted.contains(&r.name))
        .cloned()
        .collect();
    msg.additionals = keep;
}

fn referenced_name(r: &Record) -> Option<&Name> {
    match &r.data {
        RData::SRV(srv) => Some(&srv.target),
        RData::NS(ns) => Some(&ns.0),
        RData::CNAME(c) => Some(&c.0),
        RData::MX(mx) => Some(&mx.exchange),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, MessageType, OpCode, Query};
    use hickory_proto::rr::RecordType;
    use hickory_proto::rr::rdata::{A, SRV};
    use std::net::Ipv4Addr;

    fn srv_message(n: usize) -> Message {
        let qname = Name::from_ascii("web.service.consul.").unwrap();
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(qname.clone(), RecordType::SRV));
        for i in 0..n {
            let target = Name::from_ascii(format!("node-{i}.node.dc1.consul.")).unwrap();
            let srv = SRV::new(1, 1, 8000 + i as u16, target.clone());
            m.add_answer(Record::from_rdata(qname.clone(), 0, RData::SRV(srv)));
            let a = A(Ipv4Addr::new(10, 0, (i / 256) as u8, (i % 256) as u8));
            m.add_additional(Record::from_rdata(target, 0, RData::A(a)));
        }
        m
    }

    #[test]
    fn small_answer_untouched() {
        let mut m = srv_message(2);
        assert!(!fit(&mut m, MIN_UDP, None, false));
        assert_eq!(m.answers.len(), 2);
        assert!(!m.metadata.truncation);
    }

    #[test]
    fn large_answer_cut_to_size_with_tc() {
        let mut m = srv_message(50);
        assert!(fit(&mut m, MIN_UDP, None, false));
        let len = encoded_len(&m).unwrap();
        assert!(len <= MIN_UDP, "{len}");
        assert!(m.metadata.truncation);
        assert!(!m.answers.is_empty());
        // Every remaining additional belongs to a remaining answer.
        assert_eq!(m.additionals.len(), m.answers.len());
        // And close to the largest such prefix.
        let largest = (0..=50)
            .rev()
            .find(|&k| {
                let mut m = srv_message(50);
                m.answers.truncate(k);
                sync_additionals(&mut m);
                encoded_len(&m).unwrap() <= MIN_UDP
            })
            .unwrap();
        assert!(
            m.answers.len() + 2 >= largest,
            "{} of {largest}",
            m.answers.len()
        );
    }

    #[test]
    fn answer_limit_sets_tc_only_when_asked() {
        let mut m = srv_message(5);
        assert!(fit(&mut m, MAX_UDP, Some(3), false));
        assert_eq!(m.answers.len(), 3);
        assert_eq!(m.additionals.len(), 3);
        assert!(!m.metadata.truncation);
        let mut m = srv_message(5);
        fit(&mut m, MAX_UDP, Some(3), true);
        assert!(m.metadata.truncation);
    }

    #[test]
    fn opt_record_counts_toward_the_size() {
        let mut m = srv_message(50);
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
        fit(&mut m, 1232, None, false);
        assert!(encoded_len(&m).unwrap() <= 1232);
        let bytes = encode(&m).unwrap();
        let back = Message::from_vec(&bytes).unwrap();
        assert!(back.edns.is_some());
    }
}
