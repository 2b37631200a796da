//! The KV verbs, Consul's semantics: one operation (`PUT`/`DELETE /v1/kv`)
//! or a transaction's operations in order, all or none, at one index.
//!
//! Operations run against an overlay of the KV table: each sees what the
//! ones before it wrote, and nothing reaches the table unless every one
//! succeeded, so a failed transaction changes nothing and reports every
//! error (as Consul collects them). Then the overlay is committed: a key
//! written identically is left alone (its ModifyIndex does not move), a
//! deleted key leaves a tombstone.
//!
//! Locks: `lock` needs an existing session and a key not held by another
//! and not under lock-delay at the entry's time; a new holder bumps
//! LockIndex, the same holder keeps it. `unlock` needs the holder's
//! session; it clears the holder, keeps LockIndex and writes the value, as
//! Consul does. A plain set or delete of a held key succeeds: locks are
//! advisory (Consul #1623).

use std::collections::BTreeMap;

use super::super::command::{CatalogError, KvError};
use super::super::kv_types::{KvEntry, KvOp, KvVerb, Time, TxnError, TxnOp, TxnResult};
use super::super::tables::{Kv, Sessions, Tables};
use super::super::types::Index;

/// Applies one KV operation; its error is the command's refusal.
pub(crate) fn apply(
    tables: &mut Tables,
    index: Index,
    time: Time,
    op: &KvOp,
) -> Result<Vec<TxnResult>, CatalogError> {
    let mut overlay = Overlay::new(&tables.kv);
    let results = step(&mut overlay, &tables.sessions, index, time, op)?;
    let changes = overlay.changes;
    commit(&mut tables.kv, index, time, changes);
    Ok(results)
}

