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
//!
//! A snapshot's body, stored and shipped in InstallSnapshot alike, is
//! `[format version][postcard of the catalog]` (`store::snapshot`, whose
//! bytes client agents that fell behind fetch too), decoded by its version;
//! the catalog itself is encoded through its serde impl.
//!
//! A snapshot is stored in its own file (`store::snapshot_file::write_file`),
//! by the task that builds or installs it, never through the log's writer:
//! a commit of megabytes there held every log append queued behind it. Only
//! once the file is durable does openraft learn of the snapshot and purge
//! the log it covers.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::log_upgrade::membership_from_v1;
use super::snapshot_due::SnapshotDue;
use super::types::Outcomes;
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig, typ::StorageError,
};
use crate::catalog::{Captured, Replica, Secrets, StateSnapshot, StateSnapshotV2, encoded_size};
use crate::store::format::{self, FormatError, Version};
use crate::store::snapshot::{decode_catalog, encode_captured, encode_catalog};
use crate::store::snapshot_file;
use crate::store::{self, Contents, StoreError, Writer, v1};

/// How often a snapshot write that found the disk full tries again.
const SPACE_RETRY: Duration = Duration::from_secs(1);

/// A snapshot as stored in redb: openraft's metadata and the snapshot body.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// The body: [`encode_catalog`] of the catalog.
    data: Vec<u8>,
}

/// Re-encodes the `snapshot` value of a data dir in format `from` into the
/// current format, for [`format::upgrade`].
pub(crate) fn upgrade_snapshot(from: Version, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    if (2..=4).contains(&from) {
        // Formats 3, 4 and 5 kept the stored snapshot's shape and added
        // tables to the body, which carries its own version.
        let mut stored: StoredSnapshot = store::decode(bytes)?;
        stored.data = encode_catalog(&decode_catalog(&stored.data)?)?;
        return store::encode(&stored);
    }
    if from != format::UNVERSIONED {
        return Err(FormatError::unreadable("a stored snapshot", from).into());
    }
    let old: v1::StoredSnapshot = store::decode(bytes)?;
    // Version 2 left the catalog's tables as they were: the body, read by
    // the frozen v1 tables, is what format 2's snapshot reads.
    let tables: v1::Tables = store::decode(&old.data)?;
    let catalog: StateSnapshot = store::decode::<StateSnapshotV2>(&store::encode(&tables)?)?.into();
    let meta = SnapshotMeta {
        last_log_id: old.meta.last_log_id,
        last_membership: StoredMembership::new(
            old.meta.last_membership.log_id,
            membership_from_v1(old.meta.last_membership.membership),
        ),
        snapshot_id: old.meta.snapshot_id,
    };
    store::encode(&StoredSnapshot {
        meta,
        data: encode_catalog(&catalog)?,
    })
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        }
    }
}

/// The current snapshot as the state machine keeps it. A durable server
/// keeps only its metadata and reads the body back from the snapshot file
/// when openraft sends it to a follower, which is rare: holding the body
/// cost a tenth of a durable server's memory (336 of its 3,168 bytes per
/// rich instance at 100,000, `benches/scale`). An in-memory server has no
/// file and keeps it whole.
#[derive(Debug)]
enum Current {
    /// In the snapshot file of this data dir.
    InFile(SnapshotMeta, Arc<Path>),
    /// Here only.
    InMemory(StoredSnapshot),
}

impl Current {
    /// How `snapshot`, now durable where `durable` keeps snapshots, is kept.
    fn kept(mut snapshot: StoredSnapshot, durable: &Durable) -> Self {
        match &durable.dir {
            Some(dir) => Self::InFile(snapshot.meta, dir.clone()),
            None => {
                // The encoder's buffer grew by doubling; keep only the bytes.
                snapshot.data.shrink_to_fit();
                Self::InMemory(snapshot)
            }
        }
    }

    fn meta(&self) -> &SnapshotMeta {
        match self {
            Self::InFile(meta, _) => meta,
            Self::InMemory(snapshot) => &snapshot.meta,
        }
    }

