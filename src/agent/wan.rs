//! This server in the WAN pool: the second gossip pool, which only servers
//! join, one for every datacenter's servers, with member names `node.dc`
//! and WAN timing (`gossip::Profile::wan`). From it come the datacenters
//! this agent knows and the route to each (`crate::datacenters`).
//!
//! Three tasks follow it, under the agent's background token:
//!
//! - retry-join-WAN: joins the pool through the first `retry_join_wan`
//!   address that answers, a round every `retry_interval_wan` (Consul's).
//! - join flooding (Consul #2801): every alive server of this datacenter in
//!   the LAN pool must be in the WAN pool too. For each one missing, ask it
//!   over server RPC where it gossips in the WAN pool
//!   (`ClusterRequest::WanAddress`) and join it there. So one WAN join per
//!   datacenter federates all of its servers: the joined server's pool
//!   learns the other datacenter, and every server of both datacenters
//!   pulls its local peers in.
//! - the generation file, as for the LAN pool, so a restarted server is
//!   told apart from its previous life even if the clock stepped back.
//!
//! Client agents run no WAN pool: their [`Datacenters`] has none, and they
//! ask a server (`ClientRequest::Datacenters`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::AgentError;
use crate::config::{NodeSettings, WanSettings, defaults};
use crate::consensus::{Consensus, WanFacts};
use crate::datacenters::Datacenters;
use crate::gossip::{Gossip, GossipConfig, Key, Member, MemberStatus, Profile, Role};

/// Shortest pause between two flooding rounds: a burst of membership
/// changes (a datacenter joining) makes one round, not one per change.
const FLOOD_GAP: Duration = Duration::from_secs(1);

/// Longest pause between two flooding rounds when nothing changes, so a
/// join that failed (the server was busy) is tried again.
const FLOOD_EVERY: Duration = Duration::from_secs(15);

/// This agent's part of the WAN pool.
pub(super) struct Wan {
    /// The pool; `None` on a client agent and with `ports.serf_wan = -1`.
    pub(super) pool: Option<Arc<Gossip>>,
    /// The datacenters known through the pool (only our own without one).
    pub(super) datacenters: Arc<Datacenters>,
}

/// What a server's WAN member is made of.
pub(super) struct WanMember<'a> {
    /// The bound WAN gossip socket.
    pub(super) socket: UdpSocket,
    /// The node's name and datacenter; the member is `name.dc`.
    pub(super) node: &'a NodeSettings,
    /// The node ID, the same as in the LAN pool.
    pub(super) node_id: uuid::Uuid,
    /// Server RPC as other datacenters reach it (`advertise_addr_wan`).
    pub(super) rpc_addr: SocketAddr,
    /// The gossip key, the same as the LAN pool's.
    pub(super) key: Option<Key>,
    /// How long a failed server is remembered (`reconnect_timeout_wan`).
    pub(super) reconnect_timeout: Duration,
}

impl Wan {
    /// Starts the WAN pool for `member` (a server with `ports.serf_wan`
    /// on), or none.
    pub(super) fn start(
        datacenter: &str,
        member: Option<WanMember<'_>>,
    ) -> Result<Self, AgentError> {
        let Some(m) = member else {
            return Ok(Self {
                pool: None,
                datacenters: Arc::new(Datacenters::new(datacenter, None)),
            });
        };
        let generation_floor = wan_generation_file(m.node)
            .as_deref()
            .map_or(0, super::pool::stored_generation);
        let pool = Gossip::start(GossipConfig {
            socket: m.socket,
            name: wan_name(&m.node.name, &m.node.datacenter),
            node_id: m.node_id,
            role: Role::Server,
            dc: m.node.datacenter.clone(),
            rpc_addr: Some(m.rpc_addr),
            generation_floor,
            key: m.key,
            profile: Profile {
                remove_down_after: m.reconnect_timeout,
                ..Profile::wan()
            },
        })
        .map_err(|e| AgentError::Task(format!("WAN gossip: {e}")))?;
        let pool = Arc::new(pool);
        Ok(Self {
            datacenters: Arc::new(Datacenters::new(datacenter, Some(pool.subscribe()))),
            pool: Some(pool),
        })
    }

