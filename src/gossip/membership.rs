//! The membership as the rest of the agent sees it, and how a graceful
//! leave is told apart from a failure.
//!
//! foca knows three states: alive, suspect and down. Down covers both a
//! member that crashed and one that left on purpose, but the leader must
//! treat them differently (a failed node stays in the catalog with a
//! critical `serfHealth` check; a node that left is deregistered). So a
//! member that leaves first puts a departure notice into foca's custom
//! broadcasts, which spread epidemically like foca's own updates; every
//! member records the notices it hears, and reports a down member with a
//! matching notice as [`MemberStatus::Left`], any other down member as
//! [`MemberStatus::Failed`].

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use foca::{BroadcastHandler, Invalidates, State};
use serde::{Deserialize, Serialize};

use super::identity::{MemberId, Role};

/// How a member is doing, as far as this member knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberStatus {
    /// Answering probes.
    Alive,
    /// A probe failed; it has until the suspicion timeout to refute.
    Suspect,
    /// Declared down without having said goodbye.
    Failed,
    /// Left the pool gracefully.
    Left,
}

/// One member of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// The node name.
    pub name: String,
    /// The gossip address.
    pub addr: SocketAddr,
    /// Alive, suspect, failed or left.
    pub status: MemberStatus,
    /// Server or client.
    pub role: Role,
    /// The datacenter.
    pub dc: String,
    /// The server RPC address (servers only).
    pub rpc_addr: Option<SocketAddr>,
    /// The generation of the process; a restart makes a larger one.
    pub generation: u64,
}

impl Member {
    fn new(id: &MemberId, status: MemberStatus) -> Self {
        Self {
            name: id.name().to_owned(),
            addr: id.addr(),
            status,
            role: id.role(),
            dc: id.dc().to_owned(),
            rpc_addr: id.rpc_addr(),
            generation: id.generation(),
        }
    }
}

/// How many departures are remembered at most: more than any pool has
/// members, and a bound on what a flood of notices can make us hold.
const MAX_DEPARTURES: usize = 4096;

/// The departure notice gossiped by a leaving member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveNotice {
    /// The gossip address of the member that left.
    pub addr: SocketAddr,
    /// The generation that left.
    pub generation: u64,
}

impl LeaveNotice {
    /// The notice for `id`.
    pub fn of(id: &MemberId) -> Self {
        Self {
            addr: id.addr(),
            generation: id.generation(),
        }
    }

    /// The bytes foca carries.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a SocketAddr and a u64 into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }
}

/// The departures this member has heard of, shared by foca's broadcast
/// handler (which records them) and the driver (which reads them).
#[derive(Debug, Clone, Default)]
pub struct Departures {
    /// Address → the largest generation known to have left from it.
    inner: Arc<Mutex<HashMap<SocketAddr, u64>>>,
}

