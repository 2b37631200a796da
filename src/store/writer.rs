//! The one thread that writes to redb, committing queued changes in groups.
//!
//! redb is synchronous and allows one write transaction at a time, and every
//! commit with [`Durability::Immediate`] costs an fsync. So all changes go
//! through a bounded queue to this thread, which takes everything that queued
//! up while its previous commit was in flight and commits it in one
//! transaction: under load one fsync carries many log entries. An operation's
//! [`Done`] callback runs only after the transaction holding it committed.
//! A database in memory (`agent --dev`) has nothing to make durable, so most
//! of its commits skip redb's durable commit ([`IN_MEMORY_LIGHT_COMMITS`]).
//!
//! Purging the head of the log after a snapshot deletes thousands of entries;
//! done in one transaction, that delete would delay the appends committed
//! with it. So a purge is carried out a slice at a time
//! ([`PURGE_STEP`] entries), each slice riding along with a commit that
//! happens anyway. Entries not yet deleted are harmless: the purge point,
//! committed first, tells the next start to ignore them.
//!
//! The thread also reads log entries back for whoever asks
//! ([`Writer::read_log`]): the log keeps in memory only its recent entries
//! (see `consensus/log_store`), and a read on this thread sees every commit
//! made before it without sharing the database, which a full disk makes it
//! close and reopen.
//!
//! A commit that fails because the disk is full is not an error to the
//! callers: the thread reopens the database once space is freed and commits
//! the same operations again (see `space.rs`), so openraft, which stops on
//! any storage error, never sees one for a full disk. Any other failure
//! refuses everything after it.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::space::{self, Space};
use super::{LOG, META, StoreError, redb_err};

/// How often a commit held for want of space looks at the free space again.
const SPACE_POLL: Duration = Duration::from_millis(200);

/// How often it tries again even though no space was seen freed.
const SPACE_RETRY: Duration = Duration::from_secs(5);

/// The most operations one transaction takes, so that a flood of writes
/// still gets acknowledged in steady steps.
const MAX_BATCH: usize = 4096;

/// The most purged log entries one transaction deletes.
const PURGE_STEP: u64 = 256;

/// In memory, how many commits in a row skip redb's durable commit. That
/// commit's work (page checksums, the lists of freed pages) protects a file
/// against a crash, and a database in memory dies with the process anyway;
/// skipping it takes half a commit's CPU. But until the next durable commit
/// redb keeps a record of what each light one allocated and freed (about
/// 40 bytes a commit, measured), so one in every this many plus one is.
const IN_MEMORY_LIGHT_COMMITS: u32 = 63;

/// One change to the database. Operations commit in the order submitted.
#[derive(Debug)]
pub enum Op {
    /// Insert encoded log entries by index.
    Append(Vec<(u64, Vec<u8>)>),
    /// Delete log entries with index `>=` this.
    TruncateFrom(u64),
    /// Delete log entries with index `<=` this: a slice with each commit
    /// from now on until none is left. Needs no transaction of its own, and
    /// its callback says nothing of the deletion; submit it only after the
    /// purge point is durable, which tells the log's reader to skip what is
    /// not yet deleted.
    PurgeUpTo(u64),
    /// Set a [`META`] value.
    Put(&'static str, Vec<u8>),
    /// Set a [`META`] value whose loss in a crash is harmless, without a
    /// commit of its own: it rides along with the next transaction that
    /// writes something else, or with [`Op::Stop`]. Its callback runs at once.
    PutLazy(&'static str, Vec<u8>),
    /// Writes nothing; its callback runs once everything before it is durable.
    Barrier,
    /// Commits what is queued before it and ends the thread.
    Stop,
    /// Reads the log entries in the range (those still there: a purge may
    /// have deleted its head) once everything queued before it is
    /// committed; see [`Writer::read_log`]. Commits nothing itself.
    ReadLog(
        RangeInclusive<u64>,
        oneshot::Sender<Result<StoredEntries, StoreError>>,
    ),
}

/// Log entries as stored: index and bytes, in index order.
pub type StoredEntries = Vec<(u64, Vec<u8>)>;

impl Op {
    /// Whether the operation needs a transaction of its own.
    fn writes(&self) -> bool {
        matches!(
            self,
            Self::Append(_) | Self::TruncateFrom(_) | Self::Put(..)
        )
    }
}

/// Called once the operation is durable, or with the error that stopped it.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Write transactions committed.
    commits: AtomicU64,
    /// Log entries those transactions carried.
    entries: AtomicU64,
    /// Log entries read back from the database ([`Writer::read_log`]).
    read_back: AtomicU64,
    /// Set when the thread has ended and closed the database.
    exited: AtomicBool,
}

impl WriterStats {
    /// Write transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Log entries committed so far.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// Log entries read back from the database so far: what a follower
    /// far behind, or a slow apply, needed of the log no longer in memory.
    pub fn read_back(&self) -> u64 {
        self.read_back.load(Ordering::Relaxed)
    }