    /// Where the pool gossips, if there is one.
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.pool.as_ref().map(|p| p.local_addr())
    }

    /// Tells `consensus` (a server's) the pool's facts, and starts the
    /// tasks that follow the pool under `stop`: retry-join-WAN, the
    /// datacenters' distances (`distances.rs`), join flooding through
    /// `lan`, and the generation file.
    pub(super) fn follow(
        &self,
        tasks: &mut JoinSet<()>,
        settings: WanSettings,
        node: &NodeSettings,
        lan: Arc<Gossip>,
        consensus: Option<Arc<Consensus>>,
        stop: &CancellationToken,
    ) {
        if let Some(consensus) = &consensus {
            consensus.set_wan(WanFacts {
                gossip: self.local_addr(),
                datacenters: self.datacenters.clone(),
            });
        }
        let (Some(pool), Some(consensus)) = (self.pool.clone(), consensus) else {
            return;
        };
        tasks.spawn(retry_join_wan(pool.clone(), settings, stop.clone()));
        tasks.spawn(super::distances::feed(
            pool.clone(),
            self.datacenters.clone(),
            stop.clone(),
        ));
        tasks.spawn(flood(
            lan,
            pool.clone(),
            consensus,
            node.name.clone(),
            node.datacenter.clone(),
            stop.clone(),
        ));
        if let Some(path) = wan_generation_file(node) {
            tasks.spawn(super::pool::remember_generation(pool, path, stop.clone()));
        }
    }
}

/// A server's name in the WAN pool, as Consul's: `node.dc`.
pub(crate) fn wan_name(node: &str, dc: &str) -> String {
    format!("{node}.{dc}")
}

/// Where the WAN member's generation is kept across restarts.
fn wan_generation_file(node: &NodeSettings) -> Option<std::path::PathBuf> {
    node.data_dir
        .as_ref()
        .map(|d| d.join("gossip_generation_wan"))
}

/// Leaves the WAN pool gracefully (others see Left at once), within 5 s.
pub(super) async fn leave(pool: &Gossip) {
    match tokio::time::timeout(Duration::from_secs(5), pool.leave()).await {
        Ok(Ok(())) => tracing::info!("left the WAN pool"),
        Ok(Err(e)) => tracing::debug!(error = %e, "leaving the WAN pool"),
        Err(_) => tracing::warn!("leaving the WAN pool timed out"),
    }
}

/// Joins the WAN pool through the first of `settings.retry_join` that
/// answers, a round every `settings.retry_interval` until one does or
/// `stop` fires (Consul's `retry_join_wan`).
async fn retry_join_wan(pool: Arc<Gossip>, settings: WanSettings, stop: CancellationToken) {
    if settings.retry_join.is_empty() {
        return;
    }
    let mut attempts = 0u32;
    loop {
        for a in &settings.retry_join {
            for target in crate::config::join::resolve(a, defaults::SERF_WAN_PORT).await {
                if target == pool.local_addr() {
                    continue;
                }
                match pool.join(target).await {
                    Ok(()) => {
                        tracing::info!(via = %target, "joined the WAN pool");
                        return;
                    }
                    Err(e) if attempts == 0 => {
                        tracing::info!(via = %target, error = %e, "WAN join failed; retrying")
                    }
                    Err(e) => tracing::debug!(via = %target, error = %e, "WAN join failed"),
                }
            }
        }
        attempts += 1;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.retry_interval) => {}
        }
    }
}

/// The servers of this datacenter the WAN pool lacks: alive servers of `dc`
/// in the LAN pool other than `me`, whose WAN name is not an alive or
/// suspect member of the WAN pool. Their LAN names and RPC addresses.
///
/// A server the WAN pool holds as failed while the LAN sees it alive is
/// joined again: a WAN partition that healed should not wait for gossip's
/// own announcements.
pub(super) fn to_flood(
    lan: &[Member],
    wan: &[Member],
    dc: &str,
    me: &str,
) -> Vec<(String, SocketAddr)> {
    let present: HashSet<&str> = wan
        .iter()
        .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
        .map(|m| m.name.as_str())
        .collect();
    lan.iter()
        .filter(|m| m.role == Role::Server && m.dc == dc && m.name != me)
        .filter(|m| m.status == MemberStatus::Alive)
        .filter(|m| !present.contains(wan_name(&m.name, dc).as_str()))
        .filter_map(|m| Some((m.name.clone(), m.rpc_addr?)))
        .collect()
}

