//! On the leader: gossip membership → catalog, as Consul's leader does with
//! Serf. A member that is alive has its node registered with a passing
//! `serfHealth` check; one that failed keeps its node but the check turns
//! critical, so every instance on it leaves DNS on every server; one that
//! left gracefully is deregistered, as is one that stayed failed past the
//! reap time.
//!
//! [`plan`] is pure: from what gossip says and what the catalog holds, the
//! commands that make them agree (none when they already do, so running it
//! again after every membership change, on a new leader, and periodically is
//! cheap and repairs drift). [`Reaper`] remembers, on this leader only,
//! since when each member has been failed.
//!
//! Nodes are registered with their node ID, so the catalog's own rule (a
//! healthy node's name stays with its ID) guards them too. Gossip already
//! leaves out a second node claiming a live member's name; when the member
//! gossip shows under a name has another ID than the catalog's node (a
//! server restarted in place with a wiped data directory, or a failed node
//! replaced), the catalog's node is no longer in the pool: the leader marks
//! it critical first, and then the new ID may take the name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::{
    CheckRegistration, Command, Deregistration, HealthStatus, Meta, Registration, Replica, State,
};
use crate::consensus::Consensus;
use crate::gossip::{Member, MemberStatus};

/// How often the leader reconciles even when membership did not change: a
/// new leader takes office, a write failed, the catalog drifted. A round
/// that finds nothing to do costs one catalog lookup per member.
const RECONCILE_EVERY: Duration = Duration::from_millis(250);

/// The check through which membership shows in the catalog.
pub const SERF_CHECK_ID: &str = "serfHealth";
/// Its name, as Consul shows it.
pub const SERF_CHECK_NAME: &str = "Serf Health Status";

/// A member's state as the reconciler needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Answering (suspects count as alive until declared failed).
    Alive,
    /// Declared failed by gossip.
    Failed,
    /// Left gracefully.
    Left,
}

/// One gossip member of this datacenter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Node name.
    pub name: String,
    /// The node ID the pool knows it by.
    pub node_id: String,
    /// The address its node is registered with.
    pub address: String,
    /// Alive, failed or left.
    pub liveness: Liveness,
}

/// The `serfHealth` check for a member that is alive or failed.
pub fn serf_check(liveness: Liveness) -> CheckRegistration {
    let (status, output) = match liveness {
        Liveness::Alive => (HealthStatus::Passing, "Agent alive and reachable"),
        Liveness::Failed | Liveness::Left => {
            (HealthStatus::Critical, "Agent not live or unreachable")
        }
    };
    CheckRegistration {
        check_id: SERF_CHECK_ID.into(),
        name: SERF_CHECK_NAME.into(),
        status,
        notes: String::new(),
        output: output.into(),
        service_id: String::new(),
        kind: String::new(),
    }
}

/// The commands that bring `catalog` in line with `members`. `reap` names
/// failed members whose reap time has come.
pub fn plan(
    members: &[Observed],
    catalog: &State,
    datacenter: &str,
    reap: &BTreeSet<String>,
) -> Vec<Command> {
    let mut out = Vec::new();
    for m in members {
        let node = catalog.node(&m.name);
        let serf = catalog
            .node_checks(&m.name)
            .find(|c| &*c.check_id == SERF_CHECK_ID)
            .map(|c| c.status);
        let gone = m.liveness == Liveness::Left
            || (m.liveness == Liveness::Failed && reap.contains(&m.name));
        if gone {
            if node.is_some() {
                out.push(deregister(&m.name));
            }
            continue;
        }
        let check = serf_check(m.liveness);
        let status = check.status;
        let address_ok = node.is_some_and(|n| n.address == m.address);
        let id_ok = node.is_some_and(|n| n.id.eq_ignore_ascii_case(&m.node_id));
        if address_ok && id_ok && serf == Some(status) {
            continue;
        }
        // A failed member that was never registered has nothing to mark.
        if node.is_none() && m.liveness == Liveness::Failed {
            continue;
        }
        let replaced = node.is_some_and(|n| !n.id.is_empty()) && !id_ok;
        if replaced && serf != Some(HealthStatus::Critical) {
            // The catalog's node ID is not in the pool under this name any
            // more: say so, so the catalog lets the new ID take the name.
            out.push(Command::register(Registration {
                node: m.name.clone(),
                id: String::new(),
                address: String::new(),
                datacenter: datacenter.into(),
                tagged_addresses: BTreeMap::new(),
                node_meta: Meta::new(),
                skip_node_update: true,
                service: None,
                checks: vec![serf_check(Liveness::Failed)],
            }));
        }
        // The agent owns its node's meta and tagged addresses: keep what its
        // anti-entropy wrote unless this is another node now.
        let (tagged_addresses, node_meta) = match node {
            Some(n) if !replaced => (n.tagged_addresses.clone(), n.meta.clone()),
            _ => (BTreeMap::new(), Meta::new()),
        };
        out.push(Command::register(Registration {
            node: m.name.clone(),
            id: m.node_id.clone(),
            address: m.address.clone(),
            datacenter: datacenter.into(),
            tagged_addresses,
            node_meta,
            skip_node_update: address_ok && id_ok,
            service: None,
            checks: vec![check],
        }));
    }
    out
}

