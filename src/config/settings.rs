//! The resolved settings, one struct per subsystem. Each part of the agent
//! is handed its own struct (see [`Config`](super::Config) for who takes
//! which), so a new setting is one field here, one in the file format and
//! one line in the resolver.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::defaults;
use crate::definition::{CheckDefinition, ServiceDefinition};

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Node name, a DNS label; unique in the datacenter.
    pub name: String,
    /// Datacenter, lowercased.
    pub datacenter: String,
    /// Durable state directory; `None` only in dev mode, where nothing
    /// survives the process.
    pub data_dir: Option<PathBuf>,
}

impl NodeSettings {
    /// Where the node's UUID is kept so it survives restarts; `None` (dev)
    /// makes a fresh one each start.
    pub fn node_id_file(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("node-id"))
    }
}

/// Port numbers; 0 asks the OS for a free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// DNS, UDP and TCP.
    pub dns: u16,
    /// HTTP API.
    pub http: u16,
    /// LAN gossip.
    pub serf_lan: u16,
    /// WAN gossip, on servers; `None` runs no WAN pool (Consul's -1).
    pub serf_wan: Option<u16>,
    /// Server RPC.
    pub server: u16,
    /// HTTPS API; `None` serves no HTTPS (Consul's -1).
    pub https: Option<u16>,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            dns: defaults::DNS_PORT,
            http: defaults::HTTP_PORT,
            serf_lan: defaults::SERF_LAN_PORT,
            serf_wan: Some(defaults::SERF_WAN_PORT),
            server: defaults::SERVER_PORT,
            https: None,
        }
    }
}

/// Where the agent listens and how others reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Address cluster traffic (gossip, server RPC) binds to.
    pub bind_addr: IpAddr,
    /// Address other agents reach this one at.
    pub advertise_addr: IpAddr,
    /// Address the servers of other datacenters reach this one at (WAN
    /// gossip, server RPC); `advertise_addr` unless set.
    pub advertise_addr_wan: IpAddr,
    /// Address DNS and HTTP listen on.
    pub client_addr: IpAddr,
    /// Ports.
    pub ports: Ports,
}

/// DNS behaviour settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// The domain, lowercased, with a trailing dot (`consul.`).
    pub domain: String,
    /// TTL of node answers.
    pub node_ttl: Duration,
    /// TTL of service answers by lowercased service name; `*` is the default.
    pub service_ttl: BTreeMap<String, Duration>,
    /// Leave out warning instances too.
    pub only_passing: bool,
    /// Most A/AAAA records in one UDP answer.
    pub udp_answer_limit: usize,
    /// Set TC when an answer is cut.
    pub enable_truncate: bool,
    /// Upstream servers for other names.
    pub recursors: Vec<SocketAddr>,
    /// How long to wait for an upstream.
    pub recursor_timeout: Duration,
    /// Directories of static zone files.
    pub zone_dirs: Vec<PathBuf>,
    /// Response-rate limiting of UDP answers per source prefix.
    pub rrl: RrlSettings,
    /// `translate_wan_addrs` (a WAN setting, not a `dns_config` key: the
    /// agent fills it in): answers from other datacenters carry their
    /// nodes' WAN addresses.
    pub translate_wan_addrs: bool,
    /// With ACLs on, the secret of the token answers are computed as:
    /// `acl.tokens.default`, empty for the anonymous token (Consul's DNS
    /// uses the default token). `None` with ACLs off. Not a `dns_config`
    /// key: the agent fills it from `acl`.
    pub acl_token: Option<String>,
}

/// DNS response-rate limiting (RRL) per source prefix, as NSD's and Knot's:
/// beyond `rate` UDP responses per second to one prefix, responses are
/// dropped, except every `slip`-th, sent empty with TC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrlSettings {
    /// Responses per second per prefix; 0 turns limiting off.
    pub rate: u32,
    /// Every how many-th limited response is sent truncated; 0: none.
    pub slip: u32,
    /// Prefix length of IPv4 sources (0 to 32).
    pub ipv4_prefix: u8,
    /// Prefix length of IPv6 sources (0 to 128).
    pub ipv6_prefix: u8,
}

