//! This agent in the LAN gossip pool: joining it at start (retrying until
//! one join address answers), and telling consensus (on a server) or the
//! server link (on a client) where the servers of the datacenter answer RPC
//! as members come and go.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::delegate::Delegate;
use crate::gossip::{Gossip, MemberStatus, Role};

/// Pause between rounds of join attempts.
const RETRY_JOIN_EVERY: Duration = Duration::from_secs(1);

/// Resolves a gossip join address: `host[:port]`, port 8301 when absent.
pub(crate) async fn resolve(addr: &str) -> Vec<SocketAddr> {
    // A join address without a port is assumed to use the default one.
    crate::config::join::resolve(addr, crate::config::defaults::SERF_LAN_PORT).await
}

/// Joins the pool through the first of `addrs` that answers, retrying every
/// second until one does or `stop` fires (Consul's `retry_join`).
pub(crate) async fn retry_join(gossip: Arc<Gossip>, addrs: Vec<String>, stop: CancellationToken) {
    if addrs.is_empty() {
        return;
    }
    let mut attempts = 0u32;
    loop {
        for a in &addrs {
            for target in resolve(a).await {
                if target == gossip.local_addr() {
                    continue;
                }
                match gossip.join(target).await {
                    Ok(()) => {
                        tracing::info!(via = %target, "joined the LAN pool");
                        return;
                    }
                    Err(e) if attempts == 0 => {
                        tracing::info!(via = %target, error = %e, "join failed; retrying")
                    }
                    Err(e) => tracing::debug!(via = %target, error = %e, "join failed"),
                }
            }
        }
        attempts += 1;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY_JOIN_EVERY) => {}
        }
    }
}

/// The generation this agent last gossiped under, kept in the data dir so a
/// restart gossips a larger one even if the clock stepped back (0 if none).
pub(crate) fn stored_generation(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes this agent's generation to `path` whenever it changes (at start,
/// and when the pool declared it down and it rejoined under a new one).
pub(crate) async fn remember_generation(
    gossip: Arc<Gossip>,
    path: std::path::PathBuf,
    stop: CancellationToken,
) {
    let mut members = gossip.subscribe();
    let mut written = 0;
    loop {
        members.borrow_and_update();
        let generation = gossip.generation();
        if generation != 0 && generation != written {
            match replace_file(&path, generation.to_string().as_bytes()) {
                Ok(()) => written = generation,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "saving the gossip generation")
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = members.changed() => if changed.is_err() { return },
        }
    }
}

/// Replaces `path` by writing a file beside it, syncing it and renaming it
/// over: a full disk (or a crash) leaves the old generation, never an empty
/// file that would read as none.
fn replace_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Keeps the agent told of the servers of `datacenter` in the pool: a
/// server's Raft discovery hears of every one not known gone (a suspect
/// server may still vote), a client's link of the alive ones (it should not
/// pick a suspect to talk to).
pub(crate) async fn feed_servers(
    gossip: Arc<Gossip>,
    delegate: Delegate,
    datacenter: String,
    stop: CancellationToken,
) {
    let mut members = gossip.subscribe();
    loop {
        let current = members.borrow_and_update().clone();
        let servers = |suspect_too: bool| -> BTreeSet<SocketAddr> {
            current
                .iter()
                .filter(|m| m.role == Role::Server && m.dc == datacenter)
                .filter(|m| match m.status {
                    MemberStatus::Alive => true,
                    MemberStatus::Suspect => suspect_too,
                    _ => false,
                })
                .filter_map(|m| m.rpc_addr)
                .collect()
        };
        match &delegate {
            Delegate::Server(consensus) => consensus.set_peer_addrs(servers(true)),
            Delegate::Client(link) => link.set_servers(servers(false).into_iter().collect()),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = members.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk leaves the last generation, not an empty file.
    #[test]
    fn a_generation_written_on_a_full_disk_keeps_the_last_one() {
        let disk = crate::store::space::Tmpfs::mount("1m");
        let path = disk.path().join("gossip_generation");
        replace_file(&path, b"41").expect("write");
        let filler = disk.fill();
        assert!(
            replace_file(&path, b"42").is_err(),
            "written on a full disk"
        );
        assert_eq!(stored_generation(&path), 41);
        std::fs::remove_file(filler).expect("free");
        replace_file(&path, b"42").expect("write");
        assert_eq!(stored_generation(&path), 42);
    }
}
