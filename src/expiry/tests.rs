use std::collections::BTreeMap;

use super::*;
use crate::catalog::{Behavior, Outcome, Registration, Session};
use crate::reconcile::{Liveness, serf_check};

/// A clock reading well past the epoch, so that subtracting a TTL from it
/// never saturates.
const T0: Time = 1_800_000_000_000;

fn register(node: &str) -> Command {
    Command::register(Registration {
        node: node.into(),
        id: String::new(),
        address: "10.0.0.1".into(),
        datacenter: "dc1".into(),
        tagged_addresses: BTreeMap::new(),
        node_meta: Default::default(),
        skip_node_update: false,
        service: None,
        checks: vec![serf_check(Liveness::Alive)],
    })
}

fn session(id: &str, ttl_ms: u64) -> Session {
    Session {
        id: id.into(),
        name: String::new(),
        node: "n1".into(),
        node_checks: vec!["serfHealth".into()],
        service_checks: Vec::new(),
        lock_delay_ns: 0,
        behavior: Behavior::Release,
        ttl: if ttl_ms == 0 {
            String::new()
        } else {
            format!("{ttl_ms}ms")
        },
        ttl_ms,
        expires: None,
        create_index: 0,
        modify_index: 0,
    }
}

/// Applies `cmd` at the next index and `time`; panics if it was refused.
fn apply(state: &mut State, time: Time, cmd: &Command) {
    let index = state.last_index() + 1;
    let (outcome, _) = state.apply(index, time, cmd);
    assert!(
        !matches!(outcome, Outcome::Refused(_)),
        "{cmd:?}: {outcome:?}"
    );
}

fn create(state: &mut State, time: Time, s: Session) {
    apply(state, time, &Command::Session(SessionOp::Create(s)));
}

#[test]
fn a_new_leader_keeps_the_deadline_the_old_one_granted() {
    let mut old = State::new();
    apply(&mut old, T0, &register("n1"));
    create(&mut old, T0, session("s", 10_000));
    // Eight seconds later the leader changes: the new one has only the
    // replicated state, as a snapshot or the log gives it.
    let new = State::from_snapshot(old.to_snapshot());
    let now = T0 + 8_000;
    // Twice the TTL from the create, not from the leader change.
    assert_eq!(
        sessions_due(&new, now),
        SessionTimer::Wait(Some(T0 + 20_000))
    );
    assert_eq!(
        sessions_due(&new, T0 + 19_999),
        SessionTimer::Wait(Some(T0 + 20_000))
    );
    assert_eq!(
        sessions_due(&new, T0 + 20_000),
        SessionTimer::Expire(vec!["s".into()])
    );
}

#[test]
fn a_renew_moves_the_deadline_and_an_expiry_proposed_before_it_lands_changes_nothing() {
    let mut state = State::new();
    apply(&mut state, T0, &register("n1"));
    create(&mut state, T0, session("s", 10_000));
    let SessionTimer::Expire(ids) = sessions_due(&state, T0 + 20_000) else {
        panic!("due at twice the TTL");
    };
    // A renew is applied before the leader's expiry entry.
    apply(
        &mut state,
        T0 + 20_000,
        &Command::Session(SessionOp::Renew { id: "s".into() }),
    );
    apply(
        &mut state,
        T0 + 20_001,
        &Command::Session(SessionOp::Expire { ids }),
    );
    assert!(state.session("s").is_some(), "the renew won");
    assert_eq!(
        sessions_due(&state, T0 + 20_001),
        SessionTimer::Wait(Some(T0 + 40_000))
    );
}

#[test]
fn sessions_without_a_ttl_never_come_due_and_the_earliest_deadline_is_waited_for() {
    let mut state = State::new();
    apply(&mut state, T0, &register("n1"));
    assert_eq!(sessions_due(&state, T0), SessionTimer::Wait(None));
    create(&mut state, T0, session("forever", 0));
    create(&mut state, T0, session("late", 60_000));
    create(&mut state, T0 + 1_000, session("early", 10_000));
    assert_eq!(
        sessions_due(&state, T0 + 5_000),
        SessionTimer::Wait(Some(T0 + 21_000))
    );
    assert_eq!(
        sessions_due(&state, T0 + 200_000),
        SessionTimer::Expire(vec!["early".into(), "late".into()])
    );
}

#[test]
fn many_due_sessions_are_expired_over_several_entries() {
    let mut state = State::new();
    apply(&mut state, T0, &register("n1"));
    for i in 0..MAX_EXPIRE_PER_ENTRY + 5 {
        create(&mut state, T0, session(&format!("s{i:05}"), 10_000));
    }
    let mut entries = 0;
    while let SessionTimer::Expire(ids) = sessions_due(&state, T0 + 20_000) {
        assert!(ids.len() <= MAX_EXPIRE_PER_ENTRY);
        apply(
            &mut state,
            T0 + 20_000,
            &Command::Session(SessionOp::Expire { ids }),
        );
        entries += 1;
    }
    assert_eq!(entries, 2);
    assert_eq!(state.sessions().count(), 0);
}

fn put(key: &str) -> Command {
    Command::Kv(crate::catalog::KvOp::new(crate::catalog::KvVerb::Set, key))
}

fn delete(key: &str) -> Command {
    Command::Kv(crate::catalog::KvOp::new(
        crate::catalog::KvVerb::Delete,
        key,
    ))
}

