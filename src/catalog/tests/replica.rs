//! The replica's history, which followers read to stay current: a follower
//! that replays what `since` gives it ends with the leader's state, and one
//! that fell behind the history is told so instead of getting a gap. And
//! the wait of a read for the writes its agent answered.

use std::sync::Arc;

use super::{node, svc};
use crate::catalog::{Applied, Command, Replica, Since, State};

fn register(name: &str, n: usize) -> Command {
    let mut reg = node(&format!("{name}{n}"), &format!("10.0.0.{}", n % 250 + 1));
    reg.service = Some(svc(name));
    Command::register(reg)
}

/// Replays what `since` answers onto `follower` until it is current.
fn catch_up(leader: &Replica, follower: &Replica, max: usize) -> bool {
    loop {
        match leader.since(follower.applied_index(), 4, max) {
            Since::TooOld => return false,
            Since::Entries(entries) if entries.is_empty() => return true,
            Since::Entries(entries) => {
                for e in entries {
                    follower.apply_batch(e.index, e.time, e.commands);
                }
            }
        }
    }
}

#[test]
fn a_follower_replaying_the_history_ends_with_the_same_state() {
    let leader = Replica::with_history(1000);
    let follower = Replica::new();
    for i in 1..=40u64 {
        let cmds: Vec<Command> = (0..(i as usize % 4))
            .map(|n| register("web", n + i as usize))
            .collect();
        leader.apply_batch(i, 0, cmds);
        if i % 7 == 0 {
            assert!(catch_up(&leader, &follower, 5));
        }
    }
    leader.apply_noop(41);
    assert!(catch_up(&leader, &follower, 3));
    assert_eq!(follower.applied_index(), 41);
    assert_eq!(*follower.read(), *leader.read());
}

/// A follower far enough behind reads entries the history holds as their
/// encoded bytes (all but its newest 64; `history.rs` tests which are):
/// replayed, they give the leader's state, tags, meta, checks and KV
/// values.
#[test]
fn a_follower_far_behind_replays_the_entries_held_as_bytes() {
    use super::{HealthStatus, KvVerb, chk, kv, svc_chk, with_checks};
    let leader = Replica::with_history(10_000);
    for i in 1..=200u64 {
        let n = i as usize;
        let mut r = with_checks(
            node(&format!("web{n}"), "10.0.0.1"),
            vec![
                chk("alive", HealthStatus::Passing),
                svc_chk("http", "web", HealthStatus::Critical),
            ],
        );
        let mut web = svc("web");
        web.tags = vec!["primary".into(), format!("v{n}")];
        web.meta = [("version".to_string(), n.to_string())].into();
        r.service = Some(web);
        let cmds = vec![
            Command::register(r),
            Command::Kv(kv(KvVerb::Set, &format!("app/{n}"), &"v".repeat(n))),
        ];
        leader.apply_batch(i, i * 1000, cmds);
    }
    let follower = Replica::new();
    assert!(catch_up(&leader, &follower, 16));
    assert_eq!(follower.applied_index(), 200);
    assert_eq!(*follower.read(), *leader.read());
}

#[test]
fn a_follower_behind_the_history_is_told_it_is_too_old() {
    let leader = Replica::with_history(4);
    for i in 1..=10u64 {
        leader.apply_batch(i, 0, vec![register("db", i as usize)]);
    }
    // Only the last four entries are kept.
    assert_eq!(leader.since(5, 100, 100), Since::TooOld);
    let Since::Entries(entries) = leader.since(6, 100, 100) else {
        panic!("index 6 is the floor: entries 7..=10 follow it");
    };
    assert_eq!(
        entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        [7, 8, 9, 10]
    );

    // The whole state brings a follower back, and the history goes on from there.
    let follower = Replica::new();
    follower.install(leader.snapshot());
    leader.apply_batch(11, 0, vec![register("db", 11)]);
    assert!(catch_up(&leader, &follower, 100));
    assert_eq!(*follower.read(), *leader.read());
}

#[test]
fn a_replica_without_history_sends_everyone_to_the_snapshot() {
    let replica = Replica::new();
    replica.apply_batch(1, 0, vec![register("db", 1)]);
    assert_eq!(replica.since(0, 100, 10), Since::TooOld);
    assert_eq!(replica.since(1, 100, 10), Since::Entries(Vec::new()));
}

#[test]
fn installing_a_snapshot_restarts_the_history_at_its_index() {
    let leader = Replica::with_history(100);
    leader.apply_batch(1, 0, vec![register("db", 1)]);
    let mut state = State::from_snapshot(leader.snapshot());
    state.apply_noop(50);
    leader.install(state.to_snapshot());
    assert_eq!(leader.since(1, 100, 10), Since::TooOld);
    assert_eq!(leader.since(50, 100, 10), Since::Entries(Vec::new()));
    let cmds: Arc<[Command]> = vec![register("db", 2)].into();
    leader.apply_batch(51, 0, cmds.clone());
    assert_eq!(
        leader.since(50, 100, 10),
        Since::Entries(vec![Applied {
            index: 51,
            time: 0,
            commands: cmds
        }])
    );
}

