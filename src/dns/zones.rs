//! Static zones: `*.zone` files loaded at start-up and served authoritatively.
//!
//! hickory's master-file parser reads each file; we index its records by
//! owner name and answer with RFC 1034's rules: the records of the asked type,
//! else a CNAME at the name, else NODATA when the name (or a name below it)
//! exists, else NXDOMAIN, the last two with the zone's SOA in the authority
//! section. A `*` owner answers for names that do not exist one level below
//! its parent. Delegations below a zone's apex are not followed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;

use super::DnsError;
use super::answer::Answer;

/// One zone: its apex, SOA and every record by owner name.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// The apex, fully qualified (compares case-insensitively).
    origin: Name,
    /// The SOA at the apex, for AA answers and negative responses.
    soa: Record,
    /// Records by owner name (case-insensitive `Name` keys).
    records: HashMap<Name, Vec<Record>>,
    /// Every owner name and every name between an owner and the apex, so a
    /// name with nothing of its own but something below it is NODATA, not
    /// NXDOMAIN (RFC 8020).
    names: HashSet<Name>,
}

/// All loaded zones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Zones {
    /// Sorted by number of labels, deepest first, so the first zone that
    /// contains a name is its closest enclosing zone.
    zones: Vec<Zone>,
}

impl Zones {
    /// Loads every `*.zone` file of each directory, in name order.
    pub(crate) fn load(dirs: &[PathBuf]) -> Result<Self, DnsError> {
        let mut zones = Vec::new();
        for dir in dirs {
            let entries = std::fs::read_dir(dir).map_err(|source| DnsError::ZoneDir {
                path: dir.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| DnsError::ZoneDir {
                    path: dir.clone(),
                    source,
                })?;
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "zone") && path.is_file() {
                    files.push(path);
                }
            }
            files.sort();
            for path in files {
                zones.push(Zone::load(&path)?);
            }
        }
        Ok(Self::new(zones))
    }

    fn new(mut zones: Vec<Zone>) -> Self {
        zones.sort_by_key(|z| std::cmp::Reverse(z.origin.num_labels()));
        Self { zones }
    }

    /// Whether no zone is loaded.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// Answers `qname` from the closest zone containing it; `None` when no
    /// zone does.
    pub(crate) fn lookup(&self, qname: &Name, qtype: RecordType) -> Option<Answer> {
        let zone = self.zones.iter().find(|z| z.origin.zone_of(qname))?;
        Some(zone.lookup(qname, qtype))
    }
}

