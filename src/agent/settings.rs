//! What the agent derives from the configuration's per-subsystem settings
//! beyond the settings themselves, which each part takes as they are: the
//! node's identity and UUID, the files and directories each part keeps in
//! the data directory, Raft's start-up record and the gossip cipher.

use std::net::SocketAddr;

use crate::config::{GossipSettings, NetworkSettings, NodeSettings, RaftSettings};
use crate::consensus::{ConsensusConfig, Storage};
use crate::local;

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
        tagged_addresses: tagged_addresses(network.advertise_addr, network.advertise_addr_wan),
        meta: Default::default(),
        server_port: rpc_addr.port(),
        serf_lan_port: network.ports.serf_lan,
    }
}

/// The node's `TaggedAddresses` as Consul's agent registers them: `lan`
/// and `wan` (the WAN-advertised address, which other datacenters'
/// answers carry with `translate_wan_addrs`), each also under its family's
/// key (`lan_ipv4`, `wan_ipv6`, …).
fn tagged_addresses(
    lan: std::net::IpAddr,
    wan: std::net::IpAddr,
) -> std::collections::BTreeMap<String, String> {
    let family = |ip: std::net::IpAddr| if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    [
        ("lan".to_string(), lan.to_string()),
        (format!("lan_{}", family(lan)), lan.to_string()),
        ("wan".to_string(), wan.to_string()),
        (format!("wan_{}", family(wan)), wan.to_string()),
    ]
    .into_iter()
    .collect()
}

/// Where the check runners keep TTL check states across restarts; `None`
/// (dev) keeps nothing.
pub(super) fn check_state_dir(node: &NodeSettings) -> Option<std::path::PathBuf> {
    node.data_dir.as_ref().map(|d| d.join("checks"))
}

/// The gossip pool's key, from the bytes the configuration checked.
pub(super) fn gossip_key(g: &GossipSettings) -> Option<crate::gossip::Key> {
    g.encrypt
        .as_ref()
        .map(|k| crate::gossip::Key::from_bytes(k.0))
}

/// The key server RPC peers prove they hold: derived from the gossip key,
/// so one `encrypt` setting keeps outsiders off both gossip and RPC.
pub(super) fn cluster_key(g: &GossipSettings) -> Option<crate::rpc::ClusterKey> {
    g.encrypt
        .as_ref()
        .map(|k| crate::rpc::ClusterKey::derive(&k.0))
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

/// What Raft starts with: the node's name and datacenter, where its log
/// lives in the data directory, and the Raft settings as configured.
pub(super) fn consensus_config(
    node: &NodeSettings,
    raft: &RaftSettings,
    rpc_addr: SocketAddr,
    credentials: crate::rpc::Credentials,
) -> ConsensusConfig {
    let storage = match &node.data_dir {
        Some(dir) => Storage::Dir(dir.join("raft")),
        None => Storage::Memory,
    };
    ConsensusConfig {
        node_name: node.name.clone(),
        datacenter: node.datacenter.clone(),
        rpc_addr,
        storage,
        raft: *raft,
        // Join addresses are gossip addresses; the servers among the
        // pool's members are handed to consensus as they appear.
        retry_join: Vec::new(),
        credentials,
    }
}

/// This node's UUID: kept in the data directory so it survives restarts;
/// fresh for a dev agent. It is the node's identity in the gossip pool and
/// the catalog, so a file that does not hold a UUID is refused, naming it.
pub(super) fn node_id(node: &NodeSettings) -> std::io::Result<uuid::Uuid> {
    let Some(path) = node.node_id_file() else {
        return Ok(uuid::Uuid::new_v4());
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::read_to_string(&path) {
        // Written whole or not at all (write_node_id), so an empty or
        // garbled file is damage: a new ID would make this node another
        // node to the cluster, so it is refused, as Consul does.
        Ok(text) => uuid::Uuid::parse_str(text.trim()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} {}; it should hold this node's ID (a UUID). If the ID is lost, \
                     delete the file to have a new one made: the node then joins as a new node",
                    path.display(),
                    if text.trim().is_empty() {
                        "is empty".to_string()
                    } else {
                        format!("holds {:?}, which is not a UUID", text.trim())
                    }
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_node_id(&path, uuid::Uuid::new_v4())
        }
        Err(e) => Err(e),
    }
}

fn write_node_id(path: &std::path::Path, id: uuid::Uuid) -> std::io::Result<uuid::Uuid> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, id.to_string())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_dir(dir: &std::path::Path) -> NodeSettings {
        NodeSettings {
            name: "n1".into(),
            datacenter: "dc1".into(),
            data_dir: Some(dir.to_path_buf()),
        }
    }

    #[test]
    fn the_node_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = node_id(&in_dir(dir.path())).unwrap();
        assert_eq!(node_id(&in_dir(dir.path())).unwrap(), first);
        // A dev agent (no data dir) is a new node every start.
        let dev = NodeSettings {
            data_dir: None,
            ..in_dir(dir.path())
        };
        assert_ne!(node_id(&dev).unwrap(), node_id(&dev).unwrap());
    }

    #[test]
    fn a_node_id_file_without_a_uuid_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node-id"), "web1\n").unwrap();
        let err = node_id(&in_dir(dir.path())).unwrap_err().to_string();
        assert!(err.contains("node-id") && err.contains("UUID"), "{err}");
        // Written by hand in capitals, with a newline: still the same ID.
        let id = "6A1B3C5D-0000-4000-8000-00000000BEEF";
        std::fs::write(dir.path().join("node-id"), format!("{id}\n")).unwrap();
        let read = node_id(&in_dir(dir.path())).unwrap();
        assert!(read.to_string().eq_ignore_ascii_case(id));
    }

    #[test]
    fn tagged_addresses_name_both_kinds_and_their_families() {
        let lan: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let wan: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let tagged = tagged_addresses(lan, wan);
        let pairs: Vec<(&str, &str)> = tagged
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("lan", "10.0.0.1"),
                ("lan_ipv4", "10.0.0.1"),
                ("wan", "2001:db8::1"),
                ("wan_ipv6", "2001:db8::1"),
            ]
        );
    }
}
