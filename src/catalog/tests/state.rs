//! Consul's catalog semantics, one behaviour per test.

use super::*;
use crate::catalog::{
    NAME_PREFIX_MATCH, PreparedQuery, PreparedQueryOp, QueryFailover, QueryTemplate, State,
    StateSnapshot, StateSnapshotV2, StateSnapshotV3, StateSnapshotV4, Touched,
};

/// Applies `cmd` at `index` and insists it was accepted.
fn ok(c: &mut State, index: Index, cmd: Command) -> Touched {
    let (outcome, touched) = c.apply(index, 0, &cmd);
    assert_eq!(outcome, Outcome::Applied(index), "{cmd:?}");
    touched
}

/// Applies `cmd` at `index`, insists it was refused with `err`, and that the
/// catalog is exactly as before apart from the last applied index.
fn refused(c: &mut State, index: Index, cmd: Command, err: CatalogError) {
    let mut expected = c.clone();
    expected.apply_noop(index);
    let (outcome, touched) = c.apply(index, 0, &cmd);
    assert_eq!(outcome, Outcome::Refused(err));
    assert_eq!(touched, Touched::default());
    assert_eq!(*c, expected);
}

fn web_on(node_name: &str, address: &str) -> Command {
    reg(with_svc(node(node_name, address), svc("web")))
}

#[test]
fn register_creates_node_with_create_and_modify_index() {
    let mut c = State::new();
    let ch = ok(&mut c, 3, reg(node("n1", "10.0.0.1")));
    let n = c.node("n1").unwrap();
    assert_eq!((n.name.as_str(), n.address.as_str()), ("n1", "10.0.0.1"));
    assert_eq!((n.create_index, n.modify_index), (3, 3));
    assert_eq!((c.nodes_index(), c.last_index()), (3, 3));
    assert!(ch.nodes.contains("n1"));
}

#[test]
fn register_without_node_name_is_refused() {
    let mut c = State::new();
    refused(
        &mut c,
        1,
        reg(node("", "10.0.0.1")),
        CatalogError::Missing("Node".into()),
    );
}

#[test]
fn register_of_new_node_without_address_is_refused() {
    let mut c = State::new();
    refused(
        &mut c,
        1,
        reg(node("n1", "")),
        CatalogError::Missing("Address".into()),
    );
}

#[test]
fn skip_node_update_on_missing_node_without_address_is_refused() {
    let mut c = State::new();
    let mut r = node("n1", "");
    r.skip_node_update = true;
    refused(&mut c, 1, reg(r), CatalogError::NoNodeAddress("n1".into()));
}

#[test]
fn skip_node_update_leaves_existing_node_alone_but_adds_service() {
    let mut c = State::new();
    ok(&mut c, 1, reg(node("n1", "10.0.0.1")));
    let mut r = with_svc(node("n1", "10.9.9.9"), svc("web"));
    r.node_meta.insert("k".into(), "v".into());
    r.skip_node_update = true;
    ok(&mut c, 2, reg(r));
    let n = c.node("n1").unwrap();
    assert_eq!(n.address, "10.0.0.1");
    assert!(n.meta.is_empty());
    assert_eq!(n.modify_index, 1);
    assert_eq!(c.nodes_index(), 1);
    assert_eq!(c.node_services("n1").count(), 1);
}

#[test]
fn register_of_existing_node_without_address_is_refused_unless_skipping_node_update() {
    let mut c = State::new();
    ok(&mut c, 1, reg(node("n1", "10.0.0.1")));
    refused(
        &mut c,
        2,
        reg(with_svc(node("n1", ""), svc("web"))),
        CatalogError::Missing("Address".into()),
    );
    let mut r = with_svc(node("n1", ""), svc("web"));
    r.skip_node_update = true;
    ok(&mut c, 3, reg(r));
    assert_eq!(c.node("n1").unwrap().address, "10.0.0.1");
}

#[test]
fn register_of_service_without_name_is_refused() {
    let mut c = State::new();
    ok(&mut c, 1, reg(node("n1", "10.0.0.1")));
    refused(
        &mut c,
        2,
        reg(with_svc(node("n1", "10.0.0.1"), svc(""))),
        CatalogError::Missing("Service.Service".into()),
    );
}

#[test]
fn service_id_defaults_to_service_name() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    let s = c.node_services("n1").next().unwrap();
    assert_eq!((&*s.id, &*s.service), ("web", "web"));
    assert_eq!((s.create_index, s.modify_index), (1, 1));
    assert_eq!(s.weights, Weights::default());
}

#[test]
fn check_id_defaults_to_check_name_and_name_to_id() {
    let mut c = State::new();
    let mut by_id = chk("", HealthStatus::Passing);
    by_id.check_id = "only-id".into();
    ok(
        &mut c,
        1,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![chk("mem", HealthStatus::Passing), by_id],
        )),
    );
    let ids: Vec<_> = c
        .node_checks("n1")
        .map(|c| (&*c.check_id, &*c.name, &*c.node))
        .collect();
    assert_eq!(ids, [("mem", "mem", "n1"), ("only-id", "only-id", "n1")]);
}

#[test]
fn check_without_name_or_id_is_refused() {
    let mut c = State::new();
    refused(
        &mut c,
        1,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![chk("", HealthStatus::Passing)],
        )),
        CatalogError::Missing("Check.Name".into()),
    );
}

