//! One process's applied copy of the state, and on servers the recent
//! history of what was applied, which client agents follow to keep their own
//! copies current.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use super::capture::StateCapture;
use super::command::{Command, Outcome};
use super::history::{Applied, History, Pending, Since};
use super::kv_types::Time;
use super::rules::Touched;
use super::snapshot::StateSnapshot;
use super::state::State;
use super::tokens::{AclContext, Tokens};
use super::types::Index;
use super::view::View;

/// The state as applied so far, shared by the Raft state machine (the only
/// writer), the HTTP API (readers under a short read lock) and DNS (readers of
/// the lock-free [`View`]).
#[derive(Debug)]
pub struct Replica {
    /// The tables. Writers hold the lock only for one `apply`.
    state: RwLock<State>,
    /// The health-filtered view, republished after every change.
    view: ArcSwap<View>,
    /// While set, changes leave the view as it is (see
    /// [`Replica::hold_view`]). Read and written under the `state` lock.
    view_held: AtomicBool,
    /// Whether a change was left out of the view while it was held.
    view_stale: AtomicBool,
    /// The last applied index, for blocking queries to wait on.
    applied: watch::Sender<Index>,
    /// The highest index of a write this agent answered (see
    /// [`Replica::acknowledge`]).
    acknowledged: AtomicU64,
    /// The index of the last write to any KV key of each bucket (keys by
    /// hash), so a blocking read of one key wakes on writes to its bucket,
    /// not on every applied entry.
    key_writes: Box<[watch::Sender<Index>]>,
    /// The entries applied most recently, for followers (empty when the
    /// replica keeps no history).
    history: Mutex<History>,
    /// The ACL settings resolution needs; unset while ACLs are off.
    acl: OnceLock<AclContext>,
    /// Every token resolved, republished after each ACL write; `None`
    /// while ACLs are off.
    tokens: ArcSwapOption<Tokens>,
    /// How many threads wait for (or are taking) the write lock; a reader
    /// in a loop lets them go first ([`Replica::read_after_writers`]).
    writers_waiting: AtomicU32,
    /// Held shared by every capture of the state until it is encoded, and
    /// exclusively by a snapshot's install ([`Replica::install_uncaptured`]),
    /// which would leave a capture nothing to read.
    captures: Arc<tokio::sync::RwLock<()>>,
}

/// The state marked at one index ([`Replica::capture`]), to be encoded a
/// slice at a time while writes go on; installing a snapshot waits until
/// it is dropped.
#[derive(Debug)]
pub struct Captured {
    /// The mark.
    capture: StateCapture,
    /// Keeps installs out while the capture is read.
    _installs_wait: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl std::ops::Deref for Captured {
    type Target = StateCapture;

    fn deref(&self) -> &StateCapture {
        &self.capture
    }
}

/// How long the steps of [`Replica::install`] took, for the start-up log.
#[derive(Debug, Clone, Copy)]
pub struct Installed {
    /// Building the tables and their lookups from the snapshot.
    pub state: Duration,
    /// Building the DNS view of them; zero while the view is held
    /// ([`Replica::hold_view`]).
    pub view: Duration,
}

/// The longest [`Replica::read_after_writers`] lets writers go first: a
/// writer holds the lock for one entry's apply, far less.
const WRITER_FIRST: Duration = Duration::from_millis(2);

/// Buckets of KV keys for blocking reads of one key to wait on.
const KEY_WATCH_BUCKETS: usize = 1024;

impl Default for Replica {
    fn default() -> Self {
        Self::new()
    }
}

impl Replica {
    /// An empty replica.
    pub fn new() -> Self {
        let (applied, _) = watch::channel(0);
        Self {
            state: RwLock::new(State::new()),
            view: ArcSwap::from_pointee(View::default()),
            view_held: AtomicBool::new(false),
            view_stale: AtomicBool::new(false),
            applied,
            acknowledged: AtomicU64::new(0),
            key_writes: (0..KEY_WATCH_BUCKETS)
                .map(|_| watch::channel(0).0)
                .collect(),
            history: Mutex::new(History::default()),
            acl: OnceLock::new(),
            tokens: ArcSwapOption::empty(),
            writers_waiting: AtomicU32::new(0),
            captures: Arc::default(),
        }
    }

