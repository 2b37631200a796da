//! Loopback addresses and ports for agents: each agent of a test binary gets
//! its own 127.0.0.x, and ports a restarted agent must keep are picked free
//! up front.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU8, AtomicU16, Ordering};

use anyhow::{Context as _, bail};

/// The next loopback host number; every agent in one process gets its own.
static NEXT_HOST: AtomicU8 = AtomicU8::new(2);

/// A fresh loopback address, 127.0.0.2 and up.
pub fn next_loopback() -> IpAddr {
    let n = NEXT_HOST.fetch_add(1, Ordering::Relaxed);
    assert!(n < 250, "ran out of loopback addresses for test agents");
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// The next host number in each 127.0.N.0/24 (N ≥ 1): datacenters of a
/// test get a subnet each, so an address says which datacenter it is in.
static NEXT_IN_SUBNET: [AtomicU8; 256] = [const { AtomicU8::new(1) }; 256];

/// A fresh loopback address in 127.0.`subnet`.0/24, 127.0.`subnet`.1 and
/// up; `subnet` 0 is [`next_loopback`]'s.
pub fn next_loopback_in(subnet: u8) -> IpAddr {
    if subnet == 0 {
        return next_loopback();
    }
    let n = NEXT_IN_SUBNET[usize::from(subnet)].fetch_add(1, Ordering::Relaxed);
    assert!(
        n < 250,
        "ran out of loopback addresses in 127.0.{subnet}.0/24"
    );
    IpAddr::V4(Ipv4Addr::new(127, 0, subnet, n))
}

/// The fewest ports a range outside the ephemeral one must hold to be
/// probed; with less, the kernel picks (port 0).
const PROBE_SPAN_MIN: u16 = 1024;

/// The next port to probe, shared by every probe in the process and
/// started at a random point, so that test binaries running side by side
/// rarely probe the same ports.
static NEXT_PROBE: AtomicU16 = AtomicU16::new(0);

/// The kernel's ephemeral range, whose ports it hands out for port 0
/// (`net.ipv4.ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    let read = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let mut bounds = read
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::parse::<u16>);
    match (bounds.next(), bounds.next()) {
        (Some(Ok(low)), Some(Ok(high))) => (low, high),
        _ => (32_768, 60_999),
    }
}

/// The ports to probe, `from..to`: from 10,000 up to the ephemeral range
/// (above the well-known and registered services a machine may run), or
/// failing that above it; `None` when neither leaves room.
fn probe_range() -> Option<(u16, u16)> {
    let (low, high) = ephemeral_range();
    if low >= 10_000 + PROBE_SPAN_MIN {
        Some((10_000, low))
    } else if high <= u16::MAX - PROBE_SPAN_MIN {
        Some((high + 1, u16::MAX))
    } else {
        None
    }
}

