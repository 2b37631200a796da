//! When a snapshot is due by the commands applied since the last one.
//!
//! openraft's policy counts log entries (`raft_snapshot_threshold`, as
//! Consul's does). In Consul one entry is one write; here group commit puts
//! up to `max_batch` writes in one entry, so counted in entries the log's
//! tail grew up to that many times longer than Consul's before a
//! snapshot, and a restart replayed all of it: 100,000 registrations
//! loaded 128 at a time are 2,000 entries, no snapshot, and 1 s of replay
//! before the first DNS answer (`benches/scale`).
//!
//! So a snapshot is also due when both hold:
//! - the commands since the last snapshot reach the same threshold, and
//! - their encoded bytes reach a quarter of the last snapshot's.
//!
//! The second bound keeps a large state from being encoded every
//! `threshold` writes: the interval grows with the state, so what
//! snapshots cost per write stays constant, and the tail a restart
//! replays stays within about a quarter of the state it restores.
//!
//! Both bounds are stretched by a factor drawn anew after every snapshot,
//! between 1 and 2, as hashicorp/raft staggers its snapshot checks: every
//! server applies the same log, and counted exactly, both followers of a
//! 3-server cluster encoded their state at the same index. While a server
//! encodes, its own apply waits, and with the snapshot's file write beside
//! it, its appends were acknowledged late; both at once left the leader
//! without a quorum for the length of an encoding (`cluster_vs_etcd` with
//! 64 clients: writes of 300–570 ms, sent as both followers encoded at
//! indexes 6,075, 7,937 and 17,878).
//!
//! A leader with followers leaves this count to them and keeps to
//! openraft's: encoding holds its apply, and so every write's answer, up
//! (tens of milliseconds at 100,000 keys), while a follower's encoding
//! holds up no commit (it appends and acknowledges meanwhile; only its own
//! apply waits). Measured with 64 writing clients on 3 servers
//! (`cluster_vs_etcd`): counting commands on every server, each encoded
//! its growing state every couple of seconds, all three at the same
//! index, and p99.9 write latency went from about 1.2× p99 to 5–35×.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::types::Raft;

/// The share of the last snapshot's size the commands since must reach.
const TAIL_SHARE: u64 = 4;

/// The stagger's unit: a stagger of `STAGGER_ONE` leaves the bounds as
/// they are, `2 * STAGGER_ONE` doubles them.
const STAGGER_ONE: u64 = 1024;

/// A new stagger, uniform in [1, 2).
fn draw_stagger() -> u64 {
    STAGGER_ONE + rand::random_range(0..STAGGER_ONE)
}

/// `bound` stretched by `stagger`, saturating.
fn staggered(bound: u64, stagger: u64) -> u64 {
    let stretched = u128::from(bound) * u128::from(stagger) / u128::from(STAGGER_ONE);
    u64::try_from(stretched).unwrap_or(u64::MAX)
}

/// Commands applied since the state the last snapshot holds.
#[derive(Debug)]
pub(crate) struct SnapshotDue {
    /// Commands applied since the last snapshot's state.
    commands: AtomicU64,
    /// Their encoded bytes.
    bytes: AtomicU64,
    /// The last snapshot's encoded size.
    snapshot_bytes: AtomicU64,
    /// How many commands make a snapshot due (at least 1), before the
    /// stagger.
    threshold: u64,
    /// This interval's stagger, in 1/[`STAGGER_ONE`]: both bounds are
    /// multiplied by `stagger / STAGGER_ONE`, between 1 and 2.
    stagger: AtomicU64,
    /// Woken while a snapshot is due.
    due: Notify,
}

/// Adds `n` to `counter`, saturating; returns the new value.
fn add(counter: &AtomicU64, n: u64) -> u64 {
    let add = |v: u64| Some(v.saturating_add(n));
    // The closure never refuses, so both arms hold the value before.
    match counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, add) {
        Ok(before) | Err(before) => before.saturating_add(n),
    }
}

impl SnapshotDue {
    /// Due after `threshold` commands, and a quarter of the last
    /// snapshot's bytes.
    pub(crate) fn new(threshold: u64) -> Arc<Self> {
        Arc::new(Self {
            commands: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            threshold: threshold.max(1),
            stagger: AtomicU64::new(draw_stagger()),
            due: Notify::new(),
        })
    }

