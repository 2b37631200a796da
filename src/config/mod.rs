//! The agent's settings: defaults, configuration files and flags, merged in
//! that order, then validated as a whole.
//!
//! Files use Consul's key names and reject unknown keys; every error names the
//! key and the file (or the flag) so the operator can fix it without guessing.

mod definitions;
pub mod file;
mod flags;
pub mod join;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::{CheckFile, FileConfig, ServiceFile};

use crate::definition::{CheckDefinition, ServiceDefinition, parse_duration};
pub use flags::AgentFlags;

/// How often anti-entropy runs unless configured (`ae_interval`): Consul's
/// minimum, which it keeps for clusters of up to 128 nodes.
const DEFAULT_AE_INTERVAL: Duration = Duration::from_secs(60);

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("reading {file}: {source}")]
    Read {
        /// The path.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file has a syntax error, an unknown key or a value of the wrong type.
    #[error("{file}: key `{key}`: {message}")]
    File {
        /// The file.
        file: PathBuf,
        /// Dotted path of the key (`.` for the whole file).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A setting has a value that cannot work.
    #[error("{key} ({source_name}): {message}")]
    Invalid {
        /// The setting's key or flag.
        key: &'static str,
        /// Where the value came from: a file path, a flag or "default".
        source_name: String,
        /// What is wrong.
        message: String,
    },
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
    /// WAN gossip.
    pub serf_wan: u16,
    /// Server RPC.
    pub server: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            dns: 8600,
            http: 8500,
            serf_lan: 8301,
            serf_wan: 8302,
            server: 8300,
        }
    }
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
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            domain: "consul.".into(),
            node_ttl: Duration::ZERO,
            service_ttl: BTreeMap::new(),
            only_passing: false,
            udp_answer_limit: 3,
            enable_truncate: true,
            recursors: Vec::new(),
            recursor_timeout: Duration::from_secs(2),
            zone_dirs: Vec::new(),
        }
    }
}

/// The agent's resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Development mode: in-memory single server.
    pub dev: bool,
    /// Whether this agent is a server.
    pub server: bool,
    /// Servers to wait for before bootstrapping.
    pub bootstrap_expect: usize,
    /// Node name.
    pub node_name: String,
    /// Datacenter, lowercased.
    pub datacenter: String,
    /// Durable state directory; `None` only in dev mode.
    pub data_dir: Option<PathBuf>,
    /// Address cluster traffic binds to.
    pub bind_addr: IpAddr,
    /// Address other agents reach this one at.
    pub advertise_addr: IpAddr,
    /// Address DNS and HTTP listen on.
    pub client_addr: IpAddr,
    /// Ports.
    pub ports: Ports,
    /// Agents to join at start-up.
    pub retry_join: Vec<String>,
    /// DNS settings.
    pub dns: DnsSettings,
    /// Log level.
    pub log_level: String,
    /// Log as JSON.
    pub log_json: bool,
    /// Services defined in configuration files, validated.
    pub services: Vec<ServiceDefinition>,
    /// Top-level checks defined in configuration files (node checks, or
    /// checks naming a service by `service_id`), validated.
    pub checks: Vec<CheckDefinition>,
    /// Script checks allowed from the HTTP API too.
    pub enable_script_checks: bool,
    /// Script checks allowed from configuration files.
    pub enable_local_script_checks: bool,
    /// At most one output-only check write per check per this interval.
    pub check_update_interval: Duration,
    /// The gossip pool's encryption key, if any.
    pub encrypt: Option<crate::gossip::Key>,
    /// Leave the gossip pool gracefully on SIGTERM.
    pub leave_on_terminate: bool,
    /// How long a failed node keeps its catalog entry.
    pub reconnect_timeout: Duration,
    /// How often anti-entropy compares the local state with the catalog.
    pub ae_interval: Duration,
    /// Raft snapshot threshold (entries since the last snapshot); None keeps
    /// the default.
    pub raft_snapshot_threshold: Option<u64>,
    /// Raft entries kept behind a snapshot; None keeps the default.
    pub raft_trailing_logs: Option<u64>,
}

