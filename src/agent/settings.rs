//! What the agent's parts are given, derived from the configuration's
//! per-subsystem settings: the node's identity and UUID, the settings of
//! DNS, gossip, Raft and the check runners in each part's own terms.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{
    CheckSettings, DnsSettings, GossipSettings, NetworkSettings, NodeSettings, RaftSettings,
};
use crate::consensus::{ConsensusConfig, Storage, Tuning};
use crate::local::{self, checks};

/// This agent's identity for its node registration and `/v1/agent/self`.
pub(super) fn local_identity(
    node: &NodeSettings,
    network: &NetworkSettings,
    raft: &RaftSettings,
    rpc_addr: SocketAddr,
    node_id: String,
) -> local::NodeIdentity {
    local::NodeIdentity {
        node_name: node.name.clone(),
        node_id,
        datacenter: node.datacenter.clone(),
        advertise_addr: network.advertise_addr.to_string(),
        server: raft.server,
        version: env!("CARGO_PKG_VERSION").to_string(),
        tagged_addresses: [
            ("lan".to_string(), network.advertise_addr.to_string()),
            ("wan".to_string(), network.advertise_addr.to_string()),
        ]
        .into_iter()
        .collect(),
        meta: Default::default(),
        server_port: rpc_addr.port(),
        serf_lan_port: network.ports.serf_lan,
    }
}

/// The DNS server's settings from the agent's.
pub(super) fn dns_config(d: &DnsSettings, node: &NodeSettings) -> crate::dns::DnsConfig {
    let mut service_ttl: std::collections::HashMap<String, Duration> =
        d.service_ttl.iter().map(|(k, v)| (k.clone(), *v)).collect();
    service_ttl.entry("*".into()).or_insert(Duration::ZERO);
    crate::dns::DnsConfig {
        domain: d.domain.clone(),
        datacenter: node.datacenter.clone(),
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

/// The check runners' settings: the configured ones, and where TTL check
/// states survive restarts.
pub(super) fn check_settings(c: &CheckSettings, node: &NodeSettings) -> checks::CheckSettings {
    checks::CheckSettings {
        update_interval: c.update_interval,
        enable_script_checks: c.enable_script_checks,
        enable_local_script_checks: c.enable_local_script_checks,
        state_dir: node.data_dir.as_ref().map(|d| d.join("checks")),
    }
}

/// The gossip pool's key, from the bytes the configuration checked.
pub(super) fn gossip_key(g: &GossipSettings) -> Option<crate::gossip::Key> {
    g.encrypt
        .as_ref()
        .map(|k| crate::gossip::Key::from_bytes(k.0))
}

/// Where this node's gossip generation is kept across restarts; `None`
/// (dev) orders restarts by the wall clock alone.
pub(super) fn generation_file(node: &NodeSettings) -> Option<std::path::PathBuf> {
    node.data_dir.as_ref().map(|d| d.join("gossip_generation"))
}

/// Where registrations made over the API are saved for the next run.
pub(super) fn definitions_file(node: &NodeSettings) -> Option<std::path::PathBuf> {
    node.data_dir
        .as_ref()
        .map(|d| d.join("local").join("definitions.json"))
}

/// Raft's settings from the node's and the configured tuning.
pub(super) fn consensus_config(
    node: &NodeSettings,
    raft: &RaftSettings,
    rpc_addr: SocketAddr,
) -> (ConsensusConfig, Tuning) {
    let storage = match &node.data_dir {
        Some(dir) => Storage::Dir(dir.join("raft")),
        None => Storage::Memory,
    };
    let tuning = Tuning {
        snapshot_every: raft.snapshot_threshold,
        keep_after_snapshot: raft.trailing_logs,
        ..Tuning::default()
    };
    let config = ConsensusConfig {
        node_name: node.name.clone(),
        datacenter: node.datacenter.clone(),
        rpc_addr,
        storage,
        bootstrap_expect: raft.bootstrap_expect,
        // Join addresses are gossip addresses; the servers among the
        // pool's members are handed to consensus as they appear.
        retry_join: Vec::new(),
    };
    (config, tuning)
}

/// This node's UUID: kept in the data directory so it survives restarts;
/// fresh for a dev agent.
pub(super) fn node_id(node: &NodeSettings) -> std::io::Result<String> {
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
    let Some(path) = node.node_id_file() else {
        return Ok(fresh());
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
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
