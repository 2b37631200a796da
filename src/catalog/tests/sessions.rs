//! Consul's session semantics: what a session needs to be created, renewal
//! and the leader's expiry by the entry's time, and every way a session is
//! invalidated with what that does to the keys it holds.

use super::*;
use crate::catalog::State;

fn create(s: Session) -> Command {
    Command::Session(SessionOp::Create(s))
}

fn destroy(id: &str) -> Command {
    Command::Session(SessionOp::Destroy { id: id.into() })
}

fn renew(id: &str) -> Command {
    Command::Session(SessionOp::Renew { id: id.into() })
}

fn expire(ids: &[&str]) -> Command {
    Command::Session(SessionOp::Expire {
        ids: ids.iter().map(|s| s.to_string()).collect(),
    })
}

/// Applies `cmd` at `index` of an entry dated `time`; insists it applied.
fn ok(c: &mut State, index: Index, time: Time, cmd: Command) {
    let (outcome, _) = c.apply(index, time, &cmd);
    assert!(
        matches!(&outcome, Outcome::Applied(i) | Outcome::Txn { index: i, .. } if *i == index),
        "{cmd:?}: {outcome:?}"
    );
}

/// Applies `cmd`, insists it was refused with `err` (whose message is
/// `message`, Consul's) and changed nothing but the last index.
fn refused(c: &mut State, index: Index, cmd: Command, err: SessionError, message: &str) {
    assert_eq!(err.to_string(), message);
    let mut expected = c.clone();
    expected.apply_noop(index);
    let (outcome, _) = c.apply(index, 0, &cmd);
    assert_eq!(outcome, Outcome::Refused(CatalogError::Session(err)));
    assert_eq!(*c, expected);
}

/// Node n1 with node check `serfHealth` (passing), node check `mem` of
/// `mem`'s status, and service web-1 with its check `web-alive` (passing).
fn n1(mem: HealthStatus) -> Command {
    let mut web = svc("web");
    web.id = "web-1".into();
    let mut alive = svc_chk("web-alive", "web-1", HealthStatus::Passing);
    alive.check_id = "web-alive".into();
    reg(with_checks(
        with_svc(node("n1", "10.0.0.1"), web),
        vec![
            chk("serfHealth", HealthStatus::Passing),
            chk("mem", mem),
            alive,
        ],
    ))
}

/// A session on n1 depending on the node check `check`.
fn on_check(id: &str, check: &str) -> Session {
    Session {
        node_checks: vec![check.into()],
        ..session(id, "n1")
    }
}

/// A state with n1 registered at index 1.
fn with_n1() -> State {
    let mut c = State::new();
    ok(&mut c, 1, 0, n1(HealthStatus::Passing));
    c
}

/// Has session `id` lock `key` at `index`.
fn lock(c: &mut State, index: Index, key: &str, id: &str) {
    ok(c, index, 0, Command::Kv(kv_by(KvVerb::Lock, key, "v", id)));
}

fn holder(c: &State, key: &str) -> Option<String> {
    c.kv_get(key).and_then(|e| e.session.clone())
}

#[test]
fn a_session_is_created_with_its_indexes_and_a_deadline_of_twice_its_ttl() {
    let mut c = with_n1();
    let s = Session {
        ttl: "10s".into(),
        ttl_ms: 10_000,
        ..on_check("s1", "serfHealth")
    };
    ok(&mut c, 2, 5_000, create(s.clone()));
    let got = c.session("s1").expect("created");
    assert_eq!((got.create_index, got.modify_index), (2, 2));
    assert_eq!(got.expires, Some(25_000));
    assert_eq!(c.sessions_index(), 2);
    assert_eq!(c.next_session_deadline(), Some(25_000));
    assert_eq!(c.sessions_on_node("N1").len(), 1);
    // Without a TTL there is no deadline.
    ok(&mut c, 3, 5_000, create(session("s2", "n1")));
    assert_eq!(c.session("s2").map(|s| s.expires), Some(None));
    refused(
        &mut c,
        4,
        create(session("s2", "n1")),
        SessionError::Duplicate("s2".into()),
        "Session id 's2' already exists",
    );
}

#[test]
fn a_session_needs_its_node_and_checks_registered_and_none_critical() {
    let mut c = State::new();
    refused(
        &mut c,
        1,
        create(session("s1", "n1")),
        SessionError::NoNode,
        "Missing node registration",
    );
    ok(&mut c, 2, 0, n1(HealthStatus::Critical));
    refused(
        &mut c,
        3,
        create(on_check("s1", "disk")),
        SessionError::NoCheck("disk".into()),
        "Missing check 'disk' registration",
    );
    refused(
        &mut c,
        4,
        create(on_check("s1", "mem")),
        SessionError::CheckCritical("mem".into()),
        "Check 'mem' is in critical state",
    );
    // A service check is looked up on the session's node too.
    let s = Session {
        service_checks: vec![ServiceCheck {
            id: "db-alive".into(),
            namespace: String::new(),
        }],
        ..session("s1", "n1")
    };
    refused(
        &mut c,
        5,
        create(s),
        SessionError::NoCheck("db-alive".into()),
        "Missing check 'db-alive' registration",
    );
    // A warning check does not stop it.
    ok(&mut c, 6, 0, n1(HealthStatus::Warning));
    ok(&mut c, 7, 0, create(on_check("s1", "mem")));
}

