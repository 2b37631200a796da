//! Consul's KV semantics, one behaviour per test: each verb's success and
//! refusal with Consul's message, compare-and-set, locks and lock-delays,
//! and the indexes a read of a key or a prefix reports.

use super::*;
use crate::catalog::State;

/// Applies one KV op at `index` of an entry dated `time` and insists it was
/// applied; returns its results.
fn kv_ok(c: &mut State, index: Index, time: Time, op: KvOp) -> Vec<TxnResult> {
    match c.apply(index, time, &Command::Kv(op.clone())).0 {
        Outcome::Txn { index: at, results } if at == index => results,
        other => panic!("{op:?}: {other:?}"),
    }
}

/// Applies one KV op, insists it was refused with `err` (whose message is
/// `message`, Consul's), and that nothing but the last index changed.
fn kv_refused(c: &mut State, index: Index, time: Time, op: KvOp, err: KvError, message: &str) {
    assert_eq!(err.to_string(), message);
    let mut expected = c.clone();
    expected.apply_noop(index);
    let (outcome, _) = c.apply(index, time, &Command::Kv(op));
    assert_eq!(outcome, Outcome::Refused(CatalogError::Kv(err)));
    assert_eq!(*c, expected);
}

/// A state with node n1 and sessions `s1` (lock-delay `delay_ms`) and `s2`
/// on it, at indexes 1 to 3.
fn with_sessions(delay_ms: u64) -> State {
    let mut c = State::new();
    let (outcome, _) = c.apply(1, 0, &reg(node("n1", "10.0.0.1")));
    assert_eq!(outcome, Outcome::Applied(1));
    let mut s1 = session("s1", "n1");
    s1.lock_delay_ns = delay_ms * 1_000_000;
    for (index, s) in [(2, s1), (3, session("s2", "n1"))] {
        let (outcome, _) = c.apply(index, 0, &Command::Session(SessionOp::Create(s)));
        assert_eq!(outcome, Outcome::Applied(index));
    }
    c
}

fn entry(c: &State, key: &str) -> KvEntry {
    c.kv_get(key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} missing"))
}

/// (session, LockIndex, CreateIndex, ModifyIndex) of `key`.
fn lock_state(c: &State, key: &str) -> (Option<String>, u64, Index, Index) {
    let e = entry(c, key);
    (e.session, e.lock_index, e.create_index, e.modify_index)
}

