//! What a query name asks for, decided from its labels alone.
//!
//! Consul's grammar, below the configured domain (`consul.`):
//!
//! | form | meaning |
//! |---|---|
//! | (nothing) | the apex: SOA, NS |
//! | `[tag.]svc.service[.dc]` | instances of `svc`, optionally with `tag` |
//! | `_svc._tag.service[.dc]` | RFC 2782 form; `_tcp`/`_udp` mean "no tag" |
//! | `node.node[.dc]` | a node |
//! | `hex.addr[.dc]` | an IP spelled as 8 or 32 hex digits |
//! | `name.query[.dc]` | a prepared query, by ID or name |
//! | `_name._tcp.query[.dc]` | the same (the last label is ignored) |
//!
//! The keyword nearest the domain wins, as Consul reads names right to left,
//! so `web.service.node.consul` is the node `web.service`. Reverse names
//! (`in-addr.arpa.`, `ip6.arpa.`) are recognised separately because they live
//! outside the domain. Parsing borrows from the query name and allocates only
//! when a node name or tag spans several labels.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// Which of Consul's name forms a query name below the domain is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameForm<'a> {
    /// The domain itself.
    Apex,
    /// A service lookup.
    Service {
        /// Service name as asked (any case).
        name: &'a str,
        /// Tag filter, if any.
        tag: Option<Cow<'a, str>>,
        /// Datacenter label, if any.
        dc: Option<&'a str>,
    },
    /// A node lookup.
    Node {
        /// Node name as asked (any case); may contain dots.
        name: Cow<'a, str>,
        /// Datacenter label, if any.
        dc: Option<&'a str>,
    },
    /// An address spelled in hex.
    Addr {
        /// The decoded address.
        ip: IpAddr,
        /// Datacenter label, if any.
        dc: Option<&'a str>,
    },
    /// A prepared query.
    Query {
        /// The query's ID or name as asked (any case).
        name: &'a str,
        /// Datacenter label, if any.
        dc: Option<&'a str>,
    },
    /// Below the domain but not a name we can ever answer: NXDOMAIN.
    Unknown,
}

impl NameForm<'_> {
    /// The datacenter label the name carries, if any.
    pub(crate) fn datacenter(&self) -> Option<&str> {
        match self {
            Self::Service { dc, .. }
            | Self::Node { dc, .. }
            | Self::Addr { dc, .. }
            | Self::Query { dc, .. } => *dc,
            Self::Apex | Self::Unknown => None,
        }
    }
}

/// Classifies `qname` relative to `domain` (a lowercase FQDN). `None` when
/// the name is not at or below the domain.
pub(crate) fn parse<'a>(qname: &'a Name, domain: &Name) -> Option<NameForm<'a>> {
    if !domain.zone_of(qname) {
        return None;
    }
    let own = usize::from(qname.num_labels()) - usize::from(domain.num_labels());
    // Labels are raw bytes; a name we serve is always ASCII, so anything else
    // cannot match and is simply unknown.
    let mut labels: Vec<&'a str> = Vec::with_capacity(own);
    for label in qname.iter().take(own) {
        match std::str::from_utf8(label) {
            Ok(s) => labels.push(s),
            Err(_) => return Some(NameForm::Unknown),
        }
    }
    Some(classify(&labels))
}

/// Classifies the labels of a name below the domain, leftmost first.
pub(crate) fn classify<'a>(labels: &[&'a str]) -> NameForm<'a> {
    let n = labels.len();
    if n == 0 {
        return NameForm::Apex;
    }
    // The keyword is the last label (no datacenter) or the one before it.
    let (kind, before, dc) = if is_keyword(labels[n - 1]) {
        (labels[n - 1], &labels[..n - 1], None)
    } else if n >= 2 && is_keyword(labels[n - 2]) {
        (labels[n - 2], &labels[..n - 2], Some(labels[n - 1]))
    } else {
        return NameForm::Unknown;
    };
    if before.is_empty() {
        return NameForm::Unknown;
    }
    if kind.eq_ignore_ascii_case("service") {
        service(before, dc)
    } else if kind.eq_ignore_ascii_case("query") {
        query(before, dc)
    } else if kind.eq_ignore_ascii_case("node") {
        NameForm::Node {
            name: join(before),
            dc,
        }
    } else {
        match (before, decode_hex_addr(before[0])) {
            ([_], Some(ip)) => NameForm::Addr { ip, dc },
            _ => NameForm::Unknown,
        }
    }
}

fn is_keyword(label: &str) -> bool {
    ["service", "node", "addr", "query"]
        .iter()
        .any(|k| label.eq_ignore_ascii_case(k))
}

