//! What the agent's parts are given, derived from its [`Config`]: the node's
//! identity and UUID and the DNS server's settings.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use crate::local;

/// This agent's identity for its node registration and `/v1/agent/self`.
pub(super) fn local_identity(
    cfg: &Config,
    rpc_addr: SocketAddr,
    node_id: String,
) -> local::NodeIdentity {
    local::NodeIdentity {
        node_name: cfg.node_name.clone(),
        node_id,
        datacenter: cfg.datacenter.clone(),
        advertise_addr: cfg.advertise_addr.to_string(),
        server: cfg.server,
        version: env!("CARGO_PKG_VERSION").to_string(),
        tagged_addresses: [
            ("lan".to_string(), cfg.advertise_addr.to_string()),
            ("wan".to_string(), cfg.advertise_addr.to_string()),
        ]
        .into_iter()
        .collect(),
        meta: Default::default(),
        server_port: rpc_addr.port(),
        serf_lan_port: cfg.ports.serf_lan,
    }
}

/// The DNS server's settings from the agent's.
pub(super) fn dns_config(cfg: &Config) -> crate::dns::DnsConfig {
    let d = &cfg.dns;
    let mut service_ttl: std::collections::HashMap<String, Duration> =
        d.service_ttl.iter().map(|(k, v)| (k.clone(), *v)).collect();
    service_ttl.entry("*".into()).or_insert(Duration::ZERO);
    crate::dns::DnsConfig {
        domain: d.domain.clone(),
        datacenter: cfg.datacenter.clone(),
        node_ttl: d.node_ttl,
        service_ttl,
        only_passing: d.only_passing,
        recursors: d.recursors.clone(),
        recursor_timeout: d.recursor_timeout,
        zone_dirs: d.zone_dirs.clone(),
        udp_answer_limit: d.udp_answer_limit,
        enable_truncate: d.enable_truncate,
        ..crate::dns::DnsConfig::default()
    }
}

/// This node's UUID: kept in the data directory so it survives restarts;
/// fresh for a dev agent.
pub(super) fn node_id(cfg: &Config) -> std::io::Result<String> {
    let fresh = || {
        let b: [u8; 16] = rand::random();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_be_bytes([b[4], b[5]]),
            u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
            (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
            u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
        )
    };
    let Some(dir) = &cfg.data_dir else {
        return Ok(fresh());
    };
    std::fs::create_dir_all(dir)?;
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => write_node_id(&path, &fresh()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_node_id(&path, &fresh()),
        Err(e) => Err(e),
    }
}

fn write_node_id(path: &std::path::Path, id: &str) -> std::io::Result<String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(id.to_string())
}
