//! The agent's command-line flags. Each overrides the same setting from the
//! configuration files.

use std::path::PathBuf;

use clap::Args;

/// Flags of `trellis agent`.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentFlags {
    /// Development mode: a one-node server, in memory, on 127.0.0.1. Nothing is
    /// persisted. Ready in well under a second.
    #[arg(long)]
    pub dev: bool,

    /// Run as a server: keep a replica of the catalog in the Raft log.
    #[arg(long)]
    pub server: bool,

    /// Number of servers to wait for before bootstrapping the Raft cluster
    /// (1 bootstraps alone at once). Servers only.
    #[arg(long, value_name = "N")]
    pub bootstrap_expect: Option<usize>,

    /// This agent's node name, unique in the datacenter [default: host name].
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// Datacenter this agent belongs to [default: dc1].
    #[arg(long, value_name = "DC")]
    pub datacenter: Option<String>,

    /// Directory for durable state (Raft log, snapshots). Required unless --dev.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address to bind cluster traffic (gossip, server RPC) to [default: 0.0.0.0;
    /// 127.0.0.1 with --dev].
    #[arg(long, value_name = "IP")]
    pub bind: Option<String>,

    /// Address advertised to other agents [default: --bind, or the first
    /// non-loopback IPv4 address when --bind is 0.0.0.0].
    #[arg(long, value_name = "IP")]
    pub advertise: Option<String>,

    /// Address the client interfaces (DNS, HTTP) listen on [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub client: Option<String>,

    /// Another server to find the cluster through (`host[:port]`), retried
    /// until it answers. Repeatable. Until the gossip pool exists this is the
    /// server's RPC address (port 8300 when omitted).
    #[arg(long, value_name = "ADDR")]
    pub retry_join: Vec<String>,

    /// A server of another datacenter to join the WAN pool through
    /// (`host[:port]`, port 8302 when omitted), retried every
    /// `retry_interval_wan` until one answers. Repeatable; servers only.
    #[arg(long, value_name = "ADDR")]
    pub retry_join_wan: Vec<String>,

    /// How long to wait between rounds of WAN join attempts ("30s")
    /// [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub retry_interval_wan: Option<String>,

    /// Address advertised to the servers of other datacenters (WAN gossip
    /// and the server RPC they call) [default: --advertise].
    #[arg(long, value_name = "IP")]
    pub advertise_wan: Option<String>,

    /// Upstream DNS server for names outside the domain (IP or IP:port).
    /// Repeatable. Without one, such names are REFUSED.
    #[arg(long, value_name = "ADDR")]
    pub recursor: Vec<String>,

    /// DNS domain served [default: consul].
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,

    /// DNS port, UDP and TCP; 0 picks a free one [default: 8600].
    #[arg(long, value_name = "PORT")]
    pub dns_port: Option<u16>,

    /// HTTP API port; 0 picks a free one [default: 8500].
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,

    /// LAN gossip port; 0 picks a free one [default: 8301].
    #[arg(long, value_name = "PORT")]
    pub serf_lan_port: Option<u16>,

    /// WAN gossip port (servers only); 0 picks a free one, -1 runs no WAN
    /// pool [default: 8302].
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub serf_wan_port: Option<i32>,

    /// Server RPC port; 0 picks a free one [default: 8300].
    #[arg(long, value_name = "PORT")]
    pub server_port: Option<u16>,

    /// HTTPS API port (needs `tls` certificates in a config file); 0 picks a
    /// free one, -1 serves no HTTPS [default: -1].
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub https_port: Option<i32>,

    /// A configuration file (TOML or JSON). Repeatable; later files win.
    #[arg(long, value_name = "FILE")]
    pub config_file: Vec<PathBuf>,

    /// A directory whose *.toml and *.json files are loaded in name order.
    /// Repeatable.
    #[arg(long, value_name = "DIR")]
    pub config_dir: Vec<PathBuf>,

    /// Directory of static zone files served authoritatively. Repeatable;
    /// ./zones is used when it exists and none is given.
    #[arg(long, value_name = "DIR")]
    pub zone_dir: Vec<PathBuf>,

    /// Log level: trace, debug, info, warn or error [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,

    /// Allow script checks from the HTTP API as well as configuration files.
    /// Anyone who can reach the API can then run commands on this machine.
    #[arg(long)]
    pub enable_script_checks: bool,

    /// Allow script checks from configuration files only.
    #[arg(long)]
    pub enable_local_script_checks: bool,

    /// Gossip encryption key: base64 of 32 bytes (`trellis keygen` makes
    /// one). Every agent of the pool needs the same key.
    #[arg(long, value_name = "KEY")]
    pub encrypt: Option<String>,

    /// Raft: snapshot the catalog after this many log entries since the last
    /// snapshot, which bounds the log [default: 16384].
    #[arg(long, value_name = "N")]
    pub raft_snapshot_threshold: Option<u64>,

    /// Raft: log entries kept behind a snapshot, so a follower that lags by
    /// fewer catches up from the log instead of a whole snapshot
    /// [default: 10240].
    #[arg(long, value_name = "N")]
    pub raft_trailing_logs: Option<u64>,
    /// How often the agent compares its services and checks with the
    /// catalog and repairs what drifted ("30s") [default: 1m].
    #[arg(long, value_name = "DURATION")]
    pub ae_interval: Option<String>,
}
