//! Recovering a cluster that lost its quorum, as Consul's `peers.json`:
//! with most servers gone for good, no configuration change can commit, so
//! the operator stops the survivors, writes `<data_dir>/raft/peers.json`
//! naming the servers that are to form the cluster, and starts them again.
//!
//! At start, before Raft runs, the file's configuration is appended to the
//! log as its newest entry (after the last entry, under the last entry's
//! leader), durably, and the file is renamed `peers.json.applied` so that a
//! second start does not apply it again. Raft takes the newest configuration
//! in its log as the one in force, so the survivors elect a leader among
//! themselves and carry on with everything their logs hold. Every survivor
//! must be given the same file, as with Consul.
//!
//! The format is Consul's (protocol 3): a JSON array of
//! `{"id": "…", "address": "host:port", "non_voter": false}`, where `id` is
//! the server's Raft ID as `trellis operator raft list-peers` prints it (16
//! hex digits) and `address` its server RPC address; an optional `"node"`
//! names it (by default the name the log last had for that ID, else the
//! address).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use openraft::Membership;
use serde::Deserialize;

use super::log_store::LogStore;
use crate::rpc::types::{RaftId, RaftMember};

/// The file's name in the Raft data directory.
pub(crate) const PEERS_FILE: &str = "peers.json";

/// Most servers a recovery file may name: a sanity bound on operator input.
const MAX_PEERS: usize = 64;

/// One server in the file, as Consul writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Peer {
    id: String,
    address: String,
    #[serde(default)]
    non_voter: bool,
    #[serde(default)]
    node: Option<String>,
}

/// Why a recovery file was not applied; the agent does not start.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub(super) struct RecoveryError {
    /// The file.
    file: std::path::PathBuf,
    /// What is wrong.
    message: String,
}

/// Applies `dir/peers.json` to `log` if there is one; the configuration it
/// put in force, if it did.
pub(super) async fn apply(
    dir: &Path,
    log: &LogStore,
) -> Result<Option<BTreeMap<RaftId, RaftMember>>, RecoveryError> {
    let file = dir.join(PEERS_FILE);
    let fail = |message: String| RecoveryError {
        file: file.clone(),
        message,
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read it: {e}"))),
    };
    let known = log.last_membership();
    let (voters, nodes) = parse(&text, known.as_ref()).map_err(fail)?;
    let last = log
        .append_configuration(Membership::new(vec![voters], nodes.clone()))
        .await
        .map_err(|e| fail(format!("cannot write the configuration to the log: {e}")))?;
    let Some(index) = last else {
        return Err(fail(
            "this data dir holds no cluster to recover; remove the file".into(),
        ));
    };
    let applied = dir.join(format!("{PEERS_FILE}.applied"));
    std::fs::rename(&file, &applied).map_err(|e| {
        fail(format!(
            "applied at log index {index}, but cannot be renamed to {}: {e}; remove it \
             before the next start",
            applied.display()
        ))
    })?;
    tracing::warn!(
        file = %file.display(),
        index,
        servers = ?nodes.values().map(ToString::to_string).collect::<Vec<_>>(),
        "recovered the Raft configuration from peers.json"
    );
    Ok(Some(nodes))
}

/// The voters and every server the file names; names fall back to the ones
/// in `known`, the log's last configuration.
fn parse(
    text: &str,
    known: Option<&Membership<RaftId, RaftMember>>,
) -> Result<(BTreeSet<RaftId>, BTreeMap<RaftId, RaftMember>), String> {
    let peers: Vec<Peer> = serde_json::from_str(text).map_err(|e| {
        format!("not a list of {{\"id\", \"address\", \"non_voter\"}} as Consul's peers.json: {e}")
    })?;
    if peers.len() > MAX_PEERS {
        return Err(format!(
            "{} servers named, at most {MAX_PEERS}",
            peers.len()
        ));
    }
    let mut voters = BTreeSet::new();
    let mut nodes = BTreeMap::new();
    for (i, peer) in peers.iter().enumerate() {
        let id = RaftId::from_str_radix(peer.id.trim(), 16).map_err(|_| {
            format!(
                "entry {i}: id {:?} is not a Raft ID (16 hex digits, as `trellis operator raft \
                 list-peers` prints it)",
                peer.id
            )
        })?;
        let addr: SocketAddr = peer.address.parse().map_err(|_| {
            format!(
                "entry {i}: address {:?} is not an IP:port server RPC address",
                peer.address
            )
        })?;
        let name = peer
            .node
            .clone()
            .or_else(|| known.and_then(|m| m.get_node(&id)).map(|n| n.name.clone()))
            .unwrap_or_else(|| addr.to_string());
        if nodes.insert(id, RaftMember::new(name, addr)).is_some() {
            return Err(format!("entry {i}: id {} is named twice", peer.id));
        }
        if !peer.non_voter {
            voters.insert(id);
        }
    }
    if voters.is_empty() {
        return Err("no voter named: a cluster needs at least one".into());
    }
    Ok((voters, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consuls_format_parses_with_names_from_the_log() {
        let known = Membership::new(
            vec![BTreeSet::from([1])],
            BTreeMap::from([(1, RaftMember::new("s1", "127.0.0.1:8300".parse().unwrap()))]),
        );
        let (voters, nodes) = parse(
            r#"[{"id": "0000000000000001", "address": "127.0.0.1:8300", "non_voter": false},
                {"id": "ab", "address": "127.0.0.2:8300", "non_voter": true, "node": "s2"}]"#,
            Some(&known),
        )
        .unwrap();
        assert_eq!(voters, BTreeSet::from([1]));
        assert_eq!(nodes[&1].name, "s1");
        assert_eq!(nodes[&0xab].name, "s2");
    }

    #[test]
    fn bad_files_name_the_problem() {
        for (text, says) in [
            ("{", "as Consul's peers.json"),
            (
                r#"[{"id": "zz", "address": "127.0.0.1:1"}]"#,
                "is not a Raft ID",
            ),
            (r#"[{"id": "1", "address": "here"}]"#, "not an IP:port"),
            (
                r#"[{"id": "1", "address": "127.0.0.1:1", "non_voter": true}]"#,
                "no voter",
            ),
            (
                r#"[{"id": "1", "address": "127.0.0.1:1"}, {"id": "01", "address": "127.0.0.1:2"}]"#,
                "named twice",
            ),
            (
                r#"[{"id": "1", "address": "127.0.0.1:1", "extra": 1}]"#,
                "unknown field",
            ),
        ] {
            let e = parse(text, None).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
