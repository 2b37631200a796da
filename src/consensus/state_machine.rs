//! The Raft state machine: applies committed entries to the shared
//! [`Replica`], and builds, stores and installs snapshots of it.
//!
//! The commands of one entry are applied together at the entry's log index
//! ([`Replica::apply_batch`]), so catalog indexes are Raft indexes as in
//! Consul, and readers never see half an entry.
//!
//! Applying is not made durable entry by entry; the latest snapshot is. On
//! start the stored snapshot is installed into the replica and openraft
//! re-applies the log after it, so the replica always ends where the log does.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::types::Outcomes;
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig, typ::StorageError,
};
use crate::catalog::{Replica, StateSnapshot};
use crate::store::{self, Contents, Op, StoreError, Writer, keys};

/// A snapshot as stored in redb: openraft's metadata and the encoded catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// postcard of [`StateSnapshot`].
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        }
    }
}

/// Where applying has got to, besides the catalog itself.
#[derive(Debug, Default)]
struct Applied {
    /// The last entry applied to the replica.
    last_applied: Option<LogId>,
    /// The membership config in the last applied membership entry.
    membership: StoredMembership,
}

/// The state machine handed to openraft.
#[derive(Debug)]
pub(crate) struct StateMachine {
    /// The catalog every reader in the process sees.
    replica: Arc<Replica>,
    /// Kept beside the replica under one lock so a snapshot captures both at
    /// the same point.
    applied: Arc<Mutex<Applied>>,
    /// The current snapshot. An async lock because storing a snapshot waits
    /// for the writer, and a build racing an install must not store an older
    /// snapshot over a newer one.
    current: Arc<tokio::sync::Mutex<Option<StoredSnapshot>>>,
    /// Makes snapshot ids unique when two snapshots cover the same log id.
    snapshot_seq: Arc<AtomicU64>,
    /// Where snapshots are made durable.
    writer: Writer,
}

fn snapshot_write_err(meta: &SnapshotMeta, e: StoreError) -> StorageError {
    StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)).into()
}

impl StateMachine {
    /// Restores the stored snapshot, if any, into `replica`.
    pub(crate) fn open(
        contents: &Contents,
        replica: Arc<Replica>,
        writer: Writer,
    ) -> Result<Self, StoreError> {
        let stored: Option<StoredSnapshot> = contents.meta(keys::SNAPSHOT)?;
        let mut applied = Applied::default();
        if let Some(snapshot) = &stored {
            let catalog: StateSnapshot = store::decode(&snapshot.data)?;
            replica.install(catalog);
            applied.last_applied = snapshot.meta.last_log_id;
            applied.membership = snapshot.meta.last_membership.clone();
        }
        Ok(Self {
            replica,
            applied: Arc::new(Mutex::new(applied)),
            current: Arc::new(tokio::sync::Mutex::new(stored)),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            writer,
        })
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes `snapshot` durable and current, unless a newer one already is.
async fn store_snapshot(
    current: &tokio::sync::Mutex<Option<StoredSnapshot>>,
    writer: &Writer,
    snapshot: StoredSnapshot,
) -> Result<(), StorageError> {
    let mut current = current.lock().await;
    if let Some(cur) = current.as_ref()
        && cur.meta.last_log_id > snapshot.meta.last_log_id
    {
        return Ok(());
    }
    // Off the runtime's worker threads, like the catalog's encoding.
    let (snapshot, bytes) = tokio::task::spawn_blocking(move || {
        let bytes = store::encode(&snapshot);
        (snapshot, bytes)
    })
    .await
    .map_err(|e| StorageError::from(StorageIOError::read_state_machine(AnyError::new(&e))))?;
    let bytes = bytes.map_err(|e| snapshot_write_err(&snapshot.meta, e))?;
    writer
        .write(Op::Put(keys::SNAPSHOT, bytes))
        .await
        .map_err(|e| snapshot_write_err(&snapshot.meta, e))?;
    *current = Some(snapshot);
    Ok(())
}

/// A copy of the state machine taken at one log id, to be encoded and stored
/// while applying continues.
#[derive(Debug)]
pub(crate) struct SnapshotBuilder {
    catalog: StateSnapshot,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    seq: u64,
    current: Arc<tokio::sync::Mutex<Option<StoredSnapshot>>>,
    writer: Writer,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Encoding a large catalog takes a while: keep it off the runtime's
        // worker threads, which serve DNS-over-TCP, HTTP and Raft.
        let catalog = std::mem::take(&mut self.catalog);
        let data = tokio::task::spawn_blocking(move || store::encode(&catalog))
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_state_machine(AnyError::new(&e))))?
            .map_err(|e| {
                StorageError::from(StorageIOError::read_state_machine(AnyError::new(&e)))
            })?;
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data,
        };
        let snapshot = stored.to_snapshot();
        store_snapshot(&self.current, &self.writer, stored).await?;
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcomes>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries = entries.into_iter();
        let mut outcomes = Vec::with_capacity(entries.size_hint().0);
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            // The catalog's indexes are the Raft log's, as Consul's are.
            let index = entry.log_id.index;
            let outcome = match entry.payload {
                EntryPayload::Normal(batch) => self.replica.apply_batch(index, batch),
                EntryPayload::Blank => {
                    self.replica.apply_noop(index);
                    Vec::new()
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    self.replica.apply_noop(index);
                    Vec::new()
                }
            };
            applied.last_applied = Some(entry.log_id);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // The applied lock keeps `apply` out while the catalog is copied, so
        // the copy and `last_applied` describe the same point.
        let applied = self.applied();
        SnapshotBuilder {
            catalog: self.replica.snapshot(),
            last_applied: applied.last_applied,
            membership: applied.membership.clone(),
            seq: self.snapshot_seq.fetch_add(1, Ordering::Relaxed),
            current: self.current.clone(),
            writer: self.writer.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let catalog: StateSnapshot = store::decode(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        // Durable first: if storing fails the state machine is unchanged.
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        store_snapshot(&self.current, &self.writer, stored).await?;
        let mut applied = self.applied();
        self.replica.install(catalog);
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        tracing::info!(
            snapshot = %meta.snapshot_id,
            last_log = ?meta.last_log_id.map(|l| l.index),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self
            .current
            .lock()
            .await
            .as_ref()
            .map(StoredSnapshot::to_snapshot))
    }
}