#[test]
fn check_naming_unknown_service_is_refused_and_changes_nothing() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    // Everything in the command would change something if applied.
    let r = with_checks(
        with_svc(node("n1", "10.0.0.2"), svc("db")),
        vec![
            chk("mem", HealthStatus::Critical),
            svc_chk("db-alive", "db", HealthStatus::Passing),
            svc_chk("ghost-alive", "ghost", HealthStatus::Passing),
        ],
    );
    refused(
        &mut c,
        2,
        reg(r),
        CatalogError::UnknownServiceForCheck {
            check_id: "ghost-alive".into(),
            service_id: "ghost".into(),
        },
    );
}

#[test]
fn check_naming_service_on_another_node_is_refused() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    ok(&mut c, 2, reg(node("n2", "10.0.0.2")));
    refused(
        &mut c,
        3,
        reg(with_checks(
            node("n2", "10.0.0.2"),
            vec![svc_chk("alive", "web", HealthStatus::Passing)],
        )),
        CatalogError::UnknownServiceForCheck {
            check_id: "alive".into(),
            service_id: "web".into(),
        },
    );
}

#[test]
fn check_naming_service_of_same_registration_is_accepted_and_denormalized() {
    let mut c = State::new();
    let mut s = svc("web");
    s.tags = vec!["primary".into()];
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), s),
            vec![svc_chk("alive", "web", HealthStatus::Passing)],
        )),
    );
    let ch = c.node_checks("n1").next().unwrap();
    assert_eq!(&*ch.service_name, "web");
    assert_eq!(&ch.service_tags[..], ["primary"]);
}

#[test]
fn a_check_shares_its_instances_list_of_tags() {
    let shared = |c: &State| {
        let row = &c.health_service("web", &[], false)[0].service;
        let ch = c.node_checks("n1").next().unwrap();
        assert_eq!(&ch.service_tags[..], ["primary", "v2"]);
        ch.service_tags.is_shared_with(&row.tags)
    };
    let mut c = State::new();
    let mut s = svc("web");
    s.tags = vec!["primary".into(), "v2".into()];
    let registration = |s: ServiceRegistration| {
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), s),
            vec![svc_chk("alive", "web", HealthStatus::Passing)],
        ))
    };
    ok(&mut c, 1, registration(s.clone()));
    assert!(shared(&c));
    // Another field changed, the tags not: still the one list.
    s.port = 9999;
    ok(&mut c, 2, registration(s.clone()));
    assert!(shared(&c));
    // A snapshot decodes a list per row; the restored state shares them again.
    let bytes = postcard::to_allocvec(&c.to_snapshot()).unwrap();
    let restored = State::from_snapshot(postcard::from_bytes(&bytes).unwrap());
    assert_eq!(restored, c);
    assert!(shared(&restored));
}

#[test]
fn instances_with_equal_tags_share_one_list() {
    let mut c = State::new();
    for (i, (n, tags)) in [
        ("n1", ["primary", "v2"]),
        ("n2", ["primary", "v2"]),
        ("n3", ["v2", "primary"]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = svc("web");
        s.tags = tags.map(String::from).to_vec();
        ok(
            &mut c,
            i as u64 + 1,
            reg(with_svc(node(n, &format!("10.0.0.{i}")), s)),
        );
    }
    let lists = |c: &State| {
        let entries = c.health_service("web", &[], false);
        let tags: Vec<Tags> = entries.iter().map(|e| e.service.tags.clone()).collect();
        (
            tags[0].is_shared_with(&tags[1]),
            tags[0].is_shared_with(&tags[2]),
        )
    };
    assert_eq!(lists(&c), (true, false));
    // A snapshot decodes a list per row; the restored state shares them again.
    let bytes = postcard::to_allocvec(&c.to_snapshot()).unwrap();
    let restored = State::from_snapshot(postcard::from_bytes(&bytes).unwrap());
    assert_eq!(restored, c);
    assert_eq!(lists(&restored), (true, false));
}

#[test]
fn a_nodes_rows_share_its_key() {
    let mut c = State::new();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("N1", "10.0.0.1"), svc("web")),
            vec![
                chk("mem", HealthStatus::Passing),
                svc_chk("alive", "web", HealthStatus::Passing),
            ],
        )),
    );
    // Later, respelled: the node keeps its key, and a new instance shares it.
    ok(&mut c, 2, reg(with_svc(node("n1", "10.0.0.1"), svc("db"))));
    ok(&mut c, 3, reg(with_svc(node("n2", "10.0.0.2"), svc("web"))));
    let all_share = |c: &State| {
        let t = &c.tables;
        let services = t.services.rows().keys().map(|(n, _)| n);
        let checks = t.checks.rows().keys().map(|(n, _)| n);
        let named = t.services.keys_named("web").map(|(n, _)| n);
        let keys: Vec<_> = services.chain(checks).chain(named).collect();
        assert_eq!(keys.len(), 3 + 2 + 2);
        keys.iter()
            .all(|n| t.nodes.key_of(n).is_some_and(|k| k.is_shared_with(n)))
    };
    assert!(all_share(&c));
    // A snapshot decodes a key per row; the restored state shares them again.
    let bytes = postcard::to_allocvec(&c.to_snapshot()).unwrap();
    let decoded: StateSnapshot = postcard::from_bytes(&bytes).unwrap();
    let restored = State::from_snapshot(decoded);
    assert_eq!(restored, c);
    assert!(all_share(&restored));
}

#[test]
fn reregistering_identical_data_changes_no_index() {
    let mut c = State::new();
    let cmd = reg(with_checks(
        with_svc(node("n1", "10.0.0.1"), svc("web")),
        vec![
            chk("mem", HealthStatus::Passing),
            svc_chk("alive", "web", HealthStatus::Warning),
        ],
    ));
    ok(&mut c, 1, cmd.clone());
    let mut expected = c.clone();
    expected.apply_noop(2);
    let ch = ok(&mut c, 2, cmd);
    assert_eq!(ch, Touched::default());
    assert_eq!(c, expected);
    assert_eq!(c.service_index("web"), 1);
}