    /// Whether the writer thread has ended and released the database file.
    pub fn exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }
}

type Queued = (Op, Option<Done>);

/// A handle to the writer thread. Clones share the thread; it ends when
/// [`Writer::stop`] is called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct Writer {
    /// The bounded queue into the thread; a full queue makes submitters wait.
    tx: mpsc::Sender<Queued>,
    /// Shared with the thread.
    stats: Arc<WriterStats>,
    /// Taken by the first `stop` to join the thread.
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Set by `stop`, so that a commit waiting for disk space gives up.
    stopping: Arc<AtomicBool>,
}

/// Where the writer's database lives, for reopening it after a commit
/// failed for want of space.
#[derive(Debug)]
pub struct OnDisk {
    /// The database file.
    pub file: PathBuf,
    /// The free space there, shared with whoever refuses writes up front.
    pub space: Arc<Space>,
}

impl Writer {
    /// Moves `db` into a new writer thread with a queue of `capacity`
    /// operations. `on_disk` is where the database file is, for a file
    /// database; without it a failed commit is never retried.
    pub fn spawn(
        db: Database,
        capacity: usize,
        on_disk: Option<OnDisk>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let disk = Disk {
            db: Some(db),
            on_disk,
            stopping: stopping.clone(),
        };
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("trellis-redb".into())
            .spawn(move || run(disk, rx, thread_stats))
            .map_err(|e| StoreError::WriteFailed(format!("spawning writer thread: {e}")))?;
        Ok(Self {
            tx,
            stats,
            thread: Arc::new(Mutex::new(Some(thread))),
            stopping,
        })
    }

    /// Queues `op`; `done` runs once it is durable. Waits only for queue
    /// space. If the thread is gone, `done` is called with the error too.
    pub async fn submit(&self, op: Op, done: Option<Done>) -> Result<(), StoreError> {
        match self.tx.send((op, done)).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError((_, done))) => {
                if let Some(done) = done {
                    done(Err(StoreError::Closed));
                }
                Err(StoreError::Closed)
            }
        }
    }

    /// Queues `op` and waits until it is durable.
    pub async fn write(&self, op: Op) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let done: Done = Box::new(move |r| {
            // The waiter may have been cancelled; then nobody needs the answer.
            let _ = tx.send(r);
        });
        self.submit(op, Some(done)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The log entries in `range` as stored, read by the writer thread once
    /// everything queued before the read is committed; the head of the log
    /// a purge has deleted is skipped. Commits queue behind it, so it is for
    /// the rare reads of the log's older entries: a follower far behind, a
    /// slow apply.
    pub async fn read_log(&self, range: RangeInclusive<u64>) -> Result<StoredEntries, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Op::ReadLog(range, tx), None).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits everything queued, ends the thread and waits until it has
    /// closed the database. Later operations fail with [`StoreError::Closed`].
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        // Closed already is fine: the thread is ending or gone.
        let _ = self.write(Op::Stop).await;
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            // The thread ends right after acknowledging Stop; joining only
            // waits for it to drop the database.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Whether [`Writer::stop`] was called: a wait for disk space elsewhere
    /// (the snapshot file) gives up too.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The commit counters.
    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }
}

