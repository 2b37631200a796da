//! Property tests of KV and sessions: random sequences of KV ops,
//! transactions, session ops, reaping and the catalog changes that
//! invalidate sessions, over a few names so that they collide often, applied
//! at increasing times.
//!
//! Checked after every command: two states applying the same log stay
//! equal; a transaction of reads answers the same evaluated without a log
//! entry; a snapshot (through postcard) restores an equal state, derived
//! indexes included; a refusal changes nothing but the last index; no key or
//! prefix index goes backwards; every held key's session exists, and every
//! session's node and checks exist and none of its checks is critical.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::catalog::{State, StateSnapshot};

const KEYS: &[&str] = &["a", "a/1", "a/2", "b"];
const PREFIXES: &[&str] = &["", "a", "a/", "b", "c"];
const VALUES: &[&str] = &["", "x", "y"];
const SESSIONS: &[&str] = &["", "s1", "s2", "s3"];
const NODES: &[&str] = &["n1", "N1", "n2"];
const CHECKS: &[&str] = &["c1", "c2"];

fn s(v: &[&'static str]) -> impl Strategy<Value = String> + use<> {
    select(v.to_vec()).prop_map(String::from)
}

/// Any verb, locks and unlocks more often: they meet sessions.
fn verb() -> impl Strategy<Value = KvVerb> {
    prop_oneof![
        3 => select(KvVerb::ALL.iter().map(|(v, _)| *v).collect::<Vec<_>>()),
        2 => Just(KvVerb::Lock),
        1 => Just(KvVerb::Unlock),
    ]
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    (verb(), s(KEYS), s(VALUES), 0u64..2, 0u64..12, s(SESSIONS)).prop_map(
        |(verb, key, value, flags, index, session)| KvOp {
            verb,
            key,
            value: value.into_bytes(),
            flags,
            index,
            session,
        },
    )
}

fn session_op() -> impl Strategy<Value = SessionOp> {
    let create = (
        s(&SESSIONS[1..]),
        s(NODES),
        prop::collection::vec(s(CHECKS), 0..2),
        select(vec![0u64, 5_000_000_000, 120_000_000_000]),
        any::<bool>(),
        select(vec![0u64, 10_000]),
    )
        .prop_map(|(id, node, checks, delay, delete, ttl_ms)| {
            SessionOp::Create(Session {
                node_checks: checks,
                lock_delay_ns: delay,
                behavior: if delete {
                    Behavior::Delete
                } else {
                    Behavior::Release
                },
                ttl_ms,
                ..session(&id, &node)
            })
        });
    prop_oneof![
        3 => create,
        2 => s(SESSIONS).prop_map(|id| SessionOp::Destroy { id }),
        1 => s(SESSIONS).prop_map(|id| SessionOp::Renew { id }),
        1 => prop::collection::vec(s(SESSIONS), 0..3).prop_map(|ids| SessionOp::Expire { ids }),
    ]
}

fn status() -> impl Strategy<Value = HealthStatus> {
    select(vec![
        HealthStatus::Passing,
        HealthStatus::Warning,
        HealthStatus::Critical,
    ])
}

fn catalog_op() -> impl Strategy<Value = Command> {
    let register =
        (s(NODES), prop::collection::vec((s(CHECKS), status()), 0..3)).prop_map(|(n, checks)| {
            // One status per check: a registration naming a check twice
            // changes it twice on every retry (as in Consul), which the
            // idempotence property below does not allow for.
            let checks: BTreeMap<String, HealthStatus> = checks.into_iter().collect();
            let checks = checks.iter().map(|(id, st)| chk(id, *st)).collect();
            reg(with_checks(node(&n, "10.0.0.1"), checks))
        });
    let deregister =
        (s(NODES), select(vec!["", "", "c1", "c2"])).prop_map(|(n, check)| dereg(&n, "", check));
    prop_oneof![3 => register, 1 => deregister]
}

/// A command and how far the leader's clock moved before it.
pub(super) fn step() -> impl Strategy<Value = (Time, Command)> {
    let command = prop_oneof![
        4 => kv_op().prop_map(Command::Kv),
        2 => prop::collection::vec(kv_op(), 1..4)
            .prop_map(|ops| Command::Txn(ops.into_iter().map(TxnOp::Kv).collect())),
        3 => session_op().prop_map(Command::Session),
        2 => catalog_op(),
        1 => (0u64..30_000).prop_map(|ago| Command::ReapTombstones { deleted_before: ago }),
    ];
    // Mostly small steps, so lock-delays and TTLs are still running.
    (prop_oneof![3 => 0u64..500, 1 => 0u64..30_000], command)
}

/// The indexes a blocking query would wait on, by key and by prefix.
fn kv_indexes(c: &State) -> BTreeMap<String, Index> {
    let keys = KEYS.iter().map(|k| (format!("key {k}"), c.kv_key_index(k)));
    let prefixes = PREFIXES
        .iter()
        .map(|p| (format!("prefix {p:?}"), c.kv_prefix_index(p)));
    keys.chain(prefixes).collect()
}

/// What must hold between the KV table, sessions and the catalog.
fn assert_consistent(c: &State) {
    for e in c.kv_list("") {
        assert!(e.create_index <= e.modify_index, "{e:?}");
        assert!(e.modify_index <= c.kv_prefix_index(""), "{e:?}");
        if let Some(id) = &e.session {
            assert!(c.session(id).is_some(), "{e:?} held by a session gone");
            assert!(e.lock_index >= 1, "{e:?}");
        }
    }
    for s in c.sessions() {
        assert!(c.node(&s.node).is_some(), "{s:?} outlived its node");
        for id in s.check_ids() {
            let check = c.node_checks(&s.node).find(|k| &*k.check_id == id);
            let status = check.map(|k| k.status);
            assert!(
                matches!(status, Some(HealthStatus::Passing | HealthStatus::Warning)),
                "{s:?} outlived check {id}: {status:?}"
            );
        }
        assert!(s.create_index <= c.sessions_index(), "{s:?}");
        let on_node = c.sessions_on_node(&s.node);
        assert!(
            on_node.iter().any(|t| t.id == s.id),
            "{s:?} not on its node"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn kv_and_sessions_apply_deterministically_and_snapshot_exactly(
        steps in prop::collection::vec(step(), 1..48),
    ) {
        let mut state = State::new();
        let mut twin = State::new();
        let mut time: Time = 1_000;
        // Sessions need a node: most sequences start with one.
        let n1 = reg(with_checks(
            node("n1", "10.0.0.1"),
            CHECKS.iter().map(|id| chk(id, HealthStatus::Passing)).collect(),
        ));
        let steps: Vec<(Time, Command)> = std::iter::once((0, n1)).chain(steps).collect();
        for (i, (elapsed, cmd)) in steps.iter().enumerate() {
            let index = i as Index + 1;
            time += elapsed;
            // The reaping cut-off is relative to the entry's time.
            let cmd = match cmd {
                Command::ReapTombstones { deleted_before } => Command::ReapTombstones {
                    deleted_before: time.saturating_sub(*deleted_before),
                },
                other => other.clone(),
            };
            let before = state.clone();
            let indexes_before = kv_indexes(&before);

            let (outcome, _) = state.apply(index, time, &cmd);
            let (twin_outcome, _) = twin.apply(index, time, &cmd);
            prop_assert_eq!(&outcome, &twin_outcome);
            prop_assert_eq!(&state, &twin);

            // A transaction of reads answers the same without a log entry.
            if let Command::Txn(ops) = &cmd
                && ops.iter().all(|TxnOp::Kv(op)| op.verb.is_read())
            {
                let read = match before.kv_read_txn(ops) {
                    Ok(results) => Outcome::Txn { index, results },
                    Err(errors) => Outcome::TxnRefused(errors),
                };
                prop_assert_eq!(&read, &outcome, "read-only {:?}", ops);
            }
            // What `idempotent` promises a retried write: applied again (in
            // the next entry, same clock) it changes nothing more.
            if cmd.idempotent() {
                let mut again = state.clone();
                again.apply(index + 1, time, &cmd);
                let mut expected = state.clone();
                expected.apply_noop(index + 1);
                prop_assert_eq!(&again, &expected, "{:?} applied twice", cmd);
            }
            if matches!(outcome, Outcome::Refused(_) | Outcome::TxnRefused(_)) {
                let mut expected = before.clone();
                expected.apply_noop(index);
                prop_assert_eq!(&state, &expected, "{:?} refused but changed", cmd);
            }
            for ((what, old), new) in indexes_before.iter().zip(kv_indexes(&state).values()) {
                prop_assert!(new >= old, "{} went back from {} to {} on {:?}", what, old, new, cmd);
                prop_assert!(*new <= index, "{} is ahead at {}", what, new);
            }
            assert_consistent(&state);

            let bytes = postcard::to_allocvec(&state.to_snapshot()).expect("a snapshot serializes");
            let back: StateSnapshot = postcard::from_bytes(&bytes).expect("what we wrote reads back");
            let back = State::from_snapshot(back);
            back.assert_derived_indexes();
            prop_assert_eq!(&back, &state, "snapshot after {:?}", cmd);
        }
    }
}
