//! When a snapshot is due by the commands applied since the last one.
//!
//! openraft's policy counts log entries (`raft_snapshot_threshold`, as
//! Consul's does). In Consul one entry is one write; here group commit puts
//! up to `max_batch` writes in one entry, so counted in entries the log's
//! tail grew up to that many times longer than Consul's before a
//! snapshot, and a restart replayed all of it: 100,000 registrations
//! loaded 128 at a time are 2,000 entries, no snapshot, and 1 s of replay
//! before the first DNS answer (`benches/scale`). This counts commands
//! too, with the same threshold, and asks Raft for a snapshot when they
//! reach it; openraft's own entry count still applies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::types::Raft;

/// Commands applied since the state the last snapshot holds.
#[derive(Debug)]
pub(crate) struct SnapshotDue {
    /// Commands applied since the last snapshot's copy of the catalog.
    since: AtomicU64,
    /// How many make a snapshot due.
    threshold: u64,
    /// Woken while a snapshot is due.
    due: Notify,
}

impl SnapshotDue {
    /// Due after `threshold` commands (at least 1).
    pub(crate) fn new(threshold: u64) -> Arc<Self> {
        Arc::new(Self {
            since: AtomicU64::new(0),
            threshold: threshold.max(1),
            due: Notify::new(),
        })
    }

    /// Counts `commands` just applied; wakes [`Self::watch`] while a
    /// snapshot is due (a request Raft ignores while it builds one is
    /// made again on the next apply).
    pub(crate) fn applied(&self, commands: usize) {
        let commands = u64::try_from(commands).unwrap_or(u64::MAX);
        let add = |n: u64| Some(n.saturating_add(commands));
        // The closure never refuses, so both arms hold the value before.
        let before = match self
            .since
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, add)
        {
            Ok(n) | Err(n) => n,
        };
        let since = before.saturating_add(commands);
        if since >= self.threshold {
            self.due.notify_one();
        }
    }

    /// The catalog was just copied for a snapshot, or replaced by one.
    pub(crate) fn reset(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    /// Whether a snapshot is due now.
    fn is_due(&self) -> bool {
        self.since.load(Ordering::Relaxed) >= self.threshold
    }

    /// Asks `raft` for a snapshot whenever one is due, until `stop`.
    pub(crate) fn watch(self: Arc<Self>, raft: Raft, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.due.notified() => {}
                }
                if self.is_due() && raft.trigger().snapshot().await.is_err() {
                    // Raft has stopped.
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_once_the_commands_since_the_last_snapshot_reach_the_threshold() {
        let due = SnapshotDue::new(10);
        due.applied(4);
        due.applied(5);
        assert!(!due.is_due(), "9 of 10");
        due.applied(1);
        assert!(due.is_due(), "10 of 10");
        due.reset();
        assert!(!due.is_due(), "a snapshot was taken");
        due.applied(usize::MAX);
        assert!(due.is_due(), "saturates, never wraps");
    }
}
