//! The fast path: the bulk of DNS traffic answered from the request's
//! bytes and the view's near-wire entries straight into the worker's
//! output buffer, with no parse into a message, no record or name built,
//! and no allocation once the worker's [`Scratch`] has grown.
//!
//! It answers A, AAAA and SRV questions (class IN, one question, at most an
//! OPT record of EDNS version 0) for `[tag.]svc.service[.dc].<domain>`, the
//! RFC 2782 `_svc._tag.service[.dc].<domain>` and `node.node[.dc].<domain>`
//! of our own datacenter, with ACLs off or on (the [`Caller`] filters as in
//! `answer.rs`). It applies the responder's rules: `only_passing`, the tag
//! filter, one A record per address and one additional per SRV target, a
//! shuffle, Consul's `udp_answer_limit` on plain UDP (TC per
//! `enable_truncate`), the size limit (whole answers dropped from the end
//! with their additionals, TC set), the service and node TTLs, and
//! NXDOMAIN/NODATA with the SOA.
//!
//! "Not mine" (`false`, `out` untouched or garbage) leaves the request to
//! the [`Responder`](super::Responder), which then answers it in full:
//! every other type (ANY, TXT, ...) and name form (other datacenters,
//! prepared queries, `addr`, the apex, reverse names, zones, recursor
//! names), anything malformed or unusual (a compressed question, other
//! records, EDNS options hickory decodes, bytes outside `[A-Za-z0-9_-]` in
//! a label), an unknown ACL token (SERVFAIL), services with an instance at
//! a host name (CNAMEs), nodes without an
//! IP, names too long to compress safely, and a negative answer that would
//! not fit. The differential tests hold the two paths to the same records.

mod request;
mod write;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use hickory_proto::rr::Name;

use super::DnsError;
use super::access::Caller;
use super::config;
use super::fit::{MAX_AMPLIFICATION, MAX_TCP, MAX_UDP, MIN_UDP, Transport};
use crate::catalog::HealthStatus;
use crate::catalog::view::{InstanceView, NodeView, ServiceView, View};
use crate::config::DnsSettings;
use request::{Ask, Request, TYPE_A, TYPE_AAAA, TYPE_SRV};

/// RCODEs the fast path answers with.
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;

/// Longest target name (wire bytes) the fast path writes; longer ones
/// (hickory refuses names over 255 bytes) are the responder's.
const MAX_TARGET: usize = 250;

/// What the fast path needs of the settings, fixed at start-up.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    /// The domain in wire form, lowercase, with its root byte.
    domain: Box<[u8]>,
    /// Our datacenter, lowercase, one label.
    dc: Box<[u8]>,
    /// `node.<dc>` and `addr.<dc>` as wire labels, the suffixes of SRV
    /// targets before the domain.
    suffixes: [Box<[u8]>; 2],
    /// TTLs and `only_passing`.
    settings: DnsSettings,
}

/// A worker's reusable state: nothing here is allocated per query once
/// the vectors have grown to the largest service seen.
#[derive(Debug)]
pub struct Scratch {
    /// Indices of the instances that pass the filters, shuffled in place.
    picked: Vec<u32>,
    /// Per address key, the query (stamp) that last answered it.
    seen_addr: Vec<u32>,
    /// Per SRV target key, the query (stamp) that last added it.
    seen_target: Vec<u32>,
    /// This query's stamp; bumping it empties both `seen` sets at once.
    stamp: u32,
    /// The additional section, written beside the answers and appended.
    extra: Vec<u8>,
    /// wyrand state for the shuffle.
    rng: u64,
}

impl Scratch {
    /// Empty scratch; `seed` varies the shuffle between workers.
    pub fn new(seed: u64) -> Self {
        Self {
            picked: Vec::new(),
            seen_addr: Vec::new(),
            seen_target: Vec::new(),
            stamp: 0,
            extra: Vec::with_capacity(MAX_UDP),
            rng: seed,
        }
    }

    /// A uniform-enough number below `n` (`n > 0`); the bias is irrelevant
    /// for answer order.
    fn below(&mut self, n: usize) -> usize {
        self.rng = self.rng.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.rng) * u128::from(self.rng ^ 0xe703_7ed1_a0b4_28db);
        let r = ((t >> 64) as u64) ^ (t as u64);
        (r % n as u64) as usize
    }

    /// A fresh stamp for a service of `n` instances.
    fn begin(&mut self, n: usize) {
        if self.seen_addr.len() < n {
            self.seen_addr.resize(n, 0);
            self.seen_target.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.seen_addr.fill(0);
            self.seen_target.fill(0);
            self.stamp = 1;
        }
    }
}

