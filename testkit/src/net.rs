//! Loopback addresses and ports for agents: each agent of a test binary gets
//! its own 127.0.0.x, and ports a restarted agent must keep are picked free
//! up front.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};

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

/// A TCP port on `ip` that was free a moment ago. The socket is closed
/// before the agent binds it, so a restarted agent can be given the same
/// address; the small race with other programs is acceptable on loopback
/// addresses nothing else uses.
pub fn free_tcp_port(ip: impl Into<IpAddr>) -> anyhow::Result<u16> {
    let ip = ip.into();
    let l = TcpListener::bind(SocketAddr::new(ip, 0))
        .with_context(|| format!("binding {ip}:0 (is the 127.0.0.0/8 loopback route there?)"))?;
    Ok(l.local_addr()?.port())
}

/// A UDP port on `ip` that was free a moment ago (see [`free_tcp_port`]).
pub fn free_udp_port(ip: impl Into<IpAddr>) -> anyhow::Result<u16> {
    let ip = ip.into();
    let s =
        UdpSocket::bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding UDP {ip}:0"))?;
    Ok(s.local_addr()?.port())
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