fn service<'a>(before: &[&'a str], dc: Option<&'a str>) -> NameForm<'a> {
    if let [svc, tag] = before
        && let (Some(svc), Some(tag)) = (svc.strip_prefix('_'), tag.strip_prefix('_'))
    {
        if svc.is_empty() {
            return NameForm::Unknown;
        }
        let tag = if tag.eq_ignore_ascii_case("tcp") || tag.eq_ignore_ascii_case("udp") {
            None
        } else {
            Some(Cow::Borrowed(tag))
        };
        return NameForm::Service { name: svc, tag, dc };
    }
    let (name, tags) = before.split_last().unwrap_or((&"", &[]));
    let tag = match tags {
        [] => None,
        tags => Some(join(tags)),
    };
    NameForm::Service { name, tag, dc }
}

/// `name.query` or `_name._tcp.query` (Consul ignores the last label when
/// the first and last start with `_`); anything else is unknown.
fn query<'a>(before: &[&'a str], dc: Option<&'a str>) -> NameForm<'a> {
    match before {
        [name] => NameForm::Query { name, dc },
        [first, last] if first.starts_with('_') && last.starts_with('_') && first.len() > 1 => {
            NameForm::Query {
                name: &first[1..],
                dc,
            }
        }
        _ => NameForm::Unknown,
    }
}

fn join<'a>(labels: &[&'a str]) -> Cow<'a, str> {
    match labels {
        [one] => Cow::Borrowed(one),
        many => Cow::Owned(many.join(".")),
    }
}

/// Decodes Consul's `addr` label: 8 hex digits for IPv4, 32 for IPv6.
pub(crate) fn decode_hex_addr(label: &str) -> Option<IpAddr> {
    if !label.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match label.len() {
        8 => u32::from_str_radix(label, 16)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        32 => u128::from_str_radix(label, 16)
            .ok()
            .map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        _ => None,
    }
}

/// Encodes an IP as Consul's `addr` label, the inverse of [`decode_hex_addr`].
pub(crate) fn encode_hex_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