#[test]
fn update_keeps_create_index_and_moves_modify_index() {
    let mut c = State::new();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), svc("web")),
            vec![svc_chk("alive", "web", HealthStatus::Passing)],
        )),
    );
    let mut s = svc("web");
    s.port = 9090;
    ok(
        &mut c,
        5,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.2"), s),
            vec![svc_chk("alive", "web", HealthStatus::Critical)],
        )),
    );
    let n = c.node("n1").unwrap();
    assert_eq!((n.create_index, n.modify_index), (1, 5));
    let s = c.node_services("n1").next().unwrap();
    assert_eq!((s.create_index, s.modify_index, s.port), (1, 5, 9090));
    let k = c.node_checks("n1").next().unwrap();
    assert_eq!((k.create_index, k.modify_index), (1, 5));
    assert_eq!(k.status, HealthStatus::Critical);
    assert_eq!(
        (c.nodes_index(), c.services_index(), c.checks_index()),
        (5, 5, 5)
    );
}

#[test]
fn deregister_node_removes_its_services_and_checks() {
    let mut c = State::new();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), svc("web")),
            vec![
                chk("mem", HealthStatus::Passing),
                svc_chk("alive", "web", HealthStatus::Passing),
            ],
        )),
    );
    ok(&mut c, 2, web_on("n2", "10.0.0.2"));
    let ch = ok(&mut c, 3, dereg("N1", "", ""));
    assert!(ch.nodes.contains("n1") && ch.services.contains("web"));
    assert!(c.node("n1").is_none());
    assert_eq!(c.node_services("n1").count(), 0);
    assert_eq!(c.node_checks("n1").count(), 0);
    assert_eq!(c.checks_in_state(None).count(), 0);
    assert_eq!(c.service_instances("web", &[]).count(), 1);
    assert_eq!(
        (c.nodes_index(), c.services_index(), c.checks_index()),
        (3, 3, 3)
    );
    assert_eq!(c.service_index("web"), 3);
}

#[test]
fn deregister_service_removes_it_and_only_its_checks() {
    let mut c = State::new();
    let mut db = svc("db");
    db.id = "db1".into();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), svc("web")),
            vec![
                chk("mem", HealthStatus::Passing),
                svc_chk("alive", "web", HealthStatus::Passing),
            ],
        )),
    );
    ok(
        &mut c,
        2,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), db),
            vec![svc_chk("db-alive", "db1", HealthStatus::Passing)],
        )),
    );
    let ch = ok(&mut c, 3, dereg("n1", "web", ""));
    assert_eq!(ch.services.iter().collect::<Vec<_>>(), ["web"]);
    let services: Vec<_> = c.node_services("n1").map(|s| &*s.id).collect();
    assert_eq!(services, ["db1"]);
    let checks: Vec<_> = c.node_checks("n1").map(|c| &*c.check_id).collect();
    assert_eq!(checks, ["db-alive", "mem"]);
    assert_eq!(c.node("n1").unwrap().modify_index, 1);
    assert_eq!(
        (c.services_index(), c.checks_index(), c.service_index("web")),
        (3, 3, 3)
    );
    assert_eq!(c.service_index("db"), 2);
}

#[test]
fn deregister_check_removes_only_that_check() {
    let mut c = State::new();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), svc("web")),
            vec![
                chk("mem", HealthStatus::Passing),
                svc_chk("alive", "web", HealthStatus::Passing),
            ],
        )),
    );
    let ch = ok(&mut c, 2, dereg("n1", "", "alive"));
    assert_eq!(ch.services.iter().collect::<Vec<_>>(), ["web"]);
    assert!(ch.nodes.is_empty());
    let checks: Vec<_> = c.node_checks("n1").map(|c| &*c.check_id).collect();
    assert_eq!(checks, ["mem"]);
    assert_eq!(c.node_services("n1").count(), 1);
    assert_eq!((c.checks_index(), c.services_index()), (2, 1));
}

#[test]
fn deregister_of_missing_things_succeeds_and_changes_nothing() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    for (i, cmd) in [
        dereg("ghost", "", ""),
        dereg("ghost", "web", ""),
        dereg("n1", "ghost", ""),
        dereg("n1", "", "ghost"),
        dereg("n1", "ghost", "ghost"),
    ]
    .into_iter()
    .enumerate()
    {
        let index = 2 + i as Index;
        let mut expected = c.clone();
        expected.apply_noop(index);
        assert_eq!(ok(&mut c, index, cmd), Touched::default());
        assert_eq!(c, expected);
    }
}

#[test]
fn deregister_without_node_is_refused() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    refused(
        &mut c,
        2,
        dereg("", "web", ""),
        CatalogError::Missing("Node".into()),
    );
}

#[test]
fn node_check_change_moves_service_index_of_every_service_on_the_node() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    ok(&mut c, 2, reg(with_svc(node("n1", "10.0.0.1"), svc("db"))));
    ok(&mut c, 3, web_on("n2", "10.0.0.2"));
    ok(
        &mut c,
        4,
        reg(with_svc(node("n2", "10.0.0.2"), svc("cache"))),
    );
    let ch = ok(
        &mut c,
        5,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![chk("serfHealth", HealthStatus::Critical)],
        )),
    );
    assert!(ch.nodes.contains("n1"));
    assert_eq!((c.service_index("web"), c.service_index("db")), (5, 5));
    assert_eq!(c.service_index("cache"), 4);
    // The node record itself changing also moves them.
    ok(&mut c, 6, reg(node("n1", "10.0.0.9")));
    assert_eq!((c.service_index("web"), c.service_index("db")), (6, 6));
    assert_eq!(c.service_index("cache"), 4);
}