    /// Turns on token resolution under `ctx` (the agent's ACL settings);
    /// the first call wins.
    pub fn enable_acl(&self, ctx: AclContext) {
        if self.acl.set(ctx).is_ok() {
            self.rebuild_tokens(&self.read());
        }
    }

    /// Every token resolved; `None` while ACLs are off. Never blocks.
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens.load_full()
    }

    /// Resolves every token of `state` again, reusing what can be.
    fn rebuild_tokens(&self, state: &State) {
        if let Some(ctx) = self.acl.get() {
            let previous = self.tokens.load_full();
            let next = Tokens::build(state, ctx, previous.as_deref());
            self.tokens.store(Some(Arc::new(next)));
        }
    }

    /// An empty replica that keeps its last `commands` applied commands (and
    /// the entries around them) for followers: what a server runs with.
    pub fn with_history(commands: usize) -> Self {
        let replica = Self::new();
        replica.history().capacity = commands;
        replica
    }

    /// Applies one committed command at `index`, in an entry without a
    /// time (what catalog tests and fixtures need), and republishes the view
    /// entries it touched.
    pub fn apply(&self, index: Index, cmd: &Command) -> Outcome {
        self.apply_at(index, 0, cmd)
    }

    /// Applies one committed command at `index` of an entry proposed at `time`.
    pub fn apply_at(&self, index: Index, time: Time, cmd: &Command) -> Outcome {
        self.apply_batch(index, time, std::slice::from_ref(cmd))
            .pop()
            .unwrap_or(Outcome::Noop)
    }

    /// Applies the commands of one log entry, all at the entry's `index`,
    /// under one lock, and publishes the view and the index once. Readers see
    /// the entry whole or not at all, so a blocking query woken at `index`
    /// never misses a later command of the same entry. The commands are
    /// kept, not copied, in the history followers read, until they are
    /// 64 entries old (`history.rs`).
    pub fn apply_batch(
        &self,
        index: Index,
        time: Time,
        cmds: impl Into<Arc<[Command]>>,
    ) -> Vec<Outcome> {
        self.apply_entry(index, time, cmds.into(), None)
    }

    /// [`Self::apply_batch`] of commands the caller has measured with
    /// [`encoded_size`] already (a server's state machine, which counts
    /// them towards its next snapshot).
    pub fn apply_measured(
        &self,
        index: Index,
        time: Time,
        cmds: Arc<[Command]>,
        encoded: usize,
    ) -> Vec<Outcome> {
        self.apply_entry(index, time, cmds, Some(encoded))
    }

    fn apply_entry(
        &self,
        index: Index,
        time: Time,
        cmds: Arc<[Command]>,
        encoded: Option<usize>,
    ) -> Vec<Outcome> {
        let mut state = self.write();
        let mut touched = Touched::default();
        let mut outcomes = Vec::with_capacity(cmds.len());
        for cmd in cmds.iter() {
            let (outcome, t) = state.apply(index, time, cmd);
            touched.extend(t);
            outcomes.push(outcome);
        }
        if cmds.is_empty() {
            state.apply_noop(index);
        }
        // Only what DNS answers from republishes the view: a KV write, a
        // session or a renewal leaves it, and the DNS caches keyed on it,
        // alone.
        let answers_changed = !touched.nodes.is_empty() || !touched.services.is_empty();
        if answers_changed && self.view_held.load(Ordering::Relaxed) {
            self.view_stale.store(true, Ordering::Relaxed);
        } else if answers_changed {
            let view =
                self.view
                    .load()
                    .updated(&state, touched.nodes.iter(), touched.services.iter());
            self.view.store(Arc::new(view));
        }
        if touched.acl {
            self.rebuild_tokens(&state);
        }
        drop(state);
        // After the state's lock, which readers wait on: the push may encode
        // an older entry. Before the index moves, so a follower woken by it
        // finds the entry; one that reads the state meanwhile follows on
        // from the index before (only this writer pushes or installs).
        self.history().push(
            Applied {
                index,
                time,
                commands: cmds,
            },
            encoded,
        );
        for key in &touched.kv_keys {
            self.key_bucket(key).send_replace(index);
        }
        self.applied.send_replace(index);
        outcomes
    }

