//! The WAN pool's settings resolved: `ports.serf_wan` (-1 runs no WAN pool,
//! as Consul), `advertise_addr_wan` (the advertise address unless set),
//! `retry_join_wan`, `retry_interval_wan` and `reconnect_timeout_wan`
//! (at least a minute, where Consul asks for 8 h), `translate_wan_addrs`;
//! what cannot work (a WAN join list on a client agent or with the pool
//! off, a zero interval) refused naming the key and the file.

use std::net::IpAddr;

use super::resolve::{Resolver, Role};
use super::settings::WanSettings;
use super::validate::{duration, ip};
use super::{ConfigError, defaults};

impl Resolver<'_> {
    /// `ports.serf_wan` (or `--serf-wan-port`): `None` when -1.
    pub(super) fn serf_wan_port(&self) -> Result<Option<u16>, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let from_file = f.ports.as_ref().and_then(|p| p.serf_wan);
        let port = flags
            .serf_wan_port
            .or(from_file)
            .unwrap_or(i32::from(defaults::SERF_WAN_PORT));
        if port == defaults::SERF_WAN_OFF {
            return Ok(None);
        }
        u16::try_from(port)
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                key: "ports.serf_wan",
                source_name: self.src("ports", "--serf-wan-port", flags.serf_wan_port.is_some()),
                message: format!("{port} is neither -1 (no WAN pool) nor a port number"),
            })
    }

    /// `advertise_addr_wan` (or `--advertise-wan`), `advertise` when unset.
    pub(super) fn advertise_addr_wan(&self, advertise: IpAddr) -> Result<IpAddr, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        ip(
            "advertise_addr_wan",
            &self.src(
                "advertise_addr_wan",
                "--advertise-wan",
                flags.advertise_wan.is_some(),
            ),
            flags
                .advertise_wan
                .as_deref()
                .or(f.advertise_addr_wan.as_deref()),
            advertise,
        )
    }

    /// The WAN join list (the flags' replaces the files') and the pause
    /// between rounds; `serf_wan` is the resolved `ports.serf_wan`.
    pub(super) fn wan(
        &self,
        role: Role,
        serf_wan: Option<u16>,
    ) -> Result<WanSettings, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let from_flag = !flags.retry_join_wan.is_empty();
        let retry_join = if from_flag {
            flags.retry_join_wan.clone()
        } else {
            f.retry_join_wan.clone().unwrap_or_default()
        };
        let join_src = || self.src("retry_join_wan", "--retry-join-wan", from_flag);
        if !retry_join.is_empty() && !role.server() {
            return Err(ConfigError::Invalid {
                key: "retry_join_wan",
                source_name: join_src(),
                message: "only servers join the WAN pool; add --server, or join a server \
                          of this datacenter with retry_join"
                    .into(),
            });
        }
        if !retry_join.is_empty() && serf_wan.is_none() {
            return Err(ConfigError::Invalid {
                key: "retry_join_wan",
                source_name: join_src(),
                message: "the WAN pool is off (ports.serf_wan = -1); give it a port to join".into(),
            });
        }
        let interval_flag = flags.retry_interval_wan.is_some();
        let interval_src = || self.src("retry_interval_wan", "--retry-interval-wan", interval_flag);
        let retry_interval = duration(
            "retry_interval_wan",
            interval_src,
            flags
                .retry_interval_wan
                .as_deref()
                .or(f.retry_interval_wan.as_deref()),
            defaults::RETRY_INTERVAL_WAN,
        )?;
        if retry_interval.is_zero() {
            return Err(ConfigError::Invalid {
                key: "retry_interval_wan",
                source_name: interval_src(),
                message: "must be longer than 0s".into(),
            });
        }
        let reconnect_timeout = self.bounded(
            "reconnect_timeout_wan",
            self.layers.file.reconnect_timeout_wan.as_deref(),
            defaults::RECONNECT_TIMEOUT_WAN,
            (
                defaults::RECONNECT_TIMEOUT_WAN_MIN,
                std::time::Duration::MAX,
            ),
        )?;
        Ok(WanSettings {
            retry_join,
            retry_interval,
            translate_wan_addrs: f.translate_wan_addrs.unwrap_or(false),
            reconnect_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::super::{AgentFlags, Config};

    /// A server with a data dir that bootstraps alone: the least that loads.
    fn server() -> AgentFlags {
        AgentFlags {
            server: true,
            bootstrap_expect: Some(1),
            data_dir: Some("/var/lib/trellis".into()),
            ..AgentFlags::default()
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wan.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn error(flags: &AgentFlags) -> String {
        Config::load(flags).expect_err("refused").to_string()
    }

    #[test]
    fn wan_defaults_follow_consul_and_the_lan_advertise_address() {
        let cfg = Config::load(&AgentFlags {
            advertise: Some("10.0.0.5".into()),
            ..server()
        })
        .unwrap();
        assert_eq!(cfg.network.ports.serf_wan, Some(8302));
        assert_eq!(
            cfg.network.advertise_addr_wan,
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        assert!(cfg.wan.retry_join.is_empty());
        assert_eq!(cfg.wan.retry_interval, Duration::from_secs(30));
        assert_eq!(cfg.wan.reconnect_timeout, Duration::from_secs(72 * 3600));
    }

    #[test]
    fn wan_settings_come_from_files_and_flags_win() {
        let (_dir, path) = file(
            "retry_join_wan = [\"10.1.0.1\", \"10.1.0.2:9302\"]\n\
             retry_interval_wan = \"5s\"\n\
             advertise_addr_wan = \"192.0.2.7\"\n\
             reconnect_timeout_wan = \"10m\"\n\
             [ports]\nserf_wan = 9302\n",
        );
        let flags = AgentFlags {
            config_file: vec![path],
            ..server()
        };
        let cfg = Config::load(&flags).unwrap();
        assert_eq!(cfg.wan.retry_join, ["10.1.0.1", "10.1.0.2:9302"]);
        assert_eq!(cfg.wan.retry_interval, Duration::from_secs(5));
        assert_eq!(cfg.network.advertise_addr_wan.to_string(), "192.0.2.7");
        assert_eq!(cfg.network.ports.serf_wan, Some(9302));
        assert_eq!(cfg.wan.reconnect_timeout, Duration::from_secs(600));
        let cfg = Config::load(&AgentFlags {
            retry_join_wan: vec!["10.2.0.1".into()],
            retry_interval_wan: Some("1m".into()),
            advertise_wan: Some("192.0.2.8".into()),
            serf_wan_port: Some(0),
            ..flags
        })
        .unwrap();
        assert_eq!(cfg.wan.retry_join, ["10.2.0.1"], "the flags' list replaces");
        assert_eq!(cfg.wan.retry_interval, Duration::from_secs(60));
        assert_eq!(cfg.network.advertise_addr_wan.to_string(), "192.0.2.8");
        assert_eq!(cfg.network.ports.serf_wan, Some(0));
    }

    #[test]
    fn minus_one_turns_the_wan_pool_off() {
        let cfg = Config::load(&AgentFlags {
            serf_wan_port: Some(-1),
            ..server()
        })
        .unwrap();
        assert_eq!(cfg.network.ports.serf_wan, None);
        let (_dir, path) = file("[ports]\nserf_wan = -1\n");
        let cfg = Config::load(&AgentFlags {
            config_file: vec![path.clone()],
            ..server()
        })
        .unwrap();
        assert_eq!(cfg.network.ports.serf_wan, None);
        // Nothing to join with the pool off: said, naming the key.
        let e = error(&AgentFlags {
            config_file: vec![path],
            retry_join_wan: vec!["10.1.0.1".into()],
            ..server()
        });
        assert!(
            e.starts_with("retry_join_wan (--retry-join-wan): the WAN pool is off"),
            "{e}"
        );
    }

    #[test]
    fn bad_wan_settings_are_refused_naming_the_key_and_the_file() {
        let e = error(&AgentFlags {
            serf_wan_port: Some(-2),
            ..server()
        });
        assert_eq!(
            e,
            "ports.serf_wan (--serf-wan-port): -2 is neither -1 (no WAN pool) nor a port number"
        );
        let (_dir, path) = file("[ports]\nserf_wan = 70000\n");
        let e = error(&AgentFlags {
            config_file: vec![path.clone()],
            ..server()
        });
        assert!(e.starts_with("ports.serf_wan ("), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");

        let (_dir, path) = file("advertise_addr_wan = \"not-an-ip\"\n");
        let e = error(&AgentFlags {
            config_file: vec![path.clone()],
            ..server()
        });
        assert_eq!(
            e,
            format!(
                "advertise_addr_wan ({}): \"not-an-ip\" is not an IP address",
                path.display()
            )
        );

        let e = error(&AgentFlags {
            retry_interval_wan: Some("0s".into()),
            ..server()
        });
        assert_eq!(
            e,
            "retry_interval_wan (--retry-interval-wan): must be longer than 0s"
        );
        let e = error(&AgentFlags {
            retry_interval_wan: Some("soon".into()),
            ..server()
        });
        assert!(
            e.starts_with("retry_interval_wan (--retry-interval-wan): "),
            "{e}"
        );

        let (_dir, path) = file("reconnect_timeout_wan = \"30s\"\n");
        let e = error(&AgentFlags {
            config_file: vec![path.clone()],
            ..server()
        });
        assert_eq!(
            e,
            format!(
                "reconnect_timeout_wan ({}): \"30s\" is below the 60s minimum",
                path.display()
            )
        );

        let e = error(&AgentFlags {
            serf_lan_port: Some(9301),
            serf_wan_port: Some(9301),
            ..server()
        });
        assert!(
            e.contains("port 9301 is used for both LAN and WAN gossip"),
            "{e}"
        );
    }

    #[test]
    fn only_servers_join_the_wan_pool() {
        let (_dir, path) = file("retry_join_wan = [\"10.1.0.1\"]\n");
        let e = error(&AgentFlags {
            config_file: vec![path.clone()],
            data_dir: Some("/var/lib/trellis".into()),
            ..AgentFlags::default()
        });
        assert!(
            e.starts_with(&format!(
                "retry_join_wan ({}): only servers join the WAN pool",
                path.display()
            )),
            "{e}"
        );
        // A client agent may still carry the port: it binds no WAN socket.
        Config::load(&AgentFlags {
            serf_wan_port: Some(9302),
            data_dir: Some("/var/lib/trellis".into()),
            ..AgentFlags::default()
        })
        .unwrap();
    }
}