/// The limits one response is written under.
struct Limits {
    /// Bytes the whole response may take.
    size: usize,
    /// Consul's `udp_answer_limit`, on plain UDP only.
    answers: Option<usize>,
    /// Bytes reserved at the end for the OPT record.
    opt: usize,
}

impl Wire {
    /// The fast path for `settings` in `datacenter` (already validated by
    /// the responder's `Authority`).
    pub(crate) fn new(settings: &DnsSettings, datacenter: &str) -> Result<Self, DnsError> {
        let bad = |_| DnsError::Domain(settings.domain.clone());
        let mut domain = Name::from_ascii(&settings.domain)
            .map_err(bad)?
            .to_lowercase();
        domain.set_fqdn(true);
        let mut wire = Vec::new();
        for label in domain.iter() {
            wire.push(
                u8::try_from(label.len()).map_err(|_| DnsError::Domain(settings.domain.clone()))?,
            );
            wire.extend_from_slice(label);
        }
        wire.push(0);
        let dc = datacenter.to_ascii_lowercase().into_bytes();
        let label =
            u8::try_from(dc.len()).map_err(|_| DnsError::Datacenter(datacenter.to_owned()))?;
        let suffix = |kind: &[u8]| [kind, &[label], &dc].concat().into_boxed_slice();
        Ok(Self {
            domain: wire.into(),
            suffixes: [suffix(b"\x04node"), suffix(b"\x04addr")],
            dc: dc.clone().into(),
            settings: settings.clone(),
        })
    }

    /// Writes the response to `bytes` into `out` and returns true, or
    /// returns false: not mine, ask the responder.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn answer(
        &self,
        view: &View,
        caller: Caller<'_>,
        bytes: &[u8],
        transport: Transport,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> bool {
        if caller.unknown() {
            return false;
        }
        let Some(req) = request::parse(bytes) else {
            return false;
        };
        if !matches!(req.qtype, TYPE_A | TYPE_AAAA | TYPE_SRV) {
            return false;
        }
        let Some((ask, domain_label)) = request::classify(&req, &self.domain, &self.dc) else {
            return false;
        };
        // The question starts at offset 12 of the response as well.
        let Some(domain) = write::pointer(12 + req.label_offset(domain_label)) else {
            return false;
        };
        let limits = Limits {
            size: match (transport, req.edns) {
                (Transport::Tcp, _) => MAX_TCP,
                (Transport::Udp, Some(size)) => usize::from(size).clamp(MIN_UDP, MAX_UDP),
                // The request's floor is its header and question.
                (Transport::Udp, None) => {
                    MIN_UDP.min(MAX_AMPLIFICATION * (12 + req.question.len()))
                }
            },
            answers: (transport == Transport::Udp && req.edns.is_none())
                .then_some(self.settings.udp_answer_limit)
                .filter(|&n| n > 0),
            opt: if req.edns.is_some() {
                write::OPT.len()
            } else {
                0
            },
        };
        let mut key = [0u8; 256];
        match ask {
            Ask::Service { name, tag, rfc2782 } => {
                let skip = usize::from(rfc2782);
                let Some(name) = lower(&mut key, &req, name, name + 1, skip) else {
                    return false;
                };
                let Some(svc) = view.service(name) else {
                    return self.negative(view, &req, domain, NXDOMAIN, &limits, out);
                };
                let mut tag_buf = [0u8; 256];
                let tag = if tag.0 == tag.1 {
                    None
                } else {
                    match lower(&mut tag_buf, &req, tag.0, tag.1, skip) {
                        Some(t) => Some(t),
                        None => return false,
                    }
                };
                self.service(view, caller, &req, domain, svc, tag, &limits, scratch, out)
            }
            Ask::Node { labels } => {
                let Some(name) = lower(&mut key, &req, labels.0, labels.1, 0) else {
                    return false;
                };
                match view.node(name).filter(|n| caller.reads_node(&n.name)) {
                    Some(node) => self.node(view, &req, domain, node, &limits, out),
                    None => self.negative(view, &req, domain, NXDOMAIN, &limits, out),
                }
            }
        }
    }

    /// NXDOMAIN or NODATA: the SOA in the authority section.
    fn negative(
        &self,
        view: &View,
        req: &Request<'_>,
        domain: u16,
        rcode: u8,
        limits: &Limits,
        out: &mut Vec<u8>,
    ) -> bool {
        write::start(out, req, rcode);
        // The serial follows the index and wraps, as `Authority::soa`'s.
        write::soa(out, domain, view.index as u32);
        let opt = finish_opt(out, limits);
        write::counts(out, 0, 1, opt);
        // A negative answer that does not fit is cut by the responder.
        out.len() <= limits.size
    }