/// A port on `ip` outside the ephemeral range that `bind` takes.
///
/// A port the kernel picked for a probe bound to port 0 comes from the
/// ephemeral range, and so may be handed to another socket bound to port 0
/// in the moment between the probe closing and the agent binding it: a
/// wildcard one (a DNS client's, in this or another process) then takes it
/// on every address, and the agent fails with "address in use". No socket
/// is given a port outside that range unless it asks for it, and each agent
/// has an address of its own, so a port probed there stays free for it.
/// Where the range leaves no room, the kernel picks, race and all.
fn free_port<S>(
    ip: IpAddr,
    bind: impl Fn(SocketAddr) -> std::io::Result<S>,
    port_of: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> anyhow::Result<u16> {
    let context = |port| format!("binding {ip}:{port} (is the 127.0.0.0/8 loopback route there?)");
    let Some((from, to)) = probe_range() else {
        let socket = bind(SocketAddr::new(ip, 0)).with_context(|| context(0))?;
        return Ok(port_of(&socket)?.port());
    };
    let span = to - from;
    if NEXT_PROBE.load(Ordering::Relaxed) == 0 {
        use std::hash::{BuildHasher as _, Hasher as _};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        // Only the first probe of the process seeds; a lost race seeds the same.
        let _ = NEXT_PROBE.compare_exchange(
            0,
            (seed % u64::from(span)) as u16 + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    let mut last = None;
    for _ in 0..span.min(4096) {
        let port = from + NEXT_PROBE.fetch_add(1, Ordering::Relaxed) % span;
        match bind(SocketAddr::new(ip, port)) {
            Ok(_) => return Ok(port),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e).with_context(|| context(port)),
        }
    }
    Err(anyhow::anyhow!(
        "no free port on {ip} from {from} to {to}: {last:?}"
    ))
}

/// A TCP port on `ip` that was free a moment ago, outside the ephemeral range
/// (see [`free_port`]). The socket is closed before the agent binds it, so
/// a restarted agent can be given the same address.
pub fn free_tcp_port(ip: impl Into<IpAddr>) -> anyhow::Result<u16> {
    free_port(ip.into(), TcpListener::bind, TcpListener::local_addr)
}

/// A UDP port on `ip` that was free a moment ago (see [`free_tcp_port`]).
pub fn free_udp_port(ip: impl Into<IpAddr>) -> anyhow::Result<u16> {
    free_port(ip.into(), UdpSocket::bind, UdpSocket::local_addr)
}

/// A port free on `ip` for both UDP and TCP a moment ago: DNS serves both
/// on one port.
pub fn free_dns_port(ip: impl Into<IpAddr>) -> anyhow::Result<u16> {
    let ip = ip.into();
    for _ in 0..32 {
        let port = free_udp_port(ip)?;
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free on {ip} for both UDP and TCP")
}

/// Where one agent runs, fixed for its life as on a real machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The address it binds everything to.
    pub ip: IpAddr,
    /// Its server RPC port (unused by a client).
    pub server_port: u16,
    /// Its LAN gossip port.
    pub serf_port: u16,
    /// Its WAN gossip port (a server's), fixed too so a restarted server
    /// keeps its WAN address.
    pub serf_wan_port: u16,
    /// The network namespace it runs in; `None` for the caller's own.
    pub netns: Option<String>,
}

impl Placement {
    /// A fresh loopback address with server and gossip ports that were free
    /// a moment ago.
    pub fn loopback() -> Self {
        Self::loopback_in(0)
    }

    /// [`Self::loopback`] in 127.0.`subnet`.0/24 ([`next_loopback_in`]).
    pub fn loopback_in(subnet: u8) -> Self {
        let ip = next_loopback_in(subnet);
        let probe = || -> anyhow::Result<(u16, u16, u16)> {
            let serf_port = free_udp_port(ip)?;
            // Another free UDP port, not the LAN one (the socket that found
            // that one is closed already).
            let serf_wan_port = loop {
                let p = free_udp_port(ip)?;
                if p != serf_port {
                    break p;
                }
            };
            Ok((free_tcp_port(ip)?, serf_port, serf_wan_port))
        };
        let (server_port, serf_port, serf_wan_port) = probe().unwrap_or_else(|e| panic!("{e:#}"));
        Self {
            ip,
            server_port,
            serf_port,
            serf_wan_port,
            netns: None,
        }
    }

    /// Its server RPC address.
    pub fn rpc(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.server_port)
    }

    /// Its LAN gossip address, which others join through.
    pub fn serf(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.serf_port)
    }

    /// Its WAN gossip address, which other datacenters join through.
    pub fn serf_wan(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.serf_wan_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probed ports sit outside the ephemeral range, where no socket bound
    /// to port 0 can take them. (Binding them again here would race with
    /// the tests that spawn processes: a child holds the probe's socket
    /// from its fork until its exec.)
    #[test]
    fn probed_ports_are_outside_the_ephemeral_range() {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 251));
        let (low, high) = ephemeral_range();
        let (from, to) = probe_range().expect("this machine's range leaves room");
        assert!(to - from >= PROBE_SPAN_MIN, "{from}..{to}");
        for _ in 0..200 {
            let udp = free_udp_port(ip).expect("udp");
            let tcp = free_tcp_port(ip).expect("tcp");
            for port in [udp, tcp] {
                assert!((from..to).contains(&port), "{port} not in {from}..{to}");
                assert!(!(low..=high).contains(&port), "{port} is ephemeral");
            }
        }
    }
}