/// The writer thread's database and what it needs to reopen it.
struct Disk {
    /// `None` only between a failed commit and the reopen after it.
    db: Option<Database>,
    /// Where the file is; `None` in memory.
    on_disk: Option<OnDisk>,
    /// Set by [`Writer::stop`].
    stopping: Arc<AtomicBool>,
}

fn run(mut disk: Disk, mut rx: mpsc::Receiver<Queued>, stats: Arc<WriterStats>) {
    let mut batch: Vec<Queued> = Vec::new();
    // After a failed commit the callers' in-memory state is ahead of the
    // disk; refuse everything so that nothing is acknowledged out of order.
    let mut failed: Option<String> = None;
    // Lazy values not yet committed, latest per key, and the head of the
    // log still to delete.
    let mut lazy = Lazy::default();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        let reads = take_reads(&mut batch);
        let stop = batch.iter().any(|(op, _)| matches!(op, Op::Stop));
        let result = match &failed {
            Some(msg) => Err(msg.clone()),
            None => commit_or_wait(&mut disk, &batch, &mut lazy, &stats).map_err(|e| e.to_string()),
        };
        if let Err(msg) = &result
            && failed.is_none()
        {
            tracing::error!(error = %msg, "raft storage commit failed; refusing further writes");
            failed = Some(msg.clone());
        }
        for (_, done) in batch.drain(..) {
            if let Some(done) = done {
                done(result.clone().map_err(StoreError::WriteFailed));
            }
        }
        answer_reads(&disk, reads, &stats);
        if stop {
            break;
        }
    }
    drop(rx);
    drop(disk);
    stats.exited.store(true, Ordering::Release);
}

/// Takes the reads out of `batch`, to answer once the rest is committed.
fn take_reads(batch: &mut Vec<Queued>) -> Vec<Op> {
    if !batch.iter().any(|(op, _)| matches!(op, Op::ReadLog(..))) {
        return Vec::new();
    }
    batch
        .extract_if(.., |(op, _)| matches!(op, Op::ReadLog(..)))
        .map(|(op, _)| op)
        .collect()
}

/// Answers `reads` from the database as last committed.
fn answer_reads(disk: &Disk, reads: Vec<Op>, stats: &WriterStats) {
    for op in reads {
        if let Op::ReadLog(range, reply) = op {
            let read = match &disk.db {
                Some(db) => read_log(db, range),
                None => Err(StoreError::Closed),
            };
            if let Ok(entries) = &read {
                stats
                    .read_back
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
            }
            // The reader may have given up; then nobody needs the answer.
            let _ = reply.send(read);
        }
    }
}

fn read_log(db: &Database, range: RangeInclusive<u64>) -> Result<StoredEntries, StoreError> {
    let txn = db.begin_read().map_err(redb_err)?;
    let log = txn.open_table(LOG).map_err(redb_err)?;
    let mut entries = Vec::new();
    for item in log.range(range).map_err(redb_err)? {
        let (index, bytes) = item.map_err(redb_err)?;
        entries.push((index.value(), bytes.value().to_vec()));
    }
    Ok(entries)
}

