//! Who a member of the gossip pool is: the identity foca gossips about.
//!
//! An identity is the gossip address plus everything a server needs to know
//! about the member without asking it (name, node ID, role, datacenter, RPC
//! address), and a generation. The node ID (the UUID the agent keeps in its
//! data directory) is what the node *is*: the name is only what it is
//! called, and `membership` refuses a second node ID claiming a live
//! member's name. SWIM never lets an identity declared down come back, so
//! every start of the process, and every [`Identity::renew`] after a false
//! accusation, takes a new, larger generation: the new identity wins the
//! address conflict and replaces the old one at once (foca's `Rename`).
//!
//! Identities arrive from the network inside every packet, so decoding is
//! bounded: strings longer than their limits are refused by the decoder, and
//! the encoded size of any identity that decodes is at most
//! [`MAX_ENCODED_LEN`], which keeps three of them (header source,
//! destination and an indirect-probe target) well inside one datagram.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use foca::Identity;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest node name, in bytes, that an identity may carry.
pub const MAX_NAME_LEN: usize = 128;
/// Longest datacenter name, in bytes, that an identity may carry.
pub const MAX_DC_LEN: usize = 64;
/// Upper bound of an identity's postcard encoding, checked by a test against
/// the largest identity the limits allow (it takes 263 bytes: the node ID
/// adds 16 to what was 247).
pub const MAX_ENCODED_LEN: usize = 272;

/// What a member is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Holds the catalog in Raft and answers RPC.
    Server,
    /// Forwards to servers; runs services and checks.
    Client,
}

/// One incarnation of one member process, as gossiped by foca.
///
/// Two identities with the same gossip address are the same member; the one
/// with the larger generation is the newer process (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "WireMemberId")]
pub struct MemberId {
    /// Where the member's gossip socket listens: foca's `Addr`, unique per
    /// member.
    addr: SocketAddr,
    /// Milliseconds since the Unix epoch at start (or later, see
    /// [`next_generation`]): orders the processes that used this address.
    generation: u64,
    /// The node name, as in the catalog.
    name: String,
    /// The node ID, as raw UUID bytes (16 on the wire, no length prefix).
    node_id: [u8; 16],
    /// Server or client.
    role: Role,
    /// The member's datacenter.
    dc: String,
    /// Where a server answers RPC; `None` for clients, which serve none.
    rpc_addr: Option<SocketAddr>,
}

/// The same fields as [`MemberId`] without the checks: what serde decodes
/// before [`MemberId::try_from`] validates it.
#[derive(Deserialize)]
struct WireMemberId {
    addr: SocketAddr,
    generation: u64,
    name: String,
    node_id: [u8; 16],
    role: Role,
    dc: String,
    rpc_addr: Option<SocketAddr>,
}

/// Why an identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The node name is longer than [`MAX_NAME_LEN`].
    #[error("node name is {0} bytes long, at most {MAX_NAME_LEN} are allowed")]
    NameTooLong(usize),
    /// The datacenter name is longer than [`MAX_DC_LEN`].
    #[error("datacenter name is {0} bytes long, at most {MAX_DC_LEN} are allowed")]
    DcTooLong(usize),
}

impl TryFrom<WireMemberId> for MemberId {
    type Error = IdentityError;

    fn try_from(wire: WireMemberId) -> Result<Self, Self::Error> {
        Self::with_generation(
            wire.addr,
            wire.generation,
            wire.name,
            Uuid::from_bytes(wire.node_id),
            wire.role,
            wire.dc,
            wire.rpc_addr,
        )
    }
}

impl MemberId {
    /// A fresh identity for a process starting now: its generation is larger
    /// than that of any identity this process made before, and (clocks
    /// permitting) than that of any earlier process on this address.
    pub fn new(
        addr: SocketAddr,
        name: impl Into<String>,
        node_id: Uuid,
        role: Role,
        dc: impl Into<String>,
        rpc_addr: Option<SocketAddr>,
    ) -> Result<Self, IdentityError> {
        Self::with_generation(
            addr,
            next_generation(0),
            name.into(),
            node_id,
            role,
            dc.into(),
            rpc_addr,
        )
    }