/// Applies a transaction's operations in order, all or none.
pub(crate) fn apply_txn(
    tables: &mut Tables,
    index: Index,
    time: Time,
    ops: &[TxnOp],
) -> Result<Vec<TxnResult>, Vec<TxnError>> {
    // As Consul's Txn.preCheck: locks under a lock-delay fail the
    // transaction before any op runs, and only they are reported.
    let delayed: Vec<TxnError> = ops
        .iter()
        .enumerate()
        .filter(|(_, TxnOp::Kv(op))| {
            op.verb == KvVerb::Lock && lock_delayed(&tables.kv, &op.key, time)
        })
        .map(|(op_index, TxnOp::Kv(op))| TxnError {
            op_index,
            what: KvError::LockDelay(op.key.clone()).to_string(),
        })
        .collect();
    if !delayed.is_empty() {
        return Err(delayed);
    }
    let mut overlay = Overlay::new(&tables.kv);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (op_index, op) in ops.iter().enumerate() {
        let TxnOp::Kv(op) = op;
        match step(&mut overlay, &tables.sessions, index, time, op) {
            Ok(r) => results.extend(r),
            Err(e) => errors.push(TxnError {
                op_index,
                what: e.to_string(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let changes = overlay.changes;
    commit(&mut tables.kv, index, time, changes);
    Ok(results)
}

/// Runs a transaction that only reads against the tables as they are,
/// without a log entry (a read-only `/v1/txn`).
pub(crate) fn evaluate(tables: &Tables, ops: &[TxnOp]) -> Result<Vec<TxnResult>, Vec<TxnError>> {
    let mut overlay = Overlay::new(&tables.kv);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (op_index, op) in ops.iter().enumerate() {
        let TxnOp::Kv(op) = op;
        match step(&mut overlay, &tables.sessions, 0, 0, op) {
            Ok(r) => results.extend(r),
            Err(e) => errors.push(TxnError {
                op_index,
                what: e.to_string(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(results)
    } else {
        Err(errors)
    }
}

/// The KV table with a transaction's writes laid over it.
struct Overlay<'a> {
    kv: &'a Kv,
    /// Written keys: `Some` is the new entry, `None` a delete.
    changes: BTreeMap<String, Option<KvEntry>>,
}

impl<'a> Overlay<'a> {
    fn new(kv: &'a Kv) -> Self {
        Self {
            kv,
            changes: BTreeMap::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&KvEntry> {
        match self.changes.get(key) {
            Some(change) => change.as_ref(),
            None => self.kv.get(key),
        }
    }

    /// Every key under `prefix` as the transaction sees it, in key order.
    fn under(&self, prefix: &str) -> Vec<KvEntry> {
        let mut merged: BTreeMap<&str, &KvEntry> =
            self.kv.under(prefix).map(|e| (e.key.as_str(), e)).collect();
        let changed = self
            .changes
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix));
        for (k, change) in changed {
            match change {
                Some(e) => merged.insert(k.as_str(), e),
                None => merged.remove(k.as_str()),
            };
        }
        merged.into_values().cloned().collect()
    }

    fn put(&mut self, e: KvEntry) {
        self.changes.insert(e.key.clone(), Some(e));
    }

    fn delete(&mut self, key: &str) {
        if self.get(key).is_some() {
            self.changes.insert(key.to_string(), None);
        }
    }
}

/// The entry `op` writes over `existing`, keeping its holder and LockIndex;
/// `None` when it would change nothing (an identical rewrite).
fn written(existing: Option<&KvEntry>, op: &KvOp, index: Index) -> Option<KvEntry> {
    if let Some(e) = existing
        && e.value == op.value
        && e.flags == op.flags
    {
        return None;
    }
    Some(KvEntry {
        key: op.key.clone(),
        value: op.value.clone(),
        flags: op.flags,
        session: existing.and_then(|e| e.session.clone()),
        lock_index: existing.map_or(0, |e| e.lock_index),
        create_index: existing.map_or(index, |e| e.create_index),
        modify_index: index,
    })
}

/// An entry as a write verb reports it: without its value.
fn without_value(e: &KvEntry) -> TxnResult {
    TxnResult::Kv(KvEntry {
        value: Vec::new(),
        ..e.clone()
    })
}

/// Writes `op` as a set and reports the entry as it now is.
fn set(overlay: &mut Overlay<'_>, op: &KvOp, index: Index) -> Vec<TxnResult> {
    let existing = overlay.get(&op.key).cloned();
    match written(existing.as_ref(), op, index) {
        Some(e) => {
            let result = without_value(&e);
            overlay.put(e);
            vec![result]
        }
        None => existing.as_ref().map(without_value).into_iter().collect(),
    }
}

fn step(
    overlay: &mut Overlay<'_>,
    sessions: &Sessions,
    index: Index,
    time: Time,
    op: &KvOp,
) -> Result<Vec<TxnResult>, KvError> {
    let key = &op.key;
    match op.verb {
        KvVerb::Set => Ok(set(overlay, op, index)),
        KvVerb::Cas => {
            let current = overlay.get(key).map(|e| e.modify_index);
            let fits = match (op.index, current) {
                (0, None) => true,
                (0, Some(_)) | (_, None) => false,
                (want, Some(have)) => want == have,
            };
            if !fits {
                return Err(KvError::SetStale(key.clone()));
            }
            Ok(set(overlay, op, index))
        }
        KvVerb::Lock => {
            // First, as Consul checks it before the write reaches Raft (a
            // lock-delay answers `false` whatever the session).
            if lock_delayed(overlay.kv, key, time) {
                return Err(KvError::LockDelay(key.clone()));
            }
            if op.session.is_empty() {
                return Err(KvError::MissingSession);
            }
            if sessions.get(&op.session).is_none() {
                return Err(KvError::InvalidSession(op.session.clone()));
            }
            let existing = overlay.get(key).cloned();
            let holder = existing.as_ref().and_then(|e| e.session.as_deref());
            if let Some(e) = existing.as_ref().filter(|_| holder == Some(&*op.session)) {
                // The holder again: the value may change, LockIndex stays.
                return Ok(match written(Some(e), op, index) {
                    Some(mut e) => {
                        e.session = Some(op.session.clone());
                        let result = without_value(&e);
                        overlay.put(e);
                        vec![result]
                    }
                    None => vec![without_value(e)],
                });
            }
            if holder.is_some() {
                return Err(KvError::LockHeld(key.clone()));
            }
            let e = KvEntry {
                key: key.clone(),
                value: op.value.clone(),
                flags: op.flags,
                session: Some(op.session.clone()),
                lock_index: existing.as_ref().map_or(0, |e| e.lock_index) + 1,
                create_index: existing.as_ref().map_or(index, |e| e.create_index),
                modify_index: index,
            };
            let result = without_value(&e);
            overlay.put(e);
            Ok(vec![result])
        }
        KvVerb::Unlock => {
            if op.session.is_empty() {
                return Err(KvError::MissingSession);
            }
            let existing = overlay.get(key).cloned();
            match existing {
                Some(e) if e.session.as_deref() == Some(op.session.as_str()) => {
                    let e = KvEntry {
                        key: key.clone(),
                        value: op.value.clone(),
                        flags: op.flags,
                        session: None,
                        lock_index: e.lock_index,
                        create_index: e.create_index,
                        modify_index: index,
                    };
                    let result = without_value(&e);
                    overlay.put(e);
                    Ok(vec![result])
                }
                _ => Err(KvError::NotHolder(key.clone())),
            }
        }
        KvVerb::Get => match overlay.get(key) {
            Some(e) => Ok(vec![TxnResult::Kv(e.clone())]),
            None => Err(KvError::Missing(key.clone())),
        },
        // As Consul's txnKVS: a missing key answers with the op itself as
        // an entry, without a value.
        KvVerb::GetOrEmpty => Ok(vec![TxnResult::Kv(match overlay.get(key) {
            Some(e) => e.clone(),
            None => KvEntry {
                key: key.clone(),
                value: Vec::new(),
                flags: op.flags,
                session: (!op.session.is_empty()).then(|| op.session.clone()),
                lock_index: 0,
                create_index: 0,
                modify_index: op.index,
            },
        })]),
        KvVerb::GetTree => Ok(overlay.under(key).into_iter().map(TxnResult::Kv).collect()),
        KvVerb::CheckIndex => match overlay.get(key) {
            None => Err(KvError::CheckIndexMissing(key.clone())),
            Some(e) if e.modify_index != op.index => Err(KvError::IndexCheck {
                key: key.clone(),
                current: e.modify_index,
                wanted: op.index,
            }),
            Some(e) => Ok(vec![without_value(e)]),
        },
        KvVerb::CheckSession => match overlay.get(key) {
            None => Err(KvError::CheckSessionMissing(key.clone())),
            Some(e) if e.session.as_deref().unwrap_or("") != op.session => {
                Err(KvError::SessionCheck {
                    key: key.clone(),
                    current: e.session.clone().unwrap_or_default(),
                    wanted: op.session.clone(),
                })
            }
            Some(e) => Ok(vec![without_value(e)]),
        },
        KvVerb::CheckNotExists => match overlay.get(key) {
            Some(_) => Err(KvError::Exists(key.clone())),
            None => Ok(Vec::new()),
        },
        KvVerb::Delete => {
            overlay.delete(key);
            Ok(Vec::new())
        }
        KvVerb::DeleteTree => {
            for e in overlay.under(key) {
                overlay.delete(&e.key);
            }
            Ok(Vec::new())
        }
        KvVerb::DeleteCas => match overlay.get(key) {
            // As Consul's `kvsDeleteCASTxn`: nothing to delete is success.
            None => Ok(Vec::new()),
            Some(e) if e.modify_index != op.index => Err(KvError::DeleteStale(key.clone())),
            Some(_) => {
                overlay.delete(key);
                Ok(Vec::new())
            }
        },
    }
}

/// Whether `key` is under a lock-delay at `time`.
fn lock_delayed(kv: &Kv, key: &str, time: Time) -> bool {
    kv.delay(key).is_some_and(|until| until > time)
}

/// Writes a transaction's changes to the table at `index`: an entry that
/// equals the table's is left alone; a delete leaves a tombstone at `time`.
fn commit(kv: &mut Kv, index: Index, time: Time, changes: BTreeMap<String, Option<KvEntry>>) {
    for (key, change) in changes {
        match change {
            Some(e) => {
                if kv.get(&key) != Some(&e) {
                    kv.put(index, e);
                }
            }
            None => {
                kv.remove(index, time, &key);
            }
        }
    }
}
