//! The WAN pool's settings resolved: `ports.serf_wan` (-1 runs no WAN pool,
//! as Consul), `advertise_addr_wan` (the advertise address unless set),
//! `retry_join_wan` and `retry_interval_wan`; what cannot work (a WAN join
//! list on a client agent or with the pool off, a zero interval) refused
//! naming the key and the file.

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
        Ok(WanSettings {
            retry_join,
            retry_interval,
        })
    }
}
