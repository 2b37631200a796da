//! The Raft log and vote: kept in memory for reads, made durable in redb
//! through the group-committing [`Writer`].
//!
//! Every change is applied to the in-memory mirror first, so readers (the
//! replication tasks, the state machine's apply loop) see it the moment
//! `append` returns, as openraft requires, without ever touching the disk or
//! racing the writer. The change is then queued to the writer in call order;
//! because the writer commits a prefix of that queue atomically, the disk
//! always holds a prefix of the changes openraft made, which is a state Raft
//! can restart from. Appends are acknowledged (`LogFlushed`) and votes return
//! only after their transaction committed with immediate durability.
//!
//! The mirror holds only the unpurged tail of the log, which snapshot
//! compaction keeps to a few thousand entries. Entries more than
//! [`DECODED`] behind the commit index (what a follower far behind, a
//! restart's replay or a recovery reads, and no one else) are kept as the
//! bytes they are stored as and decoded when read: at 100,000 instances
//! the decoded tail was about as large as the catalog itself, its bytes are
//! a seventh of that (`benches/scale`), and a restart no longer decodes
//! entries its snapshot already holds.
//!
//! Entries the leader makes are also handed to [`Early`] as they are taken,
//! so that they travel to the followers while the leader's own fsync runs
//! (see `early`).
//!
//! Entries from a data dir of an older format (1, or 2 before entries
//! carried the leader's time) are re-encoded once, at open, by
//! [`upgrade_entry`] (see `store::format`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, EntryPayload, LogState, Membership, RaftLogReader, StorageIOError};

use super::early::Early;
use super::types::{Entry, LogId, RaftMember, TypeConfig, Vote, typ::StorageError};
use crate::catalog::{
    CheckRegistration, Command, Deregistration, HealthStatus, Registration, ServiceAddress,
    ServiceRegistration, Weights,
};
use crate::store::format::{self, FormatError, Version};
use crate::store::{self, Contents, Done, Op, StoreError, Writer, keys, v1};

/// The log store handed to openraft; clones share the same log.
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    /// What openraft has written so far, including changes still being committed.
    mirror: Arc<Mutex<Mirror>>,
    /// Where the changes go to become durable.
    writer: Writer,
    /// Sends the leader's own entries to the followers as they are
    /// appended; set once Raft runs (it needs openraft's metrics).
    early: Arc<OnceLock<Arc<Early>>>,
}

/// How many entries up to the commit index stay decoded; older ones are
/// decoded when read.
const DECODED: u64 = 64;

#[derive(Debug, Default)]
struct Mirror {
    /// The log after `purged`, by index.
    entries: BTreeMap<u64, Slot>,
    /// Entries below this index hold only their bytes.
    decoded_from: u64,
    /// The last log id removed from the head of the log.
    purged: Option<LogId>,
    /// The vote, as last saved.
    vote: Option<Vote>,
    /// The last committed log id openraft told us about.
    committed: Option<LogId>,
}

/// One entry of the mirror.
#[derive(Debug)]
struct Slot {
    log_id: LogId,
    /// The entry as stored.
    bytes: Box<[u8]>,
    /// The entry itself while it is near the log's head, or when it holds
    /// no commands (blank, membership: small, and recovery looks for the
    /// latter).
    entry: Option<Entry>,
}

impl Slot {
    fn decoded(entry: Entry, bytes: Box<[u8]>) -> Self {
        Self {
            log_id: entry.log_id,
            bytes,
            entry: Some(entry),
        }
    }

    /// The entry, decoded from its bytes unless it is at hand.
    fn entry(&self) -> Result<Entry, StoreError> {
        match &self.entry {
            Some(entry) => Ok(entry.clone()),
            None => store::decode(&self.bytes),
        }
    }

    /// Keeps only the bytes of an entry that holds commands.
    fn shed(&mut self) {
        if matches!(
            self.entry,
            Some(Entry {
                payload: EntryPayload::Normal(_),
                ..
            })
        ) {
            self.entry = None;
        }
    }
}

