//! From layers to settings: each subsystem's settings resolved from the
//! flags over the files over the defaults, and checked as they are.
//!
//! The methods run in one fixed order (see [`Config::resolve`]), so when
//! several settings are wrong the same one is always reported first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::flags::AgentFlags;
use super::merge::Layered;
use super::settings::{
    CheckSettings, DnsSettings, GossipSettings, KvSettings, LimitsSettings, LogSettings,
    NetworkSettings, NodeSettings, Ports, RaftSettings, ServiceSettings,
};
use super::validate::{duration, encrypt_key, ip, label, parse_socket};
use super::{Config, ConfigError, Purpose, defaults, definitions};
use crate::definition::{CheckDefinition, ServiceDefinition, parse_duration};

/// What one resolution reads.
pub(super) struct Resolver<'a> {
    pub(super) flags: &'a AgentFlags,
    pub(super) layers: &'a Layered,
    pub(super) purpose: Purpose,
}

/// The node's role in the Raft cluster, decided first: several defaults
/// depend on it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Role {
    server: bool,
    bootstrap_expect: usize,
}

impl Role {
    /// Whether this node is a server.
    pub(super) fn server(self) -> bool {
        self.server
    }
}

impl Resolver<'_> {
    pub(super) fn src(&self, key: &'static str, flag: &'static str, from_flag: bool) -> String {
        self.layers.source(key, flag, from_flag)
    }

    /// Agents to join: the flags' list replaces the files'.
    pub(super) fn retry_join(&self) -> Vec<String> {
        if self.flags.retry_join.is_empty() {
            self.layers.file.retry_join.clone().unwrap_or_default()
        } else {
            self.flags.retry_join.clone()
        }
    }

    /// Server or client, and how many servers to bootstrap with; a server
    /// that can neither bootstrap nor join is refused.
    pub(super) fn role(&self, retry_join: &[String]) -> Result<Role, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let dev = flags.dev;
        let server = dev || flags.server || f.server.unwrap_or(defaults::SERVER);
        let bootstrap_expect = match flags.bootstrap_expect.or(f.bootstrap_expect) {
            Some(n) => n,
            None if dev => defaults::DEV_BOOTSTRAP_EXPECT,
            None => defaults::BOOTSTRAP_EXPECT,
        };
        let bootstrap_src = || {
            self.src(
                "bootstrap_expect",
                "--bootstrap-expect",
                flags.bootstrap_expect.is_some(),
            )
        };
        if bootstrap_expect > 0 && !server {
            return Err(ConfigError::Invalid {
                key: "bootstrap_expect",
                source_name: bootstrap_src(),
                message: "only servers bootstrap the Raft cluster; add --server".into(),
            });
        }
        if dev && bootstrap_expect != defaults::DEV_BOOTSTRAP_EXPECT {
            return Err(ConfigError::Invalid {
                key: "bootstrap_expect",
                source_name: bootstrap_src(),
                message: "--dev is a single server; bootstrap_expect must be 1".into(),
            });
        }
        if server && bootstrap_expect == 0 && retry_join.is_empty() && self.purpose == Purpose::Run
        {
            return Err(ConfigError::Invalid {
                key: "bootstrap_expect",
                source_name: "--bootstrap-expect".into(),
                message: "a server needs --bootstrap-expect N to form a cluster, or \
                          --retry-join ADDR to join one"
                    .into(),
            });
        }
        Ok(Role {
            server,
            bootstrap_expect,
        })
    }

    /// Name, datacenter and data directory.
    pub(super) fn node(&self) -> Result<NodeSettings, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let name = flags
            .node
            .clone()
            .or_else(|| f.node_name.clone())
            .unwrap_or_else(defaults::node_name);
        label(
            "node_name",
            &self.src("node_name", "--node", flags.node.is_some()),
            &name,
        )?;
        let datacenter = flags
            .datacenter
            .clone()
            .or_else(|| f.datacenter.clone())
            .unwrap_or_else(|| defaults::DATACENTER.into())
            .to_ascii_lowercase();
        label(
            "datacenter",
            &self.src("datacenter", "--datacenter", flags.datacenter.is_some()),
            &datacenter,
        )?;
        let data_dir = flags.data_dir.clone().or_else(|| f.data_dir.clone());
        if !flags.dev && data_dir.is_none() && self.purpose == Purpose::Run {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                source_name: "--data-dir".into(),
                message: "a data directory is required unless --dev".into(),
            });
        }
        Ok(NodeSettings {
            name,
            datacenter,
            // A dev agent keeps nothing, whatever the files say.
            data_dir: if flags.dev { None } else { data_dir },
        })
    }

    /// Addresses and ports.
    pub(super) fn network(&self) -> Result<NetworkSettings, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let default_bind = if flags.dev {
            defaults::DEV_BIND_ADDR
        } else {
            defaults::BIND_ADDR
        };
        let bind_addr = ip(
            "bind_addr",
            &self.src("bind_addr", "--bind", flags.bind.is_some()),
            flags.bind.as_deref().or(f.bind_addr.as_deref()),
            default_bind,
        )?;
        let advertise_addr = match flags.advertise.as_deref().or(f.advertise_addr.as_deref()) {
            Some(s) => ip(
                "advertise_addr",
                &self.src("advertise_addr", "--advertise", flags.advertise.is_some()),
                Some(s),
                bind_addr,
            )?,
            None if bind_addr.is_unspecified() => defaults::advertise_addr(),
            None => bind_addr,
        };
        let client_addr = ip(
            "client_addr",
            &self.src("client_addr", "--client", flags.client.is_some()),
            flags.client.as_deref().or(f.client_addr.as_deref()),
            defaults::CLIENT_ADDR,
        )?;
        let fp = f.ports.clone().unwrap_or_default();
        let d = Ports::default();
        let ports = Ports {
            dns: flags.dns_port.or(fp.dns).unwrap_or(d.dns),
            http: flags.http_port.or(fp.http).unwrap_or(d.http),
            serf_lan: flags.serf_lan_port.or(fp.serf_lan).unwrap_or(d.serf_lan),
            serf_wan: self.serf_wan_port()?,
            server: flags.server_port.or(fp.server).unwrap_or(d.server),
            https: self.https_port()?,
        };
        let tcp = [
            ports.dns,
            ports.http,
            ports.server,
            ports.https.unwrap_or(0),
        ];
        for (i, p) in tcp.iter().enumerate() {
            if *p != 0 && tcp[..i].contains(p) {
                return Err(ConfigError::Invalid {
                    key: "ports",
                    source_name: self.src("ports", "--*-port", false),
                    message: format!("port {p} is used for two TCP listeners"),
                });
            }
        }
        if ports.serf_lan != 0 && ports.serf_wan == Some(ports.serf_lan) {
            return Err(ConfigError::Invalid {
                key: "ports",
                source_name: self.src("ports", "--serf-*-port", false),
                message: format!(
                    "port {} is used for both LAN and WAN gossip",
                    ports.serf_lan
                ),
            });
        }
        Ok(NetworkSettings {
            bind_addr,
            advertise_addr,
            advertise_addr_wan: self.advertise_addr_wan(advertise_addr)?,
            client_addr,
            ports,
        })
    }

    /// The DNS server's behaviour.
    pub(super) fn dns(&self) -> Result<DnsSettings, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let dc = f.dns_config.clone().unwrap_or_default();
        let dns_src = || self.src("dns_config", "", false);
        let d = DnsSettings::default();
        let mut service_ttl = BTreeMap::new();
        for (name, v) in dc.service_ttl.clone().unwrap_or_default() {
            let ttl = duration(
                "dns_config.service_ttl",
                dns_src,
                Some(&v),
                Default::default(),
            )?;
            service_ttl.insert(name.to_ascii_lowercase(), ttl);
        }
        let mut domain = flags
            .domain
            .clone()
            .or_else(|| f.domain.clone())
            .unwrap_or_else(|| defaults::DOMAIN.into())
            .to_ascii_lowercase();
        if !domain.ends_with('.') {
            domain.push('.');
        }
        let domain_src = self.src("domain", "--domain", flags.domain.is_some());
        for part in domain.trim_end_matches('.').split('.') {
            label("domain", &domain_src, part)?;
        }
        let recursor_src = self.src("recursors", "--recursor", !flags.recursor.is_empty());
        let recursor_list = if flags.recursor.is_empty() {
            f.recursors.clone().unwrap_or_default()
        } else {
            flags.recursor.clone()
        };
        let recursors = recursor_list
            .iter()
            .map(|r| parse_socket(r, defaults::RECURSOR_PORT))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError::Invalid {
                key: "recursors",
                source_name: recursor_src,
                message,
            })?;
        let mut zone_dirs = flags.zone_dir.clone();
        zone_dirs.extend(f.zone_dirs.clone().unwrap_or_default());
        if zone_dirs.is_empty() && Path::new(defaults::ZONE_DIR).is_dir() {
            zone_dirs.push(PathBuf::from(defaults::ZONE_DIR));
        }
        Ok(DnsSettings {
            domain,
            node_ttl: duration(
                "dns_config.node_ttl",
                dns_src,
                dc.node_ttl.as_deref(),
                d.node_ttl,
            )?,
            service_ttl,
            only_passing: dc.only_passing.unwrap_or(d.only_passing),
            udp_answer_limit: dc.udp_answer_limit.unwrap_or(d.udp_answer_limit),
            enable_truncate: dc.enable_truncate.unwrap_or(d.enable_truncate),
            recursors,
            recursor_timeout: duration(
                "dns_config.recursor_timeout",
                dns_src,
                dc.recursor_timeout.as_deref(),
                d.recursor_timeout,
            )?,
            zone_dirs,
            rrl: super::rrl::resolve(&dc, dns_src)?,
            ..DnsSettings::default()
        })
    }

    /// Log level and format.
    pub(super) fn log(&self) -> Result<LogSettings, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let level = flags
            .log_level
            .clone()
            .or_else(|| f.log_level.clone())
            .unwrap_or_else(|| defaults::LOG_LEVEL.into())
            .to_ascii_lowercase();
        if !defaults::LOG_LEVELS.contains(&level.as_str()) {
            return Err(ConfigError::Invalid {
                key: "log_level",
                source_name: self.src("log_level", "--log-level", flags.log_level.is_some()),
                message: format!(
                    "{level:?} is not one of {}",
                    defaults::LOG_LEVELS.join(", ")
                ),
            });
        }
        Ok(LogSettings {
            level,
            json: flags.log_json || f.log_json.unwrap_or(false),
        })
    }

    /// Every service and check definition of the files, converted into the
    /// agent's definitions and validated by their one set of rules.
    pub(super) fn definitions(
        &self,
    ) -> Result<(Vec<ServiceDefinition>, Vec<CheckDefinition>), ConfigError> {
        let services_file = self.layers.file_of(["services", "service"]);
        let services = self
            .layers
            .services
            .iter()
            .map(|s| definitions::service(s, &services_file))
            .collect::<Result<Vec<_>, _>>()?;
        let checks_file = self.layers.file_of(["checks", "check"]);
        let checks = self
            .layers
            .checks
            .iter()
            .map(|c| definitions::check(c, &checks_file))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((services, checks))
    }

    /// How health checks behave.
    pub(super) fn checks(&self) -> Result<CheckSettings, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        Ok(CheckSettings {
            enable_script_checks: flags.enable_script_checks
                || f.enable_script_checks
                    .unwrap_or(defaults::ENABLE_SCRIPT_CHECKS),
            enable_local_script_checks: flags.enable_local_script_checks
                || f.enable_local_script_checks
                    .unwrap_or(defaults::ENABLE_LOCAL_SCRIPT_CHECKS),
            update_interval: duration(
                "check_update_interval",
                || self.src("check_update_interval", "", false),
                f.check_update_interval.as_deref(),
                defaults::CHECK_UPDATE_INTERVAL,
            )?,
        })
    }

    /// The definitions to register and the anti-entropy period.
    pub(super) fn services(
        &self,
        (services, checks): (Vec<ServiceDefinition>, Vec<CheckDefinition>),
    ) -> Result<ServiceSettings, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let ae_interval = match flags.ae_interval.as_ref().or(f.ae_interval.as_ref()) {
            None => defaults::AE_INTERVAL,
            Some(v) => parse_duration(v)
                .and_then(|d| {
                    if d < defaults::AE_INTERVAL_MIN {
                        Err(format!(
                            "{v:?} is below the {}s minimum",
                            defaults::AE_INTERVAL_MIN.as_secs()
                        ))
                    } else {
                        Ok(d)
                    }
                })
                .map_err(|message| ConfigError::Invalid {
                    key: "ae_interval",
                    source_name: self.src(
                        "ae_interval",
                        "--ae-interval",
                        flags.ae_interval.is_some(),
                    ),
                    message,
                })?,
        };
        Ok(ServiceSettings {
            services,
            checks,
            ae_interval,
        })
    }

    /// Raft: the role decided first, and the log's tuning.
    pub(super) fn raft(&self, role: Role) -> Result<RaftSettings, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let snapshot_threshold = flags.raft_snapshot_threshold.or(f.raft_snapshot_threshold);
        if snapshot_threshold == Some(0) {
            return Err(ConfigError::Invalid {
                key: "raft_snapshot_threshold",
                source_name: self.src(
                    "raft_snapshot_threshold",
                    "--raft-snapshot-threshold",
                    flags.raft_snapshot_threshold.is_some(),
                ),
                message: "must be at least 1".into(),
            });
        }
        Ok(RaftSettings {
            server: role.server,
            bootstrap_expect: role.bootstrap_expect,
            snapshot_threshold: snapshot_threshold.unwrap_or(defaults::RAFT_SNAPSHOT_THRESHOLD),
            trailing_logs: flags
                .raft_trailing_logs
                .or(f.raft_trailing_logs)
                .unwrap_or(defaults::RAFT_TRAILING_LOGS),
        })
    }

    /// The gossip pool: join list, key, leaving and reaping.
    pub(super) fn gossip(
        &self,
        role: Role,
        retry_join: Vec<String>,
    ) -> Result<GossipSettings, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let encrypt = match flags.encrypt.as_deref().or(f.encrypt.as_deref()) {
            None => None,
            Some(text) => Some(encrypt_key(text).map_err(|message| ConfigError::Invalid {
                key: "encrypt",
                source_name: self.src("encrypt", "--encrypt", flags.encrypt.is_some()),
                message,
            })?),
        };
        Ok(GossipSettings {
            retry_join,
            encrypt,
            leave_on_terminate: f
                .leave_on_terminate
                .unwrap_or(defaults::leave_on_terminate(role.server)),
            reconnect_timeout: duration(
                "reconnect_timeout",
                || self.src("reconnect_timeout", "", false),
                f.reconnect_timeout.as_deref(),
                defaults::RECONNECT_TIMEOUT,
            )?,
        })
    }
}

