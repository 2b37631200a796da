//! A test network of real network namespaces: one switch namespace with a
//! bridge, one namespace per host wired to it by a veth pair (`eth0` in the
//! host, `pK` on the switch), each host at `10.77.0.K`. Agents placed there
//! ([`Net::placements`]) reach each other only through the bridge, so a test
//! can take a whole host off the network ([`Net::cut`], an instant
//! ENETUNREACH-like silence) or drop the traffic between two groups of hosts
//! with nftables ([`Net::block`], a blackhole: packets vanish, as on a WAN
//! link that died) while every other link stays up.
//!
//! Everything is made under names that carry the test process's pid and the
//! test's tag and is removed on drop, failure or not; names left by a
//! killed run whose process is gone are removed at the next start. Needs
//! root, iproute2 and (for `block`) nftables: without them
//! [`Net::create`] fails and the test says it was skipped ([`skip`]); under
//! `CI` not running is a failure.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use crate::{Agent, Placement};

/// Names this kit's namespaces start with; the pid keeps runs apart.
const PREFIX: &str = "trellis-test-";

/// Runs `ip ARGS`; `Err` with its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `nft -f -` inside namespace `ns` with `script` on its input.
fn nft(ns: &str, script: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run nft in {ns}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft's stdin")?
        .write_all(script.as_bytes())
        .map_err(|e| format!("write to nft: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns}: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Says loudly that a test did not run. Written to the process's stderr
/// directly, past the test harness's capture, so it shows in a passing run.
/// In CI (which runs as root, with scripts/test.sh installing iproute2,
/// curl and nftables) not running is a failure.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "the {test} test must run in CI: {why}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test} test (not run, not passed): {why}"
    );
}

/// The namespaces and links of one test.
#[derive(Debug)]
pub struct Net {
    switch: String,
    hosts: Vec<String>,
}

impl Net {
    /// [`Self::create`] for test `test`, or `None` after saying it is
    /// skipped ([`skip`]) where the net cannot be made or reached: no curl
    /// (the kit's HTTP into a namespace), not root, no iproute2 or nftables.
    pub fn for_test(test: &str, tag: &str, n: usize) -> Option<Self> {
        if Command::new("curl").arg("--version").output().is_err() {
            skip(test, "curl is not installed");
            return None;
        }
        match Self::create(tag, n) {
            Ok(net) => Some(net),
            Err(e) => {
                skip(
                    test,
                    &format!("network namespaces unavailable (needs root): {e}"),
                );
                None
            }
        }
    }

    /// Creates the switch and `n` hosts. `Err` only when namespaces cannot
    /// be made at all (not root, no iproute2), or `nft` is missing: the test
    /// is skipped then. Any later failure panics. `tag` keeps the
    /// namespaces of tests running at once apart.
    pub fn create(tag: &str, n: usize) -> Result<Self, String> {
        remove_stale();
        Command::new("nft")
            .arg("--version")
            .output()
            .map_err(|e| format!("nft (Debian nftables): {e}"))?;
        let pid = std::process::id();
        let switch = format!("{PREFIX}{pid}-{tag}-sw");
        ip(&["netns", "add", &switch])?;
        // From here on, Drop removes whatever was made.
        let mut net = Self {
            switch,
            hosts: Vec::new(),
        };
        let sw = net.switch.clone();
        let must = |args: &[&str]| ip(args).unwrap_or_else(|e| panic!("network setup: {e}"));
        must(&["-n", &sw, "link", "set", "lo", "up"]);
        must(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must(&["-n", &sw, "link", "set", "br0", "up"]);
        for k in 0..n {
            let host = format!("{PREFIX}{pid}-{tag}-{}", k + 1);
            must(&["netns", "add", &host]);
            net.hosts.push(host.clone());
            let port = format!("p{}", k + 1);
            let addr = format!("{}/24", Self::ip_of(k));
            must(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &host,
            ]);
            must(&["-n", &sw, "link", "set", &port, "master", "br0"]);
            must(&["-n", &sw, "link", "set", &port, "up"]);
            must(&["-n", &host, "link", "set", "lo", "up"]);
            must(&["-n", &host, "addr", "add", &addr, "dev", "eth0"]);
            must(&["-n", &host, "link", "set", "eth0", "up"]);
        }
        Ok(net)
    }

    /// Host `k`'s address (from 0).
    pub fn ip_of(k: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(
            10,
            77,
            0,
            u8::try_from(k + 1).expect("few hosts"),
        ))
    }

    /// Host `k`'s namespace.
    pub fn namespace(&self, k: usize) -> &str {
        &self.hosts[k]
    }

    /// Where member `k` runs: its own namespace, Consul's default ports
    /// (nothing else uses that namespace).
    pub fn placements(&self) -> Vec<Placement> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(k, ns)| Placement {
                ip: Self::ip_of(k),
                server_port: 8300,
                serf_port: 8301,
                serf_wan_port: 8302,
                netns: Some(ns.clone()),
            })
            .collect()
    }

    /// The host `agent` runs on (the test names agents, the wiring numbers
    /// hosts).
    pub fn host_of(agent: &Agent) -> usize {
        (0..u8::MAX as usize)
            .find(|&k| Self::ip_of(k) == agent.ip())
            .unwrap_or_else(|| panic!("{} is not on a test host", agent.name()))
    }

    /// Takes `agent`'s switch port down: it reaches no one and no one it.
    pub fn cut(&self, agent: &Agent) {
        self.port(agent, "down");
    }

    /// Brings `agent`'s switch port back.
    pub fn heal(&self, agent: &Agent) {
        self.port(agent, "up");
    }

    fn port(&self, agent: &Agent, state: &str) {
        let k = Self::host_of(agent);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &format!("p{}", k + 1),
            state,
        ])
        .unwrap_or_else(|e| panic!("port {state}: {e}"));
    }

    /// Drops every packet between the hosts of `a` and those of `b`, both
    /// ways, as they arrive (a blackhole: the sender sees no error, only
    /// silence). Other traffic, within `a` or within `b` or with anyone
    /// else, flows. Adds to what earlier calls blocked.
    pub fn block(&self, a: &[&Agent], b: &[&Agent]) {
        let hosts =
            |agents: &[&Agent]| -> Vec<usize> { agents.iter().map(|x| Self::host_of(x)).collect() };
        let (a, b) = (hosts(a), hosts(b));
        for (mine, theirs) in [(&a, &b), (&b, &a)] {
            let sources = theirs
                .iter()
                .map(|&k| Self::ip_of(k).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            for &k in mine {
                let script = format!(
                    "table inet trellis_cut {{\n\
                     \x20 chain input {{ type filter hook input priority 0; policy accept; }}\n\
                     }}\n\
                     add rule inet trellis_cut input ip saddr {{ {sources} }} drop\n"
                );
                nft(&self.hosts[k], &script).unwrap_or_else(|e| panic!("block: {e}"));
            }
        }
    }

    /// Removes every block: all hosts reach each other again.
    pub fn unblock(&self) {
        for ns in &self.hosts {
            // A host that never had a block has no table: deleting it fails,
            // which is fine.
            let _ = nft(ns, "delete table inet trellis_cut\n");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace also deletes the veth ends and the nftables
        // tables inside it.
        for ns in self.hosts.iter().chain([&self.switch]) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Removes namespaces left by earlier runs whose process is gone (killed
/// before its Drop ran). Only names this kit makes are touched.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
