//! The `rrl_*` keys of `dns_config`: DNS response-rate limiting, each
//! value checked against its bound so an error names the key and the file.

use super::file::DnsConfigFile;
use super::settings::RrlSettings;
use super::{ConfigError, defaults};

/// The response-rate limit of `dns_config`, each value within its bounds.
pub(super) fn resolve(
    dc: &DnsConfigFile,
    src: impl Fn() -> String,
) -> Result<RrlSettings, ConfigError> {
    let d = RrlSettings::default();
    let bounded = |key: &'static str, value: Option<u32>, default: u32, max: u32| {
        let v = value.unwrap_or(default);
        if v > max {
            return Err(ConfigError::Invalid {
                key,
                source_name: src(),
                message: format!("{v} is above the largest allowed, {max}"),
            });
        }
        Ok(v)
    };
    let prefix = |key, value: Option<u8>, default: u8, max: u8| {
        bounded(
            key,
            value.map(u32::from),
            u32::from(default),
            u32::from(max),
        )
        .map(|v| u8::try_from(v).unwrap_or(max))
    };
    Ok(RrlSettings {
        rate: bounded(
            "dns_config.rrl_rate",
            dc.rrl_rate,
            d.rate,
            defaults::DNS_RRL_MAX_RATE,
        )?,
        slip: bounded(
            "dns_config.rrl_slip",
            dc.rrl_slip,
            d.slip,
            defaults::DNS_RRL_MAX_SLIP,
        )?,
        ipv4_prefix: prefix(
            "dns_config.rrl_ipv4_prefix",
            dc.rrl_ipv4_prefix,
            d.ipv4_prefix,
            32,
        )?,
        ipv6_prefix: prefix(
            "dns_config.rrl_ipv6_prefix",
            dc.rrl_ipv6_prefix,
            d.ipv6_prefix,
            128,
        )?,
    })
}