impl Departures {
    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, u64>> {
        // Only one task touches this; a poisoned lock still holds a
        // consistent map (every update is a single insert or remove).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a notice; true if it is news.
    pub fn record(&self, notice: LeaveNotice) -> bool {
        let mut map = self.lock();
        if map
            .get(&notice.addr)
            .is_some_and(|g| *g >= notice.generation)
        {
            return false;
        }
        if map.len() >= MAX_DEPARTURES && !map.contains_key(&notice.addr) {
            let oldest = map.iter().min_by_key(|(_, g)| **g).map(|(a, _)| *a);
            if let Some(addr) = oldest {
                map.remove(&addr);
            }
        }
        map.insert(notice.addr, notice.generation);
        true
    }

    /// Whether `id`'s process (or a later one on its address) left.
    pub fn has_left(&self, id: &MemberId) -> bool {
        self.lock()
            .get(&id.addr())
            .is_some_and(|g| *g >= id.generation())
    }
}

/// The key foca keeps a departure notice under while spreading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepartureKey(SocketAddr);

impl Invalidates for DepartureKey {
    // Only news reaches foca (see `receive_item`), so a newer notice for the
    // same address replaces the one still being spread.
    fn invalidates(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// A custom broadcast that is not a departure notice.
#[derive(Debug, thiserror::Error)]
#[error("malformed departure notice")]
pub struct MalformedNotice;

/// foca's broadcast handler: departure notices only.
#[derive(Debug, Clone, Default)]
pub struct DepartureHandler(pub Departures);

impl BroadcastHandler<MemberId> for DepartureHandler {
    type Key = DepartureKey;
    type Error = MalformedNotice;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&MemberId>,
    ) -> Result<Option<DepartureKey>, MalformedNotice> {
        let Ok((notice, [])) = postcard::take_from_bytes::<LeaveNotice>(data) else {
            return Err(MalformedNotice);
        };
        Ok(self.0.record(notice).then_some(DepartureKey(notice.addr)))
    }
}

/// Everything a membership view is made from.
pub struct Sources<'a, I> {
    /// This member's identity.
    pub local: &'a MemberId,
    /// Whether this member has left.
    pub local_left: bool,
    /// foca's full membership state, down members included.
    pub members: I,
    /// The departures heard of.
    pub departures: &'a Departures,
}

fn status(state: State, id: &MemberId, departures: &Departures) -> MemberStatus {
    match state {
        State::Alive => MemberStatus::Alive,
        State::Suspect => MemberStatus::Suspect,
        State::Down if departures.has_left(id) => MemberStatus::Left,
        State::Down => MemberStatus::Failed,
    }
}

/// The members, this one included, one per name, sorted by name. A node
/// restarted on another address is in foca's list twice for a while (the
/// old process down, the new one alive); the process with the larger
/// generation, the newer one, speaks for the node.
pub fn view<'a>(
    sources: Sources<'a, impl Iterator<Item = &'a foca::Member<MemberId>>>,
) -> Vec<Member> {
    let local_status = if sources.local_left {
        MemberStatus::Left
    } else {
        MemberStatus::Alive
    };
    let mut all: Vec<Member> = std::iter::once(Member::new(sources.local, local_status))
        .chain(
            sources
                .members
                .map(|m| Member::new(m.id(), status(m.state(), m.id(), sources.departures))),
        )
        .collect();
    // Newest first within a name, so the dedup keeps it.
    all.sort_by(|a, b| (&a.name, b.generation).cmp(&(&b.name, a.generation)));
    all.dedup_by(|later, kept| later.name == kept.name);
    all
}

