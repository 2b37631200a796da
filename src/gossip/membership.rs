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
//!
//! The view is keyed by name, and a name belongs to one node ID at a time
//! (see [`view`] for the rule): a second node claiming a live member's name
//! from another address is left out of the view and reported as a
//! [`Refusal`], so the members list, the catalog (which the leader
//! reconciles from this view) and DNS keep the real member.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use foca::{BroadcastHandler, Invalidates, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    /// The node ID: what the node is (the name is what it is called).
    pub node_id: Uuid,
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
            node_id: id.node_id(),
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

/// A claim to a name that another node holds: the claimant is left out of
/// the view.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refusal {
    /// The name claimed.
    pub name: String,
    /// The node that holds it.
    pub holder_id: Uuid,
    /// Where the holder gossips.
    pub holder_addr: SocketAddr,
    /// The node refused.
    pub claimant_id: Uuid,
    /// Where the claimant gossips.
    pub claimant_addr: SocketAddr,
    /// The claimant's process, to tell one claim from the next.
    pub claimant_generation: u64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node name {:?} is reserved by node {} ({}); node {} ({}) claiming it is refused",
            self.name, self.holder_id, self.holder_addr, self.claimant_id, self.claimant_addr
        )
    }
}

/// What [`view`] decides: the members one per name, and the claims it
/// refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// One member per name, sorted by name.
    pub members: Vec<Member>,
    /// Nodes left out because another node holds their name: the live
    /// ones, and those that came after the holder and are down already.
    pub refused: Vec<Refusal>,
}

fn is_live(m: &Member) -> bool {
    matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect)
}

/// The members, this one included, one per name, sorted by name.
///
/// Who speaks for a name:
/// - While any process under the name is live (alive or suspect), the name
///   belongs to the node ID of the live process that started first
///   (smallest generation, then address): the node that held the name when
///   another came along. Of that node's live processes the newest speaks
///   (a node moved to another address is in foca's list twice for a while).
///   Live processes of other node IDs are refused (and reported, as are
///   those that came later and are down already). The same address cannot
///   hold two processes (foca keeps the newer one), so a restart in place,
///   even with a wiped data directory and so a new node ID, simply replaces
///   the old process.
/// - When none is live, the newest process speaks, as failed or left: a
///   node that failed or left may be replaced by another.
///
/// The rule reads only what every member gossips, so every member that
/// knows the same processes decides the same way, whatever the order it
/// learned them in. Generations are start times (wall-clock milliseconds),
/// so a newcomer whose clock runs behind by more than the holder's uptime
/// would count as first: machines' clocks are assumed to agree within
/// seconds (NTP).
pub fn view<'a>(sources: Sources<'a, impl Iterator<Item = &'a foca::Member<MemberId>>>) -> View {
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
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = View::default();
    for group in all.chunk_by(|a, b| a.name == b.name) {
        decide(group, &mut out);
    }
    out
}

/// Whether `m` belongs in the same pool as `local`. A WAN pool's members
/// are servers named `node.dc` after their own datacenter; a LAN pool's
/// names are DNS labels, never dotted. So a LAN join pointed at a WAN port
/// (or the reverse) leaves the other pool's members out of the view
/// instead of mixing the two: the leader would otherwise register
/// `s1.dc1` as a node (Consul's merge delegates refuse them too).
pub fn same_pool(local: &str, m: &Member) -> bool {
    if local.contains('.') {
        m.role == Role::Server
            && m.name
                .strip_suffix(m.dc.as_str())
                .and_then(|n| n.strip_suffix('.'))
                .is_some_and(|node| !node.is_empty() && !node.contains('.'))
    } else {
        !m.name.contains('.')
    }
}

/// Picks who speaks for one name (see [`view`]) and notes the refused.
fn decide(group: &[Member], out: &mut View) {
    let first_live = group
        .iter()
        .filter(|m| is_live(m))
        .min_by_key(|m| (m.generation, m.addr));
    let Some(first) = first_live else {
        if let Some(newest) = group.iter().max_by_key(|m| (m.generation, m.addr)) {
            out.members.push(newest.clone());
        }
        return;
    };
    let holder = first.node_id;
    let speaker = group
        .iter()
        .filter(|m| is_live(m) && m.node_id == holder)
        .max_by_key(|m| (m.generation, m.addr))
        .unwrap_or(first);
    // Live claimants are left out; one that came after the holder and is
    // already down is reported too, so every member that hears of a claim
    // says so, even one that heard of it only after the claimant gave up.
    // (A down process older than the holder is a node the holder replaced.)
    let after_holder = |m: &Member| (m.generation, m.addr) > (first.generation, first.addr);
    for m in group
        .iter()
        .filter(|m| m.node_id != holder && (is_live(m) || after_holder(m)))
    {
        out.refused.push(Refusal {
            name: m.name.clone(),
            holder_id: holder,
            holder_addr: speaker.addr,
            claimant_id: m.node_id,
            claimant_addr: m.addr,
            claimant_generation: m.generation,
        });
    }
    out.members.push(speaker.clone());
}

