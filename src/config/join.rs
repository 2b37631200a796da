//! Join addresses as users write them (`host[:port]`), resolved when they
//! are used rather than when the configuration is read, so a name that
//! moves to another address is followed on the next attempt.

use std::net::{IpAddr, SocketAddr};

/// Resolves `addr`: an IP with or without a port, or a host name with or
/// without one; `default_port` where none is given. An unresolvable name
/// is logged and yields nothing (the caller retries later).
pub async fn resolve(addr: &str, default_port: u16) -> Vec<SocketAddr> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return vec![a];
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, default_port)];
    }
    let with_port = if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:{default_port}")
    };
    match tokio::net::lookup_host(with_port).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            tracing::warn!(addr, error = %e, "cannot resolve join address");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ports_default_only_when_absent() {
        assert_eq!(
            resolve("10.0.0.1", 8301).await,
            vec!["10.0.0.1:8301".parse().unwrap()]
        );
        assert_eq!(
            resolve("10.0.0.1:9000", 8301).await,
            vec!["10.0.0.1:9000".parse().unwrap()]
        );
        assert_eq!(
            resolve("::1", 8300).await,
            vec!["[::1]:8300".parse().unwrap()]
        );
        assert!(
            resolve("localhost", 8300)
                .await
                .iter()
                .all(|a| a.port() == 8300 && a.ip().is_loopback())
        );
        assert!(resolve("no-such-host.invalid", 8300).await.is_empty());
    }
}
