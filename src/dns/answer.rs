//! Answers for names in our domain and for reverse names of catalog
//! addresses, built from one [`View`] snapshot.
//!
//! Everything here is pure: the same view, caller, name and type give the
//! same records, up to the shuffle of instance order. Nothing waits on
//! anything. With ACLs on, the [`Caller`] leaves out what its token may not
//! read (see `access.rs`).

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::DnsError;
use super::access::Caller;
use super::config::{self, SOA_EXPIRE, SOA_MIN_TTL, SOA_REFRESH, SOA_RETRY};
use super::name::{self, NameForm};
use super::shuffle::shuffle;
use crate::catalog::HealthStatus;
use crate::catalog::view::{InstanceAddress, InstanceView, NodeView, View};
use crate::config::DnsSettings;

/// The sections and code of a response, before it is fitted to a packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Answer {
    /// NOERROR, NXDOMAIN, ...
    pub(crate) rcode: ResponseCode,
    /// The answer section.
    pub(crate) answers: Vec<Record>,
    /// The authority section (SOA for negative answers, NS for SOA queries).
    pub(crate) authorities: Vec<Record>,
    /// The additional section (addresses of SRV and NS targets).
    pub(crate) additionals: Vec<Record>,
}

impl Answer {
    fn negative(rcode: ResponseCode, soa: Record) -> Self {
        Self {
            rcode,
            authorities: vec![soa],
            ..Self::default()
        }
    }

    /// A lookup that failed: Consul's answer when the catalog read behind
    /// it fails (an unknown token among them).
    fn servfail() -> Self {
        Self {
            rcode: ResponseCode::ServFail,
            ..Self::default()
        }
    }
}

/// What our domain has for a name: an answer of ours, or the name of the
/// datacenter whose servers hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// Ours to answer.
    Answer(Answer),
    /// A service, node or address name of another datacenter (`dc` as asked).
    OtherDatacenter(String),
    /// A prepared query of ours, by the ID or name asked: executing it may
    /// fail over, which waits on the network, so the server runs it off
    /// the DNS worker threads.
    PreparedQuery(String),
}

/// Answers for our domain, from settings fixed at start-up.
#[derive(Debug, Clone)]
pub(crate) struct Authority {
    /// The domain, lowercase, fully qualified.
    domain: Name,
    /// Our datacenter, lowercase, as a label.
    dc: String,
    /// `ns.<domain>`, the SOA's primary server.
    mname: Name,
    /// `hostmaster.<domain>`, the SOA's mailbox.
    rname: Name,
    /// The rest of the settings (TTLs, only_passing).
    settings: DnsSettings,
}