impl Resolver<'_> {
    /// The KV store and sessions: the session TTL floor and the tombstone
    /// lifetime, each within its bounds.
    pub(super) fn kv(&self) -> Result<KvSettings, ConfigError> {
        let f = &self.layers.file;
        let session_ttl_min = self.bounded(
            "session_ttl_min",
            f.session_ttl_min.as_deref(),
            defaults::SESSION_TTL_MIN,
            (defaults::SESSION_TTL_MIN_FLOOR, defaults::SESSION_TTL_MAX),
        )?;
        let tombstone_ttl = self.bounded(
            "tombstone_ttl",
            f.tombstone_ttl.as_deref(),
            defaults::TOMBSTONE_TTL,
            (defaults::TOMBSTONE_TTL_MIN, Duration::MAX),
        )?;
        Ok(KvSettings {
            session_ttl_min,
            tombstone_ttl,
        })
    }

    /// A duration only the files set, `default` when none does, refused
    /// naming the key and the file when outside `[min, max]`.
    pub(super) fn bounded(
        &self,
        key: &'static str,
        v: Option<&str>,
        default: Duration,
        (min, max): (Duration, Duration),
    ) -> Result<Duration, ConfigError> {
        let src = || self.src(key, "", false);
        let d = duration(key, src, v, default)?;
        let text = v.unwrap_or_default();
        let message = if d < min {
            format!("{text:?} is below the {}s minimum", min.as_secs())
        } else if d > max {
            format!("{text:?} is above the {}h maximum", max.as_secs() / 3600)
        } else {
            return Ok(d);
        };
        Err(ConfigError::Invalid {
            key,
            source_name: src(),
            message,
        })
    }
}