/// Commits `batch`; if the disk is full, waits until space is freed,
/// reopens the database (redb refuses every operation after an I/O error
/// until then) and commits it again. A failed commit left nothing of the
/// batch on disk, and every operation applies the same twice, so the retry
/// writes exactly what the first attempt would have.
fn commit_or_wait(
    disk: &mut Disk,
    batch: &[Queued],
    lazy: &mut Lazy,
    stats: &WriterStats,
) -> Result<(), StoreError> {
    let mut waited = false;
    loop {
        let result = match &disk.db {
            Some(db) => commit(db, disk.on_disk.is_none(), batch, lazy, stats),
            None => Err(StoreError::Closed),
        };
        let e = match result {
            Ok(()) => {
                if let Some(on_disk) = disk.on_disk.as_ref().filter(|_| waited) {
                    on_disk.space.stall(false);
                    tracing::info!(file = %on_disk.file.display(), "disk space freed; raft storage writes resume");
                }
                return Ok(());
            }
            Err(e) => e,
        };
        let full = match &e {
            StoreError::Redb(r) => {
                space::is_no_space(r) || (waited && matches!(r, redb::Error::PreviousIo))
            }
            _ => false,
        };
        let Some(on_disk) = disk.on_disk.as_ref().filter(|_| full) else {
            if let Some(on_disk) = disk.on_disk.as_ref().filter(|_| waited) {
                on_disk.space.stall(false);
            }
            return Err(e);
        };
        if !waited {
            waited = true;
            on_disk.space.stall(true);
            tracing::warn!(
                file = %on_disk.file.display(),
                error = %e,
                "the disk is full: holding raft storage writes until space is freed"
            );
        }
        // redb fails every later operation after an I/O error; close it and
        // open it again once there is room.
        drop(disk.db.take());
        disk.db = Some(reopen_when_space(on_disk, &disk.stopping)?);
    }
}

/// Waits until space is freed on the filesystem (more is free than when
/// the commit failed), then reopens the database, recovering it from its
/// last commit, which is intact. Tries again now and then regardless, for
/// filesystems whose free space says little (quotas). Gives up when the
/// writer is being stopped.
fn reopen_when_space(on_disk: &OnDisk, stopping: &AtomicBool) -> Result<Database, StoreError> {
    let dir = on_disk.file.parent().unwrap_or(&on_disk.file);
    let mut free_at_failure = space::free_bytes(dir);
    let mut last_try = Instant::now();
    loop {
        if stopping.load(Ordering::Acquire) {
            return Err(StoreError::WriteFailed(
                "stopped while waiting for disk space; the last changes were not written".into(),
            ));
        }
        std::thread::sleep(SPACE_POLL);
        let free = space::free_bytes(dir);
        let freed = match (free, free_at_failure) {
            (Some(now), Some(then)) => now > then,
            _ => true,
        };
        if !freed && last_try.elapsed() < SPACE_RETRY {
            continue;
        }
        last_try = Instant::now();
        match Database::open(&on_disk.file) {
            Ok(db) => return Ok(db),
            Err(e) => {
                free_at_failure = space::free_bytes(dir);
                tracing::debug!(error = %e, "reopening the raft database after a full disk");
            }
        }
    }
}

