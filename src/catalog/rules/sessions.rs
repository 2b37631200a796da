//! Sessions: creation against the node and checks they depend on, renewal,
//! the leader's expiry, destruction, and what invalidating one does to the
//! keys it holds.
//!
//! A session with a TTL carries its deadline (`Session::expires`), set from
//! the time of the entry that created or renewed it plus twice the TTL, as
//! Consul grants. The deadline is replicated, so a new leader expires
//! sessions when they are due instead of granting every one a fresh TTL
//! (Consul #1172, #2347).
//!
//! Invalidating a session (destroyed, expired, its node deregistered, a
//! check of it deregistered or critical) releases or deletes its keys by its
//! `Behavior` in the same entry, and puts its lock-delay on each: no other
//! session may lock them until the entry's time plus the delay. Releasing
//! a lock (`?release`) is not an invalidation and sets no delay, as Consul.

use super::super::command::{CatalogError, SessionError};
use super::super::kv_types::{Behavior, Session, SessionOp, Time};
use super::super::tables::{Tables, key, row_key};
use super::super::types::{HealthStatus, Index};

/// Applies one session op at `index`, at the leader's `time`.
pub(crate) fn apply(
    tables: &mut Tables,
    index: Index,
    time: Time,
    op: &SessionOp,
) -> Result<(), CatalogError> {
    match op {
        SessionOp::Create(s) => create(tables, index, time, s),
        SessionOp::Destroy { id } => {
            // Consul answers a destroy of a missing session with success.
            invalidate(tables, index, time, id);
            Ok(())
        }
        SessionOp::Renew { id } => {
            let Some(s) = tables.sessions.get(id) else {
                return Err(SessionError::NotFound(id.clone()).into());
            };
            let expires = deadline(time, s.ttl_ms);
            tables.sessions.set_expiry(id, expires);
            Ok(())
        }
        SessionOp::Expire { ids } => {
            for id in ids {
                let due = tables
                    .sessions
                    .get(id)
                    .and_then(|s| s.expires)
                    .is_some_and(|at| at <= time);
                if due {
                    invalidate(tables, index, time, id);
                }
            }
            Ok(())
        }
    }
}

/// The longest lock-delay, whatever a session asked for: Consul's
/// `MaxLockDelay`, enforced where the delay is put on.
const MAX_LOCK_DELAY_MS: u64 = 60_000;

/// Twice the TTL from `time`, as Consul grants; `None` without a TTL.
fn deadline(time: Time, ttl_ms: u64) -> Option<Time> {
    (ttl_ms > 0).then(|| time.saturating_add(ttl_ms.saturating_mul(2)))
}

fn create(tables: &mut Tables, index: Index, time: Time, s: &Session) -> Result<(), CatalogError> {
    if tables.sessions.get(&s.id).is_some() {
        return Err(SessionError::Duplicate(s.id.clone()).into());
    }
    let node_key = key(&s.node);
    if tables.nodes.get(&node_key).is_none() {
        return Err(SessionError::NoNode.into());
    }
    for check in s.check_ids() {
        match tables.checks.get(&row_key(&node_key, check)) {
            None => return Err(SessionError::NoCheck(check.to_string()).into()),
            Some(c) if c.status == HealthStatus::Critical => {
                return Err(SessionError::CheckCritical(check.to_string()).into());
            }
            Some(_) => {}
        }
    }
    let mut s = s.clone();
    s.create_index = index;
    s.modify_index = index;
    s.expires = deadline(time, s.ttl_ms);
    tables.sessions.insert(index, s);
    Ok(())
}

/// Ends session `id`, if it exists: releases or deletes the keys it holds
/// and puts its lock-delay on them.
pub(crate) fn invalidate(tables: &mut Tables, index: Index, time: Time, id: &str) {
    let Some(s) = tables.sessions.remove(index, id) else {
        return;
    };
    // Consul deletes the queries bound to a session with it.
    super::prepared_queries::drop_session(tables, index, id);
    let delay_ms = (s.lock_delay_ns / 1_000_000).min(MAX_LOCK_DELAY_MS);
    for k in tables.kv.held_by(id) {
        match s.behavior {
            Behavior::Release => {
                if let Some(e) = tables.kv.get(&k) {
                    let mut e = e.clone();
                    e.session = None;
                    e.modify_index = index;
                    tables.kv.put(index, e);
                }
            }
            Behavior::Delete => {
                tables.kv.remove(index, time, &k);
            }
        }
        if delay_ms > 0 {
            tables.kv.set_delay(&k, time.saturating_add(delay_ms));
        }
    }
}