    /// An identity with an explicit generation (tests, and a process that
    /// persisted its last generation).
    pub fn with_generation(
        addr: SocketAddr,
        generation: u64,
        name: String,
        node_id: Uuid,
        role: Role,
        dc: String,
        rpc_addr: Option<SocketAddr>,
    ) -> Result<Self, IdentityError> {
        if name.len() > MAX_NAME_LEN {
            return Err(IdentityError::NameTooLong(name.len()));
        }
        if dc.len() > MAX_DC_LEN {
            return Err(IdentityError::DcTooLong(dc.len()));
        }
        Ok(Self {
            addr,
            generation,
            name,
            node_id: node_id.into_bytes(),
            role,
            dc,
            rpc_addr,
        })
    }

    /// A stand-in for a member known only by its address, used as the
    /// destination of a join announcement: foca accepts an announcement by
    /// address alone, and never adds the destination to its member list.
    pub(crate) fn placeholder(addr: SocketAddr) -> Self {
        Self {
            addr,
            generation: 0,
            name: String::new(),
            node_id: [0; 16],
            role: Role::Client,
            dc: String::new(),
            rpc_addr: None,
        }
    }

    /// The same identity under another generation.
    pub(crate) fn with_generation_of(self, generation: u64) -> Self {
        Self { generation, ..self }
    }

    /// The gossip address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The generation: larger is newer.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node ID: what the node is, whatever it is called.
    pub fn node_id(&self) -> Uuid {
        Uuid::from_bytes(self.node_id)
    }

    /// Server or client.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The datacenter.
    pub fn dc(&self) -> &str {
        &self.dc
    }

    /// The server RPC address, for servers.
    pub fn rpc_addr(&self) -> Option<SocketAddr> {
        self.rpc_addr
    }

    /// What decides an address conflict: the generation first; the rest
    /// only makes the order total, so two different identities with one
    /// generation (a misconfiguration) still resolve the same way everywhere.
    fn conflict_key(&self) -> (u64, &str, [u8; 16], &str, Role, Option<SocketAddr>) {
        (
            self.generation,
            &self.name,
            self.node_id,
            &self.dc,
            self.role,
            self.rpc_addr,
        )
    }
}

impl Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: next_generation(self.generation),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.conflict_key() > adversary.conflict_key()
    }
}

/// The last generation this process handed out, so that two identities made
/// within one millisecond still differ.
static LAST_GENERATION: AtomicU64 = AtomicU64::new(0);

