//! NSD, the reference: an authoritative server from NLnet Labs that answers
//! from a precompiled static zone. It serves the same names as trellis from
//! a zone file written by `workload::zone`, in one server process.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::dig;
use trellis_testkit::{Log, OnDrop, Process};

use crate::procs::pinned;

/// A running NSD.
pub(crate) struct Nsd {
    /// The process (NSD forks its server and xfrd children, and stops them
    /// when it gets SIGTERM).
    pub(crate) proc: Process,
    /// Where it answers, UDP and TCP.
    pub(crate) addr: SocketAddr,
}

/// The configuration: everything in `dir`, no chroot, no privilege drop, no
/// database file, one server process, no remote control. Minimal responses
/// stay off so SRV answers carry their targets' addresses as trellis's do
/// (NSD then also adds the zone's NS and its glue, so its answers are a
/// little larger). Response rate limiting, on by default in Debian's build
/// at 200 qps per source, is off: it would drop most of dnsperf's queries.
pub(crate) fn config(dir: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "server:
  ip-address: {ip}@{port}
  do-ip6: no
  server-count: 1
  username: \"\"
  chroot: \"\"
  zonesdir: \"{d}\"
  database: \"\"
  zonelistfile: \"{d}/zone.list\"
  pidfile: \"{d}/nsd.pid\"
  xfrdfile: \"{d}/xfrd.state\"
  xfrdir: \"{d}\"
  logfile: \"{d}/nsd.log\"
  verbosity: 0
  hide-version: yes
  minimal-responses: no
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: consul
  zonefile: \"consul.zone\"
",
        ip = addr.ip(),
        port = addr.port(),
    )
}

impl Nsd {
    /// Writes `zone` and the configuration into `dir`, starts `nsd -d` on a
    /// free port of `ip`, and waits until it answers the zone's SOA.
    pub(crate) async fn start(
        cpu: Option<usize>,
        dir: &Path,
        ip: Ipv4Addr,
        zone: &str,
    ) -> anyhow::Result<Self> {
        let addr = SocketAddr::new(ip.into(), free_port(ip)?);
        std::fs::write(dir.join("consul.zone"), zone).context("writing the NSD zone")?;
        let conf = dir.join("nsd.conf");
        std::fs::write(&conf, config(dir, addr)).context("writing nsd.conf")?;

        let mut cmd = pinned(cpu, "nsd");
        cmd.arg("-d").arg("-c").arg(&conf);
        // SIGTERM on drop: NSD stops the server processes it forked.
        let mut proc = Process::spawn("nsd", &mut cmd, &Log::captured())?
            .on_drop(OnDrop::Terminate(Duration::from_secs(3)));

        let within = Duration::from_secs(15);
        dig::wait_answering("nsd", &mut proc, addr, within, || log(dir)).await?;
        Ok(Self { proc, addr })
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_else(|e| format!("({e})"))
}

/// A port free on `ip` for both UDP and TCP right now. NSD takes it a moment
/// later; on this loopback address nothing else competes for it.
pub(crate) fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    for _ in 0..32 {
        let udp = UdpSocket::bind((ip, 0)).with_context(|| format!("binding UDP on {ip}"))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP on {ip}")
}
