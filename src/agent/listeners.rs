//! The sockets the agent serves on, bound before anything starts so that
//! port 0 is resolved and a port conflict fails fast.

use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};

use super::AgentError;
use crate::config::NetworkSettings;

/// Every listener of one agent.
pub(super) struct Listeners {
    /// DNS over UDP, on the client address.
    pub(super) dns_udp: UdpSocket,
    /// DNS over TCP, on the same port as UDP.
    pub(super) dns_tcp: TcpListener,
    /// The HTTP API, on the client address.
    pub(super) http: TcpListener,
    /// The HTTPS API, on the client address, when `ports.https` is on.
    pub(super) https: Option<TcpListener>,
    /// Server RPC, on the cluster (bind) address; servers only.
    pub(super) rpc: Option<TcpListener>,
    /// LAN gossip.
    pub(super) serf_lan: UdpSocket,
    /// WAN gossip; servers only, unless `ports.serf_wan = -1`.
    pub(super) serf_wan: Option<UdpSocket>,
}

impl Listeners {
    /// Binds every listener `net` names; server RPC only for a `server`.
    pub(super) async fn bind(net: &NetworkSettings, server: bool) -> Result<Self, AgentError> {
        let dns_addr = SocketAddr::new(net.client_addr, net.ports.dns);
        let (dns_udp, dns_tcp) = bind_dns(dns_addr).await?;
        let http_addr = SocketAddr::new(net.client_addr, net.ports.http);
        let http = bind_tcp(http_addr, HTTP_BACKLOG).map_err(|source| AgentError::Bind {
            what: "HTTP",
            addr: http_addr,
            source,
        })?;
        let https = match net.ports.https {
            Some(port) => {
                let addr = SocketAddr::new(net.client_addr, port);
                Some(
                    bind_tcp(addr, HTTP_BACKLOG).map_err(|source| AgentError::Bind {
                        what: "HTTPS",
                        addr,
                        source,
                    })?,
                )
            }
            None => None,
        };
        let rpc = match server {
            true => {
                let rpc_addr = SocketAddr::new(net.bind_addr, net.ports.server);
                let rpc = TcpListener::bind(rpc_addr)
                    .await
                    .map_err(|source| AgentError::Bind {
                        what: "server RPC",
                        addr: rpc_addr,
                        source,
                    })?;
                Some(rpc)
            }
            false => None,
        };
        // Gossip tells every member where this one is from the socket's own
        // address, so it must be a concrete one: with a wildcard bind, bind
        // the advertised address instead.
        let gossip_ip = if net.bind_addr.is_unspecified() {
            net.advertise_addr
        } else {
            net.bind_addr
        };
        let serf_addr = SocketAddr::new(gossip_ip, net.ports.serf_lan);
        let serf_lan = UdpSocket::bind(serf_addr)
            .await
            .map_err(|source| AgentError::Bind {
                what: "gossip (LAN)",
                addr: serf_addr,
                source,
            })?;
        // The WAN pool tells the other datacenters where this server is
        // from its socket's address too: a distinct `advertise_addr_wan`
        // is bound itself (it must be an address of this machine).
        let wan_ip = if net.advertise_addr_wan == net.advertise_addr {
            gossip_ip
        } else {
            net.advertise_addr_wan
        };
        let serf_wan = match net.ports.serf_wan.filter(|_| server) {
            Some(port) => {
                let addr = SocketAddr::new(wan_ip, port);
                Some(
                    UdpSocket::bind(addr)
                        .await
                        .map_err(|source| AgentError::Bind {
                            what: "gossip (WAN)",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        Ok(Self {
            dns_udp,
            dns_tcp,
            http,
            https,
            rpc,
            serf_lan,
            serf_wan,
        })
    }
}

/// Binds DNS on UDP and TCP at the same port. With port 0 the UDP socket picks
/// the port and TCP follows it; if TCP finds that port taken, try again.
async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), AgentError> {
    let err = |what, source| AgentError::Bind { what, addr, source };
    let mut last = None;
    for _ in 0..16 {
        let udp = bind_udp(addr).map_err(|e| err("DNS/UDP", e))?;
        let port = udp.local_addr().map_err(|e| err("DNS/UDP", e))?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(err("DNS/TCP", e)),
        }
    }
    Err(err(
        "DNS/TCP",
        last.unwrap_or_else(|| std::io::Error::other("no free port")),
    ))
}

/// Connections the kernel queues for the HTTP listener before `accept`:
/// thousands of clients parking blocking queries at once (consul-template
/// fleets, lock waiters) connect in a burst, and the usual 1,024 drops the
/// rest into SYN retries a second apart. The kernel caps it at
/// `net.core.somaxconn`.
const HTTP_BACKLOG: i32 = 8192;

/// A listening TCP socket with the given accept backlog, and
/// `SO_REUSEADDR` as tokio's own `bind` sets it.
fn bind_tcp(addr: SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    TcpListener::from_std(s.into())
}

/// A UDP socket with a large receive buffer, so bursts of queries queue in
/// the kernel rather than being dropped while a worker is busy, and
/// `SO_REUSEPORT`, so each DNS worker can bind a socket of its own to the
/// same address. Another process cannot take the port from under us that
/// way unnoticed: `bind_dns` then binds TCP on the port without it, which
/// fails while an agent listens there.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    crate::dns::set_reuse_port(&s)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// The addresses actually bound (port 0 resolved).
pub(super) struct Addrs {
    pub(super) dns: Option<SocketAddr>,
    pub(super) http: Option<SocketAddr>,
    pub(super) https: Option<SocketAddr>,
    /// Server RPC as other servers reach it; servers only.
    pub(super) rpc: Option<SocketAddr>,
    pub(super) serf_lan: Option<SocketAddr>,
    /// WAN gossip; servers only.
    pub(super) serf_wan: Option<SocketAddr>,
}

impl Addrs {
    /// Logs the `listening` line of fixed form that tests and scripts read
    /// the bound addresses from, once the agent serves.
    pub(super) fn announce(&self, node: &crate::config::NodeSettings, started: std::time::Instant) {
        tracing::info!(
            "listening dns={} http={} https={} server={} serf_lan={} serf_wan={} node={} dc={} ready_in_ms={}",
            fmt_addr(self.dns),
            fmt_addr(self.http),
            fmt_addr(self.https),
            fmt_addr(self.rpc),
            fmt_addr(self.serf_lan),
            fmt_addr(self.serf_wan),
            node.name,
            node.datacenter,
            started.elapsed().as_millis()
        );
    }
}

fn fmt_addr(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "?".into(), |a| a.to_string())
}
