//! One process's applied copy of the catalog.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::state::{Catalog, Changes};
use super::types::{Command, Index, Outcome};
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
        }
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
    /// never misses a later command of the same entry.
    pub fn apply_batch(&self, index: Index, cmds: &[Command]) -> Vec<Outcome> {
        let mut state = self.write();
        let mut touched = Changes::default();
        let mut outcomes = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            let (outcome, changes) = state.apply(index, cmd);
            touched.nodes.extend(changes.nodes);
            touched.services.extend(changes.services);
            outcomes.push(outcome);
        }
        if cmds.is_empty() {
            state.apply_noop(index);
        }
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
        self.write().apply_noop(index);
        self.applied.send_replace(index);
    }

    /// Replaces the whole state (installing a snapshot) and rebuilds the view.
    pub fn install(&self, catalog: Catalog) {
        let index = catalog.last_index();
        let view = View::build(&catalog);
        *self.write() = catalog;
        self.view.store(Arc::new(view));
        self.applied.send_replace(index);
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
