//! The DNS view: health filtering, and the incremental update through
//! `Replica::apply` agreeing with a full `View::build`.

use std::sync::Arc;

use super::*;
use crate::catalog::Replica;
use crate::catalog::view::{InstanceAddress, View};

/// Applies `cmd` and insists that the incrementally updated view equals one
/// built from scratch from the resulting catalog.
fn apply(r: &Replica, index: Index, cmd: Command) -> Outcome {
    let outcome = r.apply(index, &cmd);
    let full = View::build(&r.read());
    assert_eq!(*r.view(), full, "incremental view diverged after {cmd:?}");
    outcome
}

/// (node name, instance ID, health) of a service's answerable instances.
fn answers(r: &Replica, service: &str) -> Vec<(String, String, HealthStatus)> {
    r.view().service(service).map_or_else(Vec::new, |s| {
        s.instances
            .iter()
            .map(|i| (i.node.name.to_string(), i.id.to_string(), i.health))
            .collect()
    })
}

fn a(node: &str, id: &str, h: HealthStatus) -> (String, String, HealthStatus) {
    (node.into(), id.into(), h)
}

use HealthStatus::{Critical, Passing, Warning};

#[test]
fn critical_instance_is_excluded_and_warning_included() {
    let r = Replica::new();
    for (i, (n, status)) in [("n1", Passing), ("n2", Warning), ("n3", Critical)]
        .into_iter()
        .enumerate()
    {
        let mut s = svc("web");
        s.weights = Some(Weights {
            passing: 10,
            warning: 3,
        });
        apply(
            &r,
            1 + i as Index,
            reg(with_checks(
                with_svc(node(n, "10.0.0.1"), s),
                vec![svc_chk("alive", "web", status)],
            )),
        );
    }
    assert_eq!(
        answers(&r, "web"),
        [a("n1", "web", Passing), a("n2", "web", Warning)]
    );
    let v = r.view();
    let s = v.service("WEB").unwrap();
    assert_eq!(s.registered, 3);
    assert_eq!(s.instances[0].weight, 10);
    assert_eq!(s.instances[1].weight, 3);
}

#[test]
fn a_weight_past_16_bits_is_the_largest_srv_weight() {
    let r = Replica::new();
    let mut s = svc("web");
    s.weights = Some(Weights {
        passing: 70_000,
        warning: 1,
    });
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), s)));
    assert_eq!(
        r.view().service("web").unwrap().instances[0].weight,
        u16::MAX
    );
}

#[test]
fn service_with_only_critical_instances_stays_listed_without_answers() {
    let r = Replica::new();
    apply(
        &r,
        1,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), svc("web")),
            vec![svc_chk("alive", "web", Critical)],
        )),
    );
    let v = r.view();
    let s = v.service("web").unwrap();
    assert_eq!((s.registered, s.instances.len()), (1, 0));
}

#[test]
fn node_critical_check_removes_all_its_instances_and_removing_it_restores_them() {
    let r = Replica::new();
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), svc("web"))));
    apply(&r, 2, reg(with_svc(node("n1", "10.0.0.1"), svc("db"))));
    apply(&r, 3, reg(with_svc(node("n2", "10.0.0.2"), svc("web"))));
    apply(
        &r,
        4,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![chk("serfHealth", Critical)],
        )),
    );
    assert_eq!(answers(&r, "web"), [a("n2", "web", Passing)]);
    assert!(answers(&r, "db").is_empty());
    // Node lookups answer regardless of health, with the health recorded.
    assert_eq!(r.view().node("N1").unwrap().health, Critical);

    apply(&r, 5, dereg("n1", "", "serfHealth"));
    assert_eq!(
        answers(&r, "web"),
        [a("n1", "web", Passing), a("n2", "web", Passing)]
    );
    assert_eq!(answers(&r, "db"), [a("n1", "db", Passing)]);
    assert_eq!(r.view().node("n1").unwrap().health, Passing);
}

#[test]
fn node_warning_check_marks_instances_warning() {
    let r = Replica::new();
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), svc("web"))));
    apply(
        &r,
        2,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![chk("mem", Warning)],
        )),
    );
    assert_eq!(answers(&r, "web"), [a("n1", "web", Warning)]);
}

#[test]
fn service_rename_under_same_id_leaves_the_old_name() {
    let r = Replica::new();
    let mut s = svc("web");
    s.id = "app".into();
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), s.clone())));
    s.service = "api".into();
    apply(&r, 2, reg(with_svc(node("n1", "10.0.0.1"), s)));
    assert!(r.view().service("web").is_none());
    assert_eq!(answers(&r, "api"), [a("n1", "app", Passing)]);
}