fn sid(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[test]
fn set_creates_a_key_then_updates_it_keeping_its_create_index() {
    let mut c = State::new();
    let results = kv_ok(
        &mut c,
        2,
        0,
        KvOp {
            flags: 7,
            ..kv(KvVerb::Set, "a", "one")
        },
    );
    let e = entry(&c, "a");
    assert_eq!((e.value.as_slice(), e.flags), (&b"one"[..], 7));
    assert_eq!((e.create_index, e.modify_index, e.lock_index), (2, 2, 0));
    // A write's result is the entry without its value.
    assert_eq!(
        results,
        vec![TxnResult::Kv(KvEntry {
            value: Vec::new(),
            ..e
        })]
    );
    kv_ok(&mut c, 3, 0, kv(KvVerb::Set, "a", "two"));
    let e = entry(&c, "a");
    assert_eq!((e.value.as_slice(), e.flags), (&b"two"[..], 0));
    assert_eq!((e.create_index, e.modify_index), (2, 3));
    assert_eq!(
        (c.kv_key_index("a"), c.kv_prefix_index(""), c.last_index()),
        (3, 3, 3)
    );
}

#[test]
fn an_identical_rewrite_keeps_the_modify_index() {
    let mut c = State::new();
    kv_ok(&mut c, 2, 0, kv(KvVerb::Set, "a", "v"));
    let before = c.clone();
    let results = kv_ok(&mut c, 3, 0, kv(KvVerb::Set, "a", "v"));
    assert_eq!(c.kv_get("a"), before.kv_get("a"));
    assert_eq!((c.kv_key_index("a"), c.kv_prefix_index("")), (2, 2));
    let TxnResult::Kv(reported) = &results[0];
    assert_eq!(reported.modify_index, 2);
    // Other flags are a change.
    kv_ok(
        &mut c,
        4,
        0,
        KvOp {
            flags: 1,
            ..kv(KvVerb::Set, "a", "v")
        },
    );
    assert_eq!(entry(&c, "a").modify_index, 4);
}

#[test]
fn cas_0_creates_only_a_missing_key() {
    let mut c = State::new();
    kv_ok(&mut c, 2, 0, kv(KvVerb::Cas, "a", "first"));
    assert_eq!(entry(&c, "a").value, b"first");
    kv_refused(
        &mut c,
        3,
        0,
        kv(KvVerb::Cas, "a", "second"),
        KvError::SetStale("a".into()),
        r#"failed to set key "a", index is stale"#,
    );
}

#[test]
fn cas_writes_only_at_the_keys_modify_index() {
    let mut c = State::new();
    kv_ok(&mut c, 2, 0, kv(KvVerb::Set, "a", "v"));
    let stale = KvOp {
        index: 1,
        ..kv(KvVerb::Cas, "a", "w")
    };
    let err = KvError::SetStale("a".into());
    let message = r#"failed to set key "a", index is stale"#;
    kv_refused(&mut c, 3, 0, stale, err.clone(), message);
    kv_ok(
        &mut c,
        4,
        0,
        KvOp {
            index: 2,
            ..kv(KvVerb::Cas, "a", "w")
        },
    );
    assert_eq!(
        (entry(&c, "a").value, entry(&c, "a").modify_index),
        (b"w".to_vec(), 4)
    );
    // A non-zero index on a missing key is stale too.
    let missing = KvOp {
        index: 4,
        ..kv(KvVerb::Cas, "b", "w")
    };
    let err = KvError::SetStale("b".into());
    kv_refused(
        &mut c,
        5,
        0,
        missing,
        err,
        r#"failed to set key "b", index is stale"#,
    );
}

#[test]
fn lock_needs_a_session_that_exists() {
    let mut c = with_sessions(0);
    kv_refused(
        &mut c,
        4,
        0,
        kv(KvVerb::Lock, "k", "v"),
        KvError::MissingSession,
        "missing session",
    );
    kv_refused(
        &mut c,
        5,
        0,
        kv_by(KvVerb::Lock, "k", "v", "nope"),
        KvError::InvalidSession("nope".into()),
        r#"invalid session "nope""#,
    );
}

#[test]
fn a_lock_by_a_new_holder_bumps_lock_index_and_the_holder_again_keeps_it() {
    let mut c = with_sessions(0);
    kv_ok(&mut c, 4, 0, kv_by(KvVerb::Lock, "k", "v1", "s1"));
    assert_eq!(lock_state(&c, "k"), (sid("s1"), 1, 4, 4));
    // The holder again with a new value: written, LockIndex kept.
    kv_ok(&mut c, 5, 0, kv_by(KvVerb::Lock, "k", "v2", "s1"));
    assert_eq!(lock_state(&c, "k"), (sid("s1"), 1, 4, 5));
    assert_eq!(entry(&c, "k").value, b"v2");
    // The holder again with the same value: nothing changes.
    kv_ok(&mut c, 6, 0, kv_by(KvVerb::Lock, "k", "v2", "s1"));
    assert_eq!(lock_state(&c, "k"), (sid("s1"), 1, 4, 5));
    // Released, then taken by another session: LockIndex 2.
    kv_ok(&mut c, 7, 0, kv_by(KvVerb::Unlock, "k", "v3", "s1"));
    kv_ok(&mut c, 8, 0, kv_by(KvVerb::Lock, "k", "v4", "s2"));
    assert_eq!(lock_state(&c, "k"), (sid("s2"), 2, 4, 8));
}

#[test]
fn a_lock_held_by_another_session_is_refused() {
    let mut c = with_sessions(0);
    kv_ok(&mut c, 4, 0, kv_by(KvVerb::Lock, "k", "v", "s1"));
    kv_refused(
        &mut c,
        5,
        0,
        kv_by(KvVerb::Lock, "k", "w", "s2"),
        KvError::LockHeld("k".into()),
        r#"failed to lock key "k", lock is already held"#,
    );
}

#[test]
fn a_lock_on_an_existing_unheld_key_keeps_its_create_index() {
    let mut c = with_sessions(0);
    kv_ok(
        &mut c,
        4,
        0,
        KvOp {
            flags: 9,
            ..kv(KvVerb::Set, "k", "v")
        },
    );
    kv_ok(&mut c, 5, 0, kv_by(KvVerb::Lock, "k", "v", "s1"));
    assert_eq!(lock_state(&c, "k"), (sid("s1"), 1, 4, 5));
    // The lock writes the op's flags, as Consul's DirEntry does.
    assert_eq!(entry(&c, "k").flags, 0);
}

#[test]
fn unlock_clears_the_holder_keeps_lock_index_and_writes_the_value() {
    let mut c = with_sessions(0);
    kv_ok(&mut c, 4, 0, kv_by(KvVerb::Lock, "k", "held", "s1"));
    let results = kv_ok(&mut c, 5, 0, kv_by(KvVerb::Unlock, "k", "free", "s1"));
    assert_eq!(lock_state(&c, "k"), (None, 1, 4, 5));
    assert_eq!(entry(&c, "k").value, b"free");
    let TxnResult::Kv(reported) = &results[0];
    assert_eq!(
        (reported.session.as_deref(), reported.value.len()),
        (None, 0)
    );
}

#[test]
fn unlock_by_a_session_that_does_not_hold_the_key_is_refused() {
    let mut c = with_sessions(0);
    let message = r#"failed to unlock key "k", lock isn't held, or is held by another session"#;
    // Missing key.
    let op = kv_by(KvVerb::Unlock, "k", "", "s1");
    kv_refused(&mut c, 4, 0, op, KvError::NotHolder("k".into()), message);
    kv_ok(&mut c, 5, 0, kv_by(KvVerb::Lock, "k", "v", "s1"));
    // Held by another.
    let op = kv_by(KvVerb::Unlock, "k", "", "s2");
    kv_refused(&mut c, 6, 0, op, KvError::NotHolder("k".into()), message);
    // Without a session.
    let op = kv(KvVerb::Unlock, "k", "");
    kv_refused(&mut c, 7, 0, op, KvError::MissingSession, "missing session");
    // Not held at all.
    kv_ok(&mut c, 8, 0, kv_by(KvVerb::Unlock, "k", "v", "s1"));
    let op = kv_by(KvVerb::Unlock, "k", "", "s1");
    kv_refused(&mut c, 9, 0, op, KvError::NotHolder("k".into()), message);
}

#[test]
fn locks_are_advisory_a_plain_set_keeps_the_holder_and_a_delete_succeeds() {
    let mut c = with_sessions(0);
    kv_ok(&mut c, 4, 0, kv_by(KvVerb::Lock, "k", "v", "s1"));
    kv_ok(&mut c, 5, 0, kv(KvVerb::Set, "k", "stolen"));
    assert_eq!(lock_state(&c, "k"), (sid("s1"), 1, 4, 5));
    kv_ok(&mut c, 6, 0, kv(KvVerb::Delete, "k", ""));
    assert_eq!(c.kv_get("k"), None);
    // The session no longer holds it: destroying it touches no key.
    c.apply(
        7,
        0,
        &Command::Session(SessionOp::Destroy { id: "s1".into() }),
    );
    assert_eq!((c.kv_get("k"), c.kv_key_index("k")), (None, 6));
}

#[test]
fn a_lock_is_refused_within_the_lock_delay_and_taken_once_it_passed() {
    let mut c = with_sessions(5_000);
    kv_ok(&mut c, 4, 1_000, kv_by(KvVerb::Lock, "k", "v", "s1"));
    // Destroyed at 2000: the delay runs to 7000.
    let destroy = Command::Session(SessionOp::Destroy { id: "s1".into() });
    assert_eq!(c.apply(5, 2_000, &destroy).0, Outcome::Applied(5));
    assert_eq!(lock_state(&c, "k"), (None, 1, 4, 5));
    kv_refused(
        &mut c,
        6,
        6_999,
        kv_by(KvVerb::Lock, "k", "w", "s2"),
        KvError::LockDelay("k".into()),
        r#"failed to lock key "k" due to lock delay"#,
    );
    // Other keys are free, and a plain write is not a lock.
    kv_ok(&mut c, 7, 6_999, kv_by(KvVerb::Lock, "other", "w", "s2"));
    kv_ok(&mut c, 8, 6_999, kv(KvVerb::Set, "k", "plain"));
    kv_ok(&mut c, 9, 7_000, kv_by(KvVerb::Lock, "k", "w", "s2"));
    assert_eq!(lock_state(&c, "k"), (sid("s2"), 2, 4, 9));
}

#[test]
fn releasing_a_lock_sets_no_delay() {
    let mut c = with_sessions(5_000);
    kv_ok(&mut c, 4, 1_000, kv_by(KvVerb::Lock, "k", "v", "s1"));
    kv_ok(&mut c, 5, 1_000, kv_by(KvVerb::Unlock, "k", "v", "s1"));
    kv_ok(&mut c, 6, 1_001, kv_by(KvVerb::Lock, "k", "v", "s2"));
    assert_eq!(lock_state(&c, "k"), (sid("s2"), 2, 4, 6));
}

#[test]
fn a_lock_delay_beyond_a_minute_is_cut_to_a_minute() {
    let mut c = with_sessions(3_600_000);
    kv_ok(&mut c, 4, 0, kv_by(KvVerb::Lock, "k", "v", "s1"));
    let destroy = Command::Session(SessionOp::Destroy { id: "s1".into() });
    c.apply(5, 1_000, &destroy);
    let op = kv_by(KvVerb::Lock, "k", "w", "s2");
    kv_refused(
        &mut c,
        6,
        60_999,
        op,
        KvError::LockDelay("k".into()),
        r#"failed to lock key "k" due to lock delay"#,
    );
    kv_ok(&mut c, 7, 61_000, kv_by(KvVerb::Lock, "k", "w", "s2"));
}

#[test]
fn reaping_forgets_lock_delays_that_are_over() {
    let mut c = with_sessions(5_000);
    kv_ok(&mut c, 4, 0, kv_by(KvVerb::Lock, "k", "v", "s1"));
    c.apply(
        5,
        1_000,
        &Command::Session(SessionOp::Destroy { id: "s1".into() }),
    );
    let reap = Command::ReapTombstones { deleted_before: 0 };
    c.apply(6, 5_999, &reap);
    let op = kv_by(KvVerb::Lock, "k", "w", "s2");
    kv_refused(
        &mut c,
        7,
        5_999,
        op,
        KvError::LockDelay("k".into()),
        r#"failed to lock key "k" due to lock delay"#,
    );
    let size = |c: &State| postcard::to_allocvec(&c.to_snapshot()).unwrap().len();
    let before = size(&c);
    c.apply(8, 6_000, &reap);
    assert!(size(&c) < before, "the delay was not reaped");
    kv_ok(&mut c, 9, 6_000, kv_by(KvVerb::Lock, "k", "w", "s2"));
}

#[test]
fn delete_removes_a_key_and_a_missing_key_changes_nothing() {
    let mut c = State::new();
    kv_ok(&mut c, 2, 0, kv(KvVerb::Set, "a", "v"));
    kv_ok(&mut c, 3, 0, kv(KvVerb::Delete, "a", ""));
    assert_eq!(c.kv_get("a"), None);
    assert_eq!((c.kv_key_index("a"), c.kv_prefix_index("")), (3, 3));
    let mut expected = c.clone();
    expected.apply_noop(4);
    let results = kv_ok(&mut c, 4, 0, kv(KvVerb::Delete, "nothing", ""));
    assert!(results.is_empty());
    assert_eq!(c, expected);
}

#[test]
fn delete_cas_deletes_only_at_the_keys_modify_index_and_a_missing_key_is_success() {
    let mut c = State::new();
    kv_ok(&mut c, 2, 0, kv(KvVerb::Set, "a", "v"));
    let stale = KvOp {
        index: 1,
        ..kv(KvVerb::DeleteCas, "a", "")
    };
    let message = r#"failed to delete key "a", index is stale"#;
    kv_refused(
        &mut c,
        3,
        0,
        stale,
        KvError::DeleteStale("a".into()),
        message,
    );
    kv_ok(
        &mut c,
        4,
        0,
        KvOp {
            index: 2,
            ..kv(KvVerb::DeleteCas, "a", "")
        },
    );
    assert_eq!(c.kv_get("a"), None);
    // As Consul's kvsDeleteCASTxn: nothing to delete is success.
    kv_ok(
        &mut c,
        5,
        0,
        KvOp {
            index: 9,
            ..kv(KvVerb::DeleteCas, "a", "")
        },
    );
    assert_eq!(c.kv_key_index("a"), 4);
}

#[test]
fn delete_tree_removes_every_key_under_the_prefix_and_only_those() {
    let mut c = State::new();
    for (index, key) in (2..).zip(["a", "a/1", "a/2/x", "ab", "b"]) {
        kv_ok(&mut c, index, 0, kv(KvVerb::Set, key, "v"));
    }
    kv_ok(&mut c, 9, 0, kv(KvVerb::DeleteTree, "a/", ""));
    let left: Vec<&str> = c.kv_list("").map(|e| e.key.as_str()).collect();
    assert_eq!(left, ["a", "ab", "b"]);
    assert_eq!(c.kv_prefix_index("a/"), 9);
    // The empty prefix deletes everything.
    kv_ok(&mut c, 10, 0, kv(KvVerb::DeleteTree, "", ""));
    assert_eq!(c.kv_len(), 0);
}

#[test]
fn reads_by_command_report_and_refuse_as_consul() {
    let mut c = with_sessions(0);
    kv_ok(&mut c, 4, 0, kv_by(KvVerb::Lock, "k", "v", "s1"));
    let e = entry(&c, "k");
    // get returns the value; check-index and check-session the entry without it.
    assert_eq!(
        kv_ok(&mut c, 5, 0, kv(KvVerb::Get, "k", "")),
        vec![TxnResult::Kv(e.clone())]
    );
    let bare = TxnResult::Kv(KvEntry {
        value: Vec::new(),
        ..e.clone()
    });
    let check_index = KvOp {
        index: 4,
        ..kv(KvVerb::CheckIndex, "k", "")
    };
    assert_eq!(kv_ok(&mut c, 6, 0, check_index), vec![bare.clone()]);
    let check_session = kv_by(KvVerb::CheckSession, "k", "", "s1");
    assert_eq!(kv_ok(&mut c, 7, 0, check_session), vec![bare]);
    assert!(kv_ok(&mut c, 8, 0, kv(KvVerb::CheckNotExists, "nope", "")).is_empty());

    kv_refused(
        &mut c,
        9,
        0,
        kv(KvVerb::Get, "nope", ""),
        KvError::Missing("nope".into()),
        r#"key "nope" doesn't exist"#,
    );
    kv_refused(
        &mut c,
        10,
        0,
        kv(KvVerb::CheckNotExists, "k", ""),
        KvError::Exists("k".into()),
        r#"key "k" exists"#,
    );
    kv_refused(
        &mut c,
        11,
        0,
        KvOp {
            index: 3,
            ..kv(KvVerb::CheckIndex, "k", "")
        },
        KvError::IndexCheck {
            key: "k".into(),
            current: 4,
            wanted: 3,
        },
        r#"failed index check for key "k", current modify index 4 != 3"#,
    );
    kv_refused(
        &mut c,
        12,
        0,
        kv_by(KvVerb::CheckSession, "k", "", "s2"),
        KvError::SessionCheck {
            key: "k".into(),
            current: "s1".into(),
            wanted: "s2".into(),
        },
        r#"failed session check for key "k", current session "s1" != "s2""#,
    );
    kv_refused(
        &mut c,
        13,
        0,
        KvOp {
            index: 3,
            ..kv(KvVerb::CheckIndex, "nope", "")
        },
        KvError::CheckIndexMissing("nope".into()),
        r#"failed to check index, key "nope" doesn't exist"#,
    );
    kv_refused(
        &mut c,
        14,
        0,
        kv_by(KvVerb::CheckSession, "nope", "", "s1"),
        KvError::CheckSessionMissing("nope".into()),
        r#"failed to check session, key "nope" doesn't exist"#,
    );
    // Reads change no table.
    assert_eq!(c.kv_prefix_index(""), 4);
}

#[test]
fn get_or_empty_of_a_missing_key_returns_the_op_as_an_entry_without_a_value() {
    let mut c = State::new();
    let op = KvOp {
        flags: 3,
        index: 9,
        ..kv(KvVerb::GetOrEmpty, "nope", "ignored")
    };
    let results = kv_ok(&mut c, 2, 0, op);
    let want = KvEntry {
        key: "nope".into(),
        value: Vec::new(),
        flags: 3,
        session: None,
        lock_index: 0,
        create_index: 0,
        modify_index: 9,
    };
    assert_eq!(results, vec![TxnResult::Kv(want)]);
    kv_ok(&mut c, 3, 0, kv(KvVerb::Set, "k", "v"));
    let results = kv_ok(&mut c, 4, 0, kv(KvVerb::GetOrEmpty, "k", ""));
    assert_eq!(results, vec![TxnResult::Kv(entry(&c, "k"))]);
}

#[test]
fn a_prefix_index_never_goes_backwards_across_deletes_and_reaping() {
    let mut c = State::new();
    kv_ok(&mut c, 2, 100, kv(KvVerb::Set, "a/1", "v"));
    kv_ok(&mut c, 3, 100, kv(KvVerb::Set, "a/2", "v"));
    assert_eq!(c.kv_prefix_index("a/"), 3);
    kv_ok(&mut c, 4, 200, kv(KvVerb::Delete, "a/2", ""));
    assert_eq!(c.kv_prefix_index("a/"), 4);
    kv_ok(&mut c, 5, 300, kv(KvVerb::Set, "b", "v"));
    assert_eq!(c.kv_prefix_index("a/"), 4);
    // Reaping the tombstone keeps the prefix at its index.
    let reap = Command::ReapTombstones {
        deleted_before: 250,
    };
    assert_eq!(c.apply(6, 1_000, &reap).0, Outcome::Applied(6));
    assert_eq!(c.kv_oldest_tombstone(), None);
    assert_eq!(c.kv_prefix_index("a/"), 4);
    assert_eq!(c.kv_key_index("a/2"), 4);
    kv_ok(&mut c, 7, 1_000, kv(KvVerb::Delete, "a/1", ""));
    assert_eq!(c.kv_prefix_index("a/"), 7);
    assert_eq!(c.kv_list("a/").count(), 0);
    // A tombstone younger than the cutoff stays.
    let reap = Command::ReapTombstones {
        deleted_before: 1_000,
    };
    c.apply(8, 2_000, &reap);
    assert_eq!(c.kv_oldest_tombstone(), Some(1_000));
    assert_eq!(c.kv_prefix_index("a/"), 7);
}

#[test]
fn a_missing_keys_index_moves_only_when_that_key_changes() {
    let mut c = State::new();
    kv_ok(&mut c, 2, 0, kv(KvVerb::Set, "k", "v"));
    kv_ok(&mut c, 3, 0, kv(KvVerb::Delete, "k", ""));
    assert_eq!(c.kv_key_index("k"), 3);
    assert_eq!(c.kv_key_index("never"), 0);
    for index in 4..8 {
        kv_ok(
            &mut c,
            index,
            0,
            kv(KvVerb::Set, "other", &index.to_string()),
        );
    }
    assert_eq!(c.kv_key_index("k"), 3);
    assert_eq!(c.kv_key_index("never"), 0);
    kv_ok(&mut c, 8, 0, kv(KvVerb::Set, "k", "back"));
    assert_eq!(c.kv_key_index("k"), 8);
    assert_eq!(entry(&c, "k").create_index, 8);
}

#[test]
fn keys_are_listed_once_up_to_the_separator() {
    let mut c = State::new();
    for (index, key) in (2..).zip(["a/1", "a/b/1", "a/b/2", "a/c", "b"]) {
        kv_ok(&mut c, index, 0, kv(KvVerb::Set, key, "v"));
    }
    assert_eq!(c.kv_keys("a/", "/"), ["a/1", "a/b/", "a/c"]);
    assert_eq!(c.kv_keys("", "/"), ["a/", "b"]);
    assert_eq!(c.kv_keys("a/", ""), ["a/1", "a/b/1", "a/b/2", "a/c"]);
}

#[test]
fn a_lock_within_the_lock_delay_is_refused_for_the_delay_whatever_its_session() {
    let mut c = with_sessions(5_000);
    kv_ok(&mut c, 4, 0, kv_by(KvVerb::Lock, "k", "v", "s1"));
    c.apply(
        5,
        1_000,
        &Command::Session(SessionOp::Destroy { id: "s1".into() }),
    );
    // As Consul's kvsPreApply, before the session is looked at.
    let message = r#"failed to lock key "k" due to lock delay"#;
    for (index, session) in [(6, "gone"), (7, "")] {
        let op = kv_by(KvVerb::Lock, "k", "w", session);
        kv_refused(
            &mut c,
            index,
            1_500,
            op,
            KvError::LockDelay("k".into()),
            message,
        );
    }
    let op = kv_by(KvVerb::Lock, "k", "w", "gone");
    let err = KvError::InvalidSession("gone".into());
    kv_refused(&mut c, 8, 6_000, op, err, r#"invalid session "gone""#);
}
