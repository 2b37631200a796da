//! Load generation with dnsperf, parsing its statistics, and judging whether
//! a server's response codes are right for the query mix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use crate::procs::pinned;
use crate::workload::NXDOMAIN_SHARE;

/// What dnsperf reports at the end of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Stats {
    /// Queries sent.
    pub(crate) sent: u64,
    /// Queries answered.
    pub(crate) completed: u64,
    /// Queries that timed out.
    pub(crate) lost: u64,
    /// Answers per response code (`NOERROR`, `NXDOMAIN`, ...).
    pub(crate) rcodes: BTreeMap<String, u64>,
    /// Average request and response sizes, bytes.
    pub(crate) request_bytes: u64,
    /// See `request_bytes`.
    pub(crate) response_bytes: u64,
    /// Completed queries per second.
    pub(crate) qps: f64,
    /// Average, minimum and maximum latency, seconds.
    pub(crate) latency: (f64, f64, f64),
}

impl Stats {
    /// Lost queries as a percentage of those sent.
    pub(crate) fn lost_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.lost as f64 / self.sent as f64
        }
    }

    /// Answers with response code `rcode`.
    pub(crate) fn count(&self, rcode: &str) -> u64 {
        self.rcodes.get(rcode).copied().unwrap_or(0)
    }

    /// Whether the response codes match the query mix: some answers, only
    /// NOERROR and NXDOMAIN, and NXDOMAIN for about the share of queries
    /// that name missing services. A server that fails this is wrong, not
    /// slow.
    pub(crate) fn check_rcodes(&self) -> Result<(), String> {
        if self.completed == 0 {
            return Err("no query was answered".into());
        }
        let others: Vec<String> = self
            .rcodes
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "NOERROR" | "NXDOMAIN"))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !others.is_empty() {
            return Err(format!("unexpected response codes: {}", others.join(", ")));
        }
        let share = self.count("NXDOMAIN") as f64 / self.completed as f64;
        if (share - NXDOMAIN_SHARE).abs() > 0.03 {
            return Err(format!(
                "NXDOMAIN share {:.1} %, expected {:.0} % (the missing* names)",
                share * 100.0,
                NXDOMAIN_SHARE * 100.0
            ));
        }
        Ok(())
    }
}

/// Runs dnsperf against `server` for `seconds`, on `cpu`, and returns its
/// statistics and full output. UDP, 8 client sockets, one thread, up to 200
/// queries in flight, which saturates one server core while dnsperf itself
/// has a core of its own.
#[allow(dead_code, reason = "acl_overhead's way in; this program sets a rate")]
pub(crate) async fn run(
    cpu: Option<usize>,
    server: SocketAddr,
    queries: &Path,
    seconds: u64,
) -> anyhow::Result<(Stats, String)> {
    run_at(cpu, server, queries, seconds, None).await
}

/// [`run`], sending at most `max_qps` queries a second when given
/// (`dnsperf -Q`): a fixed offered load, at which the servers' CPU per
/// query compares without depending on how hard dnsperf can push.
pub(crate) async fn run_at(
    cpu: Option<usize>,
    server: SocketAddr,
    queries: &Path,
    seconds: u64,
    max_qps: Option<u32>,
) -> anyhow::Result<(Stats, String)> {
    let mut cmd = tokio::process::Command::from(pinned(cpu, "dnsperf"));
    cmd.args([
        "-s",
        &server.ip().to_string(),
        "-p",
        &server.port().to_string(),
    ])
    .arg("-d")
    .arg(queries)
    .args([
        "-l",
        &seconds.to_string(),
        "-c",
        "8",
        "-T",
        "1",
        "-q",
        "200",
        "-t",
        "2",
    ])
    .stdin(Stdio::null())
    .kill_on_drop(true);
    if let Some(q) = max_qps {
        cmd.args(["-Q", &q.to_string()]);
    }
    let out = tokio::time::timeout(Duration::from_secs(seconds + 30), cmd.output())
        .await
        .context("dnsperf did not finish")?
        .context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "dnsperf failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stats = parse(&text).with_context(|| format!("parsing dnsperf output:\n{text}"))?;
    Ok((stats, text))
}

/// Parses the `Statistics:` block dnsperf prints when it finishes.
pub(crate) fn parse(text: &str) -> anyhow::Result<Stats> {
    let mut s = Stats::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        let first = || value.split_whitespace().next().unwrap_or_default();
        match key {
            "Queries sent" => s.sent = first().parse()?,
            "Queries completed" => s.completed = first().parse()?,
            "Queries lost" => s.lost = first().parse()?,
            "Queries per second" => s.qps = first().parse()?,
            "Response codes" => {
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let mut f = part.split_whitespace();
                    let (Some(code), Some(n)) = (f.next(), f.next()) else {
                        bail!("response code {part:?}");
                    };
                    s.rcodes.insert(code.to_string(), n.parse()?);
                }
            }
            "Average packet size" => {
                // "request 38, response 132"
                for part in value.split(',') {
                    let mut f = part.split_whitespace();
                    match (f.next(), f.next()) {
                        (Some("request"), Some(n)) => s.request_bytes = n.parse()?,
                        (Some("response"), Some(n)) => s.response_bytes = n.parse()?,
                        _ => {}
                    }
                }
            }
            "Average Latency (s)" => {
                // "0.000921 (min 0.000010, max 0.005743)"
                let nums: Vec<f64> = value
                    .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .filter(|t| !t.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                let [avg, min, max] = nums[..] else {
                    bail!("latency {value:?}");
                };
                s.latency = (avg, min, max);
            }
            _ => continue,
        }
        seen += 1;
    }
    // Without answers dnsperf omits the response-code and latency lines.
    if seen < 4 {
        return Err(anyhow!("no statistics block"));
    }
    Ok(s)
}

/// Checks the parser and the judgement; run by `cargo test --bench dns_vs_nsd`.
pub(crate) fn self_check() {
    let out = "\
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         518148
  Queries completed:    518100 (99.99%)
  Queries lost:         48 (0.01%)

  Response codes:       NOERROR 466290 (90.00%), NXDOMAIN 51810 (10.00%)
  Average packet size:  request 38, response 132
  Run time (s):         3.001750
  Queries per second:   172615.307737

  Average Latency (s):  0.000921 (min 0.000010, max 0.005743)
  Latency StdDev (s):   0.000407
";
    let s = parse(out).expect("dnsperf output parses");
    assert_eq!((s.sent, s.completed, s.lost), (518_148, 518_100, 48));
    assert_eq!(s.count("NOERROR"), 466_290);
    assert_eq!(s.count("NXDOMAIN"), 51_810);
    assert_eq!((s.request_bytes, s.response_bytes), (38, 132));
    assert!((s.qps - 172_615.307_737).abs() < 1e-6);
    assert!((s.latency.0 - 0.000_921).abs() < 1e-12 && (s.latency.2 - 0.005_743).abs() < 1e-12);
    assert!(s.lost_pct() < 0.01);
    assert_eq!(s.check_rcodes(), Ok(()));

    let servfail = out.replace(
        "NXDOMAIN 51810 (10.00%)",
        "NXDOMAIN 51800 (10.00%), SERVFAIL 10 (0.00%)",
    );
    assert!(parse(&servfail).expect("parses").check_rcodes().is_err());
    let no_nx = out.replace(", NXDOMAIN 51810 (10.00%)", "");
    assert!(parse(&no_nx).expect("parses").check_rcodes().is_err());
    assert!(parse("[Status] Sending queries\n").is_err());
}