impl Default for RrlSettings {
    fn default() -> Self {
        Self {
            rate: defaults::DNS_RRL_RATE,
            slip: defaults::DNS_RRL_SLIP,
            ipv4_prefix: defaults::DNS_RRL_IPV4_PREFIX,
            ipv6_prefix: defaults::DNS_RRL_IPV6_PREFIX,
        }
    }
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            domain: format!("{}.", defaults::DOMAIN),
            node_ttl: defaults::DNS_NODE_TTL,
            service_ttl: BTreeMap::new(),
            only_passing: defaults::DNS_ONLY_PASSING,
            udp_answer_limit: defaults::DNS_UDP_ANSWER_LIMIT,
            enable_truncate: defaults::DNS_ENABLE_TRUNCATE,
            recursors: Vec::new(),
            recursor_timeout: defaults::DNS_RECURSOR_TIMEOUT,
            zone_dirs: Vec::new(),
            rrl: RrlSettings::default(),
            translate_wan_addrs: false,
            acl_token: None,
        }
    }
}

/// This node's part in the Raft cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftSettings {
    /// Whether this agent is a server: keeps a replica of the log, votes,
    /// serves RPC. Every other part asks this field for the node's role.
    pub server: bool,
    /// Servers to wait for before bootstrapping (1: alone, at once; 0: only
    /// join an existing cluster).
    pub bootstrap_expect: usize,
    /// Snapshot after this many entries since the last snapshot (at least 1).
    pub snapshot_threshold: u64,
    /// Entries kept behind a snapshot, for followers that lag a little.
    pub trailing_logs: u64,
}

impl Default for RaftSettings {
    /// As an agent resolves with no files and no flags: a client, which
    /// does not bootstrap; tests of consensus start from it.
    fn default() -> Self {
        Self {
            server: defaults::SERVER,
            bootstrap_expect: defaults::BOOTSTRAP_EXPECT,
            snapshot_threshold: defaults::RAFT_SNAPSHOT_THRESHOLD,
            trailing_logs: defaults::RAFT_TRAILING_LOGS,
        }
    }
}

/// A gossip encryption key: the 32 bytes `trellis keygen` writes in base64,
/// checked when the configuration loads. Gossip turns it into its cipher.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptKey(pub [u8; ENCRYPT_KEY_LEN]);

/// Bytes in a gossip encryption key (AES-256).
pub const ENCRYPT_KEY_LEN: usize = 32;

impl std::fmt::Debug for EncryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A key in a log line is a key given away.
        f.write_str("EncryptKey(<redacted>)")
    }
}

/// The LAN gossip pool and what follows from membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipSettings {
    /// Agents to join at start-up (`host[:port]`), retried until one answers.
    pub retry_join: Vec<String>,
    /// The pool's encryption key, if any.
    pub encrypt: Option<EncryptKey>,
    /// Leave the pool gracefully on SIGTERM.
    pub leave_on_terminate: bool,
    /// How long a failed node keeps its catalog entry (the leader's
    /// reconciler reaps it after).
    pub reconnect_timeout: Duration,
}

/// The WAN pool: what a server joins it through at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WanSettings {
    /// Servers of other datacenters (`host[:port]`, port 8302 when absent),
    /// tried in rounds until one answers.
    pub retry_join: Vec<String>,
    /// The pause between those rounds.
    pub retry_interval: Duration,
    /// `translate_wan_addrs`: answers from other datacenters (DNS, and
    /// forwarded catalog and health reads) carry WAN addresses.
    pub translate_wan_addrs: bool,
    /// How long a failed server is remembered before the pool forgets it.
    pub reconnect_timeout: Duration,
}

impl Default for WanSettings {
    fn default() -> Self {
        Self {
            retry_join: Vec::new(),
            retry_interval: defaults::RETRY_INTERVAL_WAN,
            translate_wan_addrs: false,
            reconnect_timeout: defaults::RECONNECT_TIMEOUT_WAN,
        }
    }
}

/// How the agent's health checks behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSettings {
    /// Script checks allowed from the HTTP API too.
    pub enable_script_checks: bool,
    /// Script checks allowed from configuration files.
    pub enable_local_script_checks: bool,
    /// At most one output-only check write per check per this interval.
    pub update_interval: Duration,
}

impl Default for CheckSettings {
    fn default() -> Self {
        Self {
            enable_script_checks: defaults::ENABLE_SCRIPT_CHECKS,
            enable_local_script_checks: defaults::ENABLE_LOCAL_SCRIPT_CHECKS,
            update_interval: defaults::CHECK_UPDATE_INTERVAL,
        }
    }
}