    /// Records a log entry that carries no command (blank, membership).
    pub fn apply_noop(&self, index: Index) {
        let mut state = self.write();
        state.apply_noop(index);
        drop(state);
        // As in `apply_entry`: outside the state's lock (the push may
        // encode an older entry), before the index moves.
        self.history().push(
            Applied {
                index,
                time: 0,
                commands: Arc::new([]),
            },
            None,
        );
        self.applied.send_replace(index);
    }

    /// Marks the state as it is now, to be encoded while writes go on: the
    /// write lock is held only to mark it ([`StateCapture`]).
    pub async fn capture(&self) -> Captured {
        let installs_wait = self.captures.clone().read_owned().await;
        Captured {
            capture: self.write().capture(),
            _installs_wait: installs_wait,
        }
    }

    /// [`Self::install`] once no capture of the state is being read.
    pub async fn install_uncaptured(&self, snapshot: StateSnapshot) -> Installed {
        let _no_capture = self.captures.write().await;
        self.install(snapshot)
    }

    /// Replaces the whole state with a snapshot's and rebuilds the view. A
    /// capture being read meanwhile fails ([`super::CaptureError::Lost`]);
    /// where one may be, call [`Self::install_uncaptured`].
    pub fn install(&self, snapshot: StateSnapshot) -> Installed {
        let started = Instant::now();
        let next = State::from_snapshot(snapshot);
        let state_took = started.elapsed();
        let index = next.last_index();
        // Read without the lock: only the writer, this caller, changes it.
        let view = (!self.view_held.load(Ordering::Relaxed)).then(|| View::build(&next));
        let view_took = started.elapsed() - state_took;
        let mut state = self.write();
        let old = std::mem::replace(&mut *state, next);
        self.history().reset(index);
        match view {
            Some(view) => self.view.store(Arc::new(view)),
            None => self.view_stale.store(true, Ordering::Relaxed),
        }
        self.rebuild_tokens(&state);
        drop(state);
        drop(old);
        // A copy of the whole state is millions of small allocations; once
        // freed, the allocator kept their pages, so the process held a
        // second catalog's worth of memory until the next copy reused it
        // (`benches/scale`: about half of a durable server's `RssAnon` at
        // 100,000 instances).
        crate::heap::release_freed();
        // Any key may have changed.
        for bucket in &self.key_writes {
            bucket.send_replace(index);
        }
        self.applied.send_replace(index);
        Installed {
            state: state_took,
            view: view_took,
        }
    }

    /// Stops republishing the view until [`Self::release_view`]: what a
    /// server's start-up does while it restores its snapshot and replays
    /// its log, before anything answers from the view. One build from the
    /// whole state at the end costs a fraction of updating the view
    /// entry by entry (at 100,000 instances, measured by `benches/scale`).
    pub fn hold_view(&self) {
        let _state = self.write();
        self.view_held.store(true, Ordering::Relaxed);
    }

    /// Publishes the view again, built whole from the state if a change
    /// was held back; returns how long that build took. Under the state's
    /// lock, so a change applied next updates the view just built.
    pub fn release_view(&self) -> Option<Duration> {
        let state = self.write();
        if !self.view_held.swap(false, Ordering::Relaxed)
            || !self.view_stale.swap(false, Ordering::Relaxed)
        {
            return None;
        }
        let started = Instant::now();
        self.view.store(Arc::new(View::build(&state)));
        Some(started.elapsed())
    }

    /// The entries applied after `index`: at most `max_entries` of them
    /// and about `max_commands` commands (always at least one entry when
    /// there is one).
    pub fn since(&self, index: Index, max_entries: usize, max_commands: usize) -> Since {
        self.pending(index, max_entries, max_commands).decode()
    }

    /// [`Self::since`], not yet decoded: a follower whose range is already
    /// encoded for the others (`rpc/fanout.rs`) needs only its bounds.
    pub fn pending(&self, index: Index, max_entries: usize, max_commands: usize) -> Pending {
        // The lock is released before the caller decodes: the apply waits on it.
        self.history().after(index, max_entries, max_commands)
    }

