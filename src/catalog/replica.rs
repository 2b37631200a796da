//! One process's applied copy of the catalog, and on servers the recent
//! history of what was applied, which client agents follow to keep their own
//! copies current.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::command::{Command, Outcome};
use super::state::{Catalog, Changes};
use super::types::Index;
use super::view::View;

/// The catalog as applied so far, shared by the Raft state machine (the only
/// writer), the HTTP API (readers under a short read lock) and DNS (readers of
/// the lock-free [`View`]).
#[derive(Debug)]
pub struct Replica {
    /// The tables. Writers hold the lock only for one `apply`.
    state: RwLock<Catalog>,
    /// The health-filtered view, republished after every change.
    view: ArcSwap<View>,
    /// The last applied index, for blocking queries to wait on.
    applied: watch::Sender<Index>,
    /// The entries applied most recently, for followers (empty when the
    /// replica keeps no history).
    history: Mutex<History>,
}

/// Applied entries, oldest first, bounded by their number of commands.
#[derive(Debug, Default)]
struct History {
    /// `(index, commands)` per entry; an entry without commands (blank,
    /// membership) is kept with none, so followers' indexes match.
    entries: VecDeque<(Index, Arc<[Command]>)>,
    /// Commands held in `entries`.
    commands: usize,
    /// Most commands to hold; 0 keeps no history.
    capacity: usize,
    /// Every entry after this index is in `entries` (the snapshot or the
    /// last entry evicted).
    floor: Index,
}

impl History {
    fn push(&mut self, index: Index, cmds: Arc<[Command]>) {
        if self.capacity == 0 {
            self.floor = index;
            return;
        }
        self.commands += cmds.len();
        self.entries.push_back((index, cmds));
        while self.commands > self.capacity {
            let Some((index, cmds)) = self.entries.pop_front() else {
                break;
            };
            self.commands -= cmds.len();
            self.floor = index;
        }
    }

    fn reset(&mut self, index: Index) {
        self.entries.clear();
        self.commands = 0;
        self.floor = index;
    }
}

/// What a follower at some index needs next.
#[derive(Debug, PartialEq)]
pub enum Since {
    /// The entries after its index, in order (none when it is current).
    Entries(Vec<(Index, Arc<[Command]>)>),
    /// Its index is older than the history: it needs the whole state.
    TooOld,
}

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
            state: RwLock::new(Catalog::new()),
            view: ArcSwap::from_pointee(View::default()),
            applied,
            history: Mutex::new(History::default()),
        }
    }

    /// An empty replica that keeps its last `commands` applied commands (and
    /// the entries around them) for followers: what a server runs with.
    pub fn with_history(commands: usize) -> Self {
        let replica = Self::new();
        replica.history().capacity = commands;
        replica
    }

    /// Applies one committed command at `index` and republishes the view
    /// entries it touched.
    pub fn apply(&self, index: Index, cmd: &Command) -> Outcome {
        self.apply_batch(index, std::slice::from_ref(cmd))
            .pop()
            .unwrap_or(Outcome::Noop)
    }

    /// Applies the commands of one log entry, all at the entry's `index`,
    /// under one lock, and publishes the view and the index once. Readers see
    /// the entry whole or not at all, so a blocking query woken at `index`
    /// never misses a later command of the same entry. The commands are
    /// kept, not copied, in the history followers read.
    pub fn apply_batch(&self, index: Index, cmds: impl Into<Arc<[Command]>>) -> Vec<Outcome> {
        let cmds: Arc<[Command]> = cmds.into();
        let mut state = self.write();
        let mut touched = Changes::default();
        let mut outcomes = Vec::with_capacity(cmds.len());
        for cmd in cmds.iter() {
            let (outcome, changes) = state.apply(index, cmd);
            touched.nodes.extend(changes.nodes);
            touched.services.extend(changes.services);
            outcomes.push(outcome);
        }
        if cmds.is_empty() {
            state.apply_noop(index);
        }
        self.history().push(index, cmds);
        let view = self
            .view
            .load()
            .updated(&state, touched.nodes.iter(), touched.services.iter());
        self.view.store(Arc::new(view));
        drop(state);
        self.applied.send_replace(index);
        outcomes
    }

    /// Records a log entry that carries no command (blank, membership).
    pub fn apply_noop(&self, index: Index) {
        let mut state = self.write();
        state.apply_noop(index);
        self.history().push(index, Arc::new([]));
        drop(state);
        self.applied.send_replace(index);
    }

    /// Replaces the whole state (installing a snapshot) and rebuilds the view.
    pub fn install(&self, catalog: Catalog) {
        let index = catalog.last_index();
        let view = View::build(&catalog);
        let mut state = self.write();
        *state = catalog;
        self.history().reset(index);
        self.view.store(Arc::new(view));
        drop(state);
        self.applied.send_replace(index);
    }

    /// The entries applied after `index`: at most `max_entries` of them
    /// and about `max_commands` commands (always at least one entry when
    /// there is one).
    pub fn since(&self, index: Index, max_entries: usize, max_commands: usize) -> Since {
        let history = self.history();
        if index < history.floor {
            return Since::TooOld;
        }
        let start = history.entries.partition_point(|(i, _)| *i <= index);
        let mut commands = 0;
        let entries = history
            .entries
            .range(start..)
            .take(max_entries.max(1))
            .take_while(|(_, cmds)| {
                let first = commands == 0;
                commands += cmds.len().max(1);
                first || commands <= max_commands
            })
            .cloned()
            .collect();
        Since::Entries(entries)
    }

    /// A copy of the whole state, for a snapshot.
    pub fn snapshot(&self) -> Catalog {
        self.read().clone()
    }

    /// Read access to the tables. Hold it briefly: the state machine waits.
    pub fn read(&self) -> RwLockReadGuard<'_, Catalog> {
        // A writer that panicked mid-apply leaves a poisoned lock; the state is
        // still the last fully applied one because apply validates first.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The current DNS view. Never blocks.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// The last applied index.
    pub fn applied_index(&self) -> Index {
        *self.applied.borrow()
    }

    /// A receiver that wakes whenever the applied index moves.
    pub fn subscribe(&self) -> watch::Receiver<Index> {
        self.applied.subscribe()
    }
}