/// A generation larger than `after`, than every generation this process made
/// before, and at least the current wall-clock time in milliseconds. The
/// clock is what orders a restarted process after its previous life; the
/// counter covers clocks that step back and several identities in one
/// process.
pub fn next_generation(after: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut last = LAST_GENERATION.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1)).max(after.saturating_add(1));
        match LAST_GENERATION.compare_exchange_weak(
            last,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> MemberId {
        MemberId::new(
            "127.0.0.1:8301".parse().unwrap(),
            name,
            Uuid::from_u128(0x1234),
            Role::Server,
            "dc1",
            Some("127.0.0.1:8300".parse().unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn codec_round_trip_keeps_every_field() {
        let original = id("web1");
        let bytes = postcard::to_stdvec(&original).unwrap();
        let decoded: MemberId = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, original);
        assert_eq!(decoded.name(), "web1");
        assert_eq!(decoded.dc(), "dc1");
        assert_eq!(decoded.role(), Role::Server);
        assert_eq!(decoded.node_id(), Uuid::from_u128(0x1234));
    }

    #[test]
    fn two_nodes_with_one_generation_on_one_address_differ_by_node_id() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let make = |id| {
            MemberId::with_generation(addr, 7, "a".into(), id, Role::Client, "dc1".into(), None)
                .unwrap()
        };
        let (a, b) = (make(Uuid::from_u128(1)), make(Uuid::from_u128(2)));
        assert_ne!(a, b);
        assert_ne!(a.win_addr_conflict(&b), b.win_addr_conflict(&a));
    }

    #[test]
    fn largest_allowed_identity_fits_the_encoded_bound() {
        let v6: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        let big = MemberId::with_generation(
            v6,
            u64::MAX,
            "n".repeat(MAX_NAME_LEN),
            Uuid::from_u128(u128::MAX),
            Role::Client,
            "d".repeat(MAX_DC_LEN),
            Some(v6),
        )
        .unwrap();
        let len = postcard::to_stdvec(&big).unwrap().len();
        assert!(len <= MAX_ENCODED_LEN, "{len} bytes");
        // The bound is tight enough to notice a field that grows.
        assert!(len + 16 > MAX_ENCODED_LEN, "{len} bytes");
    }

    #[test]
    fn decoder_refuses_overlong_names() {
        // Bypass the constructor to put an overlong name on the wire.
        #[derive(Serialize)]
        struct Raw {
            addr: SocketAddr,
            generation: u64,
            name: String,
            node_id: [u8; 16],
            role: Role,
            dc: String,
            rpc_addr: Option<SocketAddr>,
        }
        let raw = Raw {
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
            name: "x".repeat(MAX_NAME_LEN + 1),
            node_id: [7; 16],
            role: Role::Client,
            dc: "dc1".into(),
            rpc_addr: None,
        };
        let bytes = postcard::to_stdvec(&raw).unwrap();
        assert!(postcard::from_bytes::<MemberId>(&bytes).is_err());
        let raw = Raw {
            name: "ok".into(),
            dc: "d".repeat(MAX_DC_LEN + 1),
            ..raw
        };
        let bytes = postcard::to_stdvec(&raw).unwrap();
        assert!(postcard::from_bytes::<MemberId>(&bytes).is_err());
    }

    #[test]
    fn decoding_garbage_and_truncations_never_panics() {
        let bytes = postcard::to_stdvec(&id("web1")).unwrap();
        for cut in 0..bytes.len() {
            assert!(postcard::from_bytes::<MemberId>(&bytes[..cut]).is_err());
        }
        // A deterministic spread of junk: every byte value in every position
        // of a short buffer, and a length prefix promising far more than is
        // there.
        for pos in 0..bytes.len() {
            for value in 0..=u8::MAX {
                let mut junk = bytes.clone();
                junk[pos] = value;
                let _ = postcard::from_bytes::<MemberId>(&junk);
            }
        }
        let _ = postcard::from_bytes::<MemberId>(&[0, 127, 0, 0, 1, 1, 1, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn renewed_identity_wins_the_conflict_with_its_previous_self() {
        let old = id("web1");
        let new = old.renew().unwrap();
        assert!(new.generation() > old.generation());
        assert_eq!(Identity::addr(&new), Identity::addr(&old));
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn a_restart_takes_a_larger_generation() {
        let first = id("web1");
        let restarted = id("web1");
        assert!(restarted.generation() > first.generation());
        assert!(restarted.win_addr_conflict(&first));
    }

    #[test]
    fn equal_generations_still_resolve_one_way() {
        let a = MemberId::with_generation(
            "127.0.0.1:1".parse().unwrap(),
            7,
            "a".into(),
            Uuid::from_u128(1),
            Role::Client,
            "dc1".into(),
            None,
        )
        .unwrap();
        let b = MemberId::with_generation(
            "127.0.0.1:1".parse().unwrap(),
            7,
            "b".into(),
            Uuid::from_u128(1),
            Role::Client,
            "dc1".into(),
            None,
        )
        .unwrap();
        assert_ne!(a.win_addr_conflict(&b), b.win_addr_conflict(&a));
    }

    #[test]
    fn constructor_refuses_overlong_names() {
        let addr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            MemberId::new(
                addr,
                "x".repeat(200),
                Uuid::nil(),
                Role::Client,
                "dc1",
                None
            ),
            Err(IdentityError::NameTooLong(200))
        );
        assert_eq!(
            MemberId::new(addr, "x", Uuid::nil(), Role::Client, "d".repeat(65), None),
            Err(IdentityError::DcTooLong(65))
        );
    }
}
