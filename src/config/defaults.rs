//! Every default of the agent's settings, in one place: the resolver fills
//! an unset setting from here, and the parts that keep a default of their
//! own (a `Default` impl for tests) read it from here too.
//!
//! Consul's defaults unless a comment says otherwise, so an existing
//! client or script finds the agent where it expects it.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Duration;

/// DNS, UDP and TCP.
pub const DNS_PORT: u16 = 8600;
/// HTTP API.
pub const HTTP_PORT: u16 = 8500;
/// LAN gossip.
pub const SERF_LAN_PORT: u16 = 8301;
/// WAN gossip.
pub const SERF_WAN_PORT: u16 = 8302;
/// WAN gossip as a flag or file gives it: -1 turns the WAN pool off.
pub const SERF_WAN_OFF: i32 = -1;
/// Pause between rounds of WAN join attempts (Consul's
/// `retry_interval_wan`).
pub const RETRY_INTERVAL_WAN: Duration = Duration::from_secs(30);
/// How long a failed server of the WAN pool is remembered before it is
/// forgotten (and with its last server, its datacenter): Consul's
/// `reconnect_timeout_wan`.
pub const RECONNECT_TIMEOUT_WAN: Duration = Duration::from_secs(72 * 3600);
/// The shortest `reconnect_timeout_wan`: Consul asks for 8 h; a datacenter
/// torn down for good may be forgotten sooner here, but not before a
/// restart or a short partition is over.
pub const RECONNECT_TIMEOUT_WAN_MIN: Duration = Duration::from_secs(60);
/// Server RPC.
pub const SERVER_PORT: u16 = 8300;
/// HTTPS API: -1, off, as Consul; 8501 is the port people give it.
pub const HTTPS_PORT: i32 = -1;

/// The datacenter of an agent that names none.
pub const DATACENTER: &str = "dc1";
/// The node name when the host has none.
pub const NODE_NAME: &str = "trellis";
/// Where DNS and HTTP listen: loopback, so nothing is exposed by accident.
pub const CLIENT_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Where cluster traffic binds: every interface, or loopback with `--dev`.
pub const BIND_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Where a dev agent binds its cluster traffic.
pub const DEV_BIND_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The DNS domain, without its trailing dot.
pub const DOMAIN: &str = "consul";
/// TTL of node answers: 0, so a dead node leaves caches at once.
pub const DNS_NODE_TTL: Duration = Duration::ZERO;
/// Leave out instances whose checks warn: no, only critical ones (Consul's
/// `only_passing` default).
pub const DNS_ONLY_PASSING: bool = false;
/// Most A/AAAA records in one UDP answer.
pub const DNS_UDP_ANSWER_LIMIT: usize = 3;
/// Set TC when `udp_answer_limit` cut an answer.
pub const DNS_ENABLE_TRUNCATE: bool = true;
/// DNS response-rate limit per source prefix: off (Knot's default).
pub const DNS_RRL_RATE: u32 = 0;
/// Every second limited response goes out truncated (NSD's default).
pub const DNS_RRL_SLIP: u32 = 2;
/// Sources are limited by their /24 (NSD's and Knot's default).
pub const DNS_RRL_IPV4_PREFIX: u8 = 24;
/// Sources are limited by their /56 (Knot's default; a site's usual
/// allocation, where NSD takes a /64).
pub const DNS_RRL_IPV6_PREFIX: u8 = 56;
/// Highest `rrl_rate`: the bucket table holds counts in 24 bits.
pub const DNS_RRL_MAX_RATE: u32 = 1_000_000;
/// Highest `rrl_slip` (Knot's bound).
pub const DNS_RRL_MAX_SLIP: u32 = 100;
/// How long one recursor gets before the next is tried.
pub const DNS_RECURSOR_TIMEOUT: Duration = Duration::from_secs(2);
/// The directory of static zone files used when none is given and it exists
/// (relative to the working directory).
pub const ZONE_DIR: &str = "zones";
/// The port of a recursor given without one.
pub const RECURSOR_PORT: u16 = 53;

/// Log level.
pub const LOG_LEVEL: &str = "info";
/// The log levels there are, in the order the error message lists them.
pub const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// Script checks from the HTTP API: off, since anyone who can reach the
/// API could run a command on this host.
pub const ENABLE_SCRIPT_CHECKS: bool = false;
/// Script checks from configuration files: off unless the operator says.
pub const ENABLE_LOCAL_SCRIPT_CHECKS: bool = false;
/// At most one output-only check write per check per this interval
/// (`check_update_interval`).
pub const CHECK_UPDATE_INTERVAL: Duration = Duration::from_secs(300);
/// How often a full anti-entropy sync runs (`ae_interval`): Consul's
/// minimum, which it keeps for clusters of up to 128 nodes.
pub const AE_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest `ae_interval` accepted: shorter would write to the servers
/// more often than they gain from it.
pub const AE_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// How long a failed member keeps its node before it is reaped (Consul's
/// `reconnect_timeout` default, 72h).
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(72 * 3600);

