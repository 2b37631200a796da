//! Asking one question with `dig` and comparing two servers' answers, so the
//! benchmark knows trellis and NSD serve the same data before timing them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::Command;
use trellis_testkit::Process;

/// One resource record, reduced to what must match between servers: owner
/// and rdata in lower case, the type; TTL and class dropped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rr {
    /// Owner name, lower case, fully qualified.
    pub(crate) owner: String,
    /// `A`, `SRV`, `SOA`...
    pub(crate) rtype: String,
    /// The record data, space separated, lower case.
    pub(crate) rdata: String,
}

/// A response as `dig` printed it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Response {
    /// `NOERROR`, `NXDOMAIN`...
    pub(crate) rcode: String,
    /// The answer section, sorted.
    pub(crate) answer: Vec<Rr>,
    /// The authority section, sorted.
    pub(crate) authority: Vec<Rr>,
    /// The additional section without the OPT pseudo-record, sorted.
    pub(crate) additional: Vec<Rr>,
}

/// Asks `server` for `name`/`qtype` over UDP, one try, with or without an
/// EDNS OPT record (dnsperf sends none, resolvers usually do).
pub(crate) async fn query(
    server: SocketAddr,
    name: &str,
    qtype: &str,
    edns: bool,
) -> anyhow::Result<Response> {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+norecurse", "+time=1", "+tries=1", "+noall", "+comments"])
        .arg(if edns { "+edns=0" } else { "+noedns" })
        .args(["+answer", "+authority", "+additional", name, qtype])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .context("dig hung")?
        .context("running dig")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dig {name} {qtype} @{server} failed ({}): {text}",
            out.status
        );
    }
    parse(&text).with_context(|| format!("dig {name} {qtype} @{server}"))
}

/// Parses dig's `+noall +comments +answer +authority +additional` output.
pub(crate) fn parse(text: &str) -> anyhow::Result<Response> {
    let mut r = Response::default();
    let mut section: Option<&mut Vec<Rr>> = None;
    for line in text.lines().map(str::trim) {
        if let Some((_, rest)) = line.split_once("status: ") {
            r.rcode = rest
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            continue;
        }
        if line.starts_with(';') {
            section = match line {
                ";; ANSWER SECTION:" => Some(&mut r.answer),
                ";; AUTHORITY SECTION:" => Some(&mut r.authority),
                ";; ADDITIONAL SECTION:" => Some(&mut r.additional),
                _ if line.ends_with("SECTION:") => None,
                _ => section,
            };
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(owner), Some(_ttl), Some(_class), Some(rtype)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            bail!("unexpected line {line:?}");
        };
        let rr = Rr {
            owner: owner.to_ascii_lowercase(),
            rtype: rtype.to_string(),
            rdata: f.collect::<Vec<_>>().join(" ").to_ascii_lowercase(),
        };
        if let Some(s) = section.as_deref_mut() {
            s.push(rr);
        }
    }
    if r.rcode.is_empty() {
        bail!("no status in dig output: {text}");
    }
    r.answer.sort();
    r.authority.sort();
    r.additional.sort();
    Ok(r)
}

/// Whether two servers gave the same answer to one question, ignoring order
/// and TTLs: same rcode and answer section; the same addresses for the SRV
/// targets in the additional section; a SOA in the authority of a negative
/// answer. Other extras (NSD's NS and glue) are allowed to differ.
pub(crate) fn same(a: &Response, b: &Response) -> Result<(), String> {
    if a.rcode != b.rcode {
        return Err(format!("rcode {} vs {}", a.rcode, b.rcode));
    }
    if a.answer != b.answer {
        return Err(format!(
            "answer section differs:\n  {:?}\n  {:?}",
            a.answer, b.answer
        ));
    }
    let targets: Vec<&str> = a
        .answer
        .iter()
        .filter(|rr| rr.rtype == "SRV")
        .filter_map(|rr| rr.rdata.split_whitespace().nth(3))
        .collect();
    let glue = |r: &Response| -> Vec<Rr> {
        r.additional
            .iter()
            .filter(|rr| {
                matches!(rr.rtype.as_str(), "A" | "AAAA") && targets.contains(&rr.owner.as_str())
            })
            .cloned()
            .collect()
    };
    let (ga, gb) = (glue(a), glue(b));
    if ga != gb || ga.len() < targets.len() {
        return Err(format!("SRV target addresses differ:\n  {ga:?}\n  {gb:?}"));
    }
    if a.answer.is_empty() {
        for r in [a, b] {
            if !r.authority.iter().any(|rr| rr.rtype == "SOA") {
                return Err(format!("negative answer without SOA: {:?}", r.authority));
            }
        }
    }
    Ok(())
}