    /// The snapshot whole, reading its body from the file if it is there;
    /// the caller holds the lock that writing the file takes, so the file
    /// is the one this describes (checked by its id all the same).
    async fn load(&self) -> Result<Snapshot, StorageError> {
        let (meta, dir) = match self {
            Self::InMemory(snapshot) => return Ok(snapshot.to_snapshot()),
            Self::InFile(meta, dir) => (meta, dir.clone()),
        };
        let read =
            tokio::task::spawn_blocking(move || -> Result<Option<StoredSnapshot>, StoreError> {
                snapshot_file::read_file(&dir)?
                    .map(|bytes| store::decode(&bytes))
                    .transpose()
            });
        let stored = match read.await {
            Ok(Ok(Some(stored))) => stored,
            Ok(Ok(None)) => return Err(unreadable(meta, "the snapshot file is missing")),
            Ok(Err(e)) => return Err(unreadable(meta, &e.to_string())),
            Err(e) => return Err(unreadable(meta, &e.to_string())),
        };
        if stored.meta.snapshot_id != meta.snapshot_id {
            return Err(unreadable(
                meta,
                &format!("the snapshot file holds {}", stored.meta.snapshot_id),
            ));
        }
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

fn unreadable(meta: &SnapshotMeta, why: &str) -> StorageError {
    StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(why)).into()
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
    current: Arc<tokio::sync::Mutex<Option<Current>>>,
    /// Makes snapshot ids unique when two snapshots cover the same log id.
    snapshot_seq: Arc<AtomicU64>,
    /// Counts the commands applied since the last snapshot.
    due: Arc<SnapshotDue>,
    /// Where snapshots are made durable: the Raft data dir (`None` in
    /// memory), and the log's writer, only to know when the server stops.
    durable: Durable,
}

/// Where snapshots are written.
#[derive(Debug, Clone)]
struct Durable {
    /// The Raft data dir; `None` for an in-memory server, whose snapshot
    /// lives only in [`StateMachine::current`].
    dir: Option<Arc<Path>>,
    /// Stopping it ends a wait for disk space.
    writer: Writer,
}

fn snapshot_write_err(meta: &SnapshotMeta, e: StoreError) -> StorageError {
    StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)).into()
}

impl StateMachine {
    /// Restores the stored snapshot (read from `dir` into `contents`), if
    /// any, into `replica`. Snapshots are written to `dir` from now on.
    pub(crate) fn open(
        contents: &Contents,
        replica: Arc<Replica>,
        writer: Writer,
        dir: Option<PathBuf>,
        due: Arc<SnapshotDue>,
    ) -> Result<Self, StoreError> {
        let started = Instant::now();
        let stored: Option<StoredSnapshot> = contents
            .snapshot
            .as_deref()
            .map(store::decode)
            .transpose()?;
        let mut applied = Applied::default();
        if let Some(snapshot) = &stored {
            let read = started.elapsed();
            let catalog = decode_catalog(&snapshot.data)?;
            let decoded = started.elapsed();
            let took = replica.install(catalog);
            due.reset(snapshot.data.len());
            applied.last_applied = snapshot.meta.last_log_id;
            applied.membership = snapshot.meta.last_membership.clone();
            // What a restart spends before the log's tail is replayed;
            // `benches/scale` prints this line next to its restart time.
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            tracing::info!(
                bytes = snapshot.data.len(),
                read_ms = ms(read),
                decode_ms = ms(decoded - read),
                state_ms = ms(took.state),
                view_ms = ms(took.view),
                last_log = ?snapshot.meta.last_log_id.map(|l| l.index),
                "start-up: restored the stored snapshot"
            );
        }
        let durable = Durable {
            dir: dir.map(Arc::from),
            writer,
        };
        Ok(Self {
            replica,
            applied: Arc::new(Mutex::new(applied)),
            current: Arc::new(tokio::sync::Mutex::new(
                stored.map(|stored| Current::kept(stored, &durable)),
            )),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            due,
            durable,
        })
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes `snapshot` durable and current, unless a newer one already is;
/// `background` writes it at the lower priority of [`in_background`].
async fn store_snapshot(
    current: &tokio::sync::Mutex<Option<Current>>,
    durable: &Durable,
    snapshot: StoredSnapshot,
    background: bool,
) -> Result<(), StorageError> {
    let mut current = current.lock().await;
    if let Some(cur) = current.as_ref()
        && cur.meta().last_log_id > snapshot.meta.last_log_id
    {
        return Ok(());
    }
    let snapshot = match &durable.dir {
        // Its own file, off the runtime's worker threads: the log's writer
        // commits on meanwhile.
        Some(dir) => {
            let (dir, durable) = (dir.clone(), durable.clone());
            let meta = snapshot.meta.clone();
            let write = move || {
                let written = write_waiting_for_space(&dir, &durable.writer, &snapshot);
                written.map(|()| snapshot)
            };
            let failed =
                |e| StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&e)));
            let written = if background {
                in_background(write).await.map_err(failed)?
            } else {
                tokio::task::spawn_blocking(write)
                    .await
                    .map_err(|e| failed(std::io::Error::other(e)))?
            };
            written.map_err(|e| snapshot_write_err(&meta, e))?
        }
        None => snapshot,
    };
    *current = Some(Current::kept(snapshot, durable));
    Ok(())
}