/// The shortest session TTL a create may ask for (Consul's
/// `session_ttl_min`).
pub const SESSION_TTL_MIN: Duration = Duration::from_secs(10);
/// The longest session TTL: Consul's fixed `SessionTTLMax`, not a setting;
/// `session_ttl_min` may not exceed it.
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// The lowest `session_ttl_min` accepted: the leader's timers work in
/// milliseconds, and a TTL below a second would expire sessions between
/// two renewals of any real client.
pub const SESSION_TTL_MIN_FLOOR: Duration = Duration::from_secs(1);
/// How long a deleted key's tombstone is kept before the leader reaps it
/// (Consul's `tombstone_ttl`): a blocking listing that saw the key learns
/// of its delete within this time.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);
/// The lowest `tombstone_ttl` accepted.
pub const TOMBSTONE_TTL_MIN: Duration = Duration::from_secs(1);

/// Raft: snapshot after this many entries since the last snapshot (Consul's
/// default). A snapshot copies, encodes and commits the whole catalog, and
/// log appends wait behind its commit, so taking one less often keeps that
/// pause rare.
pub const RAFT_SNAPSHOT_THRESHOLD: u64 = 16384;
/// Raft: entries kept behind a snapshot, so a follower that lags by fewer
/// catches up from the log instead of a whole snapshot (Consul's default).
pub const RAFT_TRAILING_LOGS: u64 = 10240;

/// An agent is a client unless told to be a server.
pub const SERVER: bool = false;
/// `bootstrap_expect` of an agent that names none: it never bootstraps,
/// only joins an existing cluster.
pub const BOOTSTRAP_EXPECT: usize = 0;
/// `bootstrap_expect` of a dev agent: it bootstraps alone at once.
pub const DEV_BOOTSTRAP_EXPECT: usize = 1;

/// Whether to leave the gossip pool on SIGTERM: clients leave (their node
/// goes away cleanly), servers stay (a restart must not shrink the quorum),
/// as Consul.
pub const fn leave_on_terminate(server: bool) -> bool {
    !server
}

/// The host's name, first label only: the node name when none is given.
pub fn node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // or truncates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    // A host name may be an FQDN; the node name is its first label.
    let first = name.split('.').next().unwrap_or("").to_string();
    if first.is_empty() {
        NODE_NAME.into()
    } else {
        first
    }
}

/// The address to advertise when bound to every interface: the one a
/// default route would leave from, found without sending anything
/// (connecting a UDP socket only selects a route); loopback without one.
pub fn advertise_addr() -> IpAddr {
    primary_ipv4().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn primary_ipv4() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Connections one client IP may hold to the HTTP API; beyond, it is
/// answered 429 and closed (Consul's `limits.http_max_conns_per_client`).
pub const HTTP_MAX_CONNS_PER_CLIENT: usize = 200;
/// Blocking queries one client IP may have parked at once; beyond, 429.
/// Below the connection cap, so a client whose blocking queries are all
/// parked still has connections for its writes and plain reads.
pub const HTTP_MAX_BLOCKING_PER_CLIENT: usize = 128;
/// How long a client may take to send a request's headers, from a new
/// connection or the first byte of a request (Go's `ReadHeaderTimeout`;
/// Consul sets none, so half-sent requests held its connections forever).
pub const HTTP_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request's body may take to arrive in full once its headers
/// have: a body sent a byte at a time would otherwise hold its connection
/// and an admission slot for ever.
pub const HTTP_READ_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a keep-alive connection may wait between requests. Above the
/// 90 s idle timeout of Go's (and Consul's API client's) connection pool,
/// so clients close idle connections before the agent does and never send
/// a request into a connection the agent is closing.
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Server RPC connections one IP may hold; beyond, new ones are closed at
/// once (Consul's `limits.rpc_max_conns_per_client`).
pub const RPC_MAX_CONNS_PER_CLIENT: usize = 100;
/// How long a server RPC connection may take to send its preface before it
/// is closed (Consul's `limits.rpc_handshake_timeout`).
pub const RPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// DNS TCP connections one client IP may hold; beyond, new ones are closed
/// on accept (RFC 7766 §6.2.2 lets a server limit them per client).
pub const DNS_TCP_MAX_CONNS_PER_CLIENT: usize = 64;
/// A DNS TCP connection idle this long is closed (RFC 7766 §6.2.3: seconds,
/// not minutes).
pub const DNS_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
