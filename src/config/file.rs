//! The on-disk configuration format: TOML or JSON with Consul's key names.
//!
//! Every struct denies unknown keys, and parse errors carry the dotted path of
//! the offending key and the file, so `trellis validate` can say exactly what
//! is wrong and where.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// One configuration file. Every field is optional: files are merged in
/// order (later wins), then flags override them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This agent's node name.
    pub node_name: Option<String>,
    /// The datacenter.
    pub datacenter: Option<String>,
    /// Where durable state lives.
    pub data_dir: Option<PathBuf>,
    /// Run as a server (member of the Raft cluster).
    pub server: Option<bool>,
    /// Servers to wait for before bootstrapping.
    pub bootstrap_expect: Option<usize>,
    /// Address for cluster traffic (gossip, server RPC).
    pub bind_addr: Option<String>,
    /// Address advertised to other agents.
    pub advertise_addr: Option<String>,
    /// Address for client interfaces (DNS, HTTP).
    pub client_addr: Option<String>,
    /// Addresses of agents to join at start-up, retried.
    pub retry_join: Option<Vec<String>>,
    /// Servers of other datacenters to join the WAN pool through at
    /// start-up, retried.
    pub retry_join_wan: Option<Vec<String>>,
    /// Pause between rounds of WAN join attempts ("30s").
    pub retry_interval_wan: Option<String>,
    /// Address advertised to other datacenters (default: `advertise_addr`).
    pub advertise_addr_wan: Option<String>,
    /// How long a failed server of the WAN pool is remembered ("72h").
    pub reconnect_timeout_wan: Option<String>,
    /// Upstream DNS servers for names outside the domain.
    pub recursors: Option<Vec<String>>,
    /// The DNS domain (default `consul`).
    pub domain: Option<String>,
    /// Log level: trace, debug, info, warn, error.
    pub log_level: Option<String>,
    /// Log as JSON lines.
    pub log_json: Option<bool>,
    /// Extra directories of static zone files.
    pub zone_dirs: Option<Vec<PathBuf>>,
    /// Port numbers.
    pub ports: Option<PortsFile>,
    /// DNS tuning.
    pub dns_config: Option<DnsConfigFile>,
    /// TLS for HTTPS and server RPC, Consul's `tls { defaults / internal_rpc
    /// / https }`.
    pub tls: Option<TlsFile>,
    /// Per-client caps and timeouts on the listeners.
    pub limits: Option<LimitsFile>,
    /// ACLs.
    pub acl: Option<super::acl::AclFile>,
    /// Allow script checks from the HTTP API and files.
    pub enable_script_checks: Option<bool>,
    /// Allow script checks from configuration files only.
    pub enable_local_script_checks: Option<bool>,
    /// At most one output-only write per check per this interval ("5m").
    pub check_update_interval: Option<String>,
    /// The gossip encryption key (base64 of 32 bytes, `trellis keygen`).
    pub encrypt: Option<String>,
    /// Leave the gossip pool gracefully on SIGTERM (default: clients yes,
    /// servers no, as Consul).
    pub leave_on_terminate: Option<bool>,
    /// Answers from other datacenters use their nodes' and services' WAN
    /// addresses (`TaggedAddresses.wan`), as Consul's.
    pub translate_wan_addrs: Option<bool>,
    /// How long a failed node keeps its catalog entry before it is reaped
    /// ("72h").
    pub reconnect_timeout: Option<String>,
    /// Anti-entropy: how often the agent repairs its entries in the catalog
    /// ("1m").
    pub ae_interval: Option<String>,
    /// Raft: snapshot after this many log entries since the last snapshot.
    pub raft_snapshot_threshold: Option<u64>,
    /// Raft: log entries kept behind a snapshot for lagging followers.
    pub raft_trailing_logs: Option<u64>,
    /// The shortest TTL a session may be created with ("10s").
    pub session_ttl_min: Option<String>,
    /// How long a deleted key's tombstone is kept before it is reaped
    /// ("15m").
    pub tombstone_ttl: Option<String>,
    /// One check: a node check, or a service's with `service_id`.
    pub check: Option<CheckFile>,
    /// Several checks.
    pub checks: Option<Vec<CheckFile>>,
    /// One service definition.
    pub service: Option<ServiceFile>,
    /// Several service definitions.
    pub services: Option<Vec<ServiceFile>>,
}

/// `ports { ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsFile {
    /// DNS port (8600).
    pub dns: Option<u16>,
    /// HTTP API port (8500).
    pub http: Option<u16>,
    /// LAN gossip port (8301).
    pub serf_lan: Option<u16>,
    /// WAN gossip port (8302); -1 runs no WAN pool, as Consul.
    pub serf_wan: Option<i32>,
    /// Server RPC port (8300).
    pub server: Option<u16>,
    /// HTTPS API port; -1 (the default) serves no HTTPS, as Consul.
    pub https: Option<i32>,
}

/// `tls { defaults { … } internal_rpc { … } https { … } }`: each key of
/// `internal_rpc` or `https` overrides the same key of `defaults`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// What both protocols use unless they say otherwise.
    pub defaults: Option<TlsProtocolFile>,
    /// Server RPC (8300).
    pub internal_rpc: Option<TlsProtocolFile>,
    /// The HTTPS API (`ports.https`).
    pub https: Option<TlsProtocolFile>,
}

