//! The DNS server's settings, with Consul's defaults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the DNS server needs to know besides the catalog. Plain data:
/// the agent's configuration layer fills it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The domain we are authoritative for (`consul.`); a trailing dot is optional.
    pub domain: String,
    /// This agent's datacenter: names may carry it, any other is NXDOMAIN.
    pub datacenter: String,
    /// TTL of node lookups (`node.node.consul`, `addr`, PTR).
    pub node_ttl: Duration,
    /// TTL of service lookups by service name; `*` is the fallback and a key
    /// ending in `*` matches by prefix, as Consul's `service_ttl`.
    pub service_ttl: HashMap<String, Duration>,
    /// Leave out instances whose checks warn (critical ones are always out).
    pub only_passing: bool,
    /// Upstream servers for names outside our domain and zones, tried in order.
    pub recursors: Vec<SocketAddr>,
    /// How long one recursor gets before the next is tried.
    pub recursor_timeout: Duration,
    /// Directories whose `*.zone` files are served authoritatively.
    pub zone_dirs: Vec<PathBuf>,
    /// Answer records in a UDP response to a query without EDNS (Consul's
    /// `udp_answer_limit`); 0 means no limit beyond the 512-byte size.
    pub udp_answer_limit: usize,
    /// Also set TC when `udp_answer_limit` cut the answer (Consul's
    /// `enable_truncate`). Records dropped to fit the packet size always set TC.
    pub enable_truncate: bool,
    /// SOA refresh, seconds.
    pub soa_refresh: u32,
    /// SOA retry, seconds.
    pub soa_retry: u32,
    /// SOA expire, seconds.
    pub soa_expire: u32,
    /// SOA minimum TTL, seconds: the negative-caching TTL of NXDOMAIN/NODATA.
    pub soa_min_ttl: u32,
    /// TCP connections served at once; more are closed on accept (load shed).
    pub max_tcp_connections: usize,
    /// A TCP connection idle for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Forwarded queries in flight at once; more get SERVFAIL at once
    /// rather than queueing behind slow recursors.
    pub max_concurrent_forwards: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            domain: "consul.".into(),
            datacenter: "dc1".into(),
            node_ttl: Duration::ZERO,
            service_ttl: HashMap::from([("*".to_owned(), Duration::ZERO)]),
            only_passing: false,
            recursors: Vec::new(),
            recursor_timeout: Duration::from_secs(2),
            zone_dirs: Vec::new(),
            udp_answer_limit: 3,
            enable_truncate: false,
            soa_refresh: 3600,
            soa_retry: 600,
            soa_expire: 86400,
            soa_min_ttl: 0,
            max_tcp_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(10),
            max_concurrent_forwards: 512,
        }
    }
}

impl DnsConfig {
    /// The TTL for answers about `service` (any case), in seconds.
    pub fn service_ttl_secs(&self, service: &str) -> u32 {
        if self.service_ttl.is_empty() {
            return 0;
        }
        let exact = self
            .service_ttl
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(service));
        // The longest matching prefix pattern wins; "*" is the empty prefix.
        let ttl = exact.map(|(_, v)| *v).or_else(|| {
            self.service_ttl
                .iter()
                .filter_map(|(k, v)| {
                    let prefix = k.strip_suffix('*')?;
                    let hit = service.len() >= prefix.len()
                        && service.as_bytes()[..prefix.len()]
                            .eq_ignore_ascii_case(prefix.as_bytes());
                    hit.then_some((prefix.len(), *v))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, v)| v)
        });
        secs(ttl.unwrap_or(Duration::ZERO))
    }

    /// The TTL for node answers, in seconds.
    pub fn node_ttl_secs(&self) -> u32 {
        secs(self.node_ttl)
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ttl_lookup() {
        let mut cfg = DnsConfig::default();
        assert_eq!(cfg.service_ttl_secs("web"), 0);
        cfg.service_ttl = HashMap::from([
            ("*".to_owned(), Duration::from_secs(5)),
            ("web*".to_owned(), Duration::from_secs(10)),
            ("web-api".to_owned(), Duration::from_secs(30)),
        ]);
        assert_eq!(cfg.service_ttl_secs("db"), 5);
        assert_eq!(cfg.service_ttl_secs("WEB-frontend"), 10);
        assert_eq!(cfg.service_ttl_secs("web-API"), 30);
        cfg.service_ttl.clear();
        assert_eq!(cfg.service_ttl_secs("web"), 0);
    }
}