fn deregister(node: &str) -> Command {
    Command::deregister(Deregistration {
        node: node.into(),
        service_id: String::new(),
        check_id: String::new(),
    })
}

/// Since when each member has been failed, as this leader saw it; members
/// failed longer than `after` are due for reaping.
#[derive(Debug)]
pub struct Reaper {
    after: Duration,
    failed_since: BTreeMap<String, Instant>,
}

impl Reaper {
    /// A reaper that reaps after `after`.
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            failed_since: BTreeMap::new(),
        }
    }

    /// Updates from the current membership and returns who is due, as of `now`.
    pub fn due(&mut self, members: &[Observed], now: Instant) -> BTreeSet<String> {
        let failed: BTreeSet<&str> = members
            .iter()
            .filter(|m| m.liveness == Liveness::Failed)
            .map(|m| m.name.as_str())
            .collect();
        self.failed_since
            .retain(|name, _| failed.contains(name.as_str()));
        for name in failed {
            self.failed_since.entry(name.to_string()).or_insert(now);
        }
        self.failed_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= self.after)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The members of `datacenter` as the reconciler sees them.
pub fn observe(members: &[Member], datacenter: &str) -> Vec<Observed> {
    members
        .iter()
        .filter(|m| m.dc == datacenter)
        .map(|m| Observed {
            name: m.name.clone(),
            node_id: m.node_id.to_string(),
            address: m.addr.ip().to_string(),
            liveness: match m.status {
                MemberStatus::Alive | MemberStatus::Suspect => Liveness::Alive,
                MemberStatus::Failed => Liveness::Failed,
                MemberStatus::Left => Liveness::Left,
            },
        })
        .collect()
}