impl Resolver<'_> {
    /// The listeners' per-client caps and timeouts: a cap of 0 is none, a
    /// timeout of "0s" none, as Consul's.
    pub(super) fn limits(&self) -> Result<LimitsSettings, ConfigError> {
        let l = self.layers.file.limits.clone().unwrap_or_default();
        let d = LimitsSettings::default();
        let timeout = |key: &'static str, v: Option<&str>, default: Option<Duration>| {
            let src = || self.src("limits", "", false);
            let d = duration(key, src, v, default.unwrap_or_default())?;
            Ok::<_, ConfigError>((!d.is_zero()).then_some(d))
        };
        Ok(LimitsSettings {
            http_max_conns_per_client: l
                .http_max_conns_per_client
                .unwrap_or(d.http_max_conns_per_client),
            http_max_blocking_per_client: l
                .http_max_blocking_per_client
                .unwrap_or(d.http_max_blocking_per_client),
            http_read_header_timeout: timeout(
                "limits.http_read_header_timeout",
                l.http_read_header_timeout.as_deref(),
                d.http_read_header_timeout,
            )?,
            http_read_body_timeout: timeout(
                "limits.http_read_body_timeout",
                l.http_read_body_timeout.as_deref(),
                d.http_read_body_timeout,
            )?,
            http_idle_timeout: timeout(
                "limits.http_idle_timeout",
                l.http_idle_timeout.as_deref(),
                d.http_idle_timeout,
            )?,
            rpc_max_conns_per_client: l
                .rpc_max_conns_per_client
                .unwrap_or(d.rpc_max_conns_per_client),
            rpc_handshake_timeout: timeout(
                "limits.rpc_handshake_timeout",
                l.rpc_handshake_timeout.as_deref(),
                d.rpc_handshake_timeout,
            )?,
            dns_tcp_max_conns_per_client: l
                .dns_tcp_max_conns_per_client
                .unwrap_or(d.dns_tcp_max_conns_per_client),
            dns_tcp_idle_timeout: timeout(
                "limits.dns_tcp_idle_timeout",
                l.dns_tcp_idle_timeout.as_deref(),
                d.dns_tcp_idle_timeout,
            )?,
        })
    }
}

impl Config {
    /// Resolves every subsystem's settings, in the order that decides which
    /// error is reported first when several settings are wrong.
    pub(super) fn resolve(
        flags: &AgentFlags,
        layers: Layered,
        purpose: Purpose,
    ) -> Result<Self, ConfigError> {
        let r = Resolver {
            flags,
            layers: &layers,
            purpose,
        };
        let retry_join = r.retry_join();
        let role = r.role(&retry_join)?;
        let node = r.node()?;
        let network = r.network()?;
        let dns = r.dns()?;
        let log = r.log()?;
        let definitions = r.definitions()?;
        let checks = r.checks()?;
        let services = r.services(definitions)?;
        let raft = r.raft(role)?;
        let gossip = r.gossip(role, retry_join)?;
        let wan = r.wan(role, network.ports.serf_wan)?;
        let kv = r.kv()?;
        let tls = r.tls(network.ports.https.is_some())?;
        let limits = r.limits()?;
        let acl = super::acl::resolve(layers.file.acl.as_ref(), || r.src("acl", "", false))?;
        Ok(Self {
            node,
            network,
            dns,
            raft,
            gossip,
            wan,
            checks,
            services,
            kv,
            limits,
            log,
            tls,
            acl,
        })
    }
}
