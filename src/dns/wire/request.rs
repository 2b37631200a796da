//! Reading a request's bytes in place: the header, exactly one question
//! written out in full, at most an OPT record; then the question name's
//! labels classified as one of the name forms the fast path answers.
//!
//! Everything here says `None` for what it does not recognise; the caller
//! then leaves the request to the full responder, which has the last word
//! on every error (FORMERR, NOTIMP, BADVERS, ...).

/// Most labels a 255-byte name can have.
const MAX_LABELS: usize = 128;

/// `TYPE` values the fast path answers.
pub(super) const TYPE_A: u16 = 1;
pub(super) const TYPE_AAAA: u16 = 28;
pub(super) const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// A parsed request, borrowing its bytes.
pub(super) struct Request<'a> {
    /// The message ID, as it arrived.
    pub(super) id: [u8; 2],
    /// The RD and CD flags, which the response copies.
    pub(super) rd: bool,
    pub(super) cd: bool,
    /// The question as it arrived (name, type, class), echoed byte for
    /// byte so the letter case a client chose comes back.
    pub(super) question: &'a [u8],
    /// The question's type.
    pub(super) qtype: u16,
    /// The EDNS payload size the client offered, when it sent an OPT record.
    pub(super) edns: Option<u16>,
    /// Where each label of the question name starts (its length byte),
    /// as an offset into `question`.
    starts: [u8; MAX_LABELS],
    /// How many labels the name has.
    count: usize,
}

impl<'a> Request<'a> {
    /// Label `i` of the question name, without its length byte.
    pub(super) fn label(&self, i: usize) -> &'a [u8] {
        let at = usize::from(self.starts[i]);
        let len = usize::from(self.question[at]);
        &self.question[at + 1..at + 1 + len]
    }

    /// How many labels the question name has (the root not counted).
    pub(super) fn labels(&self) -> usize {
        self.count
    }

    /// Where label `i` starts in the question (for compression pointers).
    pub(super) fn label_offset(&self, i: usize) -> usize {
        usize::from(self.starts[i])
    }
}

/// Reads `bytes` as a query the fast path may answer.
pub(super) fn parse(bytes: &[u8]) -> Option<Request<'_>> {
    let header = bytes.get(..12)?;
    let (flags, more) = (header[2], header[3]);
    // QR clear, opcode QUERY; any other bit the responder ignores.
    if flags & 0x80 != 0 || (flags >> 3) & 0x0f != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut starts = [0u8; MAX_LABELS];
    let mut labels = 0;
    let mut at = 12;
    loop {
        let len = usize::from(*bytes.get(at)?);
        if len == 0 {
            break;
        }
        // Pointers and extended label types: the responder decides.
        if len > 63 || labels == MAX_LABELS {
            return None;
        }
        starts[labels] = u8::try_from(at - 12).ok()?;
        labels += 1;
        at += 1 + len;
    }
    let name_len = at + 1 - 12;
    if name_len > 255 {
        return None;
    }
    let end = at + 1 + 4;
    let question = bytes.get(12..end)?;
    let qtype = u16::from_be_bytes([question[name_len], question[name_len + 1]]);
    let qclass = u16::from_be_bytes([question[name_len + 2], question[name_len + 3]]);
    if qclass != CLASS_IN {
        return None;
    }
    let edns = if ar == 1 {
        Some(opt(bytes.get(end..)?)?)
    } else if bytes.len() == end {
        None
    } else {
        // Trailing bytes: the responder decides.
        return None;
    };
    Some(Request {
        id: [header[0], header[1]],
        rd: flags & 0x01 != 0,
        cd: more & 0x10 != 0,
        question,
        qtype,
        edns,
        starts,
        count: labels,
    })
}