/// Runs on every server; acts while this server leads: after every change of
/// membership, and every `RECONCILE_EVERY`. Ends with `stop`.
pub async fn run(
    mut members: watch::Receiver<Arc<Vec<Member>>>,
    consensus: Arc<Consensus>,
    replica: Arc<Replica>,
    datacenter: String,
    reap_after: Duration,
    stop: CancellationToken,
) {
    let mut reaper = Reaper::new(reap_after);
    loop {
        let observed = observe(&members.borrow_and_update(), &datacenter);
        let due = reaper.due(&observed, Instant::now());
        if consensus.is_leader() {
            let commands = plan(&observed, &replica.read(), &datacenter, &due);
            for cmd in commands {
                if let Err(e) = consensus.write(cmd).await {
                    // The next round retries; a lost leadership ends them.
                    tracing::debug!(error = %e, "reconcile write failed");
                    break;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = members.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(name: &str, liveness: Liveness) -> Observed {
        Observed {
            name: name.into(),
            node_id: format!("00000000-0000-4000-8000-{:012}", name.len()),
            address: format!("10.0.0.{}", name.len()),
            liveness,
        }
    }

    fn step(catalog: &mut State, index: &mut u64, members: &[Observed], reap: &BTreeSet<String>) {
        let cmds = plan(members, catalog, "dc1", reap);
        apply(catalog, index, &cmds);
    }

    fn apply(catalog: &mut State, index: &mut u64, cmds: &[Command]) {
        for c in cmds {
            *index += 1;
            catalog.apply(*index, 0, c);
        }
    }

    fn serf(catalog: &State, node: &str) -> Option<HealthStatus> {
        catalog
            .node_checks(node)
            .find(|c| &*c.check_id == SERF_CHECK_ID)
            .map(|c| c.status)
    }

    #[test]
    fn membership_becomes_catalog_state_and_then_nothing_to_do() {
        let (mut catalog, mut index) = (State::new(), 0);
        let none = BTreeSet::new();
        let members = vec![
            observed("web1", Liveness::Alive),
            observed("db1", Liveness::Alive),
        ];
        let cmds = plan(&members, &catalog, "dc1", &none);
        assert_eq!(cmds.len(), 2);
        apply(&mut catalog, &mut index, &cmds);
        assert_eq!(serf(&catalog, "web1"), Some(HealthStatus::Passing));
        assert!(
            plan(&members, &catalog, "dc1", &none).is_empty(),
            "idempotent"
        );

        // db1 fails: critical, node kept.
        let members = vec![
            observed("web1", Liveness::Alive),
            observed("db1", Liveness::Failed),
        ];
        let cmds = plan(&members, &catalog, "dc1", &none);
        apply(&mut catalog, &mut index, &cmds);
        assert_eq!(serf(&catalog, "db1"), Some(HealthStatus::Critical));
        assert!(catalog.node("db1").is_some());
        assert!(plan(&members, &catalog, "dc1", &none).is_empty());

        // It comes back: passing again.
        let members = vec![
            observed("web1", Liveness::Alive),
            observed("db1", Liveness::Alive),
        ];
        step(&mut catalog, &mut index, &members, &none);
        assert_eq!(serf(&catalog, "db1"), Some(HealthStatus::Passing));

        // web1 leaves: gone. db1 fails and is reaped: gone.
        let members = vec![
            observed("web1", Liveness::Left),
            observed("db1", Liveness::Failed),
        ];
        let reap = BTreeSet::from(["db1".to_string()]);
        step(&mut catalog, &mut index, &members, &reap);
        assert!(catalog.node("web1").is_none());
        assert!(catalog.node("db1").is_none());
        assert!(plan(&members, &catalog, "dc1", &reap).is_empty());
    }

    #[test]
    fn a_new_address_is_written_and_unknown_failed_members_are_ignored() {
        let (mut catalog, mut index) = (State::new(), 0);
        let none = BTreeSet::new();
        let mut m = observed("web1", Liveness::Alive);
        step(&mut catalog, &mut index, &[m.clone()], &none);
        m.address = "10.9.9.9".into();
        step(&mut catalog, &mut index, &[m.clone()], &none);
        assert_eq!(
            catalog.node("web1").map(|n| n.address.as_str()),
            Some("10.9.9.9")
        );
        assert!(
            plan(
                &[observed("ghost", Liveness::Failed)],
                &catalog,
                "dc1",
                &none
            )
            .is_empty()
        );
    }

    #[test]
    fn a_node_back_with_a_new_id_replaces_its_old_self_in_two_steps() {
        // A server restarted in place with a wiped data directory: gossip
        // shows the name alive under a new ID, the catalog holds the old ID
        // with serfHealth passing.
        let (mut catalog, mut index) = (State::new(), 0);
        let none = BTreeSet::new();
        let mut m = observed("s1", Liveness::Alive);
        step(&mut catalog, &mut index, &[m.clone()], &none);
        let old_id = catalog.node("s1").map(|n| n.id.clone());
        assert_eq!(old_id.as_deref(), Some(m.node_id.as_str()));
        m.node_id = "99999999-0000-4000-8000-000000000000".into();
        let cmds = plan(&[m.clone()], &catalog, "dc1", &none);
        assert_eq!(cmds.len(), 2, "mark critical, then register: {cmds:?}");
        apply(&mut catalog, &mut index, &cmds);
        assert_eq!(
            catalog.node("s1").map(|n| n.id.as_str()),
            Some(m.node_id.as_str())
        );
        assert_eq!(serf(&catalog, "s1"), Some(HealthStatus::Passing));
        assert!(plan(&[m], &catalog, "dc1", &none).is_empty());
    }

    #[test]
    fn a_registration_by_the_agent_keeps_its_meta_when_the_address_moves() {
        let (mut catalog, mut index) = (State::new(), 0);
        let none = BTreeSet::new();
        let mut m = observed("web1", Liveness::Alive);
        step(&mut catalog, &mut index, &[m.clone()], &none);
        let mut meta = Registration {
            node: "web1".into(),
            id: m.node_id.clone(),
            address: m.address.clone(),
            datacenter: "dc1".into(),
            tagged_addresses: BTreeMap::new(),
            node_meta: BTreeMap::from([("rack".to_string(), "r1".to_string())]).into(),
            skip_node_update: false,
            service: None,
            checks: Vec::new(),
        };
        apply(&mut catalog, &mut index, &[Command::register(meta.clone())]);
        m.address = "10.9.9.9".into();
        step(&mut catalog, &mut index, &[m], &none);
        let node = catalog.node("web1").expect("registered");
        assert_eq!(node.address, "10.9.9.9");
        meta.node_meta.insert("rack".into(), "r1".into());
        assert_eq!(node.meta, meta.node_meta);
    }

    #[test]
    fn reaper_counts_from_the_first_failure_and_forgets_returns() {
        let mut r = Reaper::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let failed = [observed("db1", Liveness::Failed)];
        assert!(r.due(&failed, t0).is_empty());
        assert!(r.due(&failed, t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(r.due(&failed, t0 + Duration::from_secs(10)).len(), 1);
        // Back alive, then failed again: the clock restarts.
        r.due(
            &[observed("db1", Liveness::Alive)],
            t0 + Duration::from_secs(11),
        );
        assert!(r.due(&failed, t0 + Duration::from_secs(12)).is_empty());
    }
}