/// What rides along with the next commit that writes anything.
#[derive(Debug, Default)]
struct Lazy {
    /// [`Op::PutLazy`] values not yet committed, latest per key.
    values: Vec<(&'static str, Vec<u8>)>,
    /// [`Op::PurgeUpTo`]: log entries up to this index are still to delete.
    purge_upto: Option<u64>,
    /// In memory, commits since the last durable one.
    light_commits: u32,
}

fn commit(
    db: &Database,
    in_memory: bool,
    batch: &[Queued],
    lazy: &mut Lazy,
    stats: &WriterStats,
) -> Result<(), StoreError> {
    for (op, _) in batch {
        match op {
            Op::PutLazy(key, bytes) => {
                lazy.values.retain(|(k, _)| k != key);
                lazy.values.push((key, bytes.clone()));
            }
            Op::PurgeUpTo(upto) => {
                lazy.purge_upto = lazy.purge_upto.max(Some(*upto));
            }
            _ => {}
        }
    }
    let stop = batch.iter().any(|(op, _)| matches!(op, Op::Stop));
    let writes = batch.iter().any(|(op, _)| op.writes());
    let flush_lazy = stop && !lazy.values.is_empty();
    if !writes && !flush_lazy {
        return Ok(());
    }
    let light = in_memory && !stop && lazy.light_commits < IN_MEMORY_LIGHT_COMMITS;
    let mut txn = db.begin_write().map_err(redb_err)?;
    txn.set_durability(if light {
        Durability::None
    } else {
        Durability::Immediate
    })
    .map_err(redb_err)?;
    let mut entries = 0u64;
    let mut purge_left = lazy.purge_upto;
    {
        let mut log = txn.open_table(LOG).map_err(redb_err)?;
        let mut meta = txn.open_table(META).map_err(redb_err)?;
        // Lazy values first: any eager write to the same key in this batch
        // came later and wins. They stay queued until the commit succeeds.
        for (key, bytes) in &lazy.values {
            meta.insert(*key, bytes.as_slice()).map_err(redb_err)?;
        }
        for (op, _) in batch {
            match op {
                Op::Append(items) => {
                    for (index, bytes) in items {
                        log.insert(*index, bytes.as_slice()).map_err(redb_err)?;
                    }
                    entries += items.len() as u64;
                }
                Op::TruncateFrom(from) => {
                    log.retain_in(*from.., |_, _| false).map_err(redb_err)?;
                }
                Op::Put(key, bytes) => {
                    meta.insert(*key, bytes.as_slice()).map_err(redb_err)?;
                }
                Op::PurgeUpTo(_) | Op::PutLazy(..) | Op::Barrier | Op::Stop | Op::ReadLog(..) => {}
            }
        }
        if let Some(upto) = purge_left {
            // The log's indexes are contiguous: one slice from its head.
            let head = log.first().map_err(redb_err)?.map(|(k, _)| k.value());
            purge_left = match head {
                Some(head) if head <= upto => {
                    let end = upto.min(head.saturating_add(PURGE_STEP - 1));
                    log.retain_in(head..=end, |_, _| false).map_err(redb_err)?;
                    (end < upto).then_some(upto)
                }
                _ => None,
            };
        }
    }
    txn.commit().map_err(redb_err)?;
    lazy.values.clear();
    lazy.purge_upto = purge_left;
    lazy.light_commits = if light { lazy.light_commits + 1 } else { 0 };
    stats.commits.fetch_add(1, Ordering::Relaxed);
    stats.entries.fetch_add(entries, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::space::Tmpfs;
    use crate::store::{Space, decode, encode, keys, load, open};

    #[tokio::test]
    async fn ops_commit_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(Some(dir.path())).expect("open");
        let writer = Writer::spawn(db, 16, None).expect("spawn");
        let entries = (1..=10u64).map(|i| (i, vec![i as u8])).collect();
        writer.write(Op::Append(entries)).await.expect("append");
        writer.write(Op::TruncateFrom(8)).await.expect("truncate");
        writer.write(Op::PurgeUpTo(3)).await.expect("purge");
        let vote = encode(&7u64).expect("encode");
        writer.write(Op::Put(keys::VOTE, vote)).await.expect("put");
        let stats = writer.stats();
        writer.stop().await;
        assert!(stats.exited());
        assert!(matches!(
            writer.write(Op::Barrier).await,
            Err(StoreError::Closed)
        ));

        let db = open(Some(dir.path())).expect("reopen");
        let contents = load(&db).expect("load");
        let indexes: Vec<u64> = contents.log.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, vec![4, 5, 6, 7]);
        let vote: u64 = decode(&contents.meta[keys::VOTE]).expect("decode");
        assert_eq!(vote, 7);
    }

    /// A purge deletes a slice of the log's head with each later commit,
    /// never more, until it is done.
    #[tokio::test]
    async fn a_purge_deletes_the_head_a_slice_per_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let head = |dir: &std::path::Path| {
            let db = open(Some(dir)).expect("reopen");
            load(&db).expect("load").log.first().map(|(i, _)| *i)
        };
        let vote = |i: u64| Op::Put(keys::VOTE, encode(&i).expect("encode"));
        let n = 2 * PURGE_STEP + 10;
        let writer = Writer::spawn(open(Some(dir.path())).expect("open"), 16, None).expect("spawn");
        let entries = (1..=n).map(|i| (i, vec![1])).collect();
        writer.write(Op::Append(entries)).await.expect("append");
        writer.write(Op::PurgeUpTo(n - 5)).await.expect("purge");
        assert_eq!(writer.stats().commits(), 1, "a purge alone commits nothing");
        writer.write(vote(1)).await.expect("put");
        writer.stop().await;
        assert_eq!(
            head(dir.path()),
            Some(PURGE_STEP + 1),
            "one slice per commit"
        );

