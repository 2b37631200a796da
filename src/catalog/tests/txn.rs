//! Transactions: operations in order at one index, each seeing the ones
//! before it, all applied or none, with every failure reported.

use super::*;
use crate::catalog::State;

fn txn(ops: Vec<KvOp>) -> Command {
    Command::Txn(ops.into_iter().map(TxnOp::Kv).collect())
}

/// Applies a transaction at `index`; insists it committed.
fn committed(c: &mut State, index: Index, ops: Vec<KvOp>) -> Vec<TxnResult> {
    match c.apply(index, 0, &txn(ops)).0 {
        Outcome::Txn { index: at, results } if at == index => results,
        other => panic!("{other:?}"),
    }
}

/// The entries of a transaction's results.
fn entries(results: Vec<TxnResult>) -> Vec<KvEntry> {
    results
        .into_iter()
        .map(|r| match r {
            TxnResult::Kv(e) => e,
        })
        .collect()
}

/// A state with keys a/1 and a/2 (at 2 and 3) and session s1 on n1.
fn seeded() -> State {
    let mut c = State::new();
    c.apply(1, 0, &reg(node("n1", "10.0.0.1")));
    committed(&mut c, 2, vec![kv(KvVerb::Set, "a/1", "one")]);
    committed(&mut c, 3, vec![kv(KvVerb::Set, "a/2", "two")]);
    let s = Command::Session(SessionOp::Create(session("s1", "n1")));
    assert_eq!(c.apply(4, 0, &s).0, Outcome::Applied(4));
    c
}

#[test]
fn a_failed_transaction_changes_nothing_and_reports_every_failing_op() {
    let mut c = seeded();
    let mut expected = c.clone();
    expected.apply_noop(5);
    let ops = vec![
        kv(KvVerb::Set, "new", "v"),
        KvOp {
            index: 1,
            ..kv(KvVerb::Cas, "a/1", "x")
        },
        kv(KvVerb::Delete, "a/2", ""),
        kv(KvVerb::Get, "a/2", ""),
        kv_by(KvVerb::Lock, "a/1", "x", "s1"),
        kv(KvVerb::CheckNotExists, "new", ""),
    ];
    let (outcome, _) = c.apply(5, 0, &txn(ops));
    let errors = vec![
        TxnError {
            op_index: 1,
            what: r#"failed to set key "a/1", index is stale"#.into(),
        },
        // The delete before it is seen: the key is gone in the transaction.
        TxnError {
            op_index: 3,
            what: r#"key "a/2" doesn't exist"#.into(),
        },
        TxnError {
            op_index: 5,
            what: r#"key "new" exists"#.into(),
        },
    ];
    assert_eq!(outcome, Outcome::TxnRefused(errors));
    assert_eq!(c, expected);
}

#[test]
fn each_op_sees_what_the_ops_before_it_wrote() {
    let mut c = seeded();
    let results = committed(
        &mut c,
        5,
        vec![
            kv(KvVerb::Set, "b", "first"),
            // The set wrote at this transaction's index.
            KvOp {
                index: 5,
                ..kv(KvVerb::CheckIndex, "b", "")
            },
            KvOp {
                index: 5,
                ..kv(KvVerb::Cas, "b", "second")
            },
            kv(KvVerb::Get, "b", ""),
            kv_by(KvVerb::Lock, "b", "third", "s1"),
            kv_by(KvVerb::CheckSession, "b", "", "s1"),
            kv(KvVerb::Delete, "a/1", ""),
            kv(KvVerb::CheckNotExists, "a/1", ""),
            kv(KvVerb::Cas, "a/1", "again"),
        ],
    );
    let got = entries(results);
    let summary: Vec<(&str, &[u8], Option<&str>, u64)> = got
        .iter()
        .map(|e| {
            (
                e.key.as_str(),
                e.value.as_slice(),
                e.session.as_deref(),
                e.lock_index,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("b", &b""[..], None, 0),
            ("b", &b""[..], None, 0),
            ("b", &b""[..], None, 0),
            // Only a get carries the value.
            ("b", &b"second"[..], None, 0),
            ("b", &b""[..], Some("s1"), 1),
            ("b", &b""[..], Some("s1"), 1),
            ("a/1", &b""[..], None, 0),
        ]
    );
    let b = c.kv_get("b").expect("b");
    assert_eq!(
        (
            b.value.as_slice(),
            b.create_index,
            b.modify_index,
            b.lock_index
        ),
        (&b"third"[..], 5, 5, 1)
    );
    let a1 = c.kv_get("a/1").expect("a/1");
    assert_eq!((a1.value.as_slice(), a1.create_index), (&b"again"[..], 5));
}

#[test]
fn get_tree_sees_the_transactions_writes_over_the_table() {
    let mut c = seeded();
    let results = committed(
        &mut c,
        5,
        vec![
            kv(KvVerb::Delete, "a/1", ""),
            kv(KvVerb::Set, "a/3", "three"),
            kv(KvVerb::Set, "a/2", "TWO"),
            kv(KvVerb::Set, "b", "outside"),
            kv(KvVerb::GetTree, "a/", ""),
        ],
    );
    let tree: Vec<(String, Vec<u8>)> = entries(results)
        .into_iter()
        .skip(3)
        .map(|e| (e.key, e.value))
        .collect();
    assert_eq!(
        tree,
        vec![
            ("a/2".to_string(), b"TWO".to_vec()),
            ("a/3".to_string(), b"three".to_vec()),
        ]
    );
}

#[test]
fn delete_tree_in_a_transaction_takes_keys_written_before_it() {
    let mut c = seeded();
    committed(
        &mut c,
        5,
        vec![
            kv(KvVerb::Set, "a/3", "three"),
            kv(KvVerb::DeleteTree, "a/", ""),
            kv(KvVerb::Set, "a/4", "four"),
        ],
    );
    let keys: Vec<&str> = c.kv_list("a/").map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["a/4"]);
    // a/3 never reached the table: only the keys that were there leave
    // tombstones, and the prefix is at the transaction's index.
    assert_eq!((c.kv_key_index("a/1"), c.kv_key_index("a/3")), (5, 0));
    assert_eq!(c.kv_prefix_index("a/"), 5);
}