/// A digest of what [`view`] would return, computed without allocating, so
/// the driver can rebuild the view only when it changed. Independent of
/// the order foca iterates in (it shuffles its list).
///
/// The driver computes it after every packet and timer, for every member:
/// at 1,000 members SipHash over each identity's names took a quarter of
/// the process's CPU. A process's identity never changes under one
/// (address, generation): a new process, or a renewed identity, takes a
/// new generation. So those two and the status say what the view shows,
/// and a multiply-xorshift mix of them is enough.
pub fn digest<'a>(sources: Sources<'a, impl Iterator<Item = &'a foca::Member<MemberId>>>) -> u64 {
    let hash_one = |id: &MemberId, status: MemberStatus| {
        let addr = match id.addr() {
            SocketAddr::V4(a) => u64::from(a.ip().to_bits()),
            SocketAddr::V6(a) => {
                let bits = a.ip().to_bits();
                (bits as u64) ^ ((bits >> 64) as u64).rotate_left(17)
            }
        };
        let place = mix((addr << 16) ^ u64::from(id.addr().port()));
        mix(place ^ mix(id.generation()) ^ (status as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
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

/// A 64-bit finaliser (splitmix64's): every input bit moves every output
/// bit, so sums of mixed members collide only by chance.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(last: u8, name: &str, generation: u64) -> MemberId {
        node(last, name, generation, u128::from(last))
    }

    /// A process of the node with ID `node_id`, on 127.0.1.`last`.
    fn node(last: u8, name: &str, generation: u64, node_id: u128) -> MemberId {
        MemberId::with_generation(
            SocketAddr::from(([127, 0, 1, last], 8301)),
            generation,
            name.into(),
            Uuid::from_u128(node_id),
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
    fn a_lan_pool_and_a_wan_pool_keep_each_others_members_out() {
        let member = |name: &str, dc: &str, role: Role| Member {
            name: name.into(),
            node_id: Uuid::nil(),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            status: MemberStatus::Alive,
            role,
            dc: dc.into(),
            rpc_addr: None,
            generation: 1,
        };
        // The WAN pool: servers named after their own datacenter only.
        assert!(same_pool("s1.dc1", &member("s2.dc2", "dc2", Role::Server)));
        assert!(!same_pool("s1.dc1", &member("s2", "dc1", Role::Server)));
        assert!(!same_pool("s1.dc1", &member("c1.dc1", "dc1", Role::Client)));
        assert!(!same_pool("s1.dc1", &member("s2.dc1", "dc2", Role::Server)));
        assert!(!same_pool("s1.dc1", &member(".dc1", "dc1", Role::Server)));
        // The LAN pool: undotted names, clients and servers alike.
        assert!(same_pool("s1", &member("c1", "dc1", Role::Client)));
        assert!(!same_pool("s1", &member("s2.dc2", "dc2", Role::Server)));
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
        let v = view(sources(&local, &members, &departures)).members;
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
        let v = view(sources(&local, &members, &departures)).members;
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
                Uuid::from_u128(2),
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
            let v = view(sources(&local, &members, &departures)).members;
            let b: Vec<_> = v.iter().filter(|m| m.name == "b").collect();
            assert_eq!(b.len(), 1, "{v:?}");
            assert_eq!((b[0].addr.port(), b[0].status), (9301, MemberStatus::Alive));
        }
    }

    fn speaker<'v>(v: &'v View, name: &str) -> &'v Member {
        let named: Vec<_> = v.members.iter().filter(|m| m.name == name).collect();
        assert_eq!(named.len(), 1, "{v:?}");
        named[0]
    }

    #[test]
    fn a_second_node_claiming_a_live_members_name_is_refused() {
        let local = id(1, "a", 1);
        let departures = Departures::default();
        // s3 (node 30) has run since generation 5; node 99 claims the name
        // later from another address.
        let real = foca::Member::new(node(3, "s3", 5, 30), 0, State::Alive);
        let impostor = foca::Member::new(node(9, "s3", 8, 99), 0, State::Alive);
        for members in [
            [real.clone(), impostor.clone()],
            [impostor.clone(), real.clone()],
        ] {
            let v = view(sources(&local, &members, &departures));
            let s3 = speaker(&v, "s3");
            assert_eq!(
                (s3.node_id, s3.addr.ip()),
                (Uuid::from_u128(30), real.id().addr().ip())
            );
            assert_eq!(v.refused.len(), 1);
            let r = &v.refused[0];
            assert_eq!(
                (r.claimant_id, r.claimant_addr),
                (Uuid::from_u128(99), impostor.id().addr())
            );
            assert_eq!(
                (r.holder_id, r.holder_addr),
                (Uuid::from_u128(30), real.id().addr())
            );
            let text = r.to_string();
            assert!(
                text.contains("\"s3\" is reserved by node 00000000-0000-0000-0000-00000000001e"),
                "{text}"
            );
        }
        // A claimant already gone is still reported, not published.
        let gone = foca::Member::new(node(9, "s3", 8, 99), 0, State::Down);
        let v = view(sources(&local, &[real.clone(), gone], &departures));
        assert_eq!(speaker(&v, "s3").node_id, Uuid::from_u128(30));
        assert_eq!(v.refused.len(), 1);
        // A suspect holder still holds: suspicion is not failure.
        let suspect = foca::Member::new(node(3, "s3", 5, 30), 1, State::Suspect);
        let v = view(sources(&local, &[suspect, impostor.clone()], &departures));
        assert_eq!(speaker(&v, "s3").node_id, Uuid::from_u128(30));
        // The impostor's own view: it is the one refused, and left out.
        let own = view(Sources {
            local: impostor.id(),
            local_left: false,
            members: [real.clone()].iter(),
            departures: &departures,
        });
        assert_eq!(speaker(&own, "s3").node_id, Uuid::from_u128(30));
        assert_eq!(own.refused[0].claimant_addr, impostor.id().addr());
    }

    #[test]
    fn a_failed_or_departed_members_name_may_be_taken_by_another_node() {
        let local = id(1, "a", 1);
        let departures = Departures::default();
        let old = node(3, "s3", 5, 30);
        let newcomer = foca::Member::new(node(9, "s3", 8, 99), 0, State::Alive);
        let failed = [
            foca::Member::new(old.clone(), 0, State::Down),
            newcomer.clone(),
        ];
        let v = view(sources(&local, &failed, &departures));
        assert_eq!(speaker(&v, "s3").node_id, Uuid::from_u128(99));
        assert!(v.refused.is_empty());
        departures.record(LeaveNotice::of(&old));
        let v = view(sources(&local, &failed, &departures));
        assert_eq!(speaker(&v, "s3").node_id, Uuid::from_u128(99));
        // Both gone: the newest process speaks, as today.
        let both_down = [
            foca::Member::new(old, 0, State::Down),
            foca::Member::new(node(9, "s3", 8, 99), 0, State::Down),
        ];
        let v = view(sources(&local, &both_down, &departures));
        assert_eq!(speaker(&v, "s3").node_id, Uuid::from_u128(99));
    }

    #[test]
    fn a_restart_in_place_with_a_new_node_id_replaces_the_old_process() {
        // foca keeps one process per address, the newer: a server whose data
        // directory was wiped comes back on its address with a new node ID,
        // and that process is the only one under the name.
        let local = id(1, "a", 1);
        let departures = Departures::default();
        let back = [foca::Member::new(node(3, "s3", 9, 31), 0, State::Alive)];
        let v = view(sources(&local, &back, &departures));
        assert_eq!(speaker(&v, "s3").node_id, Uuid::from_u128(31));
        assert!(v.refused.is_empty());
        // The same node moved to another address: the newer process speaks,
        // and nobody is refused (it is one node).
        let moved = [
            foca::Member::new(node(3, "s3", 5, 30), 0, State::Alive),
            foca::Member::new(node(4, "s3", 9, 30), 0, State::Alive),
        ];
        let v = view(sources(&local, &moved, &departures));
        assert_eq!(speaker(&v, "s3").addr, moved[1].id().addr());
        assert!(v.refused.is_empty());
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