/// Writes the snapshot file; on a full disk, waits for space as the log's
/// writer does (openraft stops on any storage error) until the server stops.
fn write_waiting_for_space(
    dir: &Path,
    writer: &Writer,
    snapshot: &StoredSnapshot,
) -> Result<(), StoreError> {
    let mut warned = false;
    loop {
        match snapshot_file::write_file(dir, snapshot) {
            Ok(()) => return Ok(()),
            Err(e) if snapshot_file::is_no_space(&e) && !writer.is_stopping() => {
                if !warned {
                    warned = true;
                    tracing::warn!(error = %e, "the disk is full: the snapshot waits for space");
                }
                std::thread::sleep(SPACE_RETRY);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The state machine marked at one log id, to be encoded and stored while
/// applying continues.
#[derive(Debug)]
pub(crate) struct SnapshotBuilder {
    /// The state at `last_applied`, or `None` once built.
    capture: Option<Captured>,
    replica: Arc<Replica>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// How long marking the state held `apply` up: all of a snapshot
    /// that stands in the write path's way.
    marked: Duration,
    seq: u64,
    current: Arc<tokio::sync::Mutex<Option<Current>>>,
    durable: Durable,
    due: Arc<SnapshotDue>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = Instant::now();
        let failed = |e: &dyn std::error::Error| {
            StorageError::from(StorageIOError::read_state_machine(AnyError::error(e)))
        };
        let capture = self
            .capture
            .take()
            .ok_or_else(|| failed(&std::io::Error::other("the snapshot was built already")))?;
        // On a blocking thread at the normal priority: the encoding takes
        // the state's read lock a slice at a time, and a thread the
        // scheduler kept waiting would hold `apply` up while it held one.
        let replica = self.replica.clone();
        let data = tokio::task::spawn_blocking(move || {
            encode_captured(&replica, &capture, Secrets::Keep)
            // `capture` drops here: the tables stop saving for it.
        })
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?;
        let encoded = started.elapsed();
        self.due.built(data.len());
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
        let bytes = stored.data.len();
        store_snapshot(&self.current, &self.durable, stored, true).await?;
        tracing::info!(
            snapshot = %snapshot.meta.snapshot_id,
            bytes,
            mark_ms = self.marked.as_secs_f64() * 1e3,
            encode_ms = encoded.as_secs_f64() * 1e3,
            write_ms = (started.elapsed() - encoded).as_secs_f64() * 1e3,
            "built and stored a snapshot"
        );
        Ok(snapshot)
    }
}

/// Runs `work` on a thread of its own at a lower CPU priority (nice 10)
/// than the rest of the server, and waits for its result: writing a
/// snapshot's file must not take CPU from the writes and reads that go on
/// meanwhile, least of all on a small machine. (Its encoding runs at the
/// normal priority: it takes the state's lock a slice at a time, and a
/// thread kept waiting for the CPU while it held it would hold writes up.)
/// A thread per snapshot, since the niceness stays with the thread.
async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, std::io::Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("trellis-snapshot".into())
        .spawn(move || {
            // SAFETY: plain system calls with no pointers; on Linux
            // PRIO_PROCESS with a thread id sets that thread's nice value.
            // Failing only leaves the thread at its normal priority.
            unsafe {
                let tid = libc::gettid();
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
            }
            let _ = tx.send(work());
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("the snapshot thread panicked"))
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
                EntryPayload::Normal(batch) => {
                    let (time, commands) = batch.into_parts();
                    let bytes = encoded_size(&commands);
                    self.due.applied(commands.len(), bytes);
                    self.replica.apply_measured(index, time, commands, bytes)
                }
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
        // openraft calls this and `apply` one after the other from one
        // task, so nothing is applied between reading `last_applied` and
        // marking the state: the two describe the same point.
        let (last_applied, membership) = {
            let applied = self.applied();
            (applied.last_applied, applied.membership.clone())
        };
        // Only marked here, under the write lock for a moment; the
        // encoding is the builder's, a slice at a time, while applying
        // goes on (`catalog/capture.rs`).
        let started = Instant::now();
        let capture = self.replica.capture().await;
        let marked = started.elapsed();
        self.due.captured();
        SnapshotBuilder {
            capture: Some(capture),
            replica: self.replica.clone(),
            marked,
            last_applied,
            membership,
            seq: self.snapshot_seq.fetch_add(1, Ordering::Relaxed),
            current: self.current.clone(),
            durable: self.durable.clone(),
            due: self.due.clone(),
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
        let snapshot_bytes = data.len();
        let started = Instant::now();
        let catalog = decode_catalog(&data).map_err(|e| {
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
        store_snapshot(&self.current, &self.durable, stored, false).await?;
        let decoded = started.elapsed();
        // A snapshot being built reads the state it replaces: it finishes first.
        let took = self.replica.install_uncaptured(catalog).await;
        let mut applied = self.applied();
        self.due.reset(snapshot_bytes);
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            last_log = ?meta.last_log_id.map(|l| l.index),
            decode_and_store_ms = ms(decoded),
            state_ms = ms(took.state),
            view_ms = ms(took.view),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = self.current.lock().await;
        match current.as_ref() {
            Some(current) => current.load().await.map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use openraft::{CommittedLeaderId, Membership, RaftLogReader};

    use super::*;
    use crate::catalog::{
        Behavior, CheckRegistration, Command, Deregistration, HealthStatus, KvOp, KvVerb, Outcome,
        Registration, ServiceRegistration, Session, SessionOp, State,
    };
    use crate::consensus::log_store::{LogInMemory, LogStore};
    use crate::consensus::log_upgrade::upgrade_entry;
    use crate::rpc::types::RaftMember;
    use crate::store::format::{Upgraded, assert_golden};

    /// A catalog of one node with one service and two checks, one removed.
    fn small_catalog() -> StateSnapshot {
        let replica = Replica::new();
        let register = Command::register(Registration {
            node: "n1".into(),
            id: String::new(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: BTreeMap::new(),
            node_meta: BTreeMap::from([("rack".into(), "r1".into())]).into(),
            skip_node_update: false,
            service: Some(ServiceRegistration {
                id: "web-1".into(),
                service: "web".into(),
                tags: vec!["v1".into()],
                address: String::new(),
                tagged_addresses: BTreeMap::new(),
                meta: Default::default(),
                port: 80,
                weights: None,
                enable_tag_override: false,
            }),
            checks: ["alive", "mem"]
                .into_iter()
                .map(|name| CheckRegistration {
                    check_id: name.into(),
                    name: name.into(),
                    status: HealthStatus::Passing,
                    notes: String::new(),
                    output: String::new(),
                    service_id: String::new(),
                    kind: String::new(),
                })
                .collect(),
        });
        let deregister = Command::deregister(Deregistration {
            node: "n1".into(),
            service_id: String::new(),
            check_id: "mem".into(),
        });
        replica.apply(1, &register);
        replica.apply(2, &deregister);
        replica.snapshot()
    }

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(3, 7), index)
    }

    /// [`small_catalog`] with a session holding a key, at the leader's
    /// time 1000.
    fn small_catalog_with_kv() -> StateSnapshot {
        let replica = Replica::new();
        replica.install(small_catalog());
        let session = Session {
            id: "s-1".into(),
            name: String::new(),
            node: "n1".into(),
            node_checks: vec!["alive".into()],
            service_checks: Vec::new(),
            lock_delay_ns: 0,
            behavior: Behavior::Release,
            ttl: "10s".into(),
            ttl_ms: 10_000,
            expires: None,
            create_index: 0,
            modify_index: 0,
        };
        let lock = KvOp {
            value: b"v".to_vec(),
            session: "s-1".into(),
            ..KvOp::new(KvVerb::Lock, "k")
        };
        let created = replica.apply_at(3, 1_000, &Command::Session(SessionOp::Create(session)));
        assert_eq!(created, Outcome::Applied(3));
        let locked = replica.apply_at(4, 1_000, &Command::Kv(lock));
        assert!(
            matches!(locked, Outcome::Txn { index: 4, .. }),
            "{locked:?}"
        );
        replica.snapshot()
    }

    #[test]
    fn a_snapshot_body_is_its_version_then_the_catalog() {
        let catalog = small_catalog_with_kv();
        let body = encode_catalog(&catalog).expect("encode");
        assert_golden(
            "a snapshot body",
            &body,
            "0501026e31026e31000831302e302e302e31036463310001047261636b027231010101026e31057765622d31057765622d31037765620102763100000050010100010101026e3105616c697665026e3105616c69766505616c6976650000000000000001010101020103776562020401016b016b0176000103732d31010404000004000103732d3103732d3100026e310105616c69766500000003313073904e0188a401030303000000000000",
        );
        assert_eq!(decode_catalog(&body).expect("decode"), catalog);
        // The same catalog as format 4 wrote it, before the prepared queries.
        assert_eq!(
            decode_catalog(&unhex("0401026e31026e31000831302e302e302e31036463310001047261636b027231010101026e31057765622d31057765622d31037765620102763100000050010100010101026e3105616c697665026e3105616c69766505616c6976650000000000000001010101020103776562020401016b016b0176000103732d31010404000004000103732d3103732d3100026e310105616c69766500000003313073904e0188a40103030300000000"))
                .expect("decode format 4"),
            catalog
        );
        // The same catalog as format 3 wrote it, before the ACL table.
        let v3 = "0301026e31026e31000831302e302e302e31036463310001047261636b027231010101026e31057765622d31057765622d31037765620102763100000050010100010101026e3105616c697665026e3105616c69766505616c6976650000000000000001010101020103776562020401016b016b0176000103732d31010404000004000103732d3103732d3100026e310105616c69766500000003313073904e0188a401030303";
        let v3: Vec<u8> = (0..v3.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v3[i..i + 2], 16).expect("hex"))
            .collect();
        assert_eq!(decode_catalog(&v3).expect("decode format 3"), catalog);
    }

    /// [`small_catalog`]'s body as format 2 wrote it.
    const V2_BODY: &str = "0201026e31026e31000831302e302e302e31036463310001047261636b027231010101026e31057765622d31057765622d31037765620102763100000050010100010101026e3105616c697665026e3105616c69766505616c69766500000000000000010101010201037765620202";

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn a_format_2_snapshot_body_reads_as_its_catalog_without_kv() {
        let catalog = decode_catalog(&unhex(V2_BODY)).expect("decode");
        assert_eq!(catalog, small_catalog());
        let state = State::from_snapshot(catalog);
        assert_eq!(state.kv_len(), 0);
        assert_eq!(state.sessions().count(), 0);
        assert_eq!(state.last_index(), 2);
    }

    fn stored_snapshot(data: Vec<u8>) -> StoredSnapshot {
        let node = RaftMember::new("s1", ([127, 0, 0, 1], 8300).into());
        let membership = Membership::new(vec![BTreeSet::from([7])], BTreeMap::from([(7, node)]));
        StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(log_id(9)),
                last_membership: StoredMembership::new(Some(log_id(1)), membership),
                snapshot_id: "s-9".into(),
            },
            data,
        }
    }

    /// Builds a snapshot of [`small_catalog`] on a state machine that
    /// stores snapshots in `dir` (in memory for `None`), and returns it
    /// with what it built.
    async fn built(dir: Option<&Path>) -> (StateMachine, Writer, Snapshot) {
        let db = store::open(dir).expect("open");
        let contents = store::load(&db)
            .and_then(|c| c.with_snapshot_file(dir))
            .expect("load");
        let writer = Writer::spawn(db, 16, None).expect("writer");
        let replica = Arc::new(Replica::new());
        replica.install(small_catalog());
        let mut sm = StateMachine::open(
            &contents,
            replica,
            writer.clone(),
            dir.map(Path::to_owned),
            SnapshotDue::new(u64::MAX),
        )
        .expect("sm");
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        (sm, writer, built)
    }

    #[tokio::test]
    async fn a_durable_server_keeps_its_snapshot_in_the_file_and_sends_those_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut sm, writer, built) = built(Some(dir.path())).await;
        assert!(
            matches!(sm.current.lock().await.as_ref(), Some(Current::InFile(..))),
            "only the metadata stays in memory"
        );
        let sent = sm
            .get_current_snapshot()
            .await
            .expect("read back")
            .expect("a snapshot");
        assert_eq!(sent.meta, built.meta);
        assert_eq!(sent.snapshot.into_inner(), built.snapshot.into_inner());

        // A file that holds another snapshot is refused, not sent as this one.
        let other = stored_snapshot(encode_catalog(&small_catalog()).expect("encode"));
        snapshot_file::write_file(dir.path(), &other).expect("write");
        let refused = sm
            .get_current_snapshot()
            .await
            .expect_err("another snapshot");
        assert!(refused.to_string().contains("s-9"), "{refused}");
        std::fs::remove_file(dir.path().join(snapshot_file::FILE_NAME)).expect("remove");
        let refused = sm.get_current_snapshot().await.expect_err("no file");
        assert!(refused.to_string().contains("missing"), "{refused}");
        writer.stop().await;
    }

    #[tokio::test]
    async fn an_in_memory_server_keeps_its_snapshot_whole() {
        let (mut sm, writer, built) = built(None).await;
        let sent = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(sent.meta, built.meta);
        assert_eq!(sent.snapshot.into_inner(), built.snapshot.into_inner());
        writer.stop().await;
    }

    #[test]
    fn a_stored_snapshot_encodes_as_format_5() {
        let stored = stored_snapshot(vec![CURRENT_BYTE, 0xaa]);
        let bytes = store::encode(&stored).expect("encode");
        assert_golden(
            "the snapshot META value",
            &bytes,
            "01030709010307010101070107027331007f000001ec4003732d390205aa",
        );
    }

    #[test]
    fn a_format_2_stored_snapshot_upgrades_keeping_its_meta_and_catalog() {
        // The META value as format 2 wrote it: its shape, a format 2 body.
        let mut v2 = unhex("01030709010307010101070107027331007f000001ec4003732d39");
        v2.extend(store::encode(&unhex(V2_BODY)).expect("encode"));
        let bytes = upgrade_snapshot(2, &v2).expect("upgrade");
        let stored: StoredSnapshot = store::decode(&bytes).expect("decode");
        let want = stored_snapshot(Vec::new());
        assert_eq!(stored.meta, want.meta);
        assert_eq!(
            format::split(&stored.data).expect("split").0,
            format::CURRENT
        );
        assert_eq!(decode_catalog(&stored.data).expect("body"), small_catalog());
        // Upgrading is for older formats only.
        assert!(upgrade_snapshot(format::CURRENT, &bytes).is_err());
    }

    /// The version as it leads a body (postcard's varint of a small number).
    const CURRENT_BYTE: u8 = format::CURRENT as u8;

    #[test]
    fn a_snapshot_body_of_another_version_is_refused() {
        let body = store::encode(&small_catalog()).expect("encode");
        for version in [format::CURRENT + 1, format::UNVERSIONED] {
            let mut bytes = store::encode(&version).expect("encode");
            bytes.extend_from_slice(&body);
            assert!(matches!(
                decode_catalog(&bytes),
                Err(StoreError::Format(FormatError::Unreadable { found, .. })) if found == version
            ));
        }
    }

    /// The raft data of a committed data dir fixture: `datadir-v1`, written
    /// by the main before versioning (a durable single server `fixture1`, a
    /// snapshot at index 7 and the log from 6 to 14), or `datadir-v2`, by
    /// format 2's main at ed8621b (`fixture2`, a snapshot at index 9 and
    /// the log from 8 to 13).
    fn copy_of_fixture(name: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
            .join("raft")
            .join(store::FILE_NAME);
        std::fs::copy(fixture, dir.path().join(store::FILE_NAME)).expect("copy fixture");
        dir
    }

    /// Opens, upgrades and replays the copy as a server's start would, and
    /// returns the catalog it ends with.
    async fn open_and_replay(dir: &Path) -> (Option<Upgraded>, State) {
        let db = store::open(Some(dir)).expect("open");
        let upgraded =
            format::upgrade(&db, Some(dir), upgrade_entry, upgrade_snapshot).expect("upgrade");
        let contents = store::load(&db)
            .and_then(|c| c.with_snapshot_file(Some(dir)))
            .expect("load");
        let writer = Writer::spawn(db, 16, None).expect("writer");
        let replica = Arc::new(Replica::new());
        let mut sm = StateMachine::open(
            &contents,
            replica.clone(),
            writer.clone(),
            Some(dir.to_owned()),
            SnapshotDue::new(u64::MAX),
        )
        .expect("sm");
        let mut log = LogStore::open(&contents, writer.clone(), LogInMemory::USUAL).expect("log");
        let (applied, _) = sm.applied_state().await.expect("applied");
        let from = applied.map_or(0, |id| id.index + 1);
        let entries = log.try_get_log_entries(from..).await.expect("entries");
        sm.apply(entries).await.expect("apply");
        writer.stop().await;
        (upgraded, State::from_snapshot(replica.snapshot()))
    }

    #[tokio::test]
    async fn the_v1_fixture_upgrades_in_place_and_holds_the_catalog_the_old_main_served() {
        let dir = copy_of_fixture("datadir-v1");
        let (upgraded, catalog) = open_and_replay(dir.path()).await;
        assert_eq!(
            upgraded,
            Some(Upgraded {
                from: 1,
                log_entries: 9,
                snapshot: true
            })
        );
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let services: BTreeMap<String, Vec<String>> = [
            ("cache", tags(&[])),
            ("consul", tags(&[])),
            ("db", tags(&[])),
            ("ext", tags(&["t1", "t2", "t3", "t4", "t6"])),
            ("web", tags(&["primary", "v1", "v2"])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(catalog.services(), services);
        let passing: Vec<&str> = catalog
            .health_service("ext", &[], true)
            .iter()
            .map(|e| &*e.service.id)
            .collect();
        assert_eq!(passing, ["ext-1", "ext-2", "ext-3", "ext-4", "ext-6"]);
        let rack = catalog.node("ext3").and_then(|n| n.meta.get("rack"));
        assert_eq!(rack, Some("r3"));

        // Upgraded once: the next start reads it as it is.
        let (again, same) = open_and_replay(dir.path()).await;
        assert_eq!(again, None);
        assert_eq!(same, catalog);
    }

    #[tokio::test]
    async fn the_v2_fixture_upgrades_in_place_and_holds_the_catalog_the_format_2_main_served() {
        let dir = copy_of_fixture("datadir-v2");
        let (upgraded, catalog) = open_and_replay(dir.path()).await;
        assert_eq!(
            upgraded,
            Some(Upgraded {
                from: 2,
                log_entries: 6,
                snapshot: true
            })
        );
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let services: BTreeMap<String, Vec<String>> = [
            ("api", tags(&["blue", "green", "v2"])),
            ("consul", tags(&[])),
            ("cron", tags(&[])),
            ("edge", tags(&["x", "y"])),
            ("queue", tags(&["fast", "slow", "v3"])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(catalog.services(), services);
        let passing: Vec<&str> = catalog
            .health_service("queue", &[], true)
            .iter()
            .map(|e| &*e.service.id)
            .collect();
        assert_eq!(passing, ["queue-1", "queue-2"]);
        let zone = catalog.node("far5").and_then(|n| n.meta.get("rack"));
        assert_eq!(zone, Some("r5"));
        assert_eq!(catalog.last_index(), 13);
        assert_eq!(catalog.kv_len(), 0);

        // Upgraded once: the next start reads it as it is.
        let (again, same) = open_and_replay(dir.path()).await;
        assert_eq!(again, None);
        assert_eq!(same, catalog);
    }
}