#[test]
fn service_check_change_moves_only_that_service_index() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    ok(&mut c, 2, reg(with_svc(node("n1", "10.0.0.1"), svc("db"))));
    ok(
        &mut c,
        3,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![svc_chk("alive", "db", HealthStatus::Warning)],
        )),
    );
    assert_eq!((c.service_index("web"), c.service_index("db")), (1, 3));
}

#[test]
fn service_index_is_kept_after_last_instance_leaves() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    ok(&mut c, 2, reg(with_svc(node("n1", "10.0.0.1"), svc("db"))));
    ok(&mut c, 3, dereg("n1", "web", ""));
    ok(
        &mut c,
        4,
        reg(with_svc(node("n1", "10.0.0.1"), svc("cache"))),
    );
    assert_eq!(c.service_index("web"), 3);
    assert_eq!(c.service_index("WEB"), 3);
}

#[test]
fn service_index_of_unknown_name_is_services_table_index() {
    let mut c = State::new();
    assert_eq!(
        c.service_index("ghost"),
        1,
        "never zero: a blocking query would not block"
    );
    ok(&mut c, 7, web_on("n1", "10.0.0.1"));
    ok(
        &mut c,
        8,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![chk("mem", HealthStatus::Passing)],
        )),
    );
    assert_eq!(c.service_index("ghost"), 7);
}

#[test]
fn service_rename_under_same_id_moves_both_names_and_its_checks() {
    let mut c = State::new();
    let mut s = svc("web");
    s.id = "app".into();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("N1", "10.0.0.1"), s.clone()),
            vec![svc_chk("alive", "app", HealthStatus::Passing)],
        )),
    );
    s.service = "api".into();
    s.tags = vec!["v2".into()];
    let ch = ok(&mut c, 2, reg(with_svc(node("N1", "10.0.0.1"), s)));
    assert!(ch.services.contains("web") && ch.services.contains("api"));
    assert_eq!(c.service_instances("web", &[]).count(), 0);
    assert_eq!(c.service_instances("api", &[]).count(), 1);
    let k = c.node_checks("n1").next().unwrap();
    assert_eq!(
        (&*k.service_name, &*k.service_tags),
        ("api", &[compact_str::CompactString::new("v2")][..])
    );
    assert_eq!(k.modify_index, 2);
    assert_eq!((c.service_index("web"), c.service_index("api")), (2, 2));
    assert_eq!(c.service_checks("api").count(), 1);
    assert_eq!(c.service_checks("web").count(), 0);
}

#[test]
fn check_moving_between_services_moves_both_service_indexes() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    ok(&mut c, 2, reg(with_svc(node("n1", "10.0.0.1"), svc("db"))));
    ok(
        &mut c,
        3,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![svc_chk("alive", "web", HealthStatus::Critical)],
        )),
    );
    ok(
        &mut c,
        4,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![svc_chk("alive", "db", HealthStatus::Critical)],
        )),
    );
    assert_eq!((c.service_index("web"), c.service_index("db")), (4, 4));
    assert_eq!(c.health_service("web", &[], true).len(), 1);
    assert_eq!(c.health_service("db", &[], true).len(), 0);
}

#[test]
fn health_service_passing_only_drops_warning_and_critical() {
    let mut c = State::new();
    for (i, (n, status)) in [
        ("n1", HealthStatus::Passing),
        ("n2", HealthStatus::Warning),
        ("n3", HealthStatus::Critical),
    ]
    .into_iter()
    .enumerate()
    {
        ok(
            &mut c,
            1 + i as Index,
            reg(with_checks(
                with_svc(node(n, "10.0.0.1"), svc("web")),
                vec![svc_chk("alive", "web", status)],
            )),
        );
    }
    let all: Vec<_> = c
        .health_service("web", &[], false)
        .iter()
        .map(|e| (e.node.name.clone(), e.status()))
        .collect();
    assert_eq!(
        all,
        [
            ("n1".to_string(), HealthStatus::Passing),
            ("n2".to_string(), HealthStatus::Warning),
            ("n3".to_string(), HealthStatus::Critical)
        ]
    );
    let passing: Vec<_> = c
        .health_service("WEB", &[], true)
        .iter()
        .map(|e| e.node.name.clone())
        .collect();
    assert_eq!(passing, ["n1"]);
}

#[test]
fn health_service_node_critical_check_makes_instance_not_passing() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    ok(
        &mut c,
        2,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![chk("serfHealth", HealthStatus::Critical)],
        )),
    );
    assert!(c.health_service("web", &[], true).is_empty());
    assert_eq!(
        c.health_service("web", &[], false)[0].status(),
        HealthStatus::Critical
    );
}

#[test]
fn health_service_lists_node_checks_before_instance_checks() {
    let mut c = State::new();
    let mut other = svc("db");
    other.id = "db".into();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), svc("web")),
            vec![
                svc_chk("a-alive", "web", HealthStatus::Passing),
                chk("z-mem", HealthStatus::Passing),
            ],
        )),
    );
    ok(
        &mut c,
        2,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), other),
            vec![svc_chk("b-db", "db", HealthStatus::Critical)],
        )),
    );
    let e = &c.health_service("web", &[], false)[0];
    let ids: Vec<_> = e.checks.iter().map(|c| &*c.check_id).collect();
    assert_eq!(
        ids,
        ["z-mem", "a-alive"],
        "node checks first, and no other instance's"
    );
    assert_eq!(e.status(), HealthStatus::Passing);
}