        let writer = Writer::spawn(open(Some(dir.path())).expect("open"), 16, None).expect("spawn");
        writer.write(Op::PurgeUpTo(n - 5)).await.expect("purge");
        for i in 0..3 {
            writer.write(vote(i)).await.expect("put");
        }
        writer.stop().await;
        assert_eq!(
            head(dir.path()),
            Some(n - 4),
            "purged up to the point, no further"
        );
    }

    /// A read sees every operation queued before it, skips what a purge
    /// deleted, and commits nothing.
    #[tokio::test]
    async fn a_read_sees_the_operations_before_it() {
        let writer = Writer::spawn(open(None).expect("open"), 16, None).expect("spawn");
        let entries = (1..=10).map(|i| (i, vec![i as u8])).collect();
        writer.write(Op::Append(entries)).await.expect("append");
        let read = writer.read_log(5..=7).await.expect("read");
        assert_eq!(read, vec![(5, vec![5]), (6, vec![6]), (7, vec![7])]);

        // Queued behind an append nobody waited for: sees it all the same.
        writer
            .submit(Op::Append(vec![(11, vec![11])]), None)
            .await
            .expect("submit");
        let read = writer.read_log(10..=20).await.expect("read");
        assert_eq!(read, vec![(10, vec![10]), (11, vec![11])]);

        writer.write(Op::PurgeUpTo(3)).await.expect("purge");
        writer.write(Op::Append(vec![])).await.expect("append");
        let read = writer.read_log(1..=5).await.expect("read");
        assert_eq!(
            read.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![4, 5],
            "the purged head is skipped"
        );
        assert_eq!(writer.stats().commits(), 3, "reads commit nothing");
        writer.stop().await;
        assert!(
            writer.read_log(1..=2).await.is_err(),
            "a stopped writer refuses reads"
        );
    }

    /// In memory, commits skip redb's durable bookkeeping, all but one in
    /// every `IN_MEMORY_LIGHT_COMMITS + 1`, and the pages they free are
    /// reused: the database holds what one value needs, not what every
    /// rewrite of it left behind. On disk every commit is durable.
    #[test]
    fn in_memory_commits_are_light_and_reuse_the_pages_they_free() {
        let allocated = |db: &Database| {
            let txn = db.begin_write().expect("begin");
            let pages = txn.stats().expect("stats").allocated_pages();
            txn.abort().expect("abort");
            pages
        };
        let rewrite = |i: u32| [(Op::Put(keys::VOTE, vec![i as u8; 2048]), None)];
        let stats = WriterStats::default();
        let db = open(None).expect("open");
        let mut lazy = Lazy::default();
        commit(&db, true, &rewrite(0), &mut lazy, &stats).expect("commit");
        let first = allocated(&db);
        let mut durable = Vec::new();
        for i in 1..=1000 {
            commit(&db, true, &rewrite(i), &mut lazy, &stats).expect("commit");
            if lazy.light_commits == 0 {
                durable.push(i);
            }
        }
        let every = IN_MEMORY_LIGHT_COMMITS + 1;
        // Commit 0 was the first light one.
        let expected: Vec<u32> = (1..=1000).filter(|i| i % every == every - 1).collect();
        assert_eq!(durable, expected);
        assert!(durable.len() < 50, "{} of 1000 were durable", durable.len());
        let last = allocated(&db);
        assert!(
            last < first + 100,
            "{first} pages after one value, {last} after 1000 rewrites"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(Some(dir.path())).expect("open");
        let mut lazy = Lazy::default();
        for i in 0..10 {
            commit(&db, false, &rewrite(i), &mut lazy, &stats).expect("commit");
            assert_eq!(lazy.light_commits, 0, "a commit to a file is durable");
        }
    }

    #[tokio::test]
    async fn a_barrier_alone_commits_nothing() {
        let writer = Writer::spawn(open(None).expect("open"), 4, None).expect("spawn");
        writer.write(Op::Barrier).await.expect("barrier");
        assert_eq!(writer.stats().commits(), 0);
        writer.stop().await;
    }

    /// While one commit is in flight (held open here by its callback),
    /// everything queued behind it goes into a single next commit.
    #[tokio::test]
    async fn ops_queued_during_a_commit_share_the_next_one() {
        let writer = Writer::spawn(open(None).expect("open"), 256, None).expect("spawn");
        let (release, held) = std::sync::mpsc::channel::<()>();
        let hold: Done = Box::new(move |r| {
            r.expect("first commit");
            let _ = held.recv();
        });
        writer
            .submit(Op::Append(vec![(0, vec![0])]), Some(hold))
            .await
            .expect("submit");
        let mut acks = Vec::new();
        for i in 1..=100u64 {
            let (tx, rx) = oneshot::channel();
            let done: Done = Box::new(move |r| {
                let _ = tx.send(r);
            });
            writer
                .submit(Op::Append(vec![(i, vec![0])]), Some(done))
                .await
                .expect("submit");
            acks.push(rx);
        }
        release.send(()).expect("release");
        for ack in acks {
            ack.await.expect("ack").expect("commit");
        }
        let stats = writer.stats();
        assert_eq!(stats.entries(), 101);
        assert!(stats.commits() <= 2, "{} commits", stats.commits());
        writer.stop().await;
    }

    /// A commit that fails for want of space is held, not failed: its
    /// callback waits, the space reports the stall, and once the filler is
    /// gone the same entries commit and everything survives a reopen.
    #[tokio::test]
    async fn a_full_disk_holds_the_commit_until_space_is_freed() {
        let disk = Tmpfs::mount("4m");
        let dir = disk.path().join("raft");
        let file = dir.join(crate::store::FILE_NAME);
        let space = Arc::new(Space::new(Some(dir.clone())));
        let on_disk = OnDisk {
            file: file.clone(),
            space: space.clone(),
        };
        let writer =
            Writer::spawn(open(Some(&dir)).expect("open"), 16, Some(on_disk)).expect("spawn");
        writer
            .write(Op::Append(vec![(1, vec![1; 100])]))
            .await
            .expect("before the disk fills");

        let filler = disk.fill();
        let (tx, mut held) = oneshot::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        // Larger than anything redb could have spare in its file.
        writer
            .submit(Op::Append(vec![(2, vec![2; 1 << 20])]), Some(done))
            .await
            .expect("submit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !space.stalled() {
            assert!(Instant::now() < deadline, "the writer never stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(space.check().is_err(), "new writes are refused meanwhile");
        assert!(held.try_recv().is_err(), "acknowledged on a full disk");

        std::fs::remove_file(filler).expect("free the space");
        tokio::time::timeout(Duration::from_secs(20), held)
            .await
            .expect("no answer 20 s after space was freed")
            .expect("answer")
            .expect("committed once space is freed");
        assert!(!space.stalled());
        writer
            .write(Op::Append(vec![(3, vec![3; 100])]))
            .await
            .expect("after");
        writer.stop().await;

        let db = open(Some(&dir)).expect("reopen");
        let indexes: Vec<u64> = load(&db)
            .expect("load")
            .log
            .iter()
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(indexes, vec![1, 2, 3]);
    }

    /// Raw cost of one small durable commit; run with `--ignored --nocapture`
    /// and `TRELLIS_BENCH_DIR` pointing at the filesystem to measure.
    #[tokio::test]
    #[ignore]
    async fn durable_commit_latency() {
        let base = std::env::var("TRELLIS_BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let writer = Writer::spawn(open(Some(dir.path())).expect("open"), 16, None).expect("spawn");
        const N: u64 = 300;
        let started = Instant::now();
        for i in 0..N {
            writer
                .write(Op::Append(vec![(i, vec![0u8; 200])]))
                .await
                .expect("append");
        }
        let per = started.elapsed() / N as u32;
        eprintln!("durable redb commit in {:?}: {per:?}", dir.path());
        writer.stop().await;
    }
}