    /// Counts `commands` just applied, `bytes` encoded; wakes
    /// [`Self::watch`] while a snapshot is due (a request Raft ignores
    /// while it builds one is made again on the next apply).
    pub(crate) fn applied(&self, commands: usize, bytes: usize) {
        add(&self.commands, u64::try_from(commands).unwrap_or(u64::MAX));
        add(&self.bytes, u64::try_from(bytes).unwrap_or(u64::MAX));
        if self.is_due() {
            self.due.notify_one();
        }
    }

    /// The state was replaced by (or restored from) a snapshot of
    /// `snapshot_bytes`.
    pub(crate) fn reset(&self, snapshot_bytes: usize) {
        self.captured();
        self.built(snapshot_bytes);
    }

    /// The state was just marked for a snapshot: what is applied from now
    /// on is not in it.
    pub(crate) fn captured(&self) {
        self.commands.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.stagger.store(draw_stagger(), Ordering::Relaxed);
    }

    /// The snapshot marked last encoded to `snapshot_bytes`.
    pub(crate) fn built(&self, snapshot_bytes: usize) {
        let size = u64::try_from(snapshot_bytes).unwrap_or(u64::MAX);
        self.snapshot_bytes.store(size, Ordering::Relaxed);
    }

    /// Whether a snapshot is due now.
    fn is_due(&self) -> bool {
        let stagger = self.stagger.load(Ordering::Relaxed);
        let tail = self.snapshot_bytes.load(Ordering::Relaxed) / TAIL_SHARE;
        self.commands.load(Ordering::Relaxed) >= staggered(self.threshold, stagger)
            && self.bytes.load(Ordering::Relaxed) >= staggered(tail, stagger)
    }

    /// Asks `raft` for a snapshot whenever one is due, until `stop`.
    pub(crate) fn watch(self: Arc<Self>, raft: Raft, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.due.notified() => {}
                }
                if self.is_due()
                    && !leads_followers(&raft)
                    && raft.trigger().snapshot().await.is_err()
                {
                    // Raft has stopped.
                    return;
                }
            }
        })
    }
}

/// Whether this server leads a cluster of more than itself.
fn leads_followers(raft: &Raft) -> bool {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    m.state.is_leader() && m.membership_config.membership().voter_ids().count() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `due` with its stagger fixed at `stagger / STAGGER_ONE`.
    fn fixed(due: &SnapshotDue, stagger: u64) {
        due.stagger.store(stagger, Ordering::Relaxed);
    }

    #[test]
    fn due_once_the_commands_reach_the_threshold_and_their_bytes_a_quarter_of_the_snapshot() {
        let due = SnapshotDue::new(10);
        fixed(&due, STAGGER_ONE);
        due.applied(4, 40);
        due.applied(5, 50);
        assert!(!due.is_due(), "9 of 10 commands");
        due.applied(1, 10);
        assert!(due.is_due(), "10 of 10, no snapshot yet");

        due.reset(4_000);
        fixed(&due, STAGGER_ONE);
        due.applied(10, 999);
        assert!(
            !due.is_due(),
            "999 bytes of the 1,000 a quarter of 4,000 is"
        );
        due.applied(0, 1);
        assert!(due.is_due(), "a quarter");

        due.reset(0);
        fixed(&due, STAGGER_ONE);
        due.applied(usize::MAX, usize::MAX);
        due.applied(usize::MAX, 1);
        assert!(due.is_due(), "saturates, never wraps");
    }

    #[test]
    fn the_stagger_stretches_both_bounds_and_is_drawn_anew_after_each_snapshot() {
        let due = SnapshotDue::new(100);
        due.reset(40_000);
        fixed(&due, STAGGER_ONE + STAGGER_ONE / 2);
        due.applied(149, 20_000);
        assert!(!due.is_due(), "149 of the 150 commands 1.5 × 100 is");
        due.applied(1, 0);
        assert!(due.is_due(), "150 commands");

        due.reset(40_000);
        fixed(&due, STAGGER_ONE + STAGGER_ONE / 2);
        due.applied(1_000, 14_999);
        assert!(!due.is_due(), "14,999 of the 15,000 bytes 1.5 × 10,000 is");
        due.applied(0, 1);
        assert!(due.is_due(), "15,000 bytes");

        // Drawn in [1, 2), and not always the same: two servers that apply
        // the same log snapshot at different indexes.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            due.reset(0);
            let stagger = due.stagger.load(Ordering::Relaxed);
            assert!(
                (STAGGER_ONE..2 * STAGGER_ONE).contains(&stagger),
                "{stagger}"
            );
            seen.insert(stagger);
        }
        assert!(seen.len() > 1, "the same stagger 64 times");
        assert_eq!(staggered(u64::MAX, 2 * STAGGER_ONE), u64::MAX, "saturates");
    }
}