#[test]
fn instance_address_falls_back_to_node_address_and_follows_it() {
    let r = Replica::new();
    let mut own = svc("db");
    own.address = "10.1.1.1".into();
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), svc("web"))));
    apply(&r, 2, reg(with_svc(node("n1", "10.0.0.1"), own)));
    apply(&r, 3, reg(node("n1", "10.0.0.9")));
    let v = r.view();
    let web = &v.service("web").unwrap().instances[0];
    assert_eq!(
        web.address,
        InstanceAddress::Ip("10.0.0.9".parse().unwrap())
    );
    assert_eq!(web.ip(), Some("10.0.0.9".parse().unwrap()));
    assert!(web.at_node);
    assert_eq!(web.node.address, "10.0.0.9");
    let db = &v.service("db").unwrap().instances[0];
    assert_eq!(db.address, InstanceAddress::Ip("10.1.1.1".parse().unwrap()));
    assert!(!db.at_node);
    assert_eq!(db.node.address, "10.0.0.9");
}

#[test]
fn host_name_address_has_no_ip() {
    let r = Replica::new();
    apply(
        &r,
        1,
        reg(with_svc(node("n1", "db.example.com"), svc("web"))),
    );
    let v = r.view();
    assert_eq!(v.node("n1").unwrap().ip, None);
    let web = &v.service("web").unwrap().instances[0];
    assert_eq!(web.ip(), None);
    assert_eq!(web.address, InstanceAddress::Host("db.example.com".into()));
    assert!(web.at_node);
}

#[test]
fn tags_match_in_any_case_and_are_the_rows_own_list() {
    let r = Replica::new();
    let mut s = svc("web");
    s.tags = vec!["Primary".into()];
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), s)));
    let v = r.view();
    let i = &v.service("web").unwrap().instances[0];
    assert_eq!(&i.tags[..], ["Primary"]);
    let state = r.read();
    let row = &state.health_service("web", &[], false)[0].service;
    assert!(i.tags.is_shared_with(&row.tags));
    assert!(i.has_tag("primary"));
    assert!(i.has_tag("PRIMARY"));
    assert!(!i.has_tag("secondary"));
}

#[test]
fn deregistering_node_removes_it_and_its_instances() {
    let r = Replica::new();
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), svc("web"))));
    apply(&r, 2, reg(with_svc(node("n2", "10.0.0.2"), svc("web"))));
    apply(&r, 3, reg(with_svc(node("n1", "10.0.0.1"), svc("db"))));
    apply(&r, 4, dereg("N1", "", ""));
    let v = r.view();
    assert!(v.node("n1").is_none());
    assert!(v.service("db").is_none());
    assert_eq!(answers(&r, "web"), [a("n2", "web", Passing)]);
}

#[test]
fn check_moving_from_node_to_instance_updates_both() {
    let r = Replica::new();
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), svc("web"))));
    apply(&r, 2, reg(with_svc(node("n1", "10.0.0.1"), svc("db"))));
    apply(
        &r,
        3,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![chk("c", Critical)],
        )),
    );
    apply(
        &r,
        4,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![svc_chk("c", "db", Critical)],
        )),
    );
    assert_eq!(answers(&r, "web"), [a("n1", "web", Passing)]);
    assert!(answers(&r, "db").is_empty());
    assert_eq!(r.view().node("n1").unwrap().health, Passing);
}

#[test]
fn refused_command_leaves_view_answers_alone() {
    let r = Replica::new();
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), svc("web"))));
    let before = r.view();
    let outcome = apply(&r, 2, reg(node("n2", "")));
    assert!(matches!(outcome, Outcome::Refused(_)));
    assert_eq!(answers(&r, "web"), [a("n1", "web", Passing)]);
    assert!(Arc::ptr_eq(
        before.service("web").unwrap(),
        r.view().service("web").unwrap()
    ));
}

#[test]
fn install_replaces_state_and_view() {
    let source = Replica::new();
    apply(
        &source,
        1,
        reg(with_svc(node("n1", "10.0.0.1"), svc("web"))),
    );
    apply(&source, 2, reg(with_svc(node("n2", "10.0.0.2"), svc("db"))));
    let target = Replica::new();
    apply(
        &target,
        1,
        reg(with_svc(node("old", "10.9.9.9"), svc("stale"))),
    );
    target.install(source.snapshot());
    assert_eq!(*target.view(), *source.view());
    assert_eq!(*target.read(), *source.read());
    assert_eq!(target.applied_index(), 2);
    assert!(target.view().service("stale").is_none());
}

#[test]
fn applied_index_wakes_subscribers() {
    let r = Replica::new();
    let mut rx = r.subscribe();
    apply(&r, 1, reg(node("n1", "10.0.0.1")));
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);
    r.apply_noop(2);
    assert_eq!(
        (
            *rx.borrow_and_update(),
            r.applied_index(),
            r.read().last_index()
        ),
        (2, 2, 2)
    );
}