/// Join flooding: keeps every alive server of this datacenter in the WAN
/// pool, a round after each change of either pool (at most one per
/// [`FLOOD_GAP`]) and every [`FLOOD_EVERY`].
async fn flood(
    lan: Arc<Gossip>,
    wan: Arc<Gossip>,
    consensus: Arc<Consensus>,
    me: String,
    dc: String,
    stop: CancellationToken,
) {
    let (mut lan_rx, mut wan_rx) = (lan.subscribe(), wan.subscribe());
    loop {
        let missing = {
            let (l, w) = (lan_rx.borrow_and_update(), wan_rx.borrow_and_update());
            to_flood(&l, &w, &dc, &me)
        };
        let mut joins = JoinSet::new();
        for (name, rpc) in missing {
            let (wan, consensus) = (wan.clone(), consensus.clone());
            joins.spawn(async move {
                match consensus.ask_wan_address(rpc).await {
                    Ok(Some(addr)) => match wan.join(addr).await {
                        Ok(()) => tracing::info!(server = %name, via = %addr, "brought a local server into the WAN pool"),
                        Err(e) => tracing::debug!(server = %name, via = %addr, error = %e, "WAN join of a local server failed"),
                    },
                    Ok(None) => tracing::debug!(server = %name, "local server has no WAN pool"),
                    Err(e) => tracing::debug!(server = %name, error = %e, "asking a local server for its WAN address"),
                }
            });
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = async { while joins.join_next().await.is_some() {} } => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(FLOOD_GAP) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = lan_rx.changed() => if changed.is_err() { return },
            changed = wan_rx.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(FLOOD_EVERY - FLOOD_GAP) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, dc: &str, role: Role, status: MemberStatus, port: u16) -> Member {
        Member {
            name: name.into(),
            node_id: uuid::Uuid::new_v4(),
            addr: SocketAddr::from(([127, 0, 0, 1], port + 1)),
            status,
            role,
            dc: dc.into(),
            rpc_addr: (role == Role::Server).then(|| SocketAddr::from(([127, 0, 0, 1], port))),
            generation: 1,
        }
    }

    fn names(v: Vec<(String, SocketAddr)>) -> Vec<String> {
        v.into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn flooding_brings_in_alive_local_servers_the_wan_pool_lacks() {
        let lan = [
            member("s1", "dc1", Role::Server, MemberStatus::Alive, 100),
            member("s2", "dc1", Role::Server, MemberStatus::Alive, 200),
            member("s3", "dc1", Role::Server, MemberStatus::Alive, 300),
            member("c1", "dc1", Role::Client, MemberStatus::Alive, 400),
        ];
        // Only ourselves in the WAN pool: both peers are missing.
        let wan = [member(
            "s1.dc1",
            "dc1",
            Role::Server,
            MemberStatus::Alive,
            110,
        )];
        assert_eq!(names(to_flood(&lan, &wan, "dc1", "s1")), ["s2", "s3"]);
        // s2 is in; a client agent never is, and never is asked.
        let wan = [
            member("s1.dc1", "dc1", Role::Server, MemberStatus::Alive, 110),
            member("s2.dc1", "dc1", Role::Server, MemberStatus::Suspect, 210),
        ];
        let missing = to_flood(&lan, &wan, "dc1", "s1");
        assert_eq!(
            missing,
            [("s3".to_owned(), SocketAddr::from(([127, 0, 0, 1], 300)))]
        );
    }

    #[test]
    fn flooding_skips_dead_local_servers_and_rejoins_wan_failed_live_ones() {
        let lan = [
            member("s1", "dc1", Role::Server, MemberStatus::Alive, 100),
            member("s2", "dc1", Role::Server, MemberStatus::Failed, 200),
            member("s3", "dc1", Role::Server, MemberStatus::Left, 300),
            member("s4", "dc1", Role::Server, MemberStatus::Alive, 500),
        ];
        let wan = [
            member("s1.dc1", "dc1", Role::Server, MemberStatus::Alive, 110),
            // The WAN pool lost s4 while the LAN still hears it: join again.
            member("s4.dc1", "dc1", Role::Server, MemberStatus::Failed, 510),
        ];
        assert_eq!(names(to_flood(&lan, &wan, "dc1", "s1")), ["s4"]);
    }

    #[test]
    fn flooding_only_looks_at_its_own_datacenter_and_names() {
        // A LAN pool never holds another datacenter's servers in practice,
        // but a WAN name of the same node in another datacenter must not
        // count as ours.
        let lan = [
            member("s1", "dc1", Role::Server, MemberStatus::Alive, 100),
            member("s2", "dc1", Role::Server, MemberStatus::Alive, 200),
            member("x1", "dc2", Role::Server, MemberStatus::Alive, 600),
        ];
        let wan = [
            member("s1.dc1", "dc1", Role::Server, MemberStatus::Alive, 110),
            member("s2.dc2", "dc2", Role::Server, MemberStatus::Alive, 210),
        ];
        assert_eq!(names(to_flood(&lan, &wan, "dc1", "s1")), ["s2"]);
        assert!(to_flood(&lan[..1], &wan, "dc1", "s1").is_empty());
    }

    #[test]
    fn wan_names_are_node_dot_datacenter() {
        assert_eq!(wan_name("s1", "dc2"), "s1.dc2");
    }
}
