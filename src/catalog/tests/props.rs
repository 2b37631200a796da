//! Property tests: random command sequences over a small universe of names,
//! so that collisions (same node in another spelling, a check moving between
//! instances, a service renamed under the same ID) happen often.

use proptest::prelude::*;
use proptest::sample::select;

use super::model::Model;
use super::*;
use crate::catalog::Replica;
use crate::catalog::view::View;
use crate::catalog::{State, StateSnapshot};

const NODES: &[&str] = &["alpha", "Alpha", "beta"];
const ADDRESSES: &[&str] = &["", "10.0.0.1", "10.0.0.2"];
const SERVICE_IDS: &[&str] = &["", "s1", "web"];
const SERVICE_NAMES: &[&str] = &["web", "Web", "db"];
const TAGS: &[&str] = &["primary", "PRIMARY", "v1"];
const CHECK_IDS: &[&str] = &["", "c1", "c2"];
const CHECK_NAMES: &[&str] = &["c1", "c2", "n"];
const CHECK_SERVICE_IDS: &[&str] = &["", "", "s1", "web", "db"];

fn s(v: &[&'static str]) -> impl Strategy<Value = String> + use<> {
    select(v.to_vec()).prop_map(String::from)
}

fn status() -> impl Strategy<Value = HealthStatus> {
    select(vec![
        HealthStatus::Passing,
        HealthStatus::Warning,
        HealthStatus::Critical,
    ])
}

fn service() -> impl Strategy<Value = ServiceRegistration> {
    (
        s(SERVICE_IDS),
        s(SERVICE_NAMES),
        prop::collection::vec(s(TAGS), 0..3),
        1u16..3,
    )
        .prop_map(|(id, name, tags, port)| ServiceRegistration {
            id,
            port,
            tags,
            ..svc(&name)
        })
}

fn check() -> impl Strategy<Value = CheckRegistration> {
    (s(CHECK_IDS), s(CHECK_NAMES), status(), s(CHECK_SERVICE_IDS)).prop_map(
        |(check_id, name, status, service_id)| CheckRegistration {
            check_id,
            service_id,
            ..chk(&name, status)
        },
    )
}

pub(super) fn command() -> impl Strategy<Value = Command> {
    let register = (
        s(NODES),
        s(ADDRESSES),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(service()),
        prop::collection::vec(check(), 0..3),
    )
        .prop_map(|(n, address, skip, meta, service, checks)| {
            let mut r = node(&n, &address);
            r.skip_node_update = skip;
            if meta {
                r.node_meta.insert("rack".into(), "r1".into());
            }
            r.service = service;
            r.checks = checks;
            Command::register(r)
        });
    let deregister = (
        s(NODES),
        select(vec!["", "", "s1", "web"]),
        select(vec!["", "", "c1", "n"]),
    )
        .prop_map(|(n, sid, cid)| dereg(&n, sid, cid));
    prop_oneof![3 => register, 1 => deregister]
}

/// Everything a blocking query on `/v1/health/service/<name>` would see.
fn health_answer(c: &State, service: &str) -> String {
    format!("{:?}", c.health_service(service, &[], false))
}

/// The nodes, services and checks tables as a blocking list query sees them.
fn tables(c: &State) -> [String; 3] {
    let services: Vec<_> = c.nodes().flat_map(|n| c.node_services(&n.name)).collect();
    [
        format!("{:?}", c.nodes().collect::<Vec<_>>()),
        format!("{services:?}"),
        format!("{:?}", c.checks_in_state(None).collect::<Vec<_>>()),
    ]
}

/// Every record's indexes lie between its creation and the table's index.
fn assert_index_bounds(c: &State) {
    for n in c.nodes() {
        assert!(
            n.create_index <= n.modify_index && n.modify_index <= c.nodes_index(),
            "{n:?}"
        );
        for s in c.node_services(&n.name) {
            assert!(
                s.create_index <= s.modify_index && s.modify_index <= c.services_index(),
                "{s:?}"
            );
            assert!(s.modify_index <= c.service_index(&s.service), "{s:?}");
        }
    }
    for k in c.checks_in_state(None) {
        assert!(
            k.create_index <= k.modify_index && k.modify_index <= c.checks_index(),
            "{k:?}"
        );
    }
    assert!(
        c.nodes_index()
            .max(c.services_index())
            .max(c.checks_index())
            <= c.last_index()
    );
}

fn assert_matches_model(c: &State, m: &Model) {
    let nodes: Vec<_> = c
        .nodes()
        .map(|n| (n.name.clone(), n.address.clone()))
        .collect();
    assert_eq!(nodes, m.nodes(), "nodes");
    for (nk, mn) in &m.nodes {
        assert_eq!(c.node(nk).unwrap().meta, mn.meta, "meta of {nk}");
        let checks: Vec<_> = c
            .node_checks(nk)
            .map(|k| {
                (
                    k.check_id.to_string(),
                    k.status,
                    k.service_id.to_string(),
                    k.service_name.to_string(),
                    k.service_tags.iter().map(|t| t.to_string()).collect(),
                    k.node.to_string(),
                )
            })
            .collect();
        assert_eq!(checks, m.node_checks(nk), "checks of {nk}");
        assert_eq!(c.node_health(nk), m.node_health(nk), "health of {nk}");
    }
    for name in SERVICE_NAMES {
        for tags in [
            vec![],
            vec!["Primary".to_string()],
            vec!["v1".into(), "primary".into()],
        ] {
            let got: Vec<_> = c
                .health_service(name, &tags, false)
                .iter()
                .map(|e| {
                    (
                        e.node.name.clone(),
                        e.service.id.to_string(),
                        e.service.port,
                        e.status(),
                    )
                })
                .collect();
            let want = m.health_service(name, &tags);
            assert_eq!(got, want, "health of {name} {tags:?}");
            let passing: Vec<_> = c
                .health_service(name, &tags, true)
                .iter()
                .map(|e| e.service.id.to_string())
                .collect();
            let want: Vec<_> = want
                .into_iter()
                .filter(|w| w.3 == HealthStatus::Passing)
                .map(|w| w.1)
                .collect();
            assert_eq!(passing, want, "passing {name} {tags:?}");
        }
    }
    assert_eq!(c.services(), m.services(), "services");
    for name in SERVICE_NAMES {
        let got: Vec<_> = c
            .service_checks(name)
            .map(|k| (k.node.to_string(), k.check_id.to_string()))
            .collect();
        assert_eq!(got, m.service_checks(name), "checks of service {name}");
    }
    for st in [
        HealthStatus::Passing,
        HealthStatus::Warning,
        HealthStatus::Critical,
    ] {
        let got = c.checks_in_state(Some(st)).count();
        let want = m.checks.values().filter(|k| k.status == st).count();
        assert_eq!(got, want, "checks in {st:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn catalog_agrees_with_model_view_and_itself(cmds in prop::collection::vec(command(), 1..40)) {
        let replica = Replica::new();
        let mut twin = State::new();
        let mut model = Model::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let index = i as Index + 1;
            let before = replica.read().clone();
            let answers_before: Vec<_> = SERVICE_NAMES.iter().map(|n| health_answer(&before, n)).collect();
            let tables_before = tables(&before);

            let outcome = replica.apply(index, cmd);
            let (twin_outcome, _) = twin.apply(index, 0, cmd);
            let accepted = model.apply(cmd);
            let after = replica.read().clone();
            after.assert_derived_indexes();
            assert_index_bounds(&after);

            // (a) determinism
            prop_assert_eq!(&outcome, &twin_outcome);
            prop_assert_eq!(&after, &twin);
            // (c) the model agrees on acceptance and on every query
            prop_assert_eq!(matches!(outcome, Outcome::Applied(_)), accepted, "{:?}", cmd);
            assert_matches_model(&after, &model);
            // (d) a refusal changes nothing but the last index
            if !accepted {
                let mut expected = before.clone();
                expected.apply_noop(index);
                prop_assert_eq!(&after, &expected);
            }
            // (b) the incremental view is the full rebuild
            prop_assert_eq!(&*replica.view(), &View::build(&after), "after {:?}", cmd);
            // A blocking query whose answer changed must be woken.
            for (name, old) in SERVICE_NAMES.iter().zip(&answers_before) {
                if *old != health_answer(&after, name) {
                    prop_assert_eq!(after.service_index(name), index, "{} after {:?}", name, cmd);
                }
                prop_assert!(after.service_index(name) <= index);
            }
            let table_indexes = [after.nodes_index(), after.services_index(), after.checks_index()];
            for ((old, new), (table, moved)) in tables_before
                .iter()
                .zip(tables(&after))
                .zip(["nodes", "services", "checks"].into_iter().zip(table_indexes))
            {
                if *old != new {
                    prop_assert_eq!(moved, index, "{} table after {:?}", table, cmd);
                }
            }
        }
        // (a) the snapshot format round-trips
        let bytes = postcard::to_allocvec(&twin.to_snapshot()).expect("a snapshot always serializes");
        let back: StateSnapshot = postcard::from_bytes(&bytes).expect("what we wrote reads back");
        prop_assert_eq!(State::from_snapshot(back), twin);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A follower that installs a snapshot midway and applies the rest of the
    /// log ends where the leader ends, tables and view alike.
    #[test]
    fn snapshot_install_midway_converges(
        cmds in prop::collection::vec(command(), 1..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(cmds.len());
        let leader = Replica::new();
        let follower = Replica::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let index = i as Index + 1;
            let bytes = postcard::to_allocvec(cmd).expect("a command always serializes");
            let decoded: Command = postcard::from_bytes(&bytes).expect("what we wrote reads back");
            prop_assert_eq!(&decoded, cmd);
            leader.apply(index, cmd);
            if i == cut {
                let bytes = postcard::to_allocvec(&leader.snapshot()).expect("a snapshot always serializes");
                follower.install(postcard::from_bytes(&bytes).expect("what we wrote reads back"));
            } else if i > cut {
                follower.apply(index, &decoded);
            }
        }
        prop_assert_eq!(&*follower.read(), &*leader.read());
        prop_assert_eq!(&*follower.view(), &*leader.view());
        prop_assert_eq!(follower.applied_index(), leader.applied_index());
    }
}