/// What the configuration is resolved for: a file checked on its own lacks
/// what flags supply at run time (a data dir, the server role), so those
/// run-time requirements are not enforced for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `trellis agent`.
    Run,
    /// `trellis validate`.
    Validate,
}

/// Values gathered from files before flags and validation.
#[derive(Default)]
struct Layered {
    /// Merged file values.
    file: FileConfig,
    /// The file that set each key last, for error messages.
    origin: BTreeMap<&'static str, PathBuf>,
    /// Services from every file, in load order.
    services: Vec<ServiceFile>,
    /// Top-level checks from every file, in load order.
    checks: Vec<CheckFile>,
}

impl Config {
    /// Loads files named by the flags, applies the flags and validates.
    pub fn load(flags: &AgentFlags) -> Result<Self, ConfigError> {
        let mut layered = Layered::default();
        for path in files(&flags.config_file, &flags.config_dir)? {
            layered.merge(&path, file::load(&path)?);
        }
        Self::resolve(flags, layered, Purpose::Run)
    }

    /// Checks configuration files on their own (`trellis validate`): parses
    /// them and validates the merged result with no flags.
    pub fn validate_files(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut layered = Layered::default();
        let mut dirs = Vec::new();
        let mut files_ = Vec::new();
        for p in paths {
            if p.is_dir() {
                dirs.push(p.clone());
            } else {
                files_.push(p.clone());
            }
        }
        for path in files(&files_, &dirs)? {
            layered.merge(&path, file::load(&path)?);
        }
        Self::resolve(&AgentFlags::default(), layered, Purpose::Validate)
    }