#[test]
fn health_service_filters_by_every_tag_case_insensitively() {
    let mut c = State::new();
    for (i, (n, tags)) in [
        ("n1", vec!["Primary", "v1"]),
        ("n2", vec!["v1"]),
        ("n3", vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = svc("web");
        s.tags = tags.into_iter().map(String::from).collect();
        ok(
            &mut c,
            1 + i as Index,
            reg(with_svc(node(n, "10.0.0.1"), s)),
        );
    }
    let names = |tags: &[&str]| -> Vec<String> {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        c.health_service("web", &tags, false)
            .iter()
            .map(|e| e.node.name.clone())
            .collect()
    };
    assert_eq!(names(&[]), ["n1", "n2", "n3"]);
    assert_eq!(names(&["V1"]), ["n1", "n2"]);
    assert_eq!(names(&["primary", "v1"]), ["n1"]);
    assert!(names(&["primary", "v2"]).is_empty());
}

#[test]
fn checks_in_state_filters_by_status() {
    let mut c = State::new();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("n1", "10.0.0.1"), svc("web")),
            vec![
                chk("mem", HealthStatus::Warning),
                chk("disk", HealthStatus::Critical),
                svc_chk("alive", "web", HealthStatus::Critical),
            ],
        )),
    );
    let ids = |s| -> Vec<String> {
        c.checks_in_state(s)
            .map(|c| c.check_id.to_string())
            .collect()
    };
    assert_eq!(ids(None), ["alive", "disk", "mem"]);
    assert_eq!(ids(Some(HealthStatus::Critical)), ["alive", "disk"]);
    assert_eq!(ids(Some(HealthStatus::Warning)), ["mem"]);
    assert!(ids(Some(HealthStatus::Passing)).is_empty());
}

#[test]
fn node_health_is_worst_node_level_check_ignoring_service_checks() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    assert_eq!(c.node_health("n1"), HealthStatus::Passing);
    ok(
        &mut c,
        2,
        reg(with_checks(
            node("n1", "10.0.0.1"),
            vec![
                chk("mem", HealthStatus::Passing),
                chk("disk", HealthStatus::Warning),
                svc_chk("alive", "web", HealthStatus::Critical),
            ],
        )),
    );
    assert_eq!(c.node_health("N1"), HealthStatus::Warning);
    assert_eq!(c.node_health("ghost"), HealthStatus::Passing);
}

#[test]
fn services_returns_union_of_tags_sorted_and_deduplicated() {
    let mut c = State::new();
    let mut a = svc("web");
    a.tags = vec!["v2".into(), "primary".into()];
    let mut b = svc("web");
    b.tags = vec!["v1".into(), "primary".into()];
    ok(&mut c, 1, reg(with_svc(node("n1", "10.0.0.1"), a)));
    ok(&mut c, 2, reg(with_svc(node("n2", "10.0.0.2"), b)));
    ok(&mut c, 3, reg(with_svc(node("n2", "10.0.0.2"), svc("db"))));
    let got = c.services();
    assert_eq!(got.len(), 2);
    assert_eq!(got["web"], ["primary", "v1", "v2"]);
    assert!(got["db"].is_empty());
}

#[test]
fn node_and_service_names_are_case_insensitive() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("Node-1", "10.0.0.1"));
    assert_eq!(c.node("NODE-1").unwrap().name, "Node-1");
    assert_eq!(c.node_services("node-1").count(), 1);
    assert_eq!(c.service_instances("WEB", &[]).count(), 1);
    // The same node under another spelling is the same node.
    ok(
        &mut c,
        2,
        reg(with_svc(node("node-1", "10.0.0.1"), svc("db"))),
    );
    assert_eq!(c.nodes().count(), 1);
    assert_eq!(c.node("Node-1").unwrap().name, "node-1");
    assert_eq!(c.node_services("NODE-1").count(), 2);
}

#[test]
fn instance_checks_follow_reregistration_on_mixed_case_node() {
    let mut c = State::new();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("Web-Node", "10.0.0.1"), svc("web")),
            vec![svc_chk("alive", "web", HealthStatus::Passing)],
        )),
    );
    // A node whose name sorts inside the first one's key range must not be touched.
    ok(
        &mut c,
        2,
        reg(with_checks(
            with_svc(node("web-node-2", "10.0.0.2"), svc("web")),
            vec![svc_chk("alive", "web", HealthStatus::Passing)],
        )),
    );
    let mut s = svc("web");
    s.tags = vec!["v2".into()];
    ok(&mut c, 3, reg(with_svc(node("WEB-NODE", "10.0.0.1"), s)));
    let tags = |n: &str| c.node_checks(n).next().unwrap().service_tags.clone();
    assert_eq!(&tags("web-node")[..], ["v2"]);
    assert!(tags("web-node-2").is_empty());
    assert_eq!(c.node_checks("web-node-2").next().unwrap().modify_index, 2);
}

#[test]
fn node_name_respelling_updates_its_checks() {
    let mut c = State::new();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("Node-1", "10.0.0.1"), svc("web")),
            vec![
                chk("mem", HealthStatus::Passing),
                svc_chk("alive", "web", HealthStatus::Passing),
            ],
        )),
    );
    ok(&mut c, 2, reg(node("node-1", "10.0.0.1")));
    for k in c.node_checks("NODE-1") {
        assert_eq!(&*k.node, "node-1", "{k:?}");
    }
}

#[test]
fn refused_command_still_advances_last_index_only() {
    let mut c = State::new();
    ok(&mut c, 1, web_on("n1", "10.0.0.1"));
    refused(
        &mut c,
        2,
        reg(node("n2", "")),
        CatalogError::Missing("Address".into()),
    );
    assert_eq!(
        (c.last_index(), c.nodes_index(), c.service_index("web")),
        (2, 1, 1)
    );
}