/// One stanza of `tls`, Consul's key names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsProtocolFile {
    /// PEM file of the CA certificates peers are checked against.
    pub ca_file: Option<PathBuf>,
    /// A directory of PEM CA certificates, beside or instead of `ca_file`.
    pub ca_path: Option<PathBuf>,
    /// PEM certificate (chain) this agent presents.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Require peers to present a certificate signed by the CA.
    pub verify_incoming: Option<bool>,
    /// Check the certificate of the servers this agent connects to.
    pub verify_outgoing: Option<bool>,
    /// Require servers' certificates to name `server.<dc>.<domain>`
    /// (`internal_rpc` only, as Consul).
    pub verify_server_hostname: Option<bool>,
}

/// `dns_config { ... }`, Consul's names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfigFile {
    /// TTL of node answers, e.g. "10s".
    pub node_ttl: Option<String>,
    /// TTL of service answers by service name; `*` is the default.
    pub service_ttl: Option<BTreeMap<String, String>>,
    /// Leave out instances with warning checks too.
    pub only_passing: Option<bool>,
    /// How many A/AAAA records a UDP answer carries at most.
    pub udp_answer_limit: Option<usize>,
    /// Set TC when an answer had to be cut.
    pub enable_truncate: Option<bool>,
    /// How long to wait for a recursor.
    pub recursor_timeout: Option<String>,
    /// Serve stale answers (always true for us; accepted for compatibility).
    pub allow_stale: Option<bool>,
    /// UDP responses per second to one source prefix (0: no limit).
    pub rrl_rate: Option<u32>,
    /// Every how many-th limited response goes out truncated (0: none).
    pub rrl_slip: Option<u32>,
    /// The IPv4 prefix length a source is limited by.
    pub rrl_ipv4_prefix: Option<u8>,
    /// The IPv6 prefix length a source is limited by.
    pub rrl_ipv6_prefix: Option<u8>,
}

/// `limits { ... }`: Consul's names where Consul has the setting. Caps
/// are counts (0: no cap), timeouts durations ("0s": none).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// HTTP connections per client IP (200).
    pub http_max_conns_per_client: Option<usize>,
    /// Parked blocking queries per client IP (128).
    pub http_max_blocking_per_client: Option<usize>,
    /// Time to send a request's headers ("10s").
    pub http_read_header_timeout: Option<String>,
    /// Time to send a request's body once its headers are in ("30s").
    pub http_read_body_timeout: Option<String>,
    /// Time a keep-alive connection may wait between requests ("120s").
    pub http_idle_timeout: Option<String>,
    /// Server RPC connections per client IP (100).
    pub rpc_max_conns_per_client: Option<usize>,
    /// Time to send the server RPC preface ("5s").
    pub rpc_handshake_timeout: Option<String>,
    /// DNS TCP connections per client IP (64).
    pub dns_tcp_max_conns_per_client: Option<usize>,
    /// Time a DNS TCP connection may stay idle ("10s").
    pub dns_tcp_idle_timeout: Option<String>,
}

/// A service definition as Consul's config files write it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// Instance ID (defaults to the name).
    pub id: Option<String>,
    /// Service name.
    pub name: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Address (defaults to the node's).
    pub address: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// SRV weights.
    pub weights: Option<WeightsFile>,
    /// Extra addresses by kind.
    #[serde(default)]
    pub tagged_addresses: BTreeMap<String, TaggedAddressFile>,
    /// Keep tags changed in the catalog.
    #[serde(default)]
    pub enable_tag_override: bool,
    /// One check.
    pub check: Option<CheckFile>,
    /// Several checks.
    #[serde(default)]
    pub checks: Vec<CheckFile>,
}

/// `weights { passing, warning }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsFile {
    /// Weight while passing.
    pub passing: u32,
    /// Weight while warning.
    pub warning: u32,
}

/// `tagged_addresses.<kind> { address, port }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaggedAddressFile {
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
}

/// A check definition inside a service definition. Running checks belongs to
/// the health-check runners; here the definition is carried as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckFile {
    /// Check ID.
    pub id: Option<String>,
    /// Check name.
    pub name: Option<String>,
    /// The service a top-level check belongs to (ignored inside a service).
    pub service_id: Option<String>,
    /// Initial status: passing, warning or critical (default critical).
    pub status: Option<String>,
    /// Notes.
    pub notes: Option<String>,
    /// HTTP URL to probe.
    pub http: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// HTTP headers.
    pub header: Option<BTreeMap<String, Vec<String>>>,
    /// HTTP body.
    pub body: Option<String>,
    /// Skip TLS verification.
    pub tls_skip_verify: Option<bool>,
    /// host:port to connect to.
    pub tcp: Option<String>,
    /// Command to run, without a shell.
    pub args: Option<Vec<String>>,
    /// TTL for a TTL check.
    pub ttl: Option<String>,
    /// How often to run.
    pub interval: Option<String>,
    /// How long one run may take.
    pub timeout: Option<String>,
    /// Remove the service after its check stayed critical this long.
    pub deregister_critical_service_after: Option<String>,
    /// Consecutive successes before passing.
    pub success_before_passing: Option<u32>,
    /// Consecutive failures before warning.
    pub failures_before_warning: Option<u32>,
    /// Consecutive failures before critical.
    pub failures_before_critical: Option<u32>,
}

/// Reads and parses one file, TOML or JSON by extension (`.toml`, `.json`;
/// anything else is tried as TOML then reported as such).
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses file contents; `path` only names the format and the error.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let bad = |key: String, message: String| ConfigError::File {
        file: path.to_path_buf(),
        key,
        message,
    };
    if path.extension().is_some_and(|e| e == "json") {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            bad(key, e.into_inner().to_string())
        })
    } else {
        let de = toml::Deserializer::parse(text).map_err(|e| bad(".".into(), e.to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            bad(key, e.into_inner().to_string())
        })
    }
}