/// The log id of an encoded entry that holds commands (a normal entry);
/// `None` for a blank or membership entry. Read from the bytes' head
/// without decoding the rest: postcard writes a struct's fields in order,
/// `log_id` first, then the payload's variant number (openraft's
/// `EntryPayload`: Blank, Normal, Membership).
fn stored_normal_log_id(bytes: &[u8]) -> Result<Option<LogId>, StoreError> {
    let (log_id, payload) = postcard::take_from_bytes::<LogId>(bytes)?;
    let (variant, _) = postcard::take_from_bytes::<u32>(payload)?;
    Ok((variant == 1).then_some(log_id))
}

impl Mirror {
    /// Sheds the decoded form of entries more than [`DECODED`] behind the
    /// commit index.
    fn shed_behind_commit(&mut self) {
        let Some(committed) = self.committed else {
            return;
        };
        let below = committed.index.saturating_sub(DECODED);
        if below > self.decoded_from {
            for (_, slot) in self.entries.range_mut(self.decoded_from..below) {
                slot.shed();
            }
            self.decoded_from = below;
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, slot)| slot.log_id)
            .or(self.purged)
    }
}

impl LogStore {
    /// Rebuilds the log from what storage held at start-up.
    pub(crate) fn open(contents: &Contents, writer: Writer) -> Result<Self, StoreError> {
        let purged: Option<LogId> = contents.meta(keys::PURGED)?;
        let committed: Option<LogId> = contents.meta(keys::COMMITTED)?;
        let decoded_from = committed.map_or(0, |c| c.index.saturating_sub(DECODED));
        let mut entries = BTreeMap::new();
        // A purge records its log id before deleting the entries; a crash in
        // between leaves entries the log no longer owns.
        let first_kept = purged.map_or(0, |p| p.index + 1);
        for (index, bytes) in &contents.log {
            if *index < first_kept {
                continue;
            }
            let bytes: Box<[u8]> = bytes.as_slice().into();
            let shed = if *index < decoded_from {
                stored_normal_log_id(&bytes)?
            } else {
                None
            };
            // Entries without commands stay decoded, as when shed.
            let slot = match shed {
                Some(log_id) => Slot {
                    log_id,
                    bytes,
                    entry: None,
                },
                None => Slot::decoded(store::decode::<Entry>(&bytes)?, bytes),
            };
            entries.insert(*index, slot);
        }
        let mirror = Mirror {
            entries,
            decoded_from,
            purged,
            vote: contents.meta(keys::VOTE)?,
            committed,
        };
        Ok(Self {
            mirror: Arc::new(Mutex::new(mirror)),
            writer,
            early: Arc::new(OnceLock::new()),
        })
    }

    /// From now on, entries this server appends as leader are sent to the
    /// followers at once through `early`. Only the first call counts.
    pub(crate) fn send_early(&self, early: Arc<Early>) {
        let _ = self.early.set(early);
    }

    /// The newest configuration in the log's entries, if any.
    pub(crate) fn last_membership(&self) -> Option<Membership<u64, RaftMember>> {
        // Entries without commands are never shed, so no entry is decoded.
        self.mirror()
            .entries
            .values()
            .rev()
            .find_map(|slot| match &slot.entry.as_ref()?.payload {
                EntryPayload::Membership(m) => Some(m.clone()),
                _ => None,
            })
    }