    fn resolve(flags: &AgentFlags, l: Layered, purpose: Purpose) -> Result<Self, ConfigError> {
        let f = &l.file;
        let src = |key: &'static str, flag: &'static str, from_flag: bool| -> String {
            if from_flag {
                flag.to_string()
            } else {
                l.origin
                    .get(key)
                    .map_or_else(|| "default".to_string(), |p| p.display().to_string())
            }
        };
        let dev = flags.dev;
        let server = dev || flags.server || f.server.unwrap_or(false);
        let bootstrap_expect = match flags.bootstrap_expect.or(f.bootstrap_expect) {
            Some(n) => n,
            None if dev => 1,
            None => 0,
        };
        if bootstrap_expect > 0 && !server {
            return Err(ConfigError::Invalid {
                key: "bootstrap_expect",
                source_name: src(
                    "bootstrap_expect",
                    "--bootstrap-expect",
                    flags.bootstrap_expect.is_some(),
                ),
                message: "only servers bootstrap the Raft cluster; add --server".into(),
            });
        }
        if dev && bootstrap_expect != 1 {
            return Err(ConfigError::Invalid {
                key: "bootstrap_expect",
                source_name: src(
                    "bootstrap_expect",
                    "--bootstrap-expect",
                    flags.bootstrap_expect.is_some(),
                ),
                message: "--dev is a single server; bootstrap_expect must be 1".into(),
            });
        }
        let retry_join = if flags.retry_join.is_empty() {
            f.retry_join.clone().unwrap_or_default()
        } else {
            flags.retry_join.clone()
        };
        if server && bootstrap_expect == 0 && retry_join.is_empty() && purpose == Purpose::Run {
            return Err(ConfigError::Invalid {
                key: "bootstrap_expect",
                source_name: "--bootstrap-expect".into(),
                message: "a server needs --bootstrap-expect N to form a cluster, or \
                          --retry-join ADDR to join one"
                    .into(),
            });
        }

        let node_name = flags
            .node
            .clone()
            .or_else(|| f.node_name.clone())
            .unwrap_or_else(hostname);
        check_label(
            "node_name",
            &src("node_name", "--node", flags.node.is_some()),
            &node_name,
        )?;
        let datacenter = flags
            .datacenter
            .clone()
            .or_else(|| f.datacenter.clone())
            .unwrap_or_else(|| "dc1".into())
            .to_ascii_lowercase();
        check_label(
            "datacenter",
            &src("datacenter", "--datacenter", flags.datacenter.is_some()),
            &datacenter,
        )?;

        let data_dir = flags.data_dir.clone().or_else(|| f.data_dir.clone());
        if !dev && data_dir.is_none() && purpose == Purpose::Run {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                source_name: "--data-dir".into(),
                message: "a data directory is required unless --dev".into(),
            });
        }
        let data_dir = if dev { None } else { data_dir };

        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let default_bind = if dev {
            loopback
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let bind_addr = parse_ip(
            "bind_addr",
            &src("bind_addr", "--bind", flags.bind.is_some()),
            flags.bind.as_deref().or(f.bind_addr.as_deref()),
            default_bind,
        )?;
        let advertise_addr = match flags.advertise.as_deref().or(f.advertise_addr.as_deref()) {
            Some(s) => parse_ip(
                "advertise_addr",
                &src("advertise_addr", "--advertise", flags.advertise.is_some()),
                Some(s),
                loopback,
            )?,
            None if bind_addr.is_unspecified() => primary_ipv4().unwrap_or(loopback),
            None => bind_addr,
        };
        let client_addr = parse_ip(
            "client_addr",
            &src("client_addr", "--client", flags.client.is_some()),
            flags.client.as_deref().or(f.client_addr.as_deref()),
            loopback,
        )?;

        let fp = f.ports.clone().unwrap_or_default();
        let ports = Ports {
            dns: flags.dns_port.or(fp.dns).unwrap_or(8600),
            http: flags.http_port.or(fp.http).unwrap_or(8500),
            serf_lan: flags.serf_lan_port.or(fp.serf_lan).unwrap_or(8301),
            serf_wan: flags.serf_wan_port.or(fp.serf_wan).unwrap_or(8302),
            server: flags.server_port.or(fp.server).unwrap_or(8300),
        };
        let fixed = [ports.dns, ports.http, ports.server];
        for (i, p) in fixed.iter().enumerate() {
            if *p != 0 && fixed[..i].contains(p) {
                return Err(ConfigError::Invalid {
                    key: "ports",
                    source_name: src("ports", "--*-port", false),
                    message: format!("port {p} is used for two TCP listeners"),
                });
            }
        }

        let dns = resolve_dns(flags, &l, &src)?;
        let log_level = flags
            .log_level
            .clone()
            .or_else(|| f.log_level.clone())
            .unwrap_or_else(|| "info".into())
            .to_ascii_lowercase();
        if !["trace", "debug", "info", "warn", "error"].contains(&log_level.as_str()) {
            return Err(ConfigError::Invalid {
                key: "log_level",
                source_name: src("log_level", "--log-level", flags.log_level.is_some()),
                message: format!("{log_level:?} is not one of trace, debug, info, warn, error"),
            });
        }
        let service_source = l
            .origin
            .get("services")
            .or_else(|| l.origin.get("service"))
            .map_or_else(String::new, |p| p.display().to_string());
        let services = l
            .services
            .iter()
            .map(|s| definitions::service(s, &service_source))
            .collect::<Result<Vec<_>, _>>()?;
        let check_source = l
            .origin
            .get("checks")
            .or_else(|| l.origin.get("check"))
            .map_or_else(String::new, |p| p.display().to_string());
        let checks = l
            .checks
            .iter()
            .map(|c| definitions::check(c, &check_source))
            .collect::<Result<Vec<_>, _>>()?;
        let check_update_interval = match &f.check_update_interval {
            None => crate::definition::DEFAULT_UPDATE_INTERVAL,
            Some(v) => parse_duration(v).map_err(|message| ConfigError::Invalid {
                key: "check_update_interval",
                source_name: src("check_update_interval", "", false),
                message,
            })?,
        };
        let ae_interval = match flags.ae_interval.as_ref().or(f.ae_interval.as_ref()) {
            None => DEFAULT_AE_INTERVAL,
            Some(v) => parse_duration(v)
                .and_then(|d| {
                    if d < Duration::from_secs(1) {
                        Err(format!("{v:?} is below the 1s minimum"))
                    } else {
                        Ok(d)
                    }
                })
                .map_err(|message| ConfigError::Invalid {
                    key: "ae_interval",
                    source_name: src("ae_interval", "--ae-interval", flags.ae_interval.is_some()),
                    message,
                })?,
        };
        let raft_snapshot_threshold = flags.raft_snapshot_threshold.or(f.raft_snapshot_threshold);
        if raft_snapshot_threshold == Some(0) {
            return Err(ConfigError::Invalid {
                key: "raft_snapshot_threshold",
                source_name: src(
                    "raft_snapshot_threshold",
                    "--raft-snapshot-threshold",
                    flags.raft_snapshot_threshold.is_some(),
                ),
                message: "must be at least 1".into(),
            });
        }
        let encrypt =
            match flags.encrypt.as_deref().or(f.encrypt.as_deref()) {
                None => None,
                Some(text) => Some(crate::gossip::Key::from_base64(text).map_err(|e| {
                    ConfigError::Invalid {
                        key: "encrypt",
                        source_name: src("encrypt", "--encrypt", flags.encrypt.is_some()),
                        message: e.to_string(),
                    }
                })?),
            };
        let reconnect_timeout = match &f.reconnect_timeout {
            None => crate::reconcile::DEFAULT_REAP_AFTER,
            Some(v) => parse_duration(v).map_err(|message| ConfigError::Invalid {
                key: "reconnect_timeout",
                source_name: src("reconnect_timeout", "", false),
                message,
            })?,
        };
        Ok(Self {
            dev,
            server,
            bootstrap_expect,
            node_name,
            datacenter,
            data_dir,
            bind_addr,
            advertise_addr,
            client_addr,
            ports,
            retry_join,
            dns,
            log_level,
            log_json: flags.log_json || f.log_json.unwrap_or(false),
            services,
            checks,
            enable_script_checks: flags.enable_script_checks
                || f.enable_script_checks.unwrap_or(false),
            enable_local_script_checks: flags.enable_local_script_checks
                || f.enable_local_script_checks.unwrap_or(false),
            check_update_interval,
            encrypt,
            leave_on_terminate: f.leave_on_terminate.unwrap_or(!server),
            reconnect_timeout,
            ae_interval,
            raft_snapshot_threshold,
            raft_trailing_logs: flags.raft_trailing_logs.or(f.raft_trailing_logs),
        })
    }
}

