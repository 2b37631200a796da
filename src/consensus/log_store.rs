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
//! compaction keeps to a few thousand entries.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};

use super::types::{Entry, LogId, TypeConfig, Vote, typ::StorageError};
use crate::store::{self, Contents, Done, Op, StoreError, Writer, keys};

/// The log store handed to openraft; clones share the same log.
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    /// What openraft has written so far, including changes still being committed.
    mirror: Arc<Mutex<Mirror>>,
    /// Where the changes go to become durable.
    writer: Writer,
}

#[derive(Debug, Default)]
struct Mirror {
    /// The log after `purged`, by index.
    entries: BTreeMap<u64, Entry>,
    /// The last log id removed from the head of the log.
    purged: Option<LogId>,
    /// The vote, as last saved.
    vote: Option<Vote>,
    /// The last committed log id openraft told us about.
    committed: Option<LogId>,
}

impl LogStore {
    /// Rebuilds the log from what storage held at start-up.
    pub(crate) fn open(contents: &Contents, writer: Writer) -> Result<Self, StoreError> {
        let purged: Option<LogId> = contents.meta(keys::PURGED)?;
        let mut entries = BTreeMap::new();
        // A purge records its log id before deleting the entries; a crash in
        // between leaves entries the log no longer owns.
        let first_kept = purged.map_or(0, |p| p.index + 1);
        for (index, bytes) in &contents.log {
            if *index >= first_kept {
                entries.insert(*index, store::decode::<Entry>(bytes)?);
            }
        }
        let mirror = Mirror {
            entries,
            purged,
            vote: contents.meta(keys::VOTE)?,
            committed: contents.meta(keys::COMMITTED)?,
        };
        Ok(Self {
            mirror: Arc::new(Mutex::new(mirror)),
            writer,
        })
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
        Ok(mirror
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mirror = self.mirror();
        let last = mirror
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(mirror.purged);
        Ok(LogState {
            last_purged_log_id: mirror.purged,
            last_log_id: last,
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
        self.mirror().committed = committed;
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
        {
            let mut mirror = self.mirror();
            for entry in entries {
                mirror.entries.insert(entry.log_id.index, entry);
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

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
        let writer = Writer::spawn(store::open(None).expect("open"), 4).expect("writer");
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

    #[tokio::test]
    async fn an_undecodable_entry_fails_open() {
        let contents = Contents {
            log: vec![(1, vec![0xff, 0xff, 0xff])],
            ..Contents::default()
        };
        let writer = Writer::spawn(store::open(None).expect("open"), 4).expect("writer");
        assert!(matches!(
            LogStore::open(&contents, writer.clone()),
            Err(StoreError::Codec(_))
        ));
        writer.stop().await;
    }
}