impl Zone {
    /// Parses one zone file. The origin defaults to the file name without
    /// `.zone`; a `$ORIGIN` line overrides it.
    pub(crate) fn load(path: &Path) -> Result<Self, DnsError> {
        let text = std::fs::read_to_string(path).map_err(|source| DnsError::ZoneDir {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses zone text; `path` names the file in errors and anchors `$INCLUDE`.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, DnsError> {
        let err = |line: usize, message: String| DnsError::Zone {
            path: path.to_owned(),
            line,
            message,
        };
        let origin = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| Name::from_ascii(s).ok())
            .map(|mut n| {
                n.set_fqdn(true);
                n
            });
        let (origin, sets) = Parser::new(text, Some(path.to_owned()), origin.clone())
            .parse()
            .map_err(|e| err(error_line(text, path, origin.as_ref()), e.to_string()))?;
        let mut records: HashMap<Name, Vec<Record>> = HashMap::new();
        for set in sets.values() {
            for record in set.records_without_rrsigs() {
                if !origin.zone_of(&record.name) {
                    return Err(err(
                        0,
                        format!("record {} is outside the zone {origin}", record.name),
                    ));
                }
                records
                    .entry(record.name.clone())
                    .or_default()
                    .push(record.clone());
            }
        }
        let soa = records
            .get(&origin)
            .and_then(|rs| rs.iter().find(|r| r.record_type() == RecordType::SOA))
            .cloned()
            .ok_or_else(|| err(0, format!("no SOA record at the zone apex {origin}")))?;
        let mut names = HashSet::new();
        for owner in records.keys() {
            let mut name = owner.clone();
            while name.num_labels() >= origin.num_labels() && names.insert(name.clone()) {
                name = name.base_name();
            }
        }
        Ok(Self {
            origin,
            soa,
            records,
            names,
        })
    }

    /// The zone's apex.
    #[cfg(test)]
    pub(crate) fn origin(&self) -> &Name {
        &self.origin
    }

    fn lookup(&self, qname: &Name, qtype: RecordType) -> Answer {
        let (owner_records, synthesized) = match self.records.get(qname) {
            Some(rs) => (rs, false),
            None if self.names.contains(qname) => return self.negative(ResponseCode::NoError),
            None => match self.wildcard(qname) {
                Some(rs) => (rs, true),
                None => return self.negative(ResponseCode::NXDomain),
            },
        };
        let rename = |r: &Record| {
            let mut r = r.clone();
            if synthesized {
                r.name = qname.clone();
            }
            r
        };
        let matching: Vec<Record> = owner_records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .map(rename)
            .collect();
        if !matching.is_empty() {
            let mut answer = Answer {
                answers: matching,
                ..Answer::default()
            };
            if qtype == RecordType::NS && *qname == self.origin {
                answer.additionals = self.glue(&answer.answers);
            }
            return answer;
        }
        if let Some(cname) = owner_records
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME)
        {
            let mut answers = vec![rename(cname)];
            // Follow one step inside the zone so simple aliases resolve in one go.
            if let RData::CNAME(target) = &cname.data
                && let Some(rs) = self.records.get(&target.0)
            {
                answers.extend(rs.iter().filter(|r| r.record_type() == qtype).cloned());
            }
            return Answer {
                answers,
                ..Answer::default()
            };
        }
        self.negative(ResponseCode::NoError)
    }

    /// Records at `*.<parent>` when `qname`'s parent exists in the zone.
    fn wildcard(&self, qname: &Name) -> Option<&Vec<Record>> {
        if qname.num_labels() <= self.origin.num_labels() {
            return None;
        }
        let wild = qname.base_name().prepend_label("*").ok()?;
        self.records.get(&wild)
    }

    /// Addresses of in-zone name servers.
    fn glue(&self, ns: &[Record]) -> Vec<Record> {
        ns.iter()
            .filter_map(|r| match &r.data {
                RData::NS(n) => self.records.get(&n.0),
                _ => None,
            })
            .flatten()
            .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
            .cloned()
            .collect()
    }

    /// NXDOMAIN or NODATA with the SOA; its TTL is the negative-caching TTL
    /// of RFC 2308, the smaller of the SOA's TTL and its minimum.
    fn negative(&self, rcode: ResponseCode) -> Answer {
        let mut soa = self.soa.clone();
        if let RData::SOA(SOA { minimum, .. }) = &soa.data {
            soa.ttl = soa.ttl.min(*minimum);
        }
        Answer {
            rcode,
            authorities: vec![soa],
            ..Answer::default()
        }
    }
}

/// The line of the first entry that makes the file fail to parse.
///
/// hickory's parser does not report positions, so we cut the text at entry
/// boundaries (newlines outside parentheses and quotes) and find the shortest
/// failing prefix by bisection. Only runs on the error path.
fn error_line(text: &str, path: &Path, origin: Option<&Name>) -> usize {
    let entries = entry_bounds(text);
    let fails = |end: usize| {
        Parser::new(&text[..end], Some(path.to_owned()), origin.cloned())
            .parse()
            .is_err()
    };
    // Smallest k such that entries[..=k] fails; the whole text is known to fail.
    let (mut lo, mut hi) = (0, entries.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails(entries[mid].1) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    entries.get(lo).map_or(entries.len().max(1), |e| e.0)
}

/// `(first line number, end byte offset)` of each logical entry.
fn entry_bounds(text: &str) -> Vec<(usize, usize)> {
    let mut bounds = Vec::new();
    let (mut depth, mut quoted, mut comment, mut escaped) = (0u32, false, false, false);
    let (mut line, mut start_line) = (1, 1);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\n' => {
                comment = false;
                line += 1;
                if depth == 0 && !quoted {
                    bounds.push((start_line, i + 1));
                    start_line = line;
                }
            }
            _ if comment => {}
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => comment = true,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if bounds.last().is_none_or(|b| b.1 < text.len()) {
        bounds.push((start_line, text.len()));
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "\
$TTL 300
@   IN SOA ns1 hostmaster (
        2024010101 ; serial
        3600 600 86400 60 )
    IN NS ns1
ns1 IN A 10.0.0.53
www IN A 10.0.0.80
www IN AAAA 2001:db8::80
alias IN CNAME www
a.b.deep IN TXT \"hello\"
*.wild IN A 10.0.0.99
";

    fn zone() -> Zone {
        Zone::parse(ZONE, Path::new("example.internal.zone")).expect("test zone parses")
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn origin_from_file_name() {
        assert_eq!(zone().origin(), &n("example.internal."));
    }

    #[test]
    fn positive_answers() {
        let z = zone();
        let a = z.lookup(&n("WWW.example.internal."), RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.answers.len(), 1);
        let any = z.lookup(&n("www.example.internal."), RecordType::ANY);
        assert_eq!(any.answers.len(), 2);
        let ns = z.lookup(&n("example.internal."), RecordType::NS);
        assert_eq!(ns.answers.len(), 1);
        assert_eq!(ns.additionals.len(), 1, "glue for the in-zone NS");
    }

    #[test]
    fn cname_is_followed_inside_the_zone() {
        let a = zone().lookup(&n("alias.example.internal."), RecordType::A);
        assert_eq!(a.answers.len(), 2);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(a.answers[1].record_type(), RecordType::A);
    }

    #[test]
    fn negative_answers_carry_the_soa() {
        let z = zone();
        let nx = z.lookup(&n("nope.example.internal."), RecordType::A);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(nx.authorities[0].ttl, 60, "negative TTL is the SOA minimum");
        let nodata = z.lookup(&n("ns1.example.internal."), RecordType::AAAA);
        assert_eq!(nodata.rcode, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities.len(), 1);
        // An empty non-terminal exists.
        let ent = z.lookup(&n("b.deep.example.internal."), RecordType::A);
        assert_eq!(ent.rcode, ResponseCode::NoError);
        assert!(ent.answers.is_empty());
    }

    #[test]
    fn wildcard_synthesizes_the_asked_name() {
        let a = zone().lookup(&n("x.wild.example.internal."), RecordType::A);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].name, n("x.wild.example.internal."));
    }

    #[test]
    fn closest_zone_wins() {
        let parent = Zone::parse(ZONE, Path::new("example.internal.zone")).unwrap();
        let child_text = "$TTL 60\n@ IN SOA ns1 hm 1 2 3 4 5\nwww IN A 192.0.2.1\n";
        let child = Zone::parse(child_text, Path::new("sub.example.internal.zone")).unwrap();
        let zones = Zones::new(vec![parent, child]);
        let a = zones
            .lookup(&n("www.sub.example.internal."), RecordType::A)
            .unwrap();
        assert_eq!(a.answers.len(), 1);
        assert!(zones.lookup(&n("example.com."), RecordType::A).is_none());
    }

    #[test]
    fn errors_name_the_line() {
        let bad =
            "$TTL 60\n@ IN SOA ns1 hm (\n 1 2 3\n 4 5 )\nok IN A 10.0.0.1\nbad IN A not-an-ip\n";
        match Zone::parse(bad, Path::new("e.zone")) {
            Err(DnsError::Zone { line, path, .. }) => {
                assert_eq!(line, 6);
                assert_eq!(path, Path::new("e.zone"));
            }
            other => panic!("expected a zone error, got {other:?}"),
        }
    }

    #[test]
    fn missing_soa_is_an_error() {
        let e = Zone::parse("$TTL 60\nwww IN A 10.0.0.1\n", Path::new("x.zone")).unwrap_err();
        assert!(e.to_string().contains("SOA"), "{e}");
    }

    #[test]
    fn shipped_zone_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
        let zones = Zones::load(&[dir]).expect("every file in zones/ parses");
        assert!(!zones.is_empty());
    }
}
