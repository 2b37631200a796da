//! openraft's type configuration for trellis: what a log entry carries, how
//! a server is named in Raft, and short names for the openraft types that
//! consensus and the Raft request family use. It
//! lives with the wire types because Raft's messages carry it: consensus
//! builds on it, and server RPC needs nothing from consensus to encode it.

use std::borrow::Cow;
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::{self, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::catalog::{Command, Outcome, Time};
use crate::store::format::{CURRENT, FormatError, Version};

/// What one log entry carries: the commands proposed together while the
/// previous entry was being committed.
///
/// openraft 0.9 appends one entry at a time on the leader and waits for it
/// to be flushed before appending the next, so group commit has to happen
/// before Raft: one entry, one fsync, many commands. The commands apply in
/// order at the entry's index.
///
/// The batch also carries the leader's clock when it proposed the entry
/// ([`Time`]): sessions' deadlines, lock-delays and tombstones are dated by
/// it, so every server applies the entry the same way.
///
/// Its serde form says its format: `(version, postcard bytes of the
/// body)`, so an entry on disk or in AppendEntries is decoded by the
/// version it was written in, and one from a newer build is refused rather
/// than misread (`store::format`). The body is `(time, commands)` since
/// format 3; format 2's was the commands alone, read with time 0. Format
/// 4 appended the ACL commands, so a format 3 body reads unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// When the leader proposed it.
    time: Time,
    /// The commands, in order; shared by the log's decoded tail, every
    /// read of it (replication, apply) and the replica's history's newest
    /// entries, never copied.
    commands: Arc<[Command]>,
}

impl Batch {
    /// Decodes a batch written in format `version`.
    fn decode(version: Version, body: &[u8]) -> Result<Self, String> {
        let commands = |e| format!("log entry commands: {e}");
        match version {
            CURRENT => postcard::from_bytes::<(Time, Vec<Command>)>(body)
                .map(|(time, commands)| Self::from(commands).at(time))
                .map_err(commands),
            // Formats 3 and 4's batches are format 5's: the ACL and the
            // prepared query commands came after their variants.
            3 | 4 => postcard::from_bytes::<(Time, Vec<Command>)>(body)
                .map(|(time, commands)| Self::from(commands).at(time))
                .map_err(commands),
            // Format 2 commands are a prefix of format 3's variants.
            2 => postcard::from_bytes::<Vec<Command>>(body)
                .map(Self::from)
                .map_err(commands),
            found => Err(FormatError::unreadable("a log entry batch", found).to_string()),
        }
    }

    /// The same commands, dated `time`.
    pub fn at(self, time: Time) -> Self {
        Self { time, ..self }
    }

    /// When the leader proposed it (0 before entries carried time).
    pub fn time(&self) -> Time {
        self.time
    }

    /// The commands and the time, for the replica.
    pub fn into_parts(self) -> (Time, Arc<[Command]>) {
        (self.time, self.commands)
    }
}

impl From<Vec<Command>> for Batch {
    fn from(commands: Vec<Command>) -> Self {
        Self {
            time: 0,
            commands: commands.into(),
        }
    }
}

impl FromIterator<Command> for Batch {
    fn from_iter<I: IntoIterator<Item = Command>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Command;
    type IntoIter = std::slice::Iter<'a, Command>;

    fn into_iter(self) -> Self::IntoIter {
        self.commands.iter()
    }
}

/// The body of a batch as bytes, so formats that have them store it as such.
struct Body<'a>(&'a [u8]);

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let body =
            postcard::to_stdvec(&(self.time, &*self.commands)).map_err(ser::Error::custom)?;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&CURRENT)?;
        t.serialize_element(&Body(&body))?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_tuple(2, BatchVisitor)
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a format version and the encoded commands")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
        let version: Version = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let body: BodyBuf = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Batch::decode(version, &body.0).map_err(de::Error::custom)
    }
}

/// A batch's body read back: borrowed where the format lends its bytes
/// (postcard does), so the commands decode without a copy.
struct BodyBuf<'de>(Cow<'de, [u8]>);

impl<'de> Deserialize<'de> for BodyBuf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = BodyBuf<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(BodyBuf(Cow::Borrowed(v)))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(BodyBuf(Cow::Owned(v.to_vec())))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(BodyBuf(Cow::Owned(v)))
    }

    /// Formats without a bytes type (JSON) write a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(BodyBuf(Cow::Owned(v)))
    }
}

