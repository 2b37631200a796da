//! Writing a response's bytes: the header, records whose owner is the
//! question (a pointer to offset 12), SRV targets and SOA names compressed
//! against the domain in the question, and the OPT record.

use super::request::Request;

/// A pointer to the question name, which starts right after the header.
pub(super) const QNAME_POINTER: u16 = 0xc000 | 12;
/// The largest offset a compression pointer can hold.
const MAX_POINTER: usize = 0x3fff;
/// Class IN.
const CLASS_IN: u16 = 1;
/// `TYPE` of SOA.
const TYPE_SOA: u16 = 6;
/// The OPT record `Responder::finish` answers EDNS requests with: root
/// owner, payload 4096, extended RCODE 0, version 0, no flags, no options.
pub(super) const OPT: [u8; 11] = [0, 0, 41, 0x10, 0x00, 0, 0, 0, 0, 0, 0];

pub(super) fn u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(super) fn u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Starts a response to `req` in `out`: the header with counts left at
/// zero ([`counts`] fills them) and the question echoed.
pub(super) fn start(out: &mut Vec<u8>, req: &Request<'_>, rcode: u8) {
    out.clear();
    // Room for a typical answer, so the writes below rarely grow it.
    out.reserve(512);
    let [id0, id1] = req.id;
    out.extend_from_slice(&[
        id0,
        id1,
        // QR, opcode QUERY, AA, and RD as asked.
        0x80 | 0x04 | u8::from(req.rd),
        // CD as asked, RA and AD clear, the RCODE.
        if req.cd { 0x10 } else { 0 } | (rcode & 0x0f),
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    out.extend_from_slice(req.question);
}

/// Sets TC in a response started by [`start`].
pub(super) fn set_tc(out: &mut [u8]) {
    out[2] |= 0x02;
}

/// Fills in the answer, authority and additional counts.
pub(super) fn counts(out: &mut [u8], answers: u16, authorities: u16, additionals: u16) {
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    out[8..10].copy_from_slice(&authorities.to_be_bytes());
    out[10..12].copy_from_slice(&additionals.to_be_bytes());
}

/// Writes a record's owner (a pointer), type, class and TTL, and a zero
/// RDLENGTH; returns where the RDLENGTH is, for [`end_rdata`].
pub(super) fn record(out: &mut Vec<u8>, owner: u16, rtype: u16, ttl: u32) -> usize {
    let [o0, o1] = owner.to_be_bytes();
    let [t0, t1] = rtype.to_be_bytes();
    let [c0, c1] = CLASS_IN.to_be_bytes();
    let [l0, l1, l2, l3] = ttl.to_be_bytes();
    // One write of twelve bytes: each small write has a cost of its own.
    out.extend_from_slice(&[o0, o1, t0, t1, c0, c1, l0, l1, l2, l3, 0, 0]);
    out.len() - 2
}

/// [`record`] after an owner name already written.
pub(super) fn tail(out: &mut Vec<u8>, rtype: u16, ttl: u32) -> usize {
    let [t0, t1] = rtype.to_be_bytes();
    let [c0, c1] = CLASS_IN.to_be_bytes();
    let [l0, l1, l2, l3] = ttl.to_be_bytes();
    out.extend_from_slice(&[t0, t1, c0, c1, l0, l1, l2, l3, 0, 0]);
    out.len() - 2
}

/// Fills in the RDLENGTH at `at` (from [`record`]) for the rdata written since.
pub(super) fn end_rdata(out: &mut [u8], at: usize) {
    // Records here are far smaller than 64 KiB: a name, an address, six bytes.
    let len = (out.len() - at - 2) as u16;
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
}

/// A compression pointer to `offset`, if one can reach it.
pub(super) fn pointer(offset: usize) -> Option<u16> {
    (offset <= MAX_POINTER).then_some(0xc000 | offset as u16)
}

/// The SOA of our domain, as `Authority::soa` builds it: owner the domain
/// (`domain`, a pointer into the question), `ns.` and `hostmaster.` under
/// it, the view's index as serial, the timers of `config.rs`.
pub(super) fn soa(out: &mut Vec<u8>, domain: u16, serial: u32) {
    use crate::dns::config::{SOA_EXPIRE, SOA_MIN_TTL, SOA_REFRESH, SOA_RETRY};
    let at = record(out, domain, TYPE_SOA, SOA_MIN_TTL);
    out.extend_from_slice(b"\x02ns");
    u16(out, domain);
    out.extend_from_slice(b"\x0ahostmaster");
    u16(out, domain);
    u32(out, serial);
    // The timers are signed 32-bit fields; ours are small constants.
    for v in [SOA_REFRESH, SOA_RETRY, SOA_EXPIRE] {
        u32(out, v.min(i32::MAX as u32));
    }
    u32(out, SOA_MIN_TTL);
    end_rdata(out, at);
}

/// Appends `ip`'s lowercase hex spelling (Consul's `addr` label), with
/// its length byte.
pub(super) fn hex_label(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (bytes, len): ([u8; 16], usize) = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (b, 4)
        }
        std::net::IpAddr::V6(v6) => (v6.octets(), 16),
    };
    out.push((len * 2) as u8);
    for b in &bytes[..len] {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
}