#[test]
fn a_batch_applies_at_one_index_and_publishes_once() {
    let r = Replica::new();
    let mut rx = r.subscribe();
    let mut first = node("n1", "10.0.0.1");
    first.service = Some(svc("web"));
    let mut second = node("n2", "10.0.0.2");
    second.service = Some(svc("web"));
    let outcomes = r.apply_batch(
        7,
        0,
        vec![Command::register(first), Command::register(second)],
    );
    assert_eq!(outcomes, vec![Outcome::Applied(7), Outcome::Applied(7)]);
    assert_eq!(r.applied_index(), 7);
    assert!(rx.has_changed().unwrap_or(false));
    rx.mark_unchanged();
    // Both commands are in the one published view, at the entry's index.
    assert_eq!(r.view().index, 7);
    assert_eq!(r.view().service("web").map(|s| s.instances.len()), Some(2));
    assert_eq!(r.read().service_index("web"), 7);
    // An empty batch still moves the applied index.
    assert!(r.apply_batch(8, 0, Vec::new()).is_empty());
    assert_eq!(r.applied_index(), 8);
}

#[test]
fn a_held_view_stays_as_it_was_until_released_then_answers_for_every_change() {
    let r = Replica::new();
    apply(&r, 1, reg(with_svc(node("n1", "10.0.0.1"), svc("web"))));
    r.hold_view();
    assert_eq!(r.release_view(), None, "nothing was held back");
    r.hold_view();
    r.apply(2, &reg(with_svc(node("n2", "10.0.0.2"), svc("web"))));
    r.apply(
        3,
        &reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), svc("web")),
            vec![svc_chk("alive", "web", Critical)],
        )),
    );
    assert_eq!(answers(&r, "web"), [a("n1", "web", Passing)], "held");
    assert!(r.release_view().is_some(), "a change was held back");
    assert_eq!(answers(&r, "web"), [a("n2", "web", Passing)]);
    // Released: the next change updates the view built on release.
    apply(&r, 4, dereg("n2", "web", ""));
    assert_eq!(answers(&r, "web"), []);
}

#[test]
fn a_service_entry_holds_no_room_for_instances_it_does_not_have() {
    // Every entry is rebuilt, never grown: spare room in its list would be
    // kept for nothing (4 slots for 3 instances, at 100,000 instances
    // about 40 bytes each).
    let r = Replica::new();
    for (i, n) in ["n1", "n2", "n3"].into_iter().enumerate() {
        apply(
            &r,
            1 + i as Index,
            reg(with_svc(node(n, &format!("10.0.0.{}", i + 1)), svc("web"))),
        );
    }
    let incremental = r.view();
    let built = View::build(&r.read());
    for v in [&*incremental, &built] {
        let web = v.service("web").expect("web");
        assert_eq!((web.instances.len(), web.instances.capacity()), (3, 3));
    }
}

#[test]
fn a_view_a_reader_holds_never_changes_and_every_published_view_is_whole() {
    // Views share their shards, and each change copies the ones it writes.
    // A view a reader holds must read the same however many changes are
    // published meanwhile, and `apply` checks each published view against
    // a full build, with and without a reader holding an older one.
    let r = Replica::new();
    let mut index = 0;
    let mut next = || {
        index += 1;
        index
    };
    for (i, n) in ["n1", "n2", "n3"].into_iter().enumerate() {
        let address = format!("10.0.0.{}", i + 1);
        apply(&r, next(), reg(with_svc(node(n, &address), svc("web"))));
    }
    for hold in [true, false, true] {
        let held = hold.then(|| {
            let view = r.view();
            let frozen = View::clone(&view);
            (view, frozen)
        });
        for round in 0..3 {
            let db = format!("db{round}");
            apply(&r, next(), reg(with_svc(node("n4", "10.0.0.4"), svc(&db))));
            apply(&r, next(), dereg("n2", "web", ""));
            apply(
                &r,
                next(),
                reg(with_svc(node("n2", "10.0.0.2"), svc("web"))),
            );
            let disk = if round % 2 == 0 { Critical } else { Passing };
            apply(
                &r,
                next(),
                reg(with_checks(node("n1", "10.0.0.1"), vec![chk("disk", disk)])),
            );
            apply(&r, next(), dereg("n4", &db, ""));
        }
        if let Some((view, frozen)) = held {
            assert_eq!(*view, frozen, "a held view changed");
        }
    }
    // The last round left n1's disk check critical.
    assert_eq!(
        answers(&r, "web"),
        [a("n2", "web", Passing), a("n3", "web", Passing)]
    );
}