/// Decodes a full reverse name (`4.3.2.1.in-addr.arpa.`, or 32 nibbles
/// under `ip6.arpa.`). Partial names (a /24's zone) are `None`.
pub(crate) fn parse_reverse(qname: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = qname.iter().collect();
    let (last, rest) = labels.split_last()?;
    if !last.eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let (kind, digits) = rest.split_last()?;
    if kind.eq_ignore_ascii_case(b"in-addr") {
        if digits.len() != 4 {
            return None;
        }
        let mut octets = [0u8; 4];
        // Reverse names list the least significant octet first.
        for (octet, label) in octets.iter_mut().zip(digits.iter().rev()) {
            let s = std::str::from_utf8(label).ok()?;
            if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *octet = s.parse().ok()?;
        }
        Some(IpAddr::V4(Ipv4Addr::from(octets)))
    } else if kind.eq_ignore_ascii_case(b"ip6") {
        if digits.len() != 32 {
            return None;
        }
        let mut value: u128 = 0;
        for label in digits.iter().rev() {
            let [nibble] = label else { return None };
            let digit = char::from(*nibble).to_digit(16)?;
            value = (value << 4) | u128::from(digit);
        }
        Some(IpAddr::V6(Ipv6Addr::from(value)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("test names are valid")
    }

    fn form(q: &str) -> Option<NameForm<'static>> {
        let domain = name("consul.");
        // Leak so the borrowed form can outlive the helper; tests only.
        let q: &'static Name = Box::leak(Box::new(name(q)));
        parse(q, &domain)
    }

    fn svc(
        name: &'static str,
        tag: Option<&'static str>,
        dc: Option<&'static str>,
    ) -> NameForm<'static> {
        NameForm::Service {
            name,
            tag: tag.map(Cow::Borrowed),
            dc,
        }
    }

    #[test]
    fn apex_and_outside() {
        assert_eq!(form("consul."), Some(NameForm::Apex));
        assert_eq!(form("CONSUL."), Some(NameForm::Apex));
        assert_eq!(form("example.com."), None);
        assert_eq!(form("consul.example.com."), None);
        assert_eq!(form("notconsul."), None);
    }

    #[test]
    fn service_forms() {
        assert_eq!(form("web.service.consul."), Some(svc("web", None, None)));
        assert_eq!(form("Web.SERVICE.Consul."), Some(svc("Web", None, None)));
        assert_eq!(
            form("primary.web.service.consul."),
            Some(svc("web", Some("primary"), None))
        );
        assert_eq!(
            form("web.service.dc1.consul."),
            Some(svc("web", None, Some("dc1")))
        );
        assert_eq!(
            form("v1.primary.web.service.dc2.consul."),
            Some(NameForm::Service {
                name: "web",
                tag: Some(Cow::Owned("v1.primary".into())),
                dc: Some("dc2"),
            })
        );
    }

    #[test]
    fn rfc2782_forms() {
        assert_eq!(
            form("_web._tcp.service.consul."),
            Some(svc("web", None, None))
        );
        assert_eq!(
            form("_web._UDP.service.dc1.consul."),
            Some(svc("web", None, Some("dc1")))
        );
        assert_eq!(
            form("_web._primary.service.consul."),
            Some(svc("web", Some("primary"), None))
        );
        // Only one underscore: an ordinary tag named "_x".
        assert_eq!(
            form("_x.web.service.consul."),
            Some(svc("web", Some("_x"), None))
        );
        assert_eq!(form("_._tcp.service.consul."), Some(NameForm::Unknown));
    }

    #[test]
    fn node_forms() {
        assert_eq!(
            form("db1.node.consul."),
            Some(NameForm::Node {
                name: Cow::Borrowed("db1"),
                dc: None
            })
        );
        assert_eq!(
            form("db1.NODE.dc1.consul."),
            Some(NameForm::Node {
                name: Cow::Borrowed("db1"),
                dc: Some("dc1")
            })
        );
        assert_eq!(
            form("a.b.node.consul."),
            Some(NameForm::Node {
                name: Cow::Owned("a.b".into()),
                dc: None
            })
        );
        // The keyword nearest the domain wins.
        assert_eq!(
            form("web.service.node.consul."),
            Some(NameForm::Node {
                name: Cow::Owned("web.service".into()),
                dc: None
            })
        );
    }

    #[test]
    fn addr_forms() {
        assert_eq!(
            form("7f000001.addr.consul."),
            Some(NameForm::Addr {
                ip: "127.0.0.1".parse().unwrap(),
                dc: None
            })
        );
        assert_eq!(
            form("20010db8000000000000000000000001.addr.dc1.consul."),
            Some(NameForm::Addr {
                ip: "2001:db8::1".parse().unwrap(),
                dc: Some("dc1")
            })
        );
        assert_eq!(form("7f00001.addr.consul."), Some(NameForm::Unknown));
        assert_eq!(form("7f00000g.addr.consul."), Some(NameForm::Unknown));
        assert_eq!(form("a.7f000001.addr.consul."), Some(NameForm::Unknown));
    }

    #[test]
    fn query_forms() {
        let q = |name, dc| Some(NameForm::Query { name, dc });
        assert_eq!(form("web.query.consul."), q("web", None));
        assert_eq!(form("Web.QUERY.dc2.consul."), q("Web", Some("dc2")));
        assert_eq!(form("_web._tcp.query.consul."), q("web", None));
        assert_eq!(form("a.b.query.consul."), Some(NameForm::Unknown));
        assert_eq!(form("_._tcp.query.consul."), Some(NameForm::Unknown));
    }

    #[test]
    fn unknown_forms() {
        assert_eq!(form("service.consul."), Some(NameForm::Unknown));
        assert_eq!(form("node.dc1.consul."), Some(NameForm::Unknown));
        assert_eq!(form("web.consul."), Some(NameForm::Unknown));
        assert_eq!(
            form("web.service.dc1.extra.consul."),
            Some(NameForm::Unknown)
        );
        assert_eq!(form("x.y.query.consul."), Some(NameForm::Unknown));
        assert_eq!(form("query.consul."), Some(NameForm::Unknown));
    }

    #[test]
    fn non_utf8_label_is_unknown() {
        let domain = name("consul.");
        let q = Name::from_labels(vec![&b"\xff"[..], b"service", b"consul"]).unwrap();
        assert_eq!(parse(&q, &domain), Some(NameForm::Unknown));
    }

    #[test]
    fn hex_round_trip() {
        for ip in ["10.1.2.3", "0.0.0.0", "2001:db8::42", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(decode_hex_addr(&encode_hex_addr(ip)), Some(ip));
        }
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            parse_reverse(&name("4.3.2.10.in-addr.arpa.")),
            Some("10.2.3.4".parse().unwrap())
        );
        assert_eq!(
            parse_reverse(&name("4.3.2.10.IN-ADDR.ARPA.")),
            Some("10.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_reverse(&name("3.2.10.in-addr.arpa.")), None);
        assert_eq!(parse_reverse(&name("256.3.2.10.in-addr.arpa.")), None);
        let plus =
            Name::from_labels(vec![&b"+4"[..], b"3", b"2", b"10", b"in-addr", b"arpa"]).unwrap();
        assert_eq!(parse_reverse(&plus), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        assert_eq!(
            parse_reverse(&name(v6)),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(parse_reverse(&name("8.b.d.0.1.0.0.2.ip6.arpa.")), None);
        assert_eq!(parse_reverse(&name("example.com.")), None);
    }
}