/// A follower replays each entry at the leader's time, so what depends on
/// time (a session's deadline, a lock-delay, a tombstone's age) comes out
/// the same on both.
#[test]
fn a_follower_replays_kv_and_sessions_at_the_leaders_time() {
    use super::{kv_by, session};
    use crate::catalog::{KvVerb, Outcome, Session, SessionOp};

    let leader = Replica::with_history(1000);
    let follower = Replica::new();
    let holder = Session {
        ttl_ms: 10_000,
        lock_delay_ns: 5_000_000_000,
        ..session("s1", "web1")
    };
    let lock = |s: &str| Command::Kv(kv_by(KvVerb::Lock, "leader", s, s));
    let entries: Vec<(u64, Vec<Command>)> = vec![
        (1_000, vec![register("web", 1)]),
        (1_000, vec![Command::Session(SessionOp::Create(holder))]),
        (
            1_000,
            vec![
                Command::Session(SessionOp::Create(session("s2", "web1"))),
                lock("s1"),
            ],
        ),
        // Due at 21000: expired, which frees the key with a delay to 26000.
        (
            21_000,
            vec![Command::Session(SessionOp::Expire {
                ids: vec!["s1".into()],
            })],
        ),
        (25_999, vec![lock("s2")]),
        (26_000, vec![lock("s2")]),
    ];
    let mut outcomes = Vec::new();
    for (index, (time, cmds)) in (1..).zip(entries) {
        outcomes.push(leader.apply_batch(index, time, cmds));
    }
    assert!(
        matches!(outcomes[4][0], Outcome::Refused(_)),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[5][0], Outcome::Txn { index: 6, .. }),
        "{outcomes:?}"
    );
    assert!(catch_up(&leader, &follower, 2));
    assert_eq!(*follower.read(), *leader.read());
    let held = follower
        .read()
        .kv_get("leader")
        .and_then(|e| e.session.clone());
    assert_eq!(held.as_deref(), Some("s2"));
}

#[test]
fn a_kv_write_wakes_the_readers_of_its_key_and_nothing_else_does() {
    use crate::catalog::{KvOp, KvVerb};
    let set = |key: &str| {
        let mut op = KvOp::new(KvVerb::Set, key);
        op.value = b"v".to_vec();
        Command::Kv(op)
    };
    let r = Replica::new();
    let mut a = r.subscribe_key("cfg/a");
    let mut b = r.subscribe_key("cfg/b");
    r.apply(1, &register("db", 1));
    r.apply(2, &set("cfg/b"));
    assert!(
        !a.has_changed().unwrap(),
        "a catalog write and another key's leave it"
    );
    assert!(b.has_changed().unwrap());
    assert_eq!(*b.borrow_and_update(), 2);
    // A refused write changes nothing and wakes nobody.
    let mut cas = KvOp::new(KvVerb::Cas, "cfg/b");
    cas.index = 99;
    r.apply(3, &Command::Kv(cas));
    assert!(!b.has_changed().unwrap());
    // A delete wakes, and so does a transaction.
    r.apply(4, &Command::Kv(KvOp::new(KvVerb::Delete, "cfg/b")));
    assert_eq!(*b.borrow_and_update(), 4);
    r.apply(
        5,
        &Command::Txn(vec![crate::catalog::TxnOp::Kv({
            let mut op = KvOp::new(KvVerb::Set, "cfg/a");
            op.value = b"x".to_vec();
            op
        })]),
    );
    assert_eq!(*a.borrow_and_update(), 5);
    assert!(!b.has_changed().unwrap());
    // A snapshot may change any key: everyone looks again.
    r.install(r.snapshot());
    assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
}

/// A write an agent answered before its replica applied it holds up the
/// agent's next read until it is applied (`Replica::acknowledge`).
#[tokio::test]
async fn a_read_waits_for_every_write_its_agent_answered() {
    use std::time::Duration;
    let replica = Arc::new(Replica::new());
    let soon = || tokio::time::Instant::now() + Duration::from_millis(20);
    assert!(
        replica.wait_acknowledged(soon()).await,
        "nothing answered yet"
    );

    replica.acknowledge(2);
    replica.acknowledge(1);
    assert!(
        !replica.wait_acknowledged(soon()).await,
        "index 2 answered, nothing applied; an older answer does not lower it"
    );
    replica.apply(1, &register("web", 1));
    assert!(!replica.wait_acknowledged(soon()).await, "1 of 2 applied");

    let waiting = {
        let replica = replica.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            replica.wait_acknowledged(deadline).await
        })
    };
    replica.apply(2, &register("web", 2));
    assert!(
        waiting.await.expect("task"),
        "woken once index 2 is applied"
    );
    assert!(replica.wait_acknowledged(soon()).await);
}

/// A snapshot's encoding takes the read lock again and again; writes are
/// applied between its turns rather than after it. With std's lock alone
/// the reader took the lock again before the woken writer ran, nearly
/// every time: writes waited out runs of thousands of its turns, where now
/// each waits about one.
#[test]
fn writes_go_in_between_the_turns_of_a_reader_that_loops() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let replica = Arc::new(Replica::new());
    let done = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicU64::new(0));
    let reader = {
        let (replica, done, turns) = (replica.clone(), done.clone(), turns.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let state = replica.read_after_writers();
                // A slice of work under the lock.
                let spin = std::time::Instant::now();
                while spin.elapsed() < std::time::Duration::from_micros(200) {
                    std::hint::black_box(state.last_index());
                }
                drop(state);
                turns.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The reader is looping before the writes start.
    while turns.load(Ordering::Relaxed) < 10 {
        std::thread::yield_now();
    }
    let before = turns.load(Ordering::Relaxed);
    for index in 1..=250 {
        replica.apply(index, &register("web", index as usize));
        // Some work between writes, as a server has: the reader turns
        // meanwhile, and the next write finds it holding the lock.
        let gap = std::time::Instant::now();
        while gap.elapsed() < std::time::Duration::from_micros(50) {
            std::hint::spin_loop();
        }
    }
    let during = turns.load(Ordering::Relaxed) - before;
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(replica.read().last_index(), 250);
    // About one turn a write; with std's lock alone, runs of thousands.
    assert!(
        during < 2_500,
        "250 writes waited out {during} turns of the reader"
    );
}
