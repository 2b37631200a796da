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
//! compaction keeps to a few thousand entries, and not all of it in full.
//! Entries more than [`DECODED`] behind the commit index (what a follower
//! far behind, a slow apply, a restart's replay or a recovery reads, and no
//! one else) are kept as the bytes they are stored as and decoded when
//! read: at 100,000 instances the decoded tail was about as large as the
//! catalog itself, and a restart no longer decodes entries its snapshot
//! already holds. Behind those, once [`BYTES_KEPT`] of bytes are held, the
//! oldest durable entries are kept in the database only and read back
//! through the writer (`Writer::read_log`): their bytes were still 178 of
//! a durable server's 1,163 bytes per instance at 100,000 (`benches/scale`).
//!
//! Entries the leader makes are also handed to [`Early`] as they are taken,
//! so that they travel to the followers while the leader's own fsync runs
//! (see `early`).
//!
//! Entries from a data dir of an older format are re-encoded once, at open
//! (`log_upgrade`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{RangeBounds, RangeInclusive};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, EntryPayload, LogState, Membership, RaftLogReader, StorageIOError};

use super::early::Early;
use super::types::{Entry, LogId, RaftMember, TypeConfig, Vote, typ::StorageError};
use crate::store::{self, Contents, Done, Op, StoreError, Writer, keys};

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

/// How many bytes of encoded entries behind the decoded ones stay in
/// memory; older durable ones are read back from the database. A write
/// load of thousands of writes a second fills it in about half a second,
/// longer than a leader's apply pauses for its own snapshot.
const BYTES_KEPT: usize = 1 << 20;

/// How much of the log behind the commit index stays in memory; the rest
/// is read back from the database when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogInMemory {
    /// Entries up to the commit index kept decoded.
    decoded: u64,
    /// Bytes of encoded entries kept behind those.
    bytes: usize,
    /// Whether what the open read stays until the next commit, for the
    /// replay of the log's tail after the snapshot.
    until_commit: bool,
}

impl LogInMemory {
    /// What a server keeps: [`DECODED`] entries and [`BYTES_KEPT`], and
    /// at start-up all it read.
    pub const USUAL: Self = Self {
        decoded: DECODED,
        bytes: BYTES_KEPT,
        until_commit: true,
    };

    /// Nothing the database holds: every read behind the commit index
    /// goes to the database, a restart's replay included, for tests of
    /// that path.
    pub const NOTHING: Self = Self {
        decoded: 0,
        bytes: 0,
        until_commit: false,
    };
}

impl Default for LogInMemory {
    fn default() -> Self {
        Self::USUAL
    }
}

#[derive(Debug, Default)]
struct Mirror {
    /// How much it keeps.
    keep: LogInMemory,
    /// The log after `purged`, by index.
    entries: BTreeMap<u64, Slot>,
    /// Entries below this index are no longer decoded.
    decoded_from: u64,
    /// Entries below this index that hold commands are in the database
    /// only.
    kept_from: u64,
    /// The bytes of the entries from `kept_from` up to `decoded_from`.
    kept_bytes: usize,
    /// Entries up to this index are durable in the database.
    flushed: u64,
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
    held: Held,
}

/// How much of an entry the mirror holds.
#[derive(Debug)]
enum Held {
    /// The entry and its bytes as stored, while it is near the log's head,
    /// or always when it holds no commands (blank, membership: small, and
    /// recovery looks for the latter).
    Decoded(Entry, Box<[u8]>),
    /// The bytes as stored.
    Bytes(Box<[u8]>),
    /// Nothing: it is read back from the database.
    Stored,
}

impl Slot {
    fn decoded(entry: Entry, bytes: Box<[u8]>) -> Self {
        Self {
            log_id: entry.log_id,
            held: Held::Decoded(entry, bytes),
        }
    }

    /// The entry, decoded from its bytes unless it is at hand; `None` when
    /// only the database holds it.
    fn entry(&self) -> Result<Option<Entry>, StoreError> {
        match &self.held {
            Held::Decoded(entry, _) => Ok(Some(entry.clone())),
            Held::Bytes(bytes) => store::decode(bytes).map(Some),
            Held::Stored => Ok(None),
        }
    }

    /// Keeps only the bytes of an entry that holds commands; how many
    /// bytes it then holds.
    fn shed(&mut self) -> usize {
        let held = std::mem::replace(&mut self.held, Held::Stored);
        self.held = match held {
            Held::Decoded(
                Entry {
                    payload: EntryPayload::Normal(_),
                    ..
                },
                bytes,
            ) => Held::Bytes(bytes),
            other => other,
        };
        self.bytes_only()
    }