#[test]
fn snapshot_round_trips_through_postcard() {
    let mut c = State::new();
    ok(
        &mut c,
        1,
        reg(with_checks(
            with_svc(node("N1", "10.0.0.1"), svc("web")),
            vec![
                chk("mem", HealthStatus::Warning),
                svc_chk("alive", "web", HealthStatus::Passing),
            ],
        )),
    );
    ok(&mut c, 2, dereg("n1", "", "mem"));
    let bytes = postcard::to_allocvec(&c.to_snapshot()).unwrap();
    let back: StateSnapshot = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(State::from_snapshot(back), c);
}

/// A small state with every kind of field filled in: a node with an ID,
/// tagged addresses and meta; an instance with every optional field; a
/// node check and an instance check; a service name whose last instance
/// left (its index is kept); and a last index past every table's.
fn golden_state() -> State {
    let mut c = State::new();
    let mut r = node("N1", "10.0.0.1");
    r.id = "uuid-1".into();
    r.tagged_addresses.insert("wan".into(), "1.2.3.4".into());
    r.node_meta.insert("rack".into(), "r1".into());
    let mut s = svc("web");
    s.id = "web-1".into();
    s.tags = vec!["primary".into(), "v1".into()];
    s.address = "10.0.0.9".into();
    s.tagged_addresses.insert(
        "lan".into(),
        ServiceAddress {
            address: "10.0.0.9".into(),
            port: 80,
        },
    );
    s.meta.insert("ver".into(), "2".into());
    s.port = 80;
    s.weights = Some(Weights {
        passing: 3,
        warning: 1,
    });
    s.enable_tag_override = true;
    let mut mem = chk("mem", HealthStatus::Warning);
    mem.notes = "n".into();
    mem.output = "o".into();
    mem.kind = "ttl".into();
    let mut alive = svc_chk("alive", "web-1", HealthStatus::Passing);
    alive.check_id = "alive-1".into();
    alive.kind = "http".into();
    ok(
        &mut c,
        1,
        reg(with_checks(with_svc(r, s), vec![mem, alive])),
    );
    ok(&mut c, 2, reg(with_svc(node("n2", "10.0.0.2"), svc("db"))));
    ok(&mut c, 3, dereg("n2", "db", ""));
    refused(
        &mut c,
        4,
        reg(node("n3", "")),
        CatalogError::Missing("Address".into()),
    );
    c.apply_noop(6);
    c
}

/// The postcard bytes of [`golden_state`] as the catalog serialized itself
/// before the snapshot had its own type (computed on commit c458fc8): data
/// dirs written then hold snapshots in exactly this form.
const GOLDEN_SNAPSHOT: &str = "\
02026e31024e3106757569642d310831302e302e302e3103646331010377616e07312e322e332e\
3401047261636b0272310101026e32026e32000831302e302e302e320364633100000202\
01026e31057765622d31057765622d310377656202077072696d6172790276310831302e30\
2e302e3901036c616e0831302e302e302e39500103766572013250030101010102026e3107\
616c6976652d31024e3107616c6976652d3105616c697665000000057765622d3103776562\
02077072696d61727902763104687474700101026e31036d656d024e31036d656d036d656d\
01016e016f0000000374746c01010203010202646203037765620106";

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn snapshot_bytes_of_format_2_still_read_as_the_catalog_they_held() {
    let golden = unhex(GOLDEN_SNAPSHOT);
    let state = golden_state();
    // Format 3 writes the same catalog fields, then the empty KV and
    // session tables: three empty maps, two indexes, a map, an index;
    // format 4 then the empty ACL table: two maps, two indexes; format 5
    // then the empty prepared queries: a map, an index.
    let mut current = golden.clone();
    current.extend_from_slice(&[0; 13]);
    assert_eq!(
        postcard::to_allocvec(&state.to_snapshot()).unwrap(),
        current
    );
    let v2: StateSnapshotV2 = postcard::from_bytes(&golden).unwrap();
    let back = State::from_snapshot(v2.into());
    back.assert_derived_indexes();
    assert_eq!(back, state);
    assert_eq!(back.last_index(), 6);
    // The current type does not read format 2's bytes: they are too short.
    assert!(postcard::from_bytes::<StateSnapshot>(&golden).is_err());
}

/// [`golden_state`] then every KV and session table holding something: a
/// live session holding a key, a released key under lock-delay, a plain
/// key, a tombstone, and a reaped one.
fn golden_kv_state() -> State {
    let mut c = golden_state();
    let mut s1 = session("s-1", "n1");
    s1.name = "lock".into();
    s1.node_checks = vec!["mem".into()];
    s1.lock_delay_ns = 15_000_000_000;
    s1.ttl = "10s".into();
    s1.ttl_ms = 10_000;
    let mut s2 = session("s-2", "N1");
    s2.behavior = Behavior::Delete;
    s2.service_checks = vec![ServiceCheck {
        id: "alive-1".into(),
        namespace: String::new(),
    }];
    let steps: Vec<(Time, Command)> = vec![
        (1_000, Command::Session(SessionOp::Create(s1))),
        (1_000, Command::Session(SessionOp::Create(s2))),
        (1_000, Command::Kv(kv(KvVerb::Set, "b", "old"))),
        (1_100, Command::Kv(kv(KvVerb::Delete, "b", ""))),
        (
            1_200,
            Command::Kv(KvOp {
                flags: 3,
                ..kv(KvVerb::Set, "a/1", "x")
            }),
        ),
        (
            1_300,
            Command::Kv(kv_by(KvVerb::Lock, "a/lock", "l", "s-1")),
        ),
        (1_300, Command::Kv(kv_by(KvVerb::Lock, "a/eph", "e", "s-2"))),
        (2_000, Command::Kv(kv(KvVerb::Set, "a/gone", "g"))),
        (2_000, Command::Kv(kv(KvVerb::Delete, "a/gone", ""))),
        (
            3_000,
            Command::Session(SessionOp::Destroy { id: "s-1".into() }),
        ),
        (
            4_000,
            Command::ReapTombstones {
                deleted_before: 1_500,
            },
        ),
    ];
    for (index, (time, cmd)) in (7..).zip(steps) {
        let (outcome, _) = c.apply(index, time, &cmd);
        assert!(
            matches!(outcome, Outcome::Applied(_) | Outcome::Txn { .. }),
            "{cmd:?}: {outcome:?}"
        );
    }
    c
}