/// A digest of what [`view`] would return, computed without allocating, so
/// the driver can rebuild the view only when it changed. Independent of
/// the order foca iterates in (it shuffles its list).
pub fn digest<'a>(sources: Sources<'a, impl Iterator<Item = &'a foca::Member<MemberId>>>) -> u64 {
    let hash_one = |id: &MemberId, status: MemberStatus| {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        status.hash(&mut h);
        h.finish()
    };
    let local_status = if sources.local_left {
        MemberStatus::Left
    } else {
        MemberStatus::Alive
    };
    sources
        .members
        .fold(hash_one(sources.local, local_status), |acc, m| {
            acc.wrapping_add(hash_one(
                m.id(),
                status(m.state(), m.id(), sources.departures),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(last: u8, name: &str, generation: u64) -> MemberId {
        MemberId::with_generation(
            SocketAddr::from(([127, 0, 1, last], 8301)),
            generation,
            name.into(),
            Role::Client,
            "dc1".into(),
            None,
        )
        .unwrap()
    }

    fn sources<'a>(
        local: &'a MemberId,
        members: &'a [foca::Member<MemberId>],
        departures: &'a Departures,
    ) -> Sources<'a, std::slice::Iter<'a, foca::Member<MemberId>>> {
        Sources {
            local,
            local_left: false,
            members: members.iter(),
            departures,
        }
    }

    #[test]
    fn down_is_failed_unless_a_departure_was_heard() {
        let local = id(1, "a", 1);
        let gone = id(2, "b", 5);
        let members = [
            foca::Member::new(gone.clone(), 0, State::Down),
            foca::Member::new(id(3, "c", 1), 2, State::Suspect),
        ];
        let departures = Departures::default();
        let v = view(sources(&local, &members, &departures));
        let statuses: Vec<_> = v.iter().map(|m| (m.name.as_str(), m.status)).collect();
        assert_eq!(
            statuses,
            [
                ("a", MemberStatus::Alive),
                ("b", MemberStatus::Failed),
                ("c", MemberStatus::Suspect)
            ]
        );
        assert!(departures.record(LeaveNotice::of(&gone)));
        let v = view(sources(&local, &members, &departures));
        assert_eq!(v[1].status, MemberStatus::Left);
    }

    #[test]
    fn a_node_back_on_another_address_is_its_newest_process() {
        let local = id(1, "a", 1);
        let old = foca::Member::new(id(2, "b", 5), 0, State::Down);
        let new = foca::Member::new(
            MemberId::with_generation(
                SocketAddr::from(([127, 0, 1, 2], 9301)),
                9,
                "b".into(),
                Role::Client,
                "dc1".into(),
                None,
            )
            .unwrap(),
            0,
            State::Alive,
        );
        let departures = Departures::default();
        for members in [[old.clone(), new.clone()], [new, old]] {
            let v = view(sources(&local, &members, &departures));
            let b: Vec<_> = v.iter().filter(|m| m.name == "b").collect();
            assert_eq!(b.len(), 1, "{v:?}");
            assert_eq!((b[0].addr.port(), b[0].status), (9301, MemberStatus::Alive));
        }
    }

    #[test]
    fn an_older_generations_departure_does_not_mark_a_newer_one_left() {
        let departures = Departures::default();
        departures.record(LeaveNotice::of(&id(2, "b", 5)));
        assert!(!departures.has_left(&id(2, "b", 6)));
        assert!(departures.has_left(&id(2, "b", 4)));
        // Stale and repeated notices are not news.
        assert!(!departures.record(LeaveNotice::of(&id(2, "b", 5))));
        assert!(!departures.record(LeaveNotice::of(&id(2, "b", 3))));
        assert!(departures.record(LeaveNotice::of(&id(2, "b", 6))));
    }

    #[test]
    fn departures_are_bounded() {
        let departures = Departures::default();
        for i in 0..(MAX_DEPARTURES as u64 + 100) {
            let addr = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1));
            departures.record(LeaveNotice {
                addr,
                generation: i + 1,
            });
        }
        assert!(departures.lock().len() <= MAX_DEPARTURES);
    }

    #[test]
    fn handler_spreads_news_only_and_refuses_junk() {
        let mut handler = DepartureHandler::default();
        let notice = LeaveNotice::of(&id(2, "b", 5)).encode();
        assert!(handler.receive_item(&notice, None).unwrap().is_some());
        assert!(handler.receive_item(&notice, None).unwrap().is_none());
        assert!(handler.receive_item(&[0xff], None).is_err());
        let mut long = notice.clone();
        long.push(0);
        assert!(handler.receive_item(&long, None).is_err());
    }

    #[test]
    fn digest_ignores_order_and_sees_status_changes() {
        let local = id(1, "a", 1);
        let b = foca::Member::new(id(2, "b", 1), 0, State::Alive);
        let c = foca::Member::new(id(3, "c", 1), 0, State::Alive);
        let departures = Departures::default();
        let one = [b.clone(), c.clone()];
        let other = [c.clone(), b.clone()];
        let d1 = digest(sources(&local, &one, &departures));
        assert_eq!(d1, digest(sources(&local, &other, &departures)));
        let changed = [b, foca::Member::new(id(3, "c", 1), 0, State::Suspect)];
        assert_ne!(d1, digest(sources(&local, &changed, &departures)));
    }
}