impl Authority {
    /// Validates the domain of `settings` and the `datacenter`.
    pub(crate) fn new(settings: &DnsSettings, datacenter: &str) -> Result<Self, DnsError> {
        let bad_domain = |_| DnsError::Domain(settings.domain.clone());
        let mut domain = Name::from_ascii(&settings.domain)
            .map_err(bad_domain)?
            .to_lowercase();
        domain.set_fqdn(true);
        if domain.is_root() {
            return Err(DnsError::Domain(settings.domain.clone()));
        }
        let dc = datacenter.to_ascii_lowercase();
        if dc.is_empty()
            || Name::from_ascii(&dc)
                .map(|n| n.num_labels() != 1)
                .unwrap_or(true)
        {
            return Err(DnsError::Datacenter(datacenter.to_owned()));
        }
        let mname = Name::from_ascii("ns")
            .and_then(|n| n.append_domain(&domain))
            .map_err(bad_domain)?;
        let rname = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&domain))
            .map_err(bad_domain)?;
        Ok(Self {
            domain,
            dc,
            mname,
            rname,
            settings: settings.clone(),
        })
    }

    /// The SOA of our domain; its serial follows the catalog index.
    pub(crate) fn soa(&self, view: &View) -> Record {
        // The serial only needs to move when the data does; the index wraps
        // after 2^32 writes, which RFC 1982 arithmetic tolerates.
        let serial = view.index as u32;
        let rdata = SOA::new(
            self.mname.clone(),
            self.rname.clone(),
            serial,
            clamp_i32(SOA_REFRESH),
            clamp_i32(SOA_RETRY),
            clamp_i32(SOA_EXPIRE),
            SOA_MIN_TTL,
        );
        Record::from_rdata(self.domain.clone(), SOA_MIN_TTL, RData::SOA(rdata))
    }

    /// Answers `qname` if it is at or below our domain, or names the other
    /// datacenter it belongs to; `None` when it is not ours.
    pub(crate) fn lookup(
        &self,
        view: &View,
        caller: Caller<'_>,
        qname: &Name,
        qtype: RecordType,
    ) -> Option<Found> {
        let form = name::parse(qname, &self.domain)?;
        if let Some(dc) = form.datacenter().filter(|dc| !self.our_dc(dc)) {
            return Some(Found::OtherDatacenter(dc.to_string()));
        }
        let answer = match form {
            NameForm::Apex => self.apex(view, caller, qtype),
            NameForm::Service { .. } | NameForm::Node { .. } if caller.unknown() => {
                Answer::servfail()
            }
            NameForm::Service { name, tag, .. } => {
                self.service(view, caller, qname, qtype, name, tag.as_deref())
            }
            NameForm::Node { name, .. } => self.node(view, caller, qname, qtype, &name),
            NameForm::Addr { ip, .. } => {
                let mut records = Vec::new();
                push_address(
                    &mut records,
                    qname,
                    Some(ip),
                    "",
                    qtype,
                    config::node_ttl_secs(&self.settings),
                );
                self.positive_or_nodata(view, records)
            }
            NameForm::Query { name, .. } => return Some(Found::PreparedQuery(name.to_string())),
            NameForm::Unknown => self.nxdomain(view),
        };
        Some(Found::Answer(answer))
    }

    /// Answers a reverse name for `ip` if some node or service instance
    /// that `caller` may see has that address; `None` otherwise.
    pub(crate) fn reverse(
        &self,
        view: &View,
        caller: Caller<'_>,
        qname: &Name,
        qtype: RecordType,
        ip: IpAddr,
    ) -> Option<Answer> {
        let mut targets: Vec<Name> = Vec::new();
        for node in view
            .nodes()
            .filter(|n| n.ip == Some(ip) && caller.reads_node(&n.name))
        {
            if let Some(fqdn) = self.node_fqdn(&node.name) {
                targets.push(fqdn);
            }
        }
        for svc in view.services() {
            // Instances at their node's address are already named by the node.
            let hit = svc.instances.iter().any(|i| {
                i.ip() == Some(ip) && !i.at_node && caller.reads_instance(&svc.name, &i.node.name)
            });
            if hit && let Some(fqdn) = self.scoped_fqdn(&svc.name, "service") {
                targets.push(fqdn);
            }
        }
        if targets.is_empty() {
            return None;
        }
        let mut seen = HashSet::new();
        targets.retain(|t| seen.insert(t.clone()));
        let records = match qtype {
            RecordType::PTR | RecordType::ANY => targets
                .into_iter()
                .map(|t| {
                    Record::from_rdata(
                        qname.clone(),
                        config::node_ttl_secs(&self.settings),
                        RData::PTR(PTR(t)),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(self.positive_or_nodata(view, records))
    }

    /// A negative answer for a name of ours that does not exist.
    pub(crate) fn nxdomain(&self, view: &View) -> Answer {
        Answer::negative(ResponseCode::NXDomain, self.soa(view))
    }

    fn our_dc(&self, dc: &str) -> bool {
        dc.eq_ignore_ascii_case(&self.dc)
    }

    fn positive_or_nodata(&self, view: &View, answers: Vec<Record>) -> Answer {
        if answers.is_empty() {
            Answer::negative(ResponseCode::NoError, self.soa(view))
        } else {
            Answer {
                answers,
                ..Answer::default()
            }
        }
    }

    fn apex(&self, view: &View, caller: Caller<'_>, qtype: RecordType) -> Answer {
        let (ns, extra) = self.nameservers(view, caller);
        match qtype {
            RecordType::SOA => Answer {
                answers: vec![self.soa(view)],
                authorities: ns,
                additionals: extra,
                ..Answer::default()
            },
            RecordType::NS if !ns.is_empty() => Answer {
                answers: ns,
                additionals: extra,
                ..Answer::default()
            },
            RecordType::ANY => {
                let mut answers = vec![self.soa(view)];
                answers.extend(ns);
                Answer {
                    answers,
                    additionals: extra,
                    ..Answer::default()
                }
            }
            _ => Answer::negative(ResponseCode::NoError, self.soa(view)),
        }
    }

    /// NS records naming the nodes that run the `consul` service (the
    /// servers) as far as `caller` may see them, with their addresses for
    /// the additional section.
    fn nameservers(&self, view: &View, caller: Caller<'_>) -> (Vec<Record>, Vec<Record>) {
        let mut ns = Vec::new();
        let mut extra = Vec::new();
        let Some(servers) = view.service("consul") else {
            return (ns, extra);
        };
        let mut seen = HashSet::new();
        let ttl = config::node_ttl_secs(&self.settings);
        for inst in &servers.instances {
            if !caller.reads_instance(&servers.name, &inst.node.name)
                || !seen.insert(inst.node.name.as_str())
            {
                continue;
            }
            let Some(fqdn) = self.node_fqdn(&inst.node.name) else {
                continue;
            };
            push_address(
                &mut extra,
                &fqdn,
                inst.node.ip,
                &inst.node.address,
                RecordType::ANY,
                ttl,
            );
            ns.push(Record::from_rdata(
                self.domain.clone(),
                ttl,
                RData::NS(NS(fqdn)),
            ));
        }
        shuffle(&mut ns);
        (ns, extra)
    }

    fn service(
        &self,
        view: &View,
        caller: Caller<'_>,
        qname: &Name,
        qtype: RecordType,
        service: &str,
        tag: Option<&str>,
    ) -> Answer {
        let Some(svc) = view.service(service) else {
            return self.nxdomain(view);
        };
        let mut picked: Vec<&InstanceView> = svc
            .instances
            .iter()
            .filter(|i| !self.settings.only_passing || i.health == HealthStatus::Passing)
            .filter(|i| tag.is_none_or(|t| i.has_tag(t)))
            .filter(|i| caller.reads_instance(&svc.name, &i.node.name))
            .collect();
        if picked.is_empty() {
            return self.nxdomain(view);
        }
        shuffle(&mut picked);
        let ttl = config::service_ttl_secs(&self.settings, &svc.name);
        let mut answers = Vec::with_capacity(picked.len());
        let mut additionals = Vec::new();
        match qtype {
            RecordType::SRV => {
                let mut targets = HashSet::new();
                for inst in picked {
                    self.push_srv(
                        &mut answers,
                        &mut additionals,
                        &mut targets,
                        qname,
                        inst,
                        ttl,
                    );
                }
            }
            RecordType::A | RecordType::AAAA | RecordType::ANY | RecordType::CNAME => {
                let mut seen = HashSet::new();
                for inst in picked {
                    if seen.insert(&inst.address) {
                        push_instance_address(&mut answers, qname, &inst.address, qtype, ttl);
                    }
                }
            }
            _ => {}
        }
        let mut answer = self.positive_or_nodata(view, answers);
        answer.additionals = additionals;
        answer
    }

    /// One SRV record for `inst` and, the first time a target appears, its
    /// address records for the additional section.
    fn push_srv(
        &self,
        answers: &mut Vec<Record>,
        additionals: &mut Vec<Record>,
        targets: &mut HashSet<Name>,
        qname: &Name,
        inst: &InstanceView,
        ttl: u32,
    ) {
        // Consul names the node when the instance lives at the node's
        // address, an `addr` name for another IP, the host name otherwise.
        let (target, ip, address) = if inst.at_node {
            (
                self.node_fqdn(&inst.node.name),
                inst.node.ip,
                inst.node.address.as_str(),
            )
        } else {
            match &inst.address {
                InstanceAddress::Ip(ip) => (
                    self.scoped_fqdn(&name::encode_hex_addr(*ip), "addr"),
                    Some(*ip),
                    "",
                ),
                InstanceAddress::Host(host) => (host_fqdn(host), None, ""),
            }
        };
        let Some(target) = target else {
            return;
        };
        let srv = SRV::new(1, inst.weight, inst.port, target.clone());
        answers.push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
        if (ip.is_some() || !address.is_empty()) && targets.insert(target.clone()) {
            push_address(additionals, &target, ip, address, RecordType::ANY, ttl);
        }
    }

    fn node(
        &self,
        view: &View,
        caller: Caller<'_>,
        qname: &Name,
        qtype: RecordType,
        node: &str,
    ) -> Answer {
        let Some(node) = view.node(node).filter(|n| caller.reads_node(&n.name)) else {
            return self.nxdomain(view);
        };
        let ttl = config::node_ttl_secs(&self.settings);
        let mut answers = Vec::new();
        push_address(&mut answers, qname, node.ip, &node.address, qtype, ttl);
        if matches!(qtype, RecordType::TXT | RecordType::ANY) {
            push_meta(&mut answers, qname, node, ttl);
        }
        self.positive_or_nodata(view, answers)
    }

    /// The answer for a prepared query's `result` (NXDOMAIN when it has no
    /// instance): addresses, or SRV records whose targets name the nodes in
    /// the datacenter that answered, their addresses in the additional
    /// section. The TTL is the query's `DNS.TTL`, else the service's.
    pub(crate) fn prepared_query(
        &self,
        view: &View,
        qname: &Name,
        qtype: RecordType,
        result: &crate::prepared_query::QueryResult,
    ) -> Answer {
        if result.nodes.is_empty() {
            return self.nxdomain(view);
        }
        let ttl = crate::definition::parse_duration(&result.dns_ttl)
            .ok()
            .filter(|_| !result.dns_ttl.is_empty())
            .map_or_else(
                || config::service_ttl_secs(&self.settings, &result.service),
                |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
            );
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut seen = HashSet::new();
        for e in &result.nodes {
            let address: &str = if e.service.address.is_empty() {
                &e.node.address
            } else {
                &e.service.address
            };
            let ip = address.parse::<IpAddr>().ok();
            if qtype != RecordType::SRV {
                if seen.insert(address.to_string()) {
                    push_address(&mut answers, qname, ip, address, qtype, ttl);
                }
                continue;
            }
            let Some(target) = Name::from_ascii(&e.node.name)
                .and_then(|n| n.append_label("node"))
                .and_then(|n| n.append_label(result.datacenter.to_ascii_lowercase().as_str()))
                .and_then(|n| n.append_domain(&self.domain))
                .ok()
            else {
                continue;
            };
            let health = HealthStatus::worst(e.checks.iter().map(|c| c.status));
            let weight = e.service.weights.in_force(health);
            let srv = SRV::new(1, weight, e.service.port, target.clone());
            answers.push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
            if seen.insert(target.to_string()) {
                push_address(&mut additionals, &target, ip, address, RecordType::ANY, ttl);
            }
        }
        let mut answer = self.positive_or_nodata(view, answers);
        answer.additionals = additionals;
        answer
    }

    /// `<node>.node.<dc>.<domain>`; `None` for a node name that is not a
    /// valid DNS name (Consul leaves those out too).
    fn node_fqdn(&self, node: &str) -> Option<Name> {
        self.scoped_fqdn(node, "node")
    }

    /// `<name>.<kind>.<dc>.<domain>`.
    fn scoped_fqdn(&self, name: &str, kind: &str) -> Option<Name> {
        Name::from_ascii(name)
            .and_then(|n| n.append_label(kind))
            .and_then(|n| n.append_label(self.dc.as_str()))
            .and_then(|n| n.append_domain(&self.domain))
            .ok()
    }
}

/// Address records of `qtype` for an IP, or a CNAME when the address is a
/// host name. `address` may be empty when only `ip` is known.
fn push_address(
    out: &mut Vec<Record>,
    owner: &Name,
    ip: Option<IpAddr>,
    address: &str,
    qtype: RecordType,
    ttl: u32,
) {
    let any = qtype == RecordType::ANY;
    let rdata = match ip {
        Some(IpAddr::V4(v4)) if any || qtype == RecordType::A => RData::A(A(v4)),
        Some(IpAddr::V6(v6)) if any || qtype == RecordType::AAAA => RData::AAAA(AAAA(v6)),
        Some(_) => return,
        None => {
            let cname_type = matches!(
                qtype,
                RecordType::A | RecordType::AAAA | RecordType::ANY | RecordType::CNAME
            );
            match host_fqdn(address) {
                Some(host) if cname_type => RData::CNAME(CNAME(host)),
                _ => return,
            }
        }
    };
    out.push(Record::from_rdata(owner.clone(), ttl, rdata));
}

/// [`push_address`] for an instance's address.
fn push_instance_address(
    out: &mut Vec<Record>,
    owner: &Name,
    address: &InstanceAddress,
    qtype: RecordType,
    ttl: u32,
) {
    match address {
        InstanceAddress::Ip(ip) => push_address(out, owner, Some(*ip), "", qtype, ttl),
        InstanceAddress::Host(host) => push_address(out, owner, None, host, qtype, ttl),
    }
}

/// One TXT record per node meta pair, `key=value`, as Consul does.
fn push_meta(out: &mut Vec<Record>, owner: &Name, node: &NodeView, ttl: u32) {
    for (k, v) in &node.meta {
        let txt = TXT::new(vec![format!("{k}={v}")]);
        out.push(Record::from_rdata(owner.clone(), ttl, RData::TXT(txt)));
    }
}

/// A registered host name as an absolute DNS name.
fn host_fqdn(address: &str) -> Option<Name> {
    if address.is_empty() {
        return None;
    }
    let mut name = Name::from_ascii(address).ok()?;
    name.set_fqdn(true);
    Some(name)
}

fn clamp_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}