/// Checks the parser and the comparison; run by `cargo test --bench dns_vs_nsd`.
pub(crate) fn self_check() {
    let nsd = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 6217
;; flags: qr aa; QUERY: 1, ANSWER: 2, AUTHORITY: 1, ADDITIONAL: 4

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; ANSWER SECTION:
svc0.service.consul.\t0\tIN\tSRV\t1 1 20000 node0.node.dc1.consul.
svc0.service.consul.\t0\tIN\tSRV\t1 1 20001 node1.node.dc1.consul.

;; AUTHORITY SECTION:
consul.\t\t\t0\tIN\tNS\tns.consul.

;; ADDITIONAL SECTION:
node0.node.dc1.consul.\t0\tIN\tA\t10.1.0.1
node1.node.dc1.consul.\t0\tIN\tA\t10.1.0.2
ns.consul.\t\t0\tIN\tA\t127.0.0.3
";
    let trellis = "\
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1
;; ANSWER SECTION:
SVC0.service.consul. 5 IN SRV 1 1 20001 node1.node.dc1.consul.
svc0.service.consul. 5 IN SRV 1 1 20000 node0.node.dc1.consul.
;; ADDITIONAL SECTION:
node1.node.dc1.consul. 5 IN A 10.1.0.2
node0.node.dc1.consul. 5 IN A 10.1.0.1
";
    let a = parse(nsd).expect("dig output parses");
    assert_eq!(a.rcode, "NOERROR");
    assert_eq!(
        (a.answer.len(), a.authority.len(), a.additional.len()),
        (2, 1, 3)
    );
    let b = parse(trellis).expect("dig output parses");
    assert_eq!(same(&a, &b), Ok(()));

    let missing_glue = trellis.replace("node0.node.dc1.consul. 5 IN A 10.1.0.1\n", "");
    assert!(same(&a, &parse(&missing_glue).expect("parses")).is_err());
    let wrong_port = trellis.replace("20001", "20002");
    assert!(same(&a, &parse(&wrong_port).expect("parses")).is_err());

    let nx = ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 2\n;; AUTHORITY SECTION:\n\
              consul. 0 IN SOA ns.consul. hostmaster.consul. 1 3600 600 86400 0\n";
    let nx = parse(nx).expect("parses");
    assert_eq!(same(&nx, &nx), Ok(()));
    assert!(same(&nx, &a).is_err());
    assert!(parse("no header\n").is_err());
}

/// Waits until `proc`, a peer server called `name`, answers the `consul.`
/// zone's SOA on `addr`; fails at once if it exits, and after `within`.
/// `log` is what the failure shows of its log.
pub(crate) async fn wait_answering(
    name: &str,
    proc: &mut Process,
    addr: SocketAddr,
    within: Duration,
    log: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Err(e) = proc.check_running() {
            bail!("{e}; {name}'s log:\n{}", log());
        }
        if let Ok(r) = query(addr, "consul.", "SOA", true).await
            && r.rcode == "NOERROR"
            && !r.answer.is_empty()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not answer on {addr} within {} s; its log:\n{}",
                within.as_secs(),
                log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