    /// The bytes it holds if that is all it holds.
    fn bytes_only(&self) -> usize {
        match &self.held {
            Held::Bytes(bytes) => bytes.len(),
            Held::Decoded(..) | Held::Stored => 0,
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
    /// commit index, then the bytes of the oldest durable ones beyond
    /// [`BYTES_KEPT`].
    fn shed_behind_commit(&mut self) {
        let Some(committed) = self.committed else {
            return;
        };
        let below = committed.index.saturating_sub(self.keep.decoded);
        if below > self.decoded_from {
            for (_, slot) in self.entries.range_mut(self.decoded_from..below) {
                self.kept_bytes += slot.shed();
            }
            self.decoded_from = below;
        }
        while self.kept_bytes > self.keep.bytes {
            let Some((&index, slot)) = self.entries.range_mut(self.kept_from..).next() else {
                break;
            };
            if index >= self.decoded_from || index > self.flushed {
                break;
            }
            self.kept_bytes -= slot.bytes_only();
            if matches!(slot.held, Held::Bytes(_)) {
                slot.held = Held::Stored;
            }
            self.kept_from = index + 1;
        }
    }

    /// Counts the kept bytes again, after entries were removed.
    fn recount(&mut self) {
        let (from, to) = (self.kept_from, self.decoded_from.max(self.kept_from));
        self.kept_bytes = self
            .entries
            .range(from..to)
            .map(|(_, slot)| slot.bytes_only())
            .sum();
    }

    /// Entries up to `last` are durable, if `last` is still in the log
    /// (not truncated since, nor replaced).
    fn mark_flushed(&mut self, last: LogId) {
        if self
            .entries
            .get(&last.index)
            .is_some_and(|slot| slot.log_id == last)
        {
            self.flushed = self.flushed.max(last.index);
            self.shed_behind_commit();
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, slot)| slot.log_id)
            .or(self.purged)
    }

    /// What the mirror holds of the entries in `range`.
    fn read<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Found, StoreError> {
        let mut found = Found::default();
        for (&index, slot) in self.entries.range(range) {
            match slot.entry()? {
                Some(entry) => found.entries.push(Ok(entry)),
                None => {
                    let from = found.stored.as_ref().map_or(index, |s| *s.start());
                    found.stored = Some(from..=index);
                    found.entries.push(Err(index));
                }
            }
        }
        Ok(found)
    }
}

/// What the mirror holds of a range of the log.
#[derive(Debug, Default)]
struct Found {
    /// Each entry, or the index of one only the database holds.
    entries: Vec<Result<Entry, u64>>,
    /// The span of the indexes only the database holds.
    stored: Option<RangeInclusive<u64>>,
}

impl LogStore {
    /// Rebuilds the log from what storage held at start-up, keeping `keep`
    /// of it in memory.
    pub(crate) fn open(
        contents: &Contents,
        writer: Writer,
        keep: LogInMemory,
    ) -> Result<Self, StoreError> {
        let purged: Option<LogId> = contents.meta(keys::PURGED)?;
        let committed: Option<LogId> = contents.meta(keys::COMMITTED)?;
        let decoded_from = committed.map_or(0, |c| c.index.saturating_sub(keep.decoded));
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
                    held: Held::Bytes(bytes),
                },
                None => Slot::decoded(store::decode::<Entry>(&bytes)?, bytes),
            };
            entries.insert(*index, slot);
        }
        let flushed = entries.last_key_value().map_or(0, |(index, _)| *index);
        let mut mirror = Mirror {
            keep,
            entries,
            decoded_from,
            purged,
            flushed,
            vote: contents.meta(keys::VOTE)?,
            committed,
            ..Mirror::default()
        };
        mirror.recount();
        if !keep.until_commit {
            mirror.shed_behind_commit();
        }
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
            .find_map(|slot| match &slot.held {
                Held::Decoded(
                    Entry {
                        payload: EntryPayload::Membership(m),
                        ..
                    },
                    _,
                ) => Some(m.clone()),
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

    /// The entries in `range`, those the database holds alone read back
    /// through the writer. A purge meanwhile may have removed some of
    /// those; the entries from the last one missing on are returned, as a
    /// read after the purge would have.
    async fn read<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StoreError> {
        let Found { entries, stored } = self.mirror().read(range)?;
        let Some(stored) = stored else {
            return Ok(entries.into_iter().flatten().collect());
        };
        let mut read: BTreeMap<u64, Vec<u8>> =
            self.writer.read_log(stored).await?.into_iter().collect();
        let mut out = Vec::with_capacity(entries.len());
        for item in entries {
            match item {
                Ok(entry) => out.push(entry),
                Err(index) => match read.remove(&index) {
                    Some(bytes) => out.push(store::decode(&bytes)?),
                    None => out.clear(),
                },
            }
        }
        Ok(out)
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
        self.read(range)
            .await
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
        let last = entries.last().map(|e| e.log_id);
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
        let mirror = self.mirror.clone();
        let done: Done = Box::new(move |result| {
            if let (Ok(()), Some(last)) = (&result, last) {
                mirror
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .mark_flushed(last);
            }
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
        {
            let mut mirror = self.mirror();
            mirror.entries.split_off(&log_id.index);
            mirror.flushed = mirror.flushed.min(log_id.index.saturating_sub(1));
            mirror.recount();
        }
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
            mirror.kept_from = mirror.kept_from.max(log_id.index + 1);
            mirror.recount();
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

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::consensus::tests::register;
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

    /// Entry `index` of a log whose entry 10 is a configuration and whose
    /// others carry `commands` registrations each.
    fn entry(index: u64, commands: usize) -> Entry {
        Entry {
            log_id: log_id(index),
            payload: if index == 10 {
                EntryPayload::Membership(Membership::new(
                    vec![std::collections::BTreeSet::from([7])],
                    BTreeMap::from([(7, RaftMember::new("s1", ([127, 0, 0, 1], 8300).into()))]),
                ))
            } else {
                EntryPayload::Normal(Batch::from(vec![register(1); commands]))
            },
        }
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
        let mut log =
            LogStore::open(&contents, writer.clone(), LogInMemory::USUAL).expect("log store");

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
        let entry = |index| entry(index, 1);
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
        let mut log =
            LogStore::open(&contents, writer.clone(), LogInMemory::USUAL).expect("log store");
        let decoded = |log: &LogStore| -> Vec<u64> {
            let mirror = log.mirror();
            mirror
                .entries
                .iter()
                .filter(|(_, slot)| matches!(slot.held, Held::Decoded(..)))
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

    /// Beyond [`BYTES_KEPT`], the oldest entries are left to the database
    /// once a commit follows the open, and read back from it whole, around
    /// the configuration entry the mirror keeps; a purge still cuts the
    /// log's head.
    #[tokio::test]
    async fn the_oldest_entries_are_read_back_from_the_database() {
        let entry = |index| entry(index, 256);
        let written: Vec<Entry> = (1..=400).map(entry).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let writer =
            Writer::spawn(store::open(Some(dir.path())).expect("open"), 4, None).expect("writer");
        let stored = written
            .iter()
            .map(|e| (e.log_id.index, store::encode(e).expect("encode")))
            .collect::<Vec<_>>();
        let bytes: usize = stored.iter().map(|(_, b)| b.len()).sum();
        assert!(bytes > 3 * BYTES_KEPT, "{bytes} bytes are enough to shed");
        writer.write(Op::Append(stored)).await.expect("append");
        let committed = store::encode(&log_id(390)).expect("encode");
        writer
            .write(Op::Put(keys::COMMITTED, committed))
            .await
            .expect("commit");
        writer.stop().await;

        let db = store::open(Some(dir.path())).expect("reopen");
        let contents = store::load(&db).expect("load");
        let writer = Writer::spawn(db, 4, None).expect("writer");
        let mut log =
            LogStore::open(&contents, writer.clone(), LogInMemory::USUAL).expect("log store");
        let held = |log: &LogStore| {
            let mirror = log.mirror();
            let stored = mirror
                .entries
                .values()
                .filter(|slot| matches!(slot.held, Held::Stored))
                .count();
            (stored, mirror.kept_bytes)
        };
        assert_eq!(held(&log).0, 0, "what open read stays for the replay");
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), written);
        log.save_committed(Some(log_id(391))).await.expect("commit");
        let (stored, kept) = held(&log);
        assert!(stored > 100, "{stored} entries left to the database");
        assert!(kept <= BYTES_KEPT, "{kept} bytes kept");
        assert_eq!(log.try_get_log_entries(..).await.expect("read"), written);
        assert_eq!(
            log.try_get_log_entries(5..=15).await.expect("read"),
            written[4..15]
        );
        assert!(log.last_membership().is_some(), "recovery finds it");

        log.purge(log_id(100)).await.expect("purge");
        assert_eq!(
            log.try_get_log_entries(..).await.expect("read"),
            written[100..]
        );
        let (_, kept) = held(&log);
        assert!(kept <= BYTES_KEPT, "{kept} bytes kept after the purge");
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
            LogStore::open(&contents, writer.clone(), LogInMemory::USUAL),
            Err(StoreError::Codec(_))
        ));
        writer.stop().await;
    }
}