    /// Whether a follower at `index` can follow on from the history, or
    /// needs the whole state.
    pub fn in_history(&self, index: Index) -> bool {
        index >= self.history().floor
    }

    /// A copy of the whole state, for tests to compare; taken under the
    /// read lock, so applying waits for it. Snapshots are not made from
    /// one: they encode a capture ([`Self::capture`]) while writes go on.
    #[cfg(test)]
    pub fn snapshot(&self) -> StateSnapshot {
        self.read().to_snapshot()
    }

    /// Read access to the tables. Hold it briefly: the state machine waits.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        // A writer that panicked mid-apply leaves a poisoned lock; the state is
        // still the last fully applied one because apply validates first.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.writers_waiting.fetch_add(1, Ordering::AcqRel);
        let state = self.state.write().unwrap_or_else(|e| e.into_inner());
        self.writers_waiting.fetch_sub(1, Ordering::AcqRel);
        state
    }

    /// Read access for a reader that takes the lock again and again, a
    /// slice of work each time (a snapshot's encoding): a writer waiting
    /// for the lock has it first. std's lock wakes a waiting writer when
    /// the last reader leaves, but a reader in a loop takes the lock again
    /// before the writer has woken, every time: the writer waited for the
    /// whole loop (a write through a server waited out every encoding of
    /// a snapshot, 140 ms at 100,000 rich instances, in `benches/scale`'s
    /// stall part). Waits at most [`WRITER_FIRST`] for writers.
    pub fn read_after_writers(&self) -> RwLockReadGuard<'_, State> {
        let started = Instant::now();
        while self.writers_waiting.load(Ordering::Acquire) > 0 && started.elapsed() < WRITER_FIRST {
            std::thread::yield_now();
        }
        self.read()
    }

    /// The current DNS view. Never blocks.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// The last applied index.
    pub fn applied_index(&self) -> Index {
        *self.applied.borrow()
    }

    /// Waits until this replica has applied `index` or `deadline` passes;
    /// whether it did. The one wait for "caught up to a given write or read
    /// index" every caller shares.
    pub async fn wait_applied(&self, index: Index, deadline: tokio::time::Instant) -> bool {
        let mut applied = self.applied.subscribe();
        // The sender is this replica's own, so the watch cannot close while
        // `self` is borrowed: only the deadline ends the wait early.
        matches!(
            tokio::time::timeout_at(deadline, applied.wait_for(|&i| i >= index)).await,
            Ok(Ok(_))
        )
    }

    /// Records that this agent answered a write made at `index`, which
    /// this replica may not have applied yet: a follower or a client agent
    /// learns of a commit a round trip after the leader, and later still
    /// while it encodes a snapshot (its apply waits for the encoding). The
    /// write's answer does not wait for that; the agent's next read does
    /// ([`Replica::wait_acknowledged`]).
    pub fn acknowledge(&self, index: Index) {
        self.acknowledged.fetch_max(index, Ordering::AcqRel);
    }

    /// Waits until this replica has applied every write its agent answered
    /// so far, or `deadline` passes; whether it did. What makes a read
    /// through an agent show the writes answered through it before, as
    /// Consul's default reads (served by the leader) do.
    pub async fn wait_acknowledged(&self, deadline: tokio::time::Instant) -> bool {
        let index = self.acknowledged.load(Ordering::Acquire);
        index <= self.applied_index() || self.wait_applied(index, deadline).await
    }

    /// A receiver that wakes whenever the applied index moves.
    pub fn subscribe(&self) -> watch::Receiver<Index> {
        self.applied.subscribe()
    }

    /// A receiver that wakes when KV key `key` (or another key that shares
    /// its bucket) is written or deleted, or a snapshot is installed: what a
    /// blocking read of one key waits on, so 10,000 of them parked on one
    /// key cost nothing when other keys or the catalog change (Consul #9449).
    pub fn subscribe_key(&self, key: &str) -> watch::Receiver<Index> {
        self.key_bucket(key).subscribe()
    }

    fn key_bucket(&self, key: &str) -> &watch::Sender<Index> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        // The modulo keeps the value below the bucket count, a usize.
        let at = (h.finish() % KEY_WATCH_BUCKETS as u64) as usize;
        &self.key_writes[at]
    }
}