#[test]
fn a_transaction_of_reads_changes_no_table() {
    let mut c = seeded();
    let mut expected = c.clone();
    expected.apply_noop(5);
    let results = committed(
        &mut c,
        5,
        vec![
            kv(KvVerb::Get, "a/1", ""),
            kv(KvVerb::GetOrEmpty, "a/9", ""),
            kv(KvVerb::GetTree, "a/", ""),
            KvOp {
                index: 3,
                ..kv(KvVerb::CheckIndex, "a/2", "")
            },
        ],
    );
    assert_eq!(results.len(), 5);
    assert_eq!(c, expected);
}

#[test]
fn a_key_rewritten_identically_in_a_transaction_keeps_its_index() {
    let mut c = seeded();
    committed(
        &mut c,
        5,
        vec![
            kv(KvVerb::Set, "a/2", "two"),
            kv(KvVerb::Set, "a/1", "changed"),
            kv(KvVerb::Set, "a/1", "one"),
        ],
    );
    assert_eq!(c.kv_get("a/2").map(|e| e.modify_index), Some(3));
    // Changed and changed back is a change, as in Consul's transaction,
    // where the second set compares with the first one's entry.
    let a1 = c.kv_get("a/1").expect("a/1");
    assert_eq!((a1.value.as_slice(), a1.modify_index), (&b"one"[..], 5));
}

#[test]
fn a_read_only_transaction_is_answered_without_a_log_entry_as_one_applied() {
    let c = seeded();
    let ops: Vec<TxnOp> = vec![
        kv(KvVerb::GetTree, "a/", ""),
        kv(KvVerb::Get, "nope", ""),
        KvOp {
            index: 3,
            ..kv(KvVerb::CheckIndex, "a/2", "")
        },
        kv_by(KvVerb::CheckSession, "a/1", "", "s1"),
    ]
    .into_iter()
    .map(TxnOp::Kv)
    .collect();
    let errors = c.kv_read_txn(&ops).expect_err("two checks fail");
    let what: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.op_index, e.what.as_str()))
        .collect();
    assert_eq!(
        what,
        [
            (1, r#"key "nope" doesn't exist"#),
            (
                3,
                r#"failed session check for key "a/1", current session "" != "s1""#
            ),
        ]
    );
    let mut applied = c.clone();
    let (outcome, _) = applied.apply(5, 0, &Command::Txn(ops.clone()));
    assert_eq!(outcome, Outcome::TxnRefused(errors));
    let results = c.kv_read_txn(&ops[..1]).expect("a get-tree");
    assert_eq!(entries(results).len(), 2);
}

#[test]
fn locks_under_a_lock_delay_fail_a_transaction_alone_as_consuls_precheck() {
    let mut c = seeded();
    let mut s2 = session("s2", "n1");
    s2.lock_delay_ns = 10_000_000_000;
    c.apply(5, 0, &Command::Session(SessionOp::Create(s2)));
    committed(&mut c, 6, vec![kv_by(KvVerb::Lock, "a/1", "x", "s2")]);
    c.apply(
        7,
        1_000,
        &Command::Session(SessionOp::Destroy { id: "s2".into() }),
    );
    let mut expected = c.clone();
    expected.apply_noop(8);
    let ops = vec![
        KvOp {
            index: 1,
            ..kv(KvVerb::Cas, "a/2", "stale")
        },
        kv_by(KvVerb::Lock, "a/1", "x", "s1"),
        kv_by(KvVerb::Lock, "a/2", "x", "s1"),
    ];
    let (outcome, _) = c.apply(8, 5_000, &txn(ops.clone()));
    let delayed = TxnError {
        op_index: 1,
        what: r#"failed to lock key "a/1" due to lock delay"#.into(),
    };
    assert_eq!(outcome, Outcome::TxnRefused(vec![delayed]));
    assert_eq!(c, expected);
    // Once the delay is over, the ops run and every failure is named.
    let (outcome, _) = c.apply(9, 11_000, &txn(ops));
    let stale = TxnError {
        op_index: 0,
        what: r#"failed to set key "a/2", index is stale"#.into(),
    };
    assert_eq!(outcome, Outcome::TxnRefused(vec![stale]));
}