impl Layered {
    fn merge(&mut self, path: &Path, f: FileConfig) {
        macro_rules! take {
            ($($field:ident),*) => {$(
                if f.$field.is_some() {
                    self.file.$field = f.$field.clone();
                    self.origin.insert(stringify!($field), path.to_path_buf());
                }
            )*};
        }
        take!(
            node_name,
            datacenter,
            data_dir,
            server,
            bootstrap_expect,
            bind_addr,
            advertise_addr,
            client_addr,
            retry_join,
            recursors,
            domain,
            log_level,
            log_json,
            zone_dirs,
            ports,
            dns_config,
            enable_script_checks,
            enable_local_script_checks,
            check_update_interval,
            raft_snapshot_threshold,
            raft_trailing_logs,
            encrypt,
            leave_on_terminate,
            reconnect_timeout,
            ae_interval
        );
        if let Some(s) = f.service {
            self.origin.insert("service", path.to_path_buf());
            self.services.push(s);
        }
        if let Some(list) = f.services {
            self.origin.insert("services", path.to_path_buf());
            self.services.extend(list);
        }
        if let Some(c) = f.check {
            self.origin.insert("check", path.to_path_buf());
            self.checks.push(c);
        }
        if let Some(list) = f.checks {
            self.origin.insert("checks", path.to_path_buf());
            self.checks.extend(list);
        }
    }
}