    /// Appends `membership` after the last entry, under that entry's leader,
    /// and waits until it is durable: what a recovery (`peers.json`) puts in
    /// force before Raft starts. Its index, or `None` for a log that never
    /// held an entry (nothing to recover).
    pub(crate) async fn append_configuration(
        &self,
        membership: Membership<u64, RaftMember>,
    ) -> Result<Option<u64>, StoreError> {
        let entry = {
            let Some(last) = self.mirror().last_log_id() else {
                return Ok(None);
            };
            Entry {
                log_id: LogId::new(last.leader_id, last.index + 1),
                payload: EntryPayload::Membership(membership),
            }
        };
        let index = entry.log_id.index;
        let bytes = store::encode(&entry)?;
        let slot = Slot::decoded(entry, bytes.as_slice().into());
        self.mirror().entries.insert(index, slot);
        self.writer.write(Op::Append(vec![(index, bytes)])).await?;
        Ok(Some(index))
    }

    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        // Nothing panics while holding the lock except allocation failure;
        // the mirror is consistent after every statement anyway.
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn write_err(e: StoreError) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mirror = self.mirror();
        mirror
            .entries
            .range(range)
            .map(|(_, slot)| slot.entry())
            .collect::<Result<_, _>>()
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mirror = self.mirror();
        Ok(LogState {
            last_purged_log_id: mirror.purged,
            last_log_id: mirror.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes =
            store::encode(vote).map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.mirror().vote = Some(*vote);
        self.writer
            .write(Op::Put(keys::VOTE, bytes))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.mirror().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let Some(log_id) = committed else {
            return Ok(());
        };
        // Lazy: losing it in a crash only means re-learning the commit index
        // from the leader, so it must not cost an fsync of its own.
        let bytes = store::encode(&log_id).map_err(write_err)?;
        {
            let mut mirror = self.mirror();
            mirror.committed = committed;
            mirror.shed_behind_commit();
        }
        self.writer
            .submit(Op::PutLazy(keys::COMMITTED, bytes), None)
            .await
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.mirror().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in &entries {
            encoded.push((entry.log_id.index, store::encode(entry).map_err(write_err)?));
        }
        let early = self.early.get().filter(|early| {
            entries
                .first()
                .is_some_and(|e| early.leads(&e.log_id.leader_id))
        });
        {
            let mut mirror = self.mirror();
            if let (Some(early), Some(first)) = (early, entries.first()) {
                // The log id the entries follow, as the leader's
                // AppendEntries names it; unknown (not in the mirror) only
                // if the log was compacted past it, and then openraft sends
                // a snapshot rather than these entries anyway.
                let prev = match first.log_id.index.checked_sub(1) {
                    None => Some(None),
                    Some(i) => mirror
                        .entries
                        .get(&i)
                        .map(|slot| Some(slot.log_id))
                        .or_else(|| mirror.purged.filter(|p| p.index == i).map(Some)),
                };
                if let Some(prev) = prev {
                    early.send(prev, &entries, mirror.committed);
                }
            }
            for (entry, (_, bytes)) in entries.into_iter().zip(&encoded) {
                let slot = Slot::decoded(entry, bytes.as_slice().into());
                mirror.entries.insert(slot.log_id.index, slot);
            }
        }
        let done: Done = Box::new(move |result| {
            callback.log_io_completed(result.map_err(std::io::Error::other));
        });
        let op = if encoded.is_empty() {
            Op::Barrier
        } else {
            Op::Append(encoded)
        };
        self.writer.submit(op, Some(done)).await.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.mirror().entries.split_off(&log_id.index);
        self.writer
            .submit(Op::TruncateFrom(log_id.index), None)
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = store::encode(&log_id).map_err(write_err)?;
        {
            let mut mirror = self.mirror();
            let kept = mirror.entries.split_off(&(log_id.index + 1));
            mirror.entries = kept;
            mirror.purged = Some(log_id);
        }
        self.writer
            .submit(Op::Put(keys::PURGED, bytes), None)
            .await
            .map_err(write_err)?;
        self.writer
            .submit(Op::PurgeUpTo(log_id.index), None)
            .await
            .map_err(write_err)
    }
}

/// Re-encodes a log entry of a data dir in format `from` into the current
/// format, for [`format::upgrade`].
pub(crate) fn upgrade_entry(from: Version, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    if (2..=4).contains(&from) {
        // Format 2's batches decode as the current ones with time 0, formats
        // 3 and 4's as they were (formats 4 and 5 only appended commands).
        return store::encode(&store::decode::<Entry>(bytes)?);
    }
    if from != format::UNVERSIONED {
        return Err(FormatError::unreadable("a stored log entry", from).into());
    }
    let old: v1::Entry = store::decode(bytes)?;
    let payload = match old.payload {
        v1::EntryPayload::Blank => EntryPayload::Blank,
        v1::EntryPayload::Normal(commands) => {
            EntryPayload::Normal(commands.into_iter().map(command_from_v1).collect())
        }
        v1::EntryPayload::Membership(m) => EntryPayload::Membership(membership_from_v1(m)),
    };
    store::encode(&Entry {
        log_id: old.log_id,
        payload,
    })
}

/// Raft's membership as version 1 stored it; its shape has not changed.
pub(crate) fn membership_from_v1(m: v1::Membership) -> Membership<u64, RaftMember> {
    let nodes: BTreeMap<u64, RaftMember> = m
        .nodes
        .into_iter()
        .map(|(id, n)| (id, RaftMember::new(n.name, n.addr)))
        .collect();
    Membership::new(m.configs, nodes)
}

/// Version 1's flat commands were the catalog's; they are now its domain's
/// ops. Field by field, so that a change to a registration does not compile
/// until someone decides what it means for old data dirs.
fn command_from_v1(c: v1::Command) -> Command {
    match c {
        v1::Command::Register(r) => Command::register(Registration {
            node: r.node,
            id: r.id,
            address: r.address,
            datacenter: r.datacenter,
            tagged_addresses: r.tagged_addresses,
            node_meta: r.node_meta.into(),
            skip_node_update: r.skip_node_update,
            service: r.service.map(|s| ServiceRegistration {
                id: s.id,
                service: s.service,
                tags: s.tags,
                address: s.address,
                tagged_addresses: s
                    .tagged_addresses
                    .into_iter()
                    .map(|(k, a)| {
                        let a = ServiceAddress {
                            address: a.address,
                            port: a.port,
                        };
                        (k, a)
                    })
                    .collect(),
                meta: s.meta.into(),
                port: s.port,
                weights: s.weights.map(|w| Weights {
                    passing: w.passing,
                    warning: w.warning,
                }),
                enable_tag_override: s.enable_tag_override,
            }),
            checks: r
                .checks
                .into_iter()
                .map(|c| CheckRegistration {
                    check_id: c.check_id,
                    name: c.name,
                    status: match c.status {
                        v1::HealthStatus::Passing => HealthStatus::Passing,
                        v1::HealthStatus::Warning => HealthStatus::Warning,
                        v1::HealthStatus::Critical => HealthStatus::Critical,
                    },
                    notes: c.notes,
                    output: c.output,
                    service_id: c.service_id,
                    kind: c.kind,
                })
                .collect(),
        }),
        v1::Command::Deregister(d) => Command::deregister(Deregistration {
            node: d.node,
            service_id: d.service_id,
            check_id: d.check_id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::rpc::types::Batch;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 0), index)
    }

    fn blank(index: u64) -> (u64, Vec<u8>) {
        let entry = Entry {
            log_id: log_id(index),
            payload: EntryPayload::Blank,
        };
        (index, store::encode(&entry).expect("encode"))
    }

    /// A crash between recording a purge and deleting the entries leaves
    /// them on disk; they are not part of the log any more.
    #[tokio::test]
    async fn entries_up_to_the_purge_point_are_ignored_on_open() {
        let mut contents = Contents {
            log: (1..=4).map(blank).collect(),
            ..Contents::default()
        };
        contents.meta.insert(
            keys::PURGED.into(),
            store::encode(&log_id(2)).expect("encode"),
        );
        let writer = Writer::spawn(store::open(None).expect("open"), 4, None).expect("writer");
        let mut log = LogStore::open(&contents, writer.clone()).expect("log store");

        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(2)));
        assert_eq!(state.last_log_id, Some(log_id(4)));
        let indexes: Vec<u64> = log
            .try_get_log_entries(..)
            .await
            .expect("read")
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(indexes, vec![3, 4]);
        writer.stop().await;
    }

    /// Entries far behind the commit index are kept as their bytes, and
    /// read back as they were written; entries without commands stay
    /// decoded, so recovery finds the configuration without decoding.
    #[tokio::test]
    async fn entries_far_behind_the_commit_are_kept_as_bytes_and_read_back_whole() {
        let entry = |index: u64| Entry {
            log_id: log_id(index),
            payload: if index == 10 {
                EntryPayload::Membership(Membership::new(
                    vec![std::collections::BTreeSet::from([7])],
                    BTreeMap::from([(7, RaftMember::new("s1", ([127, 0, 0, 1], 8300).into()))]),
                ))
            } else {
                EntryPayload::Normal(Batch::from(vec![deregister()]))
            },
        };
        let written: Vec<Entry> = (1..=200).map(entry).collect();
        let mut contents = Contents {
            log: written
                .iter()
                .map(|e| (e.log_id.index, store::encode(e).expect("encode")))
                .collect(),
            ..Contents::default()
        };
        contents.meta.insert(
            keys::COMMITTED.into(),
            store::encode(&log_id(150)).expect("encode"),
        );
        let writer = Writer::spawn(store::open(None).expect("open"), 4, None).expect("writer");
        let mut log = LogStore::open(&contents, writer.clone()).expect("log store");
        let decoded = |log: &LogStore| -> Vec<u64> {
            let mirror = log.mirror();
            mirror
                .entries
                .iter()
                .filter(|(_, slot)| slot.entry.is_some())
                .map(|(index, _)| *index)
                .collect()
        };
        let from = |first: u64| std::iter::once(10).chain(first..=200).collect::<Vec<_>>();
        assert_eq!(decoded(&log), from(150 - DECODED));
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), written);
        assert!(log.last_membership().is_some(), "recovery finds it");

        // The commit moving on sheds what falls behind it.
        log.save_committed(Some(log_id(190))).await.expect("commit");
        assert_eq!(decoded(&log), from(190 - DECODED));
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), written);
        writer.stop().await;
    }

    #[tokio::test]
    async fn an_undecodable_entry_fails_open() {
        let contents = Contents {
            log: vec![(1, vec![0xff, 0xff, 0xff])],
            ..Contents::default()
        };
        let writer = Writer::spawn(store::open(None).expect("open"), 4, None).expect("writer");
        assert!(matches!(
            LogStore::open(&contents, writer.clone()),
            Err(StoreError::Codec(_))
        ));
        writer.stop().await;
    }

    fn strings<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// A version 1 registration with every field set, each to its own value.
    fn v1_register() -> v1::Command {
        v1::Command::Register(v1::Registration {
            node: "n1".into(),
            id: "id-1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: strings([("lan", "10.0.0.1")]),
            node_meta: strings([("rack", "r1")]),
            skip_node_update: true,
            service: Some(v1::ServiceRegistration {
                id: "web-1".into(),
                service: "web".into(),
                tags: vec!["v1".into(), "primary".into()],
                address: "10.0.0.2".into(),
                tagged_addresses: [(
                    "wan".to_owned(),
                    v1::ServiceAddress {
                        address: "10.0.0.3".into(),
                        port: 80,
                    },
                )]
                .into(),
                meta: strings([("version", "1.2")]),
                port: 8080,
                weights: Some(v1::Weights {
                    passing: 5,
                    warning: 2,
                }),
                enable_tag_override: true,
            }),
            checks: vec![v1::CheckRegistration {
                check_id: "web-alive".into(),
                name: "alive".into(),
                status: v1::HealthStatus::Critical,
                notes: "n".into(),
                output: "o".into(),
                service_id: "web-1".into(),
                kind: "ttl".into(),
            }],
        })
    }

    /// [`v1_register`] as the current catalog op.
    fn register() -> Command {
        Command::register(Registration {
            node: "n1".into(),
            id: "id-1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: strings([("lan", "10.0.0.1")]),
            node_meta: strings([("rack", "r1")]).into(),
            skip_node_update: true,
            service: Some(ServiceRegistration {
                id: "web-1".into(),
                service: "web".into(),
                tags: vec!["v1".into(), "primary".into()],
                address: "10.0.0.2".into(),
                tagged_addresses: [(
                    "wan".to_owned(),
                    ServiceAddress {
                        address: "10.0.0.3".into(),
                        port: 80,
                    },
                )]
                .into(),
                meta: strings([("version", "1.2")]).into(),
                port: 8080,
                weights: Some(Weights {
                    passing: 5,
                    warning: 2,
                }),
                enable_tag_override: true,
            }),
            checks: vec![CheckRegistration {
                check_id: "web-alive".into(),
                name: "alive".into(),
                status: HealthStatus::Critical,
                notes: "n".into(),
                output: "o".into(),
                service_id: "web-1".into(),
                kind: "ttl".into(),
            }],
        })
    }

    fn v1_deregister() -> v1::Command {
        v1::Command::Deregister(v1::Deregistration {
            node: "n1".into(),
            service_id: "web-1".into(),
            check_id: "web-alive".into(),
        })
    }

    fn deregister() -> Command {
        Command::deregister(Deregistration {
            node: "n1".into(),
            service_id: "web-1".into(),
            check_id: "web-alive".into(),
        })
    }

    /// The frozen types still encode as the old main wrote: a flat command
    /// enum whose bytes the current ones prefix with the domain.
    #[test]
    fn version_1_commands_keep_their_encoding() {
        let v1_bytes = store::encode(&v1_deregister()).expect("encode");
        assert_eq!(
            v1_bytes, b"\x01\x02n1\x05web-1\x09web-alive",
            "store/v1.rs is the old format itself and must never change"
        );
        let current = store::encode(&deregister()).expect("encode");
        assert_eq!(current[0], 0, "Command::Catalog");
        assert_eq!(&current[1..], v1_bytes.as_slice());
        let v1_bytes = store::encode(&v1_register()).expect("encode");
        let current = store::encode(&register()).expect("encode");
        assert_eq!(&current[1..], v1_bytes.as_slice());
    }

    #[test]
    fn version_1_entries_upgrade_to_catalog_ops_field_by_field() {
        let node = v1::RaftNode {
            name: "s1".into(),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8300)),
        };
        let v1_entries = [
            v1::EntryPayload::Normal(vec![v1_register(), v1_deregister()]),
            v1::EntryPayload::Blank,
            v1::EntryPayload::Membership(v1::Membership {
                configs: vec![[7].into()],
                nodes: [(7, node)].into(),
            }),
        ];
        let expected = [
            EntryPayload::Normal(Batch::from(vec![register(), deregister()])),
            EntryPayload::Blank,
            EntryPayload::Membership(Membership::new(
                vec![[7].into()],
                BTreeMap::from([(7, RaftMember::new("s1", ([127, 0, 0, 1], 8300).into()))]),
            )),
        ];
        for (index, (old, want)) in (1..).zip(v1_entries.into_iter().zip(expected)) {
            let old = v1::Entry {
                log_id: log_id(index),
                payload: old,
            };
            let bytes = upgrade_entry(1, &store::encode(&old).expect("encode")).expect("upgrade");
            let entry: Entry = store::decode(&bytes).expect("decode");
            assert_eq!(entry.log_id, log_id(index));
            assert_eq!(entry.payload, want);
        }
    }

    /// A normal entry as format 2 wrote it (see `rpc::types`'s goldens):
    /// log id (3, 7, 10) and a batch of version 2 holding one deregistration.
    const V2_ENTRY: &[u8] = b"\x03\x07\x0a\x01\x02\x0d\x01\x00\x01\x02n1\x05web-1\x00";

    #[test]
    fn version_2_entries_upgrade_to_batches_dated_0() {
        let bytes = upgrade_entry(2, V2_ENTRY).expect("upgrade");
        let entry: Entry = store::decode(&bytes).expect("decode");
        assert_eq!(entry.log_id, LogId::new(CommittedLeaderId::new(3, 7), 10));
        let deregister = Command::deregister(Deregistration {
            node: "n1".into(),
            service_id: "web-1".into(),
            check_id: String::new(),
        });
        let EntryPayload::Normal(batch) = &entry.payload else {
            panic!("{entry:?}");
        };
        assert_eq!(batch.time(), 0);
        assert_eq!(*batch, Batch::from(vec![deregister]));
        // Rewritten in the current format: the batch (after the log id and
        // the payload's variant) says so.
        assert_eq!(bytes[4], format::CURRENT as u8);
        assert_eq!(V2_ENTRY[4], 2);
    }

    #[test]
    fn an_entry_of_an_unknown_older_version_is_not_guessed_at() {
        let bytes = store::encode(&v1::Entry {
            log_id: log_id(1),
            payload: v1::EntryPayload::Blank,
        })
        .expect("encode");
        assert!(matches!(
            upgrade_entry(format::CURRENT, &bytes),
            Err(StoreError::Format(FormatError::Unreadable { .. }))
        ));
    }
}
