//! Knot DNS, the reference the issue names: CZ.NIC's authoritative server,
//! which answers from a zone compiled into memory, batches its UDP I/O
//! (`recvmmsg`/`sendmmsg`) and is among the fastest per core. It serves
//! the same names as trellis from the zone `workload::zone` writes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use trellis_testkit::{Log, OnDrop, Process};

use crate::dig;
use crate::nsd::free_port;
use crate::procs::pinned;

/// A running `knotd`.
pub(crate) struct Knot {
    /// The process; every thread of it counts towards its CPU time.
    pub(crate) proc: Process,
    /// Where it answers, UDP and TCP.
    pub(crate) addr: SocketAddr,
}

/// The configuration: everything in `dir`, one UDP worker (one core, as
/// trellis gets), one TCP and one background worker, the zone loaded whole
/// from its file with no journal and no semantic checks (the 100k zone
/// loads in about a second). Response rate limiting is a module in Knot
/// (`mod-rrl`), left unconfigured: off.
pub(crate) fn config(dir: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "server:
    rundir: \"{d}\"
    pidfile: \"{d}/knot.pid\"
    listen: {ip}@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: \"{d}/db\"
control:
    listen: \"{d}/knot.sock\"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: \"{d}\"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: consul
    file: \"consul.zone\"
",
        ip = addr.ip(),
        port = addr.port(),
    )
}

impl Knot {
    /// Writes `zone` and the configuration into `dir`, starts `knotd` on a
    /// free port of `ip` on `cpu`, and waits until it answers the zone's SOA.
    pub(crate) async fn start(
        cpu: Option<usize>,
        dir: &Path,
        ip: Ipv4Addr,
        zone: &str,
    ) -> anyhow::Result<Self> {
        let addr = SocketAddr::new(ip.into(), free_port(ip)?);
        std::fs::write(dir.join("consul.zone"), zone).context("writing the Knot zone")?;
        let conf = dir.join("knot.conf");
        std::fs::write(&conf, config(dir, addr)).context("writing knot.conf")?;

        let mut cmd = pinned(cpu, "knotd");
        cmd.arg("-c").arg(&conf);
        let log = Log::captured();
        let mut proc = Process::spawn("knotd", &mut cmd, &log)?
            .on_drop(OnDrop::Terminate(Duration::from_secs(3)));

        let within = Duration::from_secs(60);
        dig::wait_answering("knotd", &mut proc, addr, within, || log.tail(30)).await?;
        Ok(Self { proc, addr })
    }
}