fn resolve_dns(
    flags: &AgentFlags,
    l: &Layered,
    src: &dyn Fn(&'static str, &'static str, bool) -> String,
) -> Result<DnsSettings, ConfigError> {
    let f = &l.file;
    let dc = f.dns_config.clone().unwrap_or_default();
    let dns_src = || src("dns_config", "", false);
    let dur = |key: &'static str,
               v: &Option<String>,
               default: Duration|
     -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|message| ConfigError::Invalid {
                key,
                source_name: dns_src(),
                message,
            }),
        }
    };
    let defaults = DnsSettings::default();
    let mut service_ttl = BTreeMap::new();
    for (name, v) in dc.service_ttl.clone().unwrap_or_default() {
        let d = dur("dns_config.service_ttl", &Some(v), Duration::ZERO)?;
        service_ttl.insert(name.to_ascii_lowercase(), d);
    }
    let mut domain = flags
        .domain
        .clone()
        .or_else(|| f.domain.clone())
        .unwrap_or_else(|| "consul".into())
        .to_ascii_lowercase();
    if !domain.ends_with('.') {
        domain.push('.');
    }
    for label in domain.trim_end_matches('.').split('.') {
        check_label(
            "domain",
            &src("domain", "--domain", flags.domain.is_some()),
            label,
        )?;
    }
    let recursor_src = src("recursors", "--recursor", !flags.recursor.is_empty());
    let recursor_list = if flags.recursor.is_empty() {
        f.recursors.clone().unwrap_or_default()
    } else {
        flags.recursor.clone()
    };
    let recursors = recursor_list
        .iter()
        .map(|r| parse_socket(r, 53))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| ConfigError::Invalid {
            key: "recursors",
            source_name: recursor_src,
            message,
        })?;
    let mut zone_dirs = flags.zone_dir.clone();
    zone_dirs.extend(f.zone_dirs.clone().unwrap_or_default());
    if zone_dirs.is_empty() && Path::new("zones").is_dir() {
        zone_dirs.push(PathBuf::from("zones"));
    }
    Ok(DnsSettings {
        domain,
        node_ttl: dur("dns_config.node_ttl", &dc.node_ttl, defaults.node_ttl)?,
        service_ttl,
        only_passing: dc.only_passing.unwrap_or(defaults.only_passing),
        udp_answer_limit: dc.udp_answer_limit.unwrap_or(defaults.udp_answer_limit),
        enable_truncate: dc.enable_truncate.unwrap_or(defaults.enable_truncate),
        recursors,
        recursor_timeout: dur(
            "dns_config.recursor_timeout",
            &dc.recursor_timeout,
            defaults.recursor_timeout,
        )?,
        zone_dirs,
    })
}

/// Parses `IP` or `IP:port` (IPv6 as `[::1]:53`), with `default_port`.
pub fn parse_socket(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!("{s:?} is not an IP address or IP:port"))
}

fn parse_ip(
    key: &'static str,
    source_name: &str,
    v: Option<&str>,
    default: IpAddr,
) -> Result<IpAddr, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| ConfigError::Invalid {
            key,
            source_name: source_name.to_string(),
            message: format!("{s:?} is not an IP address"),
        }),
    }
}

/// A DNS label: what a node name, datacenter or domain part must be to be
/// answerable in DNS.
fn check_label(key: &'static str, source_name: &str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            source_name: source_name.to_string(),
            message: format!(
                "{v:?} is not a valid DNS label (letters, digits, '-', '_'; at most 63)"
            ),
        })
    }
}

/// The configuration files to load: explicit files first, then each
/// directory's `*.toml` and `*.json` in name order.
fn files(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut out = files.to_vec();
    for dir in dirs {
        let read = |source| ConfigError::Read {
            file: dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for e in std::fs::read_dir(dir).map_err(read)? {
            let p = e.map_err(read)?.path();
            if p.extension().is_some_and(|x| x == "toml" || x == "json") {
                entries.push(p);
            }
        }
        entries.sort();
        out.extend(entries);
    }
    Ok(out)
}

fn hostname() -> String {
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
        "trellis".into()
    } else {
        first
    }
}

/// The address a default route would leave from, found without sending
/// anything (connecting a UDP socket only selects a route).
fn primary_ipv4() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}
