//! On the leader: the clock over the replicated state. A session with a TTL
//! carries its deadline in the catalog (`Session::expires`, set on apply
//! from the entry's time), and every deleted key leaves a dated tombstone;
//! what is due is decided here and proposed through the log like any write,
//! so apply stays deterministic.
//!
//! The leader sleeps until the earliest session deadline, waking early when
//! the sessions table changes (a create may bring an earlier deadline; a
//! renew only moves one later, so it needs no wake), then proposes
//! `SessionOp::Expire` with the sessions due. The state machine expires only
//! those still due at the entry's time, so a renew that races the proposal
//! wins. Because the deadlines are replicated, a new leader simply carries
//! on where the old one stopped: a session is not granted a fresh TTL by a
//! leader change (Consul #1172, #2347).
//!
//! Tombstones are reaped in rounds at least [`REAP_EVERY`] apart, as
//! Consul's tombstone GC groups them, so a stream of deletes costs one log
//! entry per round and not one per delete.
//!
//! [`sessions_due`] and [`reap_due`] are pure: from the catalog and the
//! clock, what to propose and when to look again. [`run`] is the loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Command, Index, Replica, SessionOp, State, Time};
use crate::config::KvSettings;
use crate::consensus::{Consensus, now_ms};

/// The shortest time between two tombstone reaps.
pub const REAP_EVERY: Duration = Duration::from_secs(30);

/// Most sessions one expiry entry names; the rest follow in the next one.
/// Keeps an entry far below the log's entry size limit however many
/// sessions come due at once.
const MAX_EXPIRE_PER_ENTRY: usize = 1024;

/// The longest the loop sleeps without looking at the clock again, so that
/// a step of the wall clock (deadlines are wall-clock times) is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// How often a server that does not lead asks whether it leads now.
const LEADER_POLL: Duration = Duration::from_millis(250);

/// The first pause after a failed proposal; doubled per failure up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest pause between retries of a failed proposal.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The sessions due for expiry at `now` (at most `MAX_EXPIRE_PER_ENTRY`)
/// and, when none is, the earliest deadline to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionTimer {
    /// Propose the expiry of these sessions now (never empty).
    Expire(Vec<String>),
    /// Nothing is due; the earliest deadline, if any session has a TTL.
    Wait(Option<Time>),
}

/// What the sessions table asks of the leader at `now`.
pub fn sessions_due(state: &State, now: Time) -> SessionTimer {
    let mut due = state.sessions_due(now);
    if due.is_empty() {
        return SessionTimer::Wait(state.next_session_deadline());
    }
    due.truncate(MAX_EXPIRE_PER_ENTRY);
    SessionTimer::Expire(due)
}

/// What the tombstones ask of the leader at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapTimer {
    /// Propose reaping the tombstones of deletes before this time.
    Reap(Time),
    /// Nothing is due before this time: look again then.
    Wait(Time),
}

/// Whether a tombstone is older than `ttl` at `now` (the reap takes those
/// dated strictly before `now - ttl`) or a lock-delay is over (the reap
/// clears those too); if neither, when to look again: not before
/// [`REAP_EVERY`] from now, nor before the oldest tombstone comes due
/// (every newer one comes due later) or the earliest lock-delay ends.
pub fn reap_due(state: &State, now: Time, ttl: Duration) -> ReapTimer {
    let ttl = millis(ttl);
    let tombstone_due = state
        .kv_oldest_tombstone()
        .map(|t| t.saturating_add(ttl).saturating_add(1));
    let delay_over = state.kv_earliest_delay_end();
    let next = tombstone_due.into_iter().chain(delay_over).min();
    if next.is_some_and(|at| at <= now) {
        return ReapTimer::Reap(now.saturating_sub(ttl));
    }
    let round = now.saturating_add(millis(REAP_EVERY));
    ReapTimer::Wait(round.max(next.unwrap_or(now.saturating_add(ttl).saturating_add(1))))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs on every server; acts while this server leads. Ends with `stop`.
pub async fn run(
    consensus: Arc<Consensus>,
    replica: Arc<Replica>,
    settings: KvSettings,
    stop: CancellationToken,
) {
    let mut applied = replica.subscribe();
    // When the next tombstone round is due; 0 checks at once (a server that
    // just became leader looks first).
    let mut next_reap: Time = 0;
    let mut retry = FIRST_RETRY;
    loop {
        if !consensus.is_leader() {
            next_reap = 0;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(LEADER_POLL) => continue,
            }
        }
        let now = now_ms();
        let (sessions, sessions_index) = {
            let state = replica.read();
            (sessions_due(&state, now), state.sessions_index())
        };
        let mut failed = false;
        let mut wake = now.saturating_add(millis(MAX_SLEEP));
        match sessions {
            SessionTimer::Expire(ids) => {
                tracing::debug!(count = ids.len(), "expiring sessions");
                let first = ids.first().cloned().unwrap_or_default();
                let cmd = Command::Session(SessionOp::Expire { ids });
                match consensus.write_as_leader(cmd).await {
                    // Look again at once: more may be due. Unless nothing
                    // went: the entry was dated before the deadline (the
                    // clock stepped back) or a renewal came first; then
                    // pause rather than fill the log with the same entry.
                    Ok(_) if replica.read().session(&first).is_none() => {
                        retry = FIRST_RETRY;
                        continue;
                    }
                    Ok(_) => failed = true,
                    Err(e) => {
                        tracing::debug!(error = %e, "session expiry failed; retrying");
                        failed = true;
                    }
                }
            }
            // One millisecond past the deadline, so it has passed by the
            // clock's reading when the loop wakes.
            SessionTimer::Wait(Some(at)) => wake = wake.min(at.saturating_add(1)),
            SessionTimer::Wait(None) => {}
        }
        if !failed && now >= next_reap {
            let reap = reap_due(&replica.read(), now, settings.tombstone_ttl);
            match reap {
                ReapTimer::Reap(deleted_before) => {
                    let cmd = Command::ReapTombstones { deleted_before };
                    match consensus.write_as_leader(cmd).await {
                        Ok(_) => next_reap = now.saturating_add(millis(REAP_EVERY)),
                        Err(e) => {
                            tracing::debug!(error = %e, "reaping tombstones failed; retrying");
                            failed = true;
                        }
                    }
                }
                ReapTimer::Wait(at) => next_reap = at,
            }
        }
        if failed {
            wake = now.saturating_add(millis(retry));
            retry = (retry * 2).min(MAX_RETRY);
        } else {
            retry = FIRST_RETRY;
            wake = wake.min(next_reap);
        }
        let sleep = Duration::from_millis(wake.saturating_sub(now_ms()));
        if !wait(&replica, &mut applied, sessions_index, sleep, &stop).await {
            return;
        }
    }
}

/// Sleeps for `sleep`, or until the sessions table moves past `seen` (a
/// create may bring an earlier deadline). False when it is time to stop.
async fn wait(
    replica: &Replica,
    applied: &mut watch::Receiver<Index>,
    seen: Index,
    sleep: Duration,
    stop: &CancellationToken,
) -> bool {
    let until = tokio::time::Instant::now() + sleep;
    loop {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep_until(until) => return true,
            changed = applied.changed() => {
                if changed.is_err() {
                    return false;
                }
                // Most applied entries are not about sessions: a read of one
                // index, and back to sleep.
                if replica.read().sessions_index() != seen {
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