/// Reads an OPT record that must end the message: root owner, version 0,
/// options well formed and of kinds hickory keeps as opaque bytes (those
/// it decodes, it may reject). Returns the offered payload size.
fn opt(rest: &[u8]) -> Option<u16> {
    let fixed = rest.get(..11)?;
    let field = |i: usize| u16::from_be_bytes([fixed[i], fixed[i + 1]]);
    if fixed[0] != 0 || field(1) != TYPE_OPT || fixed[6] != 0 {
        return None;
    }
    let rdlen = usize::from(field(9));
    let mut options = rest.get(11..)?;
    if options.len() != rdlen {
        return None;
    }
    while !options.is_empty() {
        let code = u16::from_be_bytes([*options.first()?, *options.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*options.get(2)?, *options.get(3)?]));
        // NSID, DAU and Client Subnet are decoded (and may be refused).
        if matches!(code, 3 | 5 | 8) {
            return None;
        }
        options = options.get(4 + len..)?;
    }
    Some(field(3))
}

/// What the question asks for, below our domain.
pub(super) enum Ask {
    /// `[tag.]svc.service[.dc]` or `_svc._tag.service[.dc]`.
    Service {
        /// The label holding the service name (a leading `_` dropped
        /// when `rfc2782`).
        name: usize,
        /// The labels of the tag filter, `first..end`; empty for none.
        tag: (usize, usize),
        /// The RFC 2782 form: both labels lose their leading `_`.
        rfc2782: bool,
    },
    /// `node.node[.dc]`: the labels `first..end` spell the node.
    Node {
        /// The node's labels.
        labels: (usize, usize),
    },
}

/// Classifies the question name as Consul's grammar does (`name.rs`),
/// for the forms the fast path answers: names of our domain (`domain`,
/// wire form, lowercase) and our datacenter (`dc`, lowercase) only.
/// Returns the form and the label where the domain starts.
pub(super) fn classify(req: &Request<'_>, domain: &[u8], dc: &[u8]) -> Option<(Ask, usize)> {
    let qname = &req.question[..req.question.len() - 4];
    let suffix = qname.len().checked_sub(domain.len())?;
    if !qname[suffix..].eq_ignore_ascii_case(domain) {
        return None;
    }
    let n = (0..req.labels()).position(|i| req.label_offset(i) == suffix)?;
    if n == 0 {
        return None;
    }
    // Bytes we never register names with go to the responder, which
    // knows what to make of them.
    let plain = |l: &[u8]| {
        l.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    };
    if !(0..n).all(|i| plain(req.label(i))) {
        return None;
    }
    let keyword = |i: usize| {
        let l = req.label(i);
        ["service", "node", "addr", "query"]
            .iter()
            .find(|k| l.eq_ignore_ascii_case(k.as_bytes()))
            .copied()
    };
    let (kind, before) = if let Some(k) = keyword(n - 1) {
        (k, n - 1)
    } else if n >= 2
        && let Some(k) = keyword(n - 2)
    {
        // A datacenter label: ours, or another's for the responder.
        if !req.label(n - 1).eq_ignore_ascii_case(dc) {
            return None;
        }
        (k, n - 2)
    } else {
        return None;
    };
    if before == 0 {
        return None;
    }
    let ask = match kind {
        "service" => {
            let rfc =
                before == 2 && req.label(0).starts_with(b"_") && req.label(1).starts_with(b"_");
            if rfc {
                if req.label(0).len() < 2 {
                    return None;
                }
                let tag = &req.label(1)[1..];
                let none = tag.eq_ignore_ascii_case(b"tcp") || tag.eq_ignore_ascii_case(b"udp");
                Ask::Service {
                    name: 0,
                    tag: if none { (1, 1) } else { (1, 2) },
                    rfc2782: true,
                }
            } else {
                Ask::Service {
                    name: before - 1,
                    tag: (0, before - 1),
                    rfc2782: false,
                }
            }
        }
        "node" => Ask::Node {
            labels: (0, before),
        },
        _ => return None,
    };
    Some((ask, n))
}