/// The postcard bytes of [`golden_kv_state`]'s snapshot in format 3.
const GOLDEN_KV_SNAPSHOT: &str = "\
02026e31024e3106757569642d310831302e302e302e3103646331010377616e07312e322e33\
2e3401047261636b0272310101026e32026e32000831302e302e302e32036463310000020201\
026e31057765622d31057765622d310377656202077072696d6172790276310831302e302e30\
2e3901036c616e0831302e302e302e39500103766572013250030101010102026e3107616c69\
76652d31024e3107616c6976652d3105616c697665000000057765622d310377656202077072\
696d61727902763104687474700101026e31036d656d024e31036d656d036d656d01016e016f\
0000000374746c010102030102026462030377656201110303612f3103612f3101780300000b\
0b05612f65706805612f6570680165000103732d32010d0d06612f6c6f636b06612f6c6f636b\
016c0000010c100106612f676f6e650fd00f0106612f6c6f636bd08c01100a0103732d320373\
2d3200024e31000107616c6976652d31000001000000080810";

#[test]
fn snapshot_bytes_of_format_3_still_read_as_the_kv_and_sessions_they_held() {
    let state = golden_kv_state();
    // Format 4 writes format 3's fields, then the empty ACL table; format
    // 5 then the empty prepared queries.
    let mut current = unhex(GOLDEN_KV_SNAPSHOT);
    current.extend_from_slice(&[0; 6]);
    assert_eq!(
        postcard::to_allocvec(&state.to_snapshot()).unwrap(),
        current
    );
    let back: StateSnapshotV3 = postcard::from_bytes(&unhex(GOLDEN_KV_SNAPSHOT)).unwrap();
    let back = State::from_snapshot(back.into());
    back.assert_derived_indexes();
    assert_eq!(back, state);
    assert_eq!(back.last_index(), 17);
    let held: Vec<&str> = back
        .kv_list("a/")
        .filter_map(|e| e.session.as_deref())
        .collect();
    assert_eq!(held, ["s-2"]);
    assert_eq!(back.sessions_on_node("n1").len(), 1);
}

/// [`golden_kv_state`] then the ACL table holding something: a bootstrap
/// (the built-in policy and a management token), a policy and a token
/// linking it.
fn golden_acl_state() -> State {
    let mut c = golden_kv_state();
    let token = |accessor: &str, secret: &str, policies: &[&str]| AclToken {
        accessor_id: accessor.into(),
        secret_id: secret.into(),
        secret_hash: secret_hash(secret),
        description: "d".into(),
        policies: policies.iter().map(|p| (*p).to_string()).collect(),
        local: false,
        create_time: 0,
        create_index: 0,
        modify_index: 0,
    };
    let steps = [
        Command::Acl(AclOp::Bootstrap(token("a-1", "s-1", &[]))),
        Command::Acl(AclOp::SetPolicy(AclPolicy {
            id: "p-1".into(),
            name: "web-read".into(),
            description: String::new(),
            rules: "service \"web\" { policy = \"read\" }".into(),
            datacenters: vec!["dc1".into()],
            create_index: 0,
            modify_index: 0,
        })),
        Command::Acl(AclOp::SetToken(token("a-2", "s-2", &["p-1"]))),
    ];
    for (index, cmd) in (18..).zip(steps) {
        let (outcome, _) = c.apply(index, 5_000, &cmd);
        assert_eq!(outcome, Outcome::Applied(index), "{cmd:?}");
    }
    c
}

/// The postcard bytes of [`golden_acl_state`]'s ACL fields in format 4:
/// what follows the format 3 fields.
const GOLDEN_ACL_TAIL: &str = "\
0203612d3103612d3103732d316a840baf5d8c3ff241688aeb14546e653774cd5387faf1cb98\
2b0fbbf1fbb8100164012430303030303030302d303030302d303030302d303030302d303030\
303030303030303031008827121203612d3203612d3203732d32450222bcc3475b01aa69d5b0\
150a75a08a3bc3a87bb87ce4290ea7e0d4e5187701640103702d310088271414022430303030\
303030302d303030302d303030302d303030302d3030303030303030303030312430303030303030\
302d303030302d303030302d303030302d30303030303030303030303111676c6f62616c2d6d616e\
6167656d656e742b4275696c74696e20506f6c6963792074686174206772616e747320756e6c\
696d69746564206163636573730000121203702d3103702d31087765622d72656164002173657276\
696365202277656222207b20706f6c696379203d20227265616422207d010364633113131412";