/// What applying a [`Batch`] produced: one [`Outcome`] per command, in order.
pub type Outcomes = Vec<Outcome>;

openraft::declare_raft_types!(
    /// Raft over the catalog: entries carry [`Batch`]es of commands, applying
    /// one yields their [`Outcomes`], servers are `u64` ids whose node record
    /// is the server RPC address.
    pub TypeConfig:
        D = Batch,
        R = Outcomes,
        NodeId = RaftId,
        Node = RaftMember,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A server's Raft id: random, chosen at first start and kept in storage.
pub type RaftId = u64;

/// What Raft knows about a server (openraft's node record), kept in the
/// membership configuration so that every server can name its peers and
/// reach them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RaftMember {
    /// The server's node name (`--node`).
    pub name: String,
    /// Its server RPC address.
    pub addr: std::net::SocketAddr,
}

/// openraft asks for a default node; it is never a real server's.
impl Default for RaftMember {
    fn default() -> Self {
        Self {
            name: String::new(),
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

impl RaftMember {
    /// A server named `name` reachable at `addr`.
    pub fn new(name: impl Into<String>, addr: std::net::SocketAddr) -> Self {
        Self {
            name: name.into(),
            addr,
        }
    }
}

impl fmt::Display for RaftMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;

/// A log id (term, leader, index).
pub type LogId = openraft::LogId<RaftId>;

/// A vote.
pub type Vote = openraft::Vote<RaftId>;

/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<RaftId, RaftMember>;

/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// The membership config last applied, with the log id that carried it.
pub type StoredMembership = openraft::StoredMembership<RaftId, RaftMember>;

/// openraft's error types instantiated for [`TypeConfig`]: the one its
/// storage traits return.
pub mod typ {
    use super::RaftId;

    /// A storage failure as openraft reports it.
    pub type StorageError = openraft::StorageError<RaftId>;
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, EntryPayload, Membership};

    use super::*;
    use crate::catalog::{
        Behavior, CheckRegistration, Deregistration, HealthStatus, KvOp, KvVerb, Registration,
        ServiceAddress, ServiceCheck, ServiceRegistration, Session, SessionOp, TxnOp, Weights,
    };
    use crate::store::format::assert_golden;

    fn strings<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// A registration with every part set: node, a service with tags, meta,
    /// tagged addresses and weights, and a check.
    fn register() -> Command {
        Command::register(Registration {
            node: "n1".into(),
            id: "id-1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: strings([("lan", "10.0.0.1")]),
            node_meta: strings([("rack", "r1")]).into(),
            skip_node_update: false,
            service: Some(ServiceRegistration {
                id: "web-1".into(),
                service: "web".into(),
                tags: vec!["v1".into(), "primary".into()],
                address: "10.0.0.2".into(),
                tagged_addresses: [(
                    "lan".to_owned(),
                    ServiceAddress {
                        address: "10.0.0.2".into(),
                        port: 80,
                    },
                )]
                .into(),
                meta: strings([("version", "1.2")]).into(),
                port: 8080,
                weights: Some(Weights {
                    passing: 5,
                    warning: 1,
                }),
                enable_tag_override: true,
            }),
            checks: vec![CheckRegistration {
                check_id: "web-alive".into(),
                name: "alive".into(),
                status: HealthStatus::Warning,
                notes: "n".into(),
                output: "o".into(),
                service_id: "web-1".into(),
                kind: "ttl".into(),
            }],
        })
    }

    fn deregister() -> Command {
        Command::deregister(Deregistration {
            node: "n1".into(),
            service_id: "web-1".into(),
            check_id: String::new(),
        })
    }

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        postcard::to_stdvec(value).expect("encode")
    }

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(3, 7), index)
    }

    #[test]
    fn a_registration_encodes_as_format_2() {
        assert_golden(
            "Command::Catalog(CatalogOp::Register(..))",
            &encode(&register()),
            "0000026e310469642d310831302e302e302e310364633101036c616e0831302e302e302e3101047261636b0272310001057765622d310377656202027631077072696d6172790831302e302e302e3201036c616e0831302e302e302e3250010776657273696f6e03312e32903f0105010101097765622d616c69766505616c69766501016e016f057765622d310374746c",
        );
    }

    #[test]
    fn a_deregistration_encodes_as_format_2() {
        assert_golden(
            "Command::Catalog(CatalogOp::Deregister(..))",
            &encode(&deregister()),
            "0001026e31057765622d3100",
        );
    }

    /// The leader's clock in the batches below: 2026-12-04, in ms.
    const TIME: Time = 1_796_400_000_000;

    /// One of each command format 3 added, every field set.
    fn new_commands() -> Vec<Command> {
        let op = KvOp {
            verb: KvVerb::Lock,
            key: "svc/leader".into(),
            value: b"me".to_vec(),
            flags: 42,
            index: 7,
            session: "s-1".into(),
        };
        let session = Session {
            id: "s-1".into(),
            name: "lock".into(),
            node: "n1".into(),
            node_checks: vec!["serfHealth".into()],
            service_checks: vec![ServiceCheck {
                id: "web-alive".into(),
                namespace: "default".into(),
            }],
            lock_delay_ns: 15_000_000_000,
            behavior: Behavior::Delete,
            ttl: "10s".into(),
            ttl_ms: 10_000,
            expires: Some(TIME + 20_000),
            create_index: 3,
            modify_index: 4,
        };
        vec![
            Command::Kv(op.clone()),
            Command::Session(SessionOp::Create(session)),
            Command::Session(SessionOp::Destroy { id: "s-1".into() }),
            Command::Session(SessionOp::Renew { id: "s-1".into() }),
            Command::Session(SessionOp::Expire {
                ids: vec!["s-1".into(), "s-2".into()],
            }),
            Command::Txn(vec![
                TxnOp::Kv(op),
                TxnOp::Kv(KvOp::new(KvVerb::DeleteTree, "svc/")),
            ]),
            Command::ReapTombstones {
                deleted_before: TIME,
            },
        ]
    }

    #[test]
    fn the_prepared_query_commands_encode_as_format_5() {
        use crate::catalog::PreparedQueryOp;
        // The records are covered by the snapshot's golden bytes; this
        // pins the variant's position after format 4's commands.
        let cmd = Command::PreparedQuery(PreparedQueryOp::Delete("q".into()));
        assert_golden(&format!("{cmd:?}"), &encode(&cmd), "06020171");
    }

    #[test]
    fn the_acl_commands_encode_as_format_4() {
        use crate::catalog::AclOp;
        // The records are covered by the snapshot's golden bytes; this
        // pins the variant's position after format 3's commands.
        let cmd = Command::Acl(AclOp::DeleteToken("a".into()));
        assert_golden(&format!("{cmd:?}"), &encode(&cmd), "05030161");
        let cmd = Command::Acl(AclOp::DeletePolicy("p".into()));
        assert_golden(&format!("{cmd:?}"), &encode(&cmd), "05050170");
    }

    #[test]
    fn the_commands_of_kv_and_sessions_encode_as_format_3() {
        let golden = [
            "01020a7376632f6c6561646572026d652a0703732d31",
            "020003732d31046c6f636b026e31010a736572664865616c746801097765622d616c6976650764656661756c7480acc7f0370103313073904e01a0f4a38ea4340304",
            "020103732d31",
            "020203732d31",
            "02030203732d3103732d32",
            "030200020a7376632f6c6561646572026d652a0703732d31000b047376632f00000000",
            "0480d8a28ea434",
        ];
        for (cmd, hex) in new_commands().iter().zip(golden) {
            assert_golden(&format!("{cmd:?}"), &encode(cmd), hex);
        }
    }

    #[test]
    fn a_batch_encodes_its_version_then_its_time_and_commands_as_bytes() {
        let batch = Batch::from(vec![register(), deregister()]).at(TIME);
        let bytes = encode(&batch);
        assert_golden(
            "Batch",
            &bytes,
            "05a40180d8a28ea434020000026e310469642d310831302e302e302e310364633101036c616e0831302e302e302e3101047261636b0272310001057765622d310377656202027631077072696d6172790831302e302e302e3201036c616e0831302e302e302e3250010776657273696f6e03312e32903f0105010101097765622d616c69766505616c69766501016e016f057765622d310374746c0001026e31057765622d3100",
        );
        // The version first, then `(time, commands)` as a byte string.
        let body = encode(&(TIME, vec![register(), deregister()]));
        let (version, rest): (Version, &[u8]) = postcard::take_from_bytes(&bytes).expect("version");
        assert_eq!(version, CURRENT);
        let (inner, rest): (&[u8], &[u8]) = postcard::take_from_bytes(rest).expect("body");
        assert_eq!((inner, rest), (body.as_slice(), &[][..]));
        assert_eq!(
            postcard::from_bytes::<Batch>(&bytes).expect("decode"),
            batch
        );
    }

    /// A batch as format 2 wrote it: version 2, then the commands alone.
    const V2_BATCH: &str = "029e01020000026e310469642d310831302e302e302e310364633101036c616e0831302e302e302e3101047261636b0272310001057765622d310377656202027631077072696d6172790831302e302e302e3201036c616e0831302e302e302e3250010776657273696f6e03312e32903f0105010101097765622d616c69766505616c69766501016e016f057765622d310374746c0001026e31057765622d3100";

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn a_format_2_batch_still_decodes_with_time_0() {
        let batch: Batch = postcard::from_bytes(&unhex(V2_BATCH)).expect("decode");
        assert_eq!(batch.time(), 0);
        assert_eq!(batch, Batch::from(vec![register(), deregister()]));
        // Read back, it is written in the current format.
        assert_eq!(encode(&batch)[0], CURRENT as u8);
    }

    #[test]
    fn log_entries_encode_as_format_5() {
        let normal = Entry {
            log_id: log_id(10),
            payload: EntryPayload::Normal(Batch::from(vec![deregister()]).at(TIME)),
        };
        assert_golden(
            "a normal entry",
            &encode(&normal),
            "03070a01051380d8a28ea434010001026e31057765622d3100",
        );
        let with_kv = Entry {
            log_id: log_id(13),
            payload: EntryPayload::Normal(Batch::from(new_commands()).at(TIME)),
        };
        assert_golden(
            "an entry of KV and session commands",
            &encode(&with_kv),
            "03070d0105a00180d8a28ea4340701020a7376632f6c6561646572026d652a0703732d31020003732d31046c6f636b026e31010a736572664865616c746801097765622d616c6976650764656661756c7480acc7f0370103313073904e01a0f4a38ea4340304020103732d31020203732d3102030203732d3103732d32030200020a7376632f6c6561646572026d652a0703732d31000b047376632f000000000480d8a28ea434",
        );
        let blank = Entry {
            log_id: log_id(11),
            payload: EntryPayload::Blank,
        };
        assert_golden("a blank entry", &encode(&blank), "03070b00");
        let node = RaftMember::new("s1", std::net::SocketAddr::from(([127, 0, 0, 1], 8300)));
        let membership = Entry {
            log_id: log_id(12),
            payload: EntryPayload::Membership(Membership::new(
                vec![BTreeSet::from([7])],
                BTreeMap::from([(7, node)]),
            )),
        };
        assert_golden(
            "a membership entry",
            &encode(&membership),
            "03070c020101070107027331007f000001ec40",
        );
    }

    #[test]
    fn a_format_2_normal_entry_still_decodes_with_time_0() {
        let entry: Entry =
            postcard::from_bytes(&unhex("03070a01020d010001026e31057765622d3100")).expect("decode");
        assert_eq!(entry.log_id, log_id(10));
        assert_eq!(
            entry.payload,
            EntryPayload::Normal(Batch::from(vec![deregister()]))
        );
    }

    #[test]
    fn a_batch_round_trips_in_postcard_and_json() {
        let batch: Batch = [register(), deregister()].into_iter().collect();
        let back: Batch = postcard::from_bytes(&encode(&batch)).expect("postcard");
        assert_eq!(back, batch);
        let json = serde_json::to_string(&batch).expect("json");
        let back: Batch = serde_json::from_str(&json).expect("json back");
        assert_eq!(back, batch);
        let read: Vec<&Command> = (&back).into_iter().collect();
        assert_eq!(read, [&register(), &deregister()]);
    }

    #[test]
    fn a_batch_in_another_format_version_is_refused() {
        let commands = encode(&vec![deregister()]);
        for version in [CURRENT + 1, 1] {
            let bytes = encode(&(version, commands.as_slice()));
            assert!(postcard::from_bytes::<Batch>(&bytes).is_err());
            let json = serde_json::to_string(&(version, commands.as_slice())).expect("json");
            let err = serde_json::from_str::<Batch>(&json).expect_err("refused");
            let text = err.to_string();
            assert!(
                text.contains(&format!("format version {version}"))
                    && text.contains(&format!("reads version {CURRENT}")),
                "{text}"
            );
        }
    }
}