/// What this node registers from its configuration files, and how often
/// anti-entropy makes the catalog agree with it.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Service definitions, in load order.
    pub services: Vec<ServiceDefinition>,
    /// Top-level check definitions (node checks, or checks naming a service
    /// by `service_id`), in load order.
    pub checks: Vec<CheckDefinition>,
    /// How often anti-entropy compares the local state with the catalog.
    pub ae_interval: Duration,
}

/// The KV store and sessions: the bound a session's TTL is checked
/// against, and the leader's timer over tombstones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvSettings {
    /// The shortest TTL a session may be created with (`session_ttl_min`).
    pub session_ttl_min: Duration,
    /// How long a deleted key's tombstone is kept before the leader reaps
    /// it (`tombstone_ttl`).
    pub tombstone_ttl: Duration,
}

impl Default for KvSettings {
    fn default() -> Self {
        Self {
            session_ttl_min: defaults::SESSION_TTL_MIN,
            tombstone_ttl: defaults::TOMBSTONE_TTL,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Level: trace, debug, info, warn or error.
    pub level: String,
    /// Log JSON lines instead of text.
    pub json: bool,
}

/// TLS as resolved: one set of files and checks per protocol, each key of
/// `tls.internal_rpc` / `tls.https` over the same key of `tls.defaults`.
/// The files are only named here; `crate::tls` reads them at start and on
/// SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Server RPC (`tls.internal_rpc`).
    pub internal_rpc: TlsProtocol,
    /// The HTTPS API (`tls.https`).
    pub https: TlsProtocol,
    /// The configuration file that set `tls`, for errors about its files
    /// ("default" when none did).
    pub source: String,
}

/// One protocol's TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsProtocol {
    /// PEM file of trusted CA certificates.
    pub ca_file: Option<PathBuf>,
    /// Directory of PEM CA certificates.
    pub ca_path: Option<PathBuf>,
    /// This agent's certificate (chain), PEM.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM.
    pub key_file: Option<PathBuf>,
    /// Peers must present a certificate signed by the CA.
    pub verify_incoming: bool,
    /// Servers this agent connects to must present a certificate signed by
    /// the CA (implied by `verify_server_hostname`, as Consul).
    pub verify_outgoing: bool,
    /// A server's certificate must name `server.<dc>.<domain>`
    /// (internal RPC only).
    pub verify_server_hostname: bool,
}

impl TlsProtocol {
    /// Whether this protocol has a certificate to present.
    pub fn has_cert(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// Whether any CA is configured.
    pub fn has_ca(&self) -> bool {
        self.ca_file.is_some() || self.ca_path.is_some()
    }
}

/// Per-client caps and timeouts on the listeners (`limits { … }`), so that
/// one client can never take what every other client needs. A cap of 0 and
/// a timeout of `None` are off, as Consul's 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsSettings {
    /// HTTP connections per client IP.
    pub http_max_conns_per_client: usize,
    /// Parked blocking queries per client IP.
    pub http_max_blocking_per_client: usize,
    /// Time to send a request's headers.
    pub http_read_header_timeout: Option<Duration>,
    /// Time to send a request's body once its headers are in.
    pub http_read_body_timeout: Option<Duration>,
    /// Time a keep-alive connection may wait between requests.
    pub http_idle_timeout: Option<Duration>,
    /// Server RPC connections per client IP.
    pub rpc_max_conns_per_client: usize,
    /// Time to send the server RPC preface.
    pub rpc_handshake_timeout: Option<Duration>,
    /// DNS TCP connections per client IP.
    pub dns_tcp_max_conns_per_client: usize,
    /// Time a DNS TCP connection may stay idle.
    pub dns_tcp_idle_timeout: Option<Duration>,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            http_max_conns_per_client: defaults::HTTP_MAX_CONNS_PER_CLIENT,
            http_max_blocking_per_client: defaults::HTTP_MAX_BLOCKING_PER_CLIENT,
            http_read_header_timeout: Some(defaults::HTTP_READ_HEADER_TIMEOUT),
            http_read_body_timeout: Some(defaults::HTTP_READ_BODY_TIMEOUT),
            http_idle_timeout: Some(defaults::HTTP_IDLE_TIMEOUT),
            rpc_max_conns_per_client: defaults::RPC_MAX_CONNS_PER_CLIENT,
            rpc_handshake_timeout: Some(defaults::RPC_HANDSHAKE_TIMEOUT),
            dns_tcp_max_conns_per_client: defaults::DNS_TCP_MAX_CONNS_PER_CLIENT,
            dns_tcp_idle_timeout: Some(defaults::DNS_TCP_IDLE_TIMEOUT),
        }
    }
}
