//! What the DNS server is built from besides the catalog: the user's
//! [`DnsSettings`] and the datacenter, both from the configuration (which
//! holds every default), plus what is not a user setting: the SOA timers
//! and the limits on work in flight, kept here as named constants.

use std::time::Duration;

use crate::config::{DnsSettings, LimitsSettings, defaults};

/// SOA refresh, seconds.
pub(super) const SOA_REFRESH: u32 = 3600;
/// SOA retry, seconds.
pub(super) const SOA_RETRY: u32 = 600;
/// SOA expire, seconds.
pub(super) const SOA_EXPIRE: u32 = 86400;
/// SOA minimum TTL, seconds: the negative-caching TTL of NXDOMAIN/NODATA.
pub(super) const SOA_MIN_TTL: u32 = 0;

/// How much work the server takes on at once. The per-client cap and the
/// idle timeout come from the `limits` settings; the rest is fixed in the
/// agent. Tests lower them to reach the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// TCP connections served at once; more are closed on accept (load shed).
    pub(crate) max_tcp_connections: usize,
    /// TCP connections one client IP may hold (0: no cap); more are closed
    /// on accept, so one client cannot take every slot.
    pub(crate) max_tcp_conns_per_client: usize,
    /// A TCP connection idle for this long is closed; `None`: never.
    pub(crate) tcp_idle_timeout: Option<Duration>,
    /// Forwarded queries in flight at once; more get SERVFAIL at once
    /// rather than queueing behind slow recursors.
    pub(crate) max_concurrent_forwards: usize,
    /// UDP worker threads, each with a socket of its own: one per CPU.
    pub(crate) udp_workers: usize,
}

impl Limits {
    /// The fixed limits with the user's per-client cap and idle timeout.
    pub(crate) fn with_settings(settings: &LimitsSettings) -> Self {
        Self {
            max_tcp_conns_per_client: settings.dns_tcp_max_conns_per_client,
            tcp_idle_timeout: settings.dns_tcp_idle_timeout,
            ..Self::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tcp_connections: 1024,
            max_tcp_conns_per_client: defaults::DNS_TCP_MAX_CONNS_PER_CLIENT,
            tcp_idle_timeout: Some(defaults::DNS_TCP_IDLE_TIMEOUT),
            max_concurrent_forwards: 512,
            udp_workers: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

/// The TTL for answers about `service` (any case), in seconds: an exact
/// key of `service_ttl` first, then the longest key ending in `*` that is
/// a prefix of the name (`*` alone is the fallback), as Consul's
/// `service_ttl`; 0 when none matches.
pub(super) fn service_ttl_secs(settings: &DnsSettings, service: &str) -> u32 {
    let ttls = &settings.service_ttl;
    let exact = ttls.iter().find(|(k, _)| k.eq_ignore_ascii_case(service));
    // The longest matching prefix pattern wins; "*" is the empty prefix.
    let ttl = exact.map(|(_, v)| *v).or_else(|| {
        ttls.iter()
            .filter_map(|(k, v)| {
                let prefix = k.strip_suffix('*')?;
                let hit = service.len() >= prefix.len()
                    && service.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes());
                hit.then_some((prefix.len(), *v))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, v)| v)
    });
    secs(ttl.unwrap_or(Duration::ZERO))
}

/// The TTL for node answers, in seconds.
pub(super) fn node_ttl_secs(settings: &DnsSettings) -> u32 {
    secs(settings.node_ttl)
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn service_ttl_lookup() {
        let mut cfg = DnsSettings::default();
        assert_eq!(service_ttl_secs(&cfg, "web"), 0);
        cfg.service_ttl = BTreeMap::from([
            ("*".to_owned(), Duration::from_secs(5)),
            ("web*".to_owned(), Duration::from_secs(10)),
            ("web-api".to_owned(), Duration::from_secs(30)),
        ]);
        assert_eq!(service_ttl_secs(&cfg, "db"), 5);
        assert_eq!(service_ttl_secs(&cfg, "WEB-frontend"), 10);
        assert_eq!(service_ttl_secs(&cfg, "web-API"), 30);
        cfg.service_ttl.clear();
        assert_eq!(service_ttl_secs(&cfg, "web"), 0);
    }
}