#[test]
fn tombstones_are_reaped_in_rounds_once_older_than_their_ttl() {
    let ttl = Duration::from_secs(60);
    let mut state = State::new();
    // Nothing to reap: look again a round from now at the soonest.
    assert_eq!(reap_due(&state, T0, ttl), ReapTimer::Wait(T0 + 60_001));
    apply(&mut state, T0, &put("a"));
    apply(&mut state, T0, &put("b"));
    apply(&mut state, T0 + 1_000, &delete("a"));
    apply(&mut state, T0 + 50_000, &delete("b"));
    // Not before the oldest is due: older than the TTL, strictly.
    assert_eq!(
        reap_due(&state, T0 + 2_000, ttl),
        ReapTimer::Wait(T0 + 61_001)
    );
    assert_eq!(
        reap_due(&state, T0 + 61_000, ttl),
        ReapTimer::Wait(T0 + 91_000)
    );
    let ReapTimer::Reap(before) = reap_due(&state, T0 + 61_001, ttl) else {
        panic!("the first tombstone is due");
    };
    assert_eq!(before, T0 + 1_001);
    apply(
        &mut state,
        T0 + 61_001,
        &Command::ReapTombstones {
            deleted_before: before,
        },
    );
    // The reap took exactly the one that was due.
    assert_eq!(state.kv_oldest_tombstone(), Some(T0 + 50_000));
    // The second is due later than a round from now: wait for it.
    assert_eq!(
        reap_due(&state, T0 + 62_000, ttl),
        ReapTimer::Wait(T0 + 110_001)
    );
}

#[test]
fn lock_delays_that_are_over_are_cleared_without_any_tombstone() {
    let ttl = Duration::from_secs(60);
    let mut state = State::new();
    apply(&mut state, T0, &register("n1"));
    let mut s = session("s1", 0);
    s.lock_delay_ns = 5_000_000_000;
    create(&mut state, T0, s);
    let mut lock = crate::catalog::KvOp::new(crate::catalog::KvVerb::Lock, "leader");
    lock.session = "s1".into();
    apply(&mut state, T0, &Command::Kv(lock));
    apply(
        &mut state,
        T0 + 1_000,
        &Command::Session(SessionOp::Destroy { id: "s1".into() }),
    );
    // Released without a delete: no tombstone, one lock-delay until T0 + 6 s.
    assert_eq!(state.kv_oldest_tombstone(), None);
    assert_eq!(state.kv_earliest_delay_end(), Some(T0 + 6_000));
    assert_eq!(
        reap_due(&state, T0 + 2_000, ttl),
        ReapTimer::Wait(T0 + 32_000)
    );
    let ReapTimer::Reap(before) = reap_due(&state, T0 + 6_000, ttl) else {
        panic!("the lock-delay is over");
    };
    apply(
        &mut state,
        T0 + 6_000,
        &Command::ReapTombstones {
            deleted_before: before,
        },
    );
    assert_eq!(state.kv_earliest_delay_end(), None);
}

/// The loop itself, on a one-server consensus in this process: a session
/// with a short TTL (the rules do not bound it; the HTTP API does) is
/// expired by the leader within its grace, not before.
#[tokio::test]
async fn the_leader_expires_a_session_once_twice_its_ttl_has_passed() {
    let replica = Arc::new(Replica::new());
    let consensus = Consensus::single_in_memory("n1", replica.clone()).await;
    consensus.write(register("n1")).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        consensus.clone(),
        replica.clone(),
        KvSettings::default(),
        stop.clone(),
    ));
    let outcome = consensus
        .write(Command::Session(SessionOp::Create(session("s", 150))))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
    let deadline = replica.read().session("s").and_then(|s| s.expires).unwrap();
    let mut changes = replica.subscribe();
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while replica.read().session("s").is_some() {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(gone.is_ok(), "the session was never expired");
    // Expired by an entry dated at or after its deadline.
    assert!(now_ms() >= deadline);
    stop.cancel();
    task.await.unwrap();
    consensus.shutdown().await;
}

/// The loop's other timer: a leader that finds a tombstone older than the
/// TTL (here 0, which the configuration would refuse) reaps it.
#[tokio::test]
async fn the_leader_reaps_tombstones_older_than_their_ttl() {
    let replica = Arc::new(Replica::new());
    let consensus = Consensus::single_in_memory("n1", replica.clone()).await;
    consensus.write(put("gone")).await.unwrap();
    consensus.write(delete("gone")).await.unwrap();
    let deleted = replica.read().kv_oldest_tombstone().unwrap();
    // Older than a TTL of 0 once the clock has moved past the delete.
    while now_ms() <= deleted {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stop = CancellationToken::new();
    let settings = KvSettings {
        tombstone_ttl: Duration::ZERO,
        ..KvSettings::default()
    };
    let task = tokio::spawn(run(
        consensus.clone(),
        replica.clone(),
        settings,
        stop.clone(),
    ));
    let mut changes = replica.subscribe();
    let reaped = tokio::time::timeout(Duration::from_secs(5), async {
        while replica.read().kv_oldest_tombstone().is_some() {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(reaped.is_ok(), "the tombstone was never reaped");
    stop.cancel();
    task.await.unwrap();
    consensus.shutdown().await;
}