#[test]
fn renewing_a_missing_session_is_refused_as_not_found() {
    let mut c = with_n1();
    refused(
        &mut c,
        2,
        renew("nope"),
        SessionError::NotFound("nope".into()),
        "Session id 'nope' not found",
    );
}

#[test]
fn renewing_moves_the_deadline_from_the_entrys_time_and_no_index() {
    let mut c = with_n1();
    let s = Session {
        ttl_ms: 10_000,
        ..session("s1", "n1")
    };
    ok(&mut c, 2, 1_000, create(s));
    ok(&mut c, 3, 15_000, renew("s1"));
    let got = c.session("s1").expect("renewed");
    assert_eq!(got.expires, Some(35_000));
    assert_eq!(
        (got.create_index, got.modify_index, c.sessions_index()),
        (2, 2, 2)
    );
}

#[test]
fn expire_ends_a_session_only_once_its_deadline_passed_by_the_entrys_time() {
    let mut c = with_n1();
    let s = Session {
        ttl_ms: 10_000,
        ..session("s1", "n1")
    };
    ok(&mut c, 2, 1_000, create(s));
    lock(&mut c, 3, "k", "s1");
    assert_eq!(c.sessions_due(20_999), Vec::<String>::new());
    ok(&mut c, 4, 20_999, expire(&["s1"]));
    assert!(c.session("s1").is_some());
    assert_eq!(c.sessions_due(21_000), ["s1"]);
    ok(&mut c, 5, 21_000, expire(&["s1", "unknown"]));
    assert!(c.session("s1").is_none());
    assert_eq!(holder(&c, "k"), None);
    assert_eq!(c.sessions_index(), 5);
}

#[test]
fn expire_leaves_a_session_renewed_since_the_leader_found_it_due() {
    let mut c = with_n1();
    let s = Session {
        ttl_ms: 10_000,
        ..session("s1", "n1")
    };
    ok(&mut c, 2, 1_000, create(s));
    // The leader saw it due at 21000, but a renewal was committed first.
    ok(&mut c, 3, 20_000, renew("s1"));
    ok(&mut c, 4, 21_000, expire(&["s1"]));
    assert!(c.session("s1").is_some());
    assert_eq!(c.sessions_index(), 2);
}

#[test]
fn a_session_without_a_ttl_never_expires() {
    let mut c = with_n1();
    ok(&mut c, 2, 0, create(session("s1", "n1")));
    ok(&mut c, 3, u64::MAX, expire(&["s1"]));
    assert!(c.session("s1").is_some());
    assert_eq!(c.next_session_deadline(), None);
}

#[test]
fn destroying_a_missing_session_is_success() {
    let mut c = with_n1();
    let mut expected = c.clone();
    expected.apply_noop(2);
    ok(&mut c, 2, 0, destroy("nope"));
    assert_eq!(c, expected);
}

#[test]
fn invalidating_a_release_session_frees_its_keys_keeping_lock_index() {
    let mut c = with_n1();
    ok(&mut c, 2, 0, create(session("s1", "n1")));
    lock(&mut c, 3, "a", "s1");
    lock(&mut c, 4, "b", "s1");
    ok(&mut c, 5, 0, Command::Kv(kv(KvVerb::Set, "c", "plain")));
    ok(&mut c, 6, 0, destroy("s1"));
    for key in ["a", "b"] {
        let e = c.kv_get(key).expect("kept");
        assert_eq!(
            (e.session.as_deref(), e.lock_index, e.modify_index),
            (None, 1, 6),
            "{key}"
        );
        assert_eq!(e.value, b"v");
    }
    assert_eq!(c.kv_get("c").map(|e| e.modify_index), Some(5));
    assert!(c.session("s1").is_none());
    assert_eq!(c.sessions_index(), 6);
}

#[test]
fn invalidating_a_delete_session_deletes_its_keys_leaving_tombstones() {
    let mut c = with_n1();
    let s = Session {
        behavior: Behavior::Delete,
        ..session("s1", "n1")
    };
    ok(&mut c, 2, 0, create(s));
    lock(&mut c, 3, "a/1", "s1");
    ok(&mut c, 4, 0, Command::Kv(kv(KvVerb::Set, "a/2", "plain")));
    ok(&mut c, 5, 700, destroy("s1"));
    assert_eq!(c.kv_get("a/1"), None);
    assert!(c.kv_get("a/2").is_some());
    assert_eq!((c.kv_key_index("a/1"), c.kv_prefix_index("a/")), (5, 5));
    assert_eq!(c.kv_oldest_tombstone(), Some(700));
}