    fn node(
        &self,
        view: &View,
        req: &Request<'_>,
        domain: u16,
        node: &NodeView,
        limits: &Limits,
        out: &mut Vec<u8>,
    ) -> bool {
        // A host name is a CNAME, no address nothing: the responder's.
        let Some(ip) = node.ip else {
            return false;
        };
        if !address_type(req.qtype, ip) {
            return self.negative(view, req, domain, NOERROR, limits, out);
        }
        write::start(out, req, NOERROR);
        address_record(
            out,
            write::QNAME_POINTER,
            ip,
            config::node_ttl_secs(&self.settings),
        );
        let opt = finish_opt(out, limits);
        write::counts(out, 1, 0, opt);
        out.len() <= limits.size
    }

    #[allow(clippy::too_many_arguments)]
    fn service(
        &self,
        view: &View,
        caller: Caller<'_>,
        req: &Request<'_>,
        domain: u16,
        svc: &ServiceView,
        tag: Option<&str>,
        limits: &Limits,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> bool {
        if !svc.wire_ready {
            return false;
        }
        scratch.picked.clear();
        for (i, inst) in svc.instances.iter().enumerate() {
            if (self.settings.only_passing && inst.health != HealthStatus::Passing)
                || tag.is_some_and(|t| !inst.has_tag(t))
                || !caller.reads_instance(&svc.name, &inst.node.name)
            {
                continue;
            }
            // Instance counts are far below 2^32.
            scratch.picked.push(i as u32);
        }
        if scratch.picked.is_empty() {
            return self.negative(view, req, domain, NXDOMAIN, limits, out);
        }
        scratch.begin(svc.instances.len());
        scratch.extra.clear();
        let ttl = config::service_ttl_secs(&self.settings, &svc.name);
        let srv = req.qtype == TYPE_SRV;
        let dc_len = 1 + self.dc.len();
        // Where `node.<dc>.<domain>` / `addr.<dc>.<domain>` were first
        // written, for later targets to point at (0: not yet).
        let mut suffixes = [0u16; 2];
        let (mut answers, mut additionals, mut truncated) = (0usize, 0usize, false);
        write::start(out, req, NOERROR);
        let n = scratch.picked.len();
        for i in 0..n {
            // Fisher–Yates, one step per answer written: a shuffle of what
            // is needed only.
            let j = i + scratch.below(n - i);
            scratch.picked.swap(i, j);
            let inst = &svc.instances[scratch.picked[i] as usize];
            // `wire_ready`: every instance has an IP.
            let Some(ip) = inst.ip() else {
                return false;
            };
            if !srv {
                let key = inst.addr_key as usize;
                if scratch.seen_addr[key] == scratch.stamp {
                    continue;
                }
                scratch.seen_addr[key] = scratch.stamp;
                if !address_type(req.qtype, ip) {
                    continue;
                }
            }
            if limits.answers.is_some_and(|max| answers == max) {
                if self.settings.enable_truncate {
                    truncated = true;
                }
                break;
            }
            let (mark, mark_extra) = (out.len(), scratch.extra.len());
            if srv {
                let Some(added) =
                    self.srv_record(inst, ip, ttl, dc_len, domain, &mut suffixes, scratch, out)
                else {
                    return false;
                };
                additionals += usize::from(added);
            } else {
                address_record(out, write::QNAME_POINTER, ip, ttl);
            }
            if out.len() + scratch.extra.len() + limits.opt > limits.size {
                out.truncate(mark);
                additionals -= usize::from(scratch.extra.len() > mark_extra);
                scratch.extra.truncate(mark_extra);
                truncated = true;
                break;
            }
            answers += 1;
        }
        if answers == 0 && !truncated {
            // Addresses of the other family only: the name exists.
            return self.negative(view, req, domain, NOERROR, limits, out);
        }
        out.extend_from_slice(&scratch.extra);
        let opt = finish_opt(out, limits);
        if truncated {
            write::set_tc(out);
        }
        // Both counts are bounded by the instances of one service (and a
        // 64 KiB message).
        write::counts(out, answers as u16, 0, additionals as u16 + opt);
        true
    }

    /// One SRV record for `inst` (at `ip`) in `out` and, the first time
    /// its target appears, the target's address in `scratch.extra`.
    /// Returns whether an additional was written; `None`: a target too long.
    #[allow(clippy::too_many_arguments)]
    fn srv_record(
        &self,
        inst: &InstanceView,
        ip: IpAddr,
        ttl: u32,
        dc_len: usize,
        domain: u16,
        suffixes: &mut [u16; 2],
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Option<bool> {
        // Consul names the node when the instance lives at the node's
        // address, else the `addr` name of its own IP.
        let at_node = inst.at_node;
        let prefix_len = match (&inst.node.labels, at_node) {
            (Some(labels), true) => labels.len(),
            (None, true) => return None,
            (_, false) => 1 + if ip.is_ipv4() { 8 } else { 32 },
        };
        if prefix_len + 5 + dc_len + self.domain.len() > MAX_TARGET {
            return None;
        }
        let at = write::record(out, write::QNAME_POINTER, TYPE_SRV, ttl);
        let [w0, w1] = inst.weight.to_be_bytes();
        let [p0, p1] = inst.port.to_be_bytes();
        // Priority 1, the weight for the instance's health, the port.
        out.extend_from_slice(&[0, 1, w0, w1, p0, p1]);
        let target = out.len();
        self.target(out, inst, ip, at_node, domain, suffixes);
        write::end_rdata(out, at);
        let key = inst.target_key as usize;
        if scratch.seen_target[key] == scratch.stamp {
            return Some(false);
        }
        scratch.seen_target[key] = scratch.stamp;
        let extra = &mut scratch.extra;
        match write::pointer(target) {
            Some(p) => address_record(extra, p, ip, ttl),
            None => {
                // Past a pointer's reach (a large TCP answer): the name in
                // full, its suffix still a pointer into the answers when
                // one was written within reach (a copy of `suffixes`, so
                // no offset into this section is remembered).
                let mut reach = *suffixes;
                self.target(extra, inst, ip, at_node, domain, &mut reach);
                address_tail(extra, ip, ttl);
            }
        }
        Some(true)
    }

    /// Writes `inst`'s SRV target name: its node's labels or its IP's
    /// `addr` label, then `node.<dc>` / `addr.<dc>` and the domain, as a
    /// pointer to where that suffix was first written when possible.
    fn target(
        &self,
        out: &mut Vec<u8>,
        inst: &InstanceView,
        ip: IpAddr,
        at_node: bool,
        domain: u16,
        suffixes: &mut [u16; 2],
    ) {
        let slot = if at_node {
            if let Some(labels) = &inst.node.labels {
                out.extend_from_slice(labels);
            }
            0
        } else {
            write::hex_label(out, ip);
            1
        };
        if suffixes[slot] != 0 {
            write::u16(out, suffixes[slot]);
            return;
        }
        if let Some(p) = write::pointer(out.len()) {
            suffixes[slot] = p;
        }
        out.extend_from_slice(&self.suffixes[slot]);
        write::u16(out, domain);
    }
}

/// Appends the OPT record when the request had one; returns how many
/// records that adds to the additional section.
fn finish_opt(out: &mut Vec<u8>, limits: &Limits) -> u16 {
    if limits.opt == 0 {
        return 0;
    }
    out.extend_from_slice(&write::OPT);
    1
}

/// Whether `ip` answers a question of type `qtype` (A or AAAA).
fn address_type(qtype: u16, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => qtype == TYPE_A,
        IpAddr::V6(_) => qtype == TYPE_AAAA,
    }
}

/// An A or AAAA record for `ip` owned by the name at `owner` (a pointer).
fn address_record(out: &mut Vec<u8>, owner: u16, ip: IpAddr, ttl: u32) {
    let [o0, o1] = owner.to_be_bytes();
    let [l0, l1, l2, l3] = ttl.to_be_bytes();
    // Whole records in one write each.
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            out.extend_from_slice(&[o0, o1, 0, 1, 0, 1, l0, l1, l2, l3, 0, 4, a, b, c, d]);
        }
        IpAddr::V6(v6) => {
            out.extend_from_slice(&[o0, o1, 0, 28, 0, 1, l0, l1, l2, l3, 0, 16]);
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// An A or AAAA record for `ip` after its owner name.
fn address_tail(out: &mut Vec<u8>, ip: IpAddr, ttl: u32) {
    match ip {
        IpAddr::V4(v4) => {
            let at = write::tail(out, TYPE_A, ttl);
            out.extend_from_slice(&v4.octets());
            write::end_rdata(out, at);
        }
        IpAddr::V6(v6) => {
            let at = write::tail(out, TYPE_AAAA, ttl);
            out.extend_from_slice(&v6.octets());
            write::end_rdata(out, at);
        }
    }
}

/// Labels `first..end` of the question, each with its first `skip`
/// bytes dropped, lowercased and joined with dots into `buf`.
fn lower<'b>(
    buf: &'b mut [u8; 256],
    req: &Request<'_>,
    first: usize,
    end: usize,
    skip: usize,
) -> Option<&'b str> {
    let mut len = 0;
    for i in first..end {
        if i > first {
            *buf.get_mut(len)? = b'.';
            len += 1;
        }
        let label = req.label(i).get(skip..)?;
        let dst = buf.get_mut(len..len + label.len())?;
        dst.copy_from_slice(label);
        dst.make_ascii_lowercase();
        len += label.len();
    }
    std::str::from_utf8(&buf[..len]).ok()
}
