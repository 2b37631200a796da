//! Per-client-IP caps: how many of one thing (connections, parked blocking
//! queries) each client address holds at once, so that one client can
//! never take what every other client needs. The HTTP, server RPC and DNS
//! TCP listeners each keep one [`PerClient`].
//!
//! A client is its IP address (an IPv4-mapped IPv6 address counts as the
//! IPv4 one), as Consul's `http_max_conns_per_client` counts: clients
//! behind one NAT or proxy share a cap. The counts sit in one map behind a
//! mutex, taken once when a slot is taken and once when it is given back:
//! per connection or per blocking query, never per DNS datagram.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The counts of one kind of slot, by client IP, under one cap.
#[derive(Debug)]
pub struct PerClient {
    /// Slots one client may hold at once; 0 is no cap.
    max: usize,
    /// Slots held now, by client; a client holding none has no entry, so
    /// the map stays as small as the set of clients with open slots.
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One slot taken by one client; dropping it gives the slot back.
#[derive(Debug)]
#[must_use = "the slot is given back when this is dropped"]
pub struct Slot {
    /// The counts the slot was taken from (no cap: none to give back).
    from: Option<Arc<PerClient>>,
    /// The client that holds it.
    ip: IpAddr,
}

impl PerClient {
    /// Counts under a cap of `max` slots per client (0: no cap).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The cap (0: none).
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `ip`, or `None` when that client holds `max` already.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        if self.max == 0 {
            return Some(Slot { from: None, ip });
        }
        let mut held = self.lock();
        let n = held.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            from: Some(self.clone()),
            ip,
        })
    }

    /// Slots `ip` holds now (uncapped counts are not kept: 0).
    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map is consistent between statements: a panic elsewhere while
        // it was held leaves nothing half-done.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn give_back(&self, ip: IpAddr) {
        let mut held = self.lock();
        if let Some(n) = held.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(from) = &self.from {
            from.give_back(self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_at_its_cap_is_refused_and_others_are_not() {
        let caps = PerClient::new(2);
        let a = ip("10.0.0.1");
        let (s1, s2) = (caps.try_take(a).unwrap(), caps.try_take(a).unwrap());
        assert!(caps.try_take(a).is_none());
        let other = caps.try_take(ip("10.0.0.2"));
        assert!(other.is_some());
        drop(s1);
        let s3 = caps.try_take(a).expect("a slot given back is free again");
        drop((s2, s3, other));
        assert_eq!(caps.held(a), 0);
        assert!(
            caps.lock().is_empty(),
            "clients without slots leave the map"
        );
    }

    #[test]
    fn a_mapped_ipv6_address_is_the_ipv4_client() {
        let caps = PerClient::new(1);
        let _slot = caps.try_take(ip("192.0.2.7")).unwrap();
        assert!(caps.try_take(ip("::ffff:192.0.2.7")).is_none());
    }

    #[test]
    fn a_cap_of_zero_is_no_cap() {
        let caps = PerClient::new(0);
        let slots: Vec<_> = (0..1000)
            .map(|_| caps.try_take(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(slots.len(), 1000);
        assert_eq!(caps.max(), 0);
    }
}