#[test]
fn deregistering_the_node_invalidates_its_sessions() {
    let mut c = with_n1();
    ok(&mut c, 2, 0, create(session("s1", "N1")));
    ok(&mut c, 3, 0, reg(node("n2", "10.0.0.2")));
    ok(&mut c, 4, 0, create(session("s2", "n2")));
    lock(&mut c, 5, "k1", "s1");
    lock(&mut c, 6, "k2", "s2");
    ok(&mut c, 7, 0, dereg("n1", "", ""));
    assert!(c.session("s1").is_none());
    assert_eq!(holder(&c, "k1"), None);
    assert_eq!(c.kv_get("k1").map(|e| e.modify_index), Some(7));
    assert!(c.session("s2").is_some());
    assert_eq!(holder(&c, "k2").as_deref(), Some("s2"));
    assert!(c.sessions_on_node("n1").is_empty());
}

#[test]
fn a_check_turning_critical_invalidates_the_sessions_on_it_but_warning_does_not() {
    let mut c = with_n1();
    ok(&mut c, 2, 0, create(on_check("s1", "mem")));
    ok(&mut c, 3, 0, create(on_check("s2", "serfHealth")));
    lock(&mut c, 4, "k", "s1");
    ok(&mut c, 5, 0, n1(HealthStatus::Warning));
    assert!(c.session("s1").is_some());
    assert_eq!(holder(&c, "k").as_deref(), Some("s1"));
    ok(&mut c, 6, 0, n1(HealthStatus::Critical));
    assert!(c.session("s1").is_none());
    assert_eq!(holder(&c, "k"), None);
    // A session on another check of the node stays.
    assert!(c.session("s2").is_some());
}

#[test]
fn deregistering_a_check_invalidates_the_sessions_on_it() {
    let mut c = with_n1();
    ok(&mut c, 2, 0, create(on_check("s1", "mem")));
    ok(&mut c, 3, 0, create(on_check("s2", "serfHealth")));
    ok(&mut c, 4, 0, dereg("n1", "", "mem"));
    assert!(c.session("s1").is_none());
    assert!(c.session("s2").is_some());
}

#[test]
fn deregistering_a_service_invalidates_the_sessions_on_its_checks() {
    let mut c = with_n1();
    let s = Session {
        service_checks: vec![ServiceCheck {
            id: "web-alive".into(),
            namespace: String::new(),
        }],
        ..session("s1", "n1")
    };
    ok(&mut c, 2, 0, create(s));
    ok(&mut c, 3, 0, create(on_check("s2", "serfHealth")));
    lock(&mut c, 4, "k", "s1");
    ok(&mut c, 5, 0, dereg("n1", "web-1", ""));
    assert!(c.session("s1").is_none());
    assert_eq!(holder(&c, "k"), None);
    assert!(c.session("s2").is_some());
}

#[test]
fn a_session_invalidated_releases_what_it_held_in_the_same_entry_as_its_cause() {
    // One entry: the check turns critical and the lock is free at its index.
    let mut c = with_n1();
    ok(&mut c, 2, 0, create(on_check("s1", "mem")));
    ok(&mut c, 3, 0, create(session("s2", "n1")));
    lock(&mut c, 4, "k", "s1");
    let entry = [
        n1(HealthStatus::Critical),
        Command::Kv(kv_by(KvVerb::Lock, "k", "mine", "s2")),
    ];
    for cmd in &entry {
        ok(&mut c, 5, 0, cmd.clone());
    }
    let e = c.kv_get("k").expect("k");
    assert_eq!(
        (e.session.as_deref(), e.lock_index, e.modify_index),
        (Some("s2"), 2, 5)
    );
}

#[test]
fn a_state_restored_from_a_snapshot_invalidates_through_the_indexes_it_rebuilt() {
    let mut c = with_n1();
    ok(&mut c, 2, 0, create(on_check("s1", "mem")));
    let s2 = Session {
        behavior: Behavior::Delete,
        ..session("s2", "n1")
    };
    ok(&mut c, 3, 0, create(s2));
    lock(&mut c, 4, "k1", "s1");
    lock(&mut c, 5, "k2", "s2");
    let bytes = postcard::to_allocvec(&c.to_snapshot()).unwrap();
    let mut back = State::from_snapshot(postcard::from_bytes(&bytes).unwrap());
    assert_eq!(back, c);
    // Sessions by check: deregistering mem ends s1 and frees k1.
    ok(&mut back, 6, 0, dereg("n1", "", "mem"));
    assert!(back.session("s1").is_none());
    assert_eq!(holder(&back, "k1"), None);
    // Sessions by node and keys by session: the node's removal ends s2 and
    // deletes k2.
    ok(&mut back, 7, 0, dereg("n1", "", ""));
    assert!(back.session("s2").is_none());
    assert_eq!(back.kv_get("k2"), None);
    // The same log on the original state ends in the same place.
    ok(&mut c, 6, 0, dereg("n1", "", "mem"));
    ok(&mut c, 7, 0, dereg("n1", "", ""));
    assert_eq!(back, c);
}