#[test]
fn snapshot_bytes_with_acls_are_format_4() {
    let state = golden_acl_state();
    let bytes = postcard::to_allocvec(&state.to_snapshot()).unwrap();
    let v3_len = postcard::to_allocvec(&golden_kv_state().to_snapshot())
        .unwrap()
        .len()
        - 6;
    // Format 5 appends the (empty) prepared queries: a map and an index.
    let v4 = &bytes[..bytes.len() - 2];
    crate::store::format::assert_golden(
        "the ACL fields of a state snapshot",
        &v4[v3_len..],
        GOLDEN_ACL_TAIL,
    );
    let back = State::from_snapshot(postcard::from_bytes(&bytes).unwrap());
    assert_eq!(back, state);
    let from_v4: StateSnapshotV4 = postcard::from_bytes(v4).unwrap();
    assert_eq!(State::from_snapshot(from_v4.into()), state);
    assert_eq!(back.acl_bootstrapped(), 18);
    let token = back.acl_token_by_secret(&secret_hash("s-2")).unwrap();
    assert_eq!(
        (token.accessor_id.as_str(), token.create_index),
        ("a-2", 20)
    );
    assert!(back.acl_token("a-1").unwrap().is_management());
    // A client agent's copy keeps everything but the secrets.
    let redacted = State::from_snapshot(state.to_snapshot().redacted());
    let token = redacted.acl_token_by_secret(&secret_hash("s-2")).unwrap();
    assert_eq!(token.secret_id, "");
}

/// [`golden_acl_state`] then a prepared query bound to a session, a
/// template, and a query deleted again.
pub(super) fn golden_query_state() -> State {
    let mut c = golden_acl_state();
    let mut bound = PreparedQuery {
        id: "q-1".into(),
        name: "web-fast".into(),
        session: "s-2".into(),
        token: "t".into(),
        token_hash: Some(secret_hash("t")),
        ..PreparedQuery::default()
    };
    bound.service.service = "web".into();
    bound.service.only_passing = true;
    bound.service.tags = vec!["!slow".into()];
    bound.service.failover = QueryFailover {
        nearest_n: 2,
        datacenters: vec!["dc2".into()],
    };
    bound.service.node_meta.insert("rack".into(), "r1".into());
    bound.dns.ttl = "10s".into();
    let mut template = PreparedQuery {
        id: "q-2".into(),
        template: QueryTemplate {
            kind: NAME_PREFIX_MATCH.into(),
            regexp: "^(.*)$".into(),
            remove_empty_tags: true,
        },
        ..PreparedQuery::default()
    };
    template.service.service = "${name.full}".into();
    let mut gone = template.clone();
    gone.id = "q-3".into();
    gone.name = "gone".into();
    let steps = [
        Command::PreparedQuery(PreparedQueryOp::Create(Box::new(bound))),
        Command::PreparedQuery(PreparedQueryOp::Create(Box::new(template))),
        Command::PreparedQuery(PreparedQueryOp::Create(Box::new(gone))),
        Command::PreparedQuery(PreparedQueryOp::Delete("q-3".into())),
    ];
    for (index, cmd) in (21..).zip(steps) {
        let (outcome, _) = c.apply(index, 6_000, &cmd);
        assert_eq!(outcome, Outcome::Applied(index), "{cmd:?}");
    }
    c
}

/// The postcard bytes of [`golden_query_state`]'s prepared query fields in
/// format 5: what follows the format 4 fields.
const GOLDEN_QUERY_TAIL: &str = "\
0203712d3103712d31087765622d6661737403732d32017401e3b98a4da31a127d4bde6e4303\
3f66ba274cab0eb7eb1c70ec41402bf6273dd800000003776562020103646332010000010521\
736c6f7701047261636b0272310003313073151503712d3203712d3200000000116e616d655f\
7072656669785f6d61746368065e282e2a2924010c247b6e616d652e66756c6c7d0000000000\
00000000161618";

#[test]
fn snapshot_bytes_with_prepared_queries_are_format_5() {
    let state = golden_query_state();
    let bytes = postcard::to_allocvec(&state.to_snapshot()).unwrap();
    let v4_len = postcard::to_allocvec(&golden_acl_state().to_snapshot())
        .unwrap()
        .len()
        - 2;
    crate::store::format::assert_golden(
        "the prepared query fields of a state snapshot",
        &bytes[v4_len..],
        GOLDEN_QUERY_TAIL,
    );
    let back = State::from_snapshot(postcard::from_bytes(&bytes).unwrap());
    assert_eq!(back, state);
    assert_eq!(back.prepared_queries_index(), 24);
    assert_eq!(back.resolve_prepared_query("WEB-FAST").unwrap().id, "q-1");
    assert_eq!(back.resolve_prepared_query("anything").unwrap().id, "q-2");
    assert!(back.prepared_query("q-3").is_none());
    // A client agent's copy keeps everything but the query's token.
    let redacted = State::from_snapshot(state.to_snapshot().redacted());
    let q = redacted.prepared_query("q-1").unwrap();
    assert_eq!(
        (q.token.as_str(), q.token_hash),
        ("", Some(secret_hash("t")))
    );
    // Destroying the session deletes the query bound to it.
    let mut ended = back.clone();
    let destroy = Command::Session(SessionOp::Destroy { id: "s-2".into() });
    assert_eq!(ended.apply(25, 7_000, &destroy).0, Outcome::Applied(25));
    assert!(ended.prepared_query("q-1").is_none());
    assert_eq!(ended.resolve_prepared_query("web-fast").unwrap().id, "q-2");
}

/// The borrowed snapshot encodes to the bytes of the copy, with every table
/// holding something (catalog, KV, sessions, ACLs, prepared queries).
#[test]
fn the_borrowed_snapshot_encodes_as_the_copy() {
    let state = golden_query_state();
    let copy = postcard::to_allocvec(&state.to_snapshot()).unwrap();
    assert_eq!(postcard::to_allocvec(&state.snapshot_ref()).unwrap(), copy);
    assert_eq!(state.snapshot_ref().to_owned(), state.to_snapshot());
}
