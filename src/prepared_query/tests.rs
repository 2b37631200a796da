//! The executor's decisions without sockets: the checks before a write,
//! which query a name resolves to, and the parallel failover keeping the
//! candidates' priority (through a [`Failover`] whose datacenters answer
//! after set delays, on tokio's paused clock).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::catalog::{
    Command, NAME_PREFIX_MATCH, PreparedQueryOp, QueryFailover, QueryTemplate, ServiceQuery,
};

fn query(id: &str, name: &str, service: &str) -> PreparedQuery {
    PreparedQuery {
        id: id.into(),
        name: name.into(),
        service: ServiceQuery {
            service: service.into(),
            ..ServiceQuery::default()
        },
        ..PreparedQuery::default()
    }
}

fn template(id: &str, name: &str, service: &str) -> PreparedQuery {
    PreparedQuery {
        template: QueryTemplate {
            kind: NAME_PREFIX_MATCH.into(),
            ..QueryTemplate::default()
        },
        ..query(id, name, service)
    }
}

#[test]
fn checks_refuse_what_consul_refuses() {
    assert_eq!(check(&query("1", "", "web")), Err(CheckError::NoSession));
    assert_eq!(check(&query("1", "n", "")), Err(CheckError::NoService));
    let mut bound = query("1", "", "web");
    bound.session = "s".into();
    assert_eq!(check(&bound), Ok(()));
    assert_eq!(check(&template("1", "", "${name.full}")), Ok(()));
    let mut hidden = query("1", "n", "web");
    hidden.token = REDACTED_TOKEN.into();
    assert_eq!(check(&hidden), Err(CheckError::RedactedToken));
    let mut ttl = query("1", "n", "web");
    ttl.dns.ttl = "-1s".into();
    assert!(matches!(check(&ttl), Err(CheckError::BadTtl(..))));
    ttl.dns.ttl = "1m30s".into();
    assert_eq!(check(&ttl), Ok(()));
    assert!(matches!(
        check(&template("1", "p", "${name.whole}")),
        Err(CheckError::Template(_))
    ));
}

#[test]
fn a_name_resolves_by_id_then_exact_name_then_longest_template_then_catch_all() {
    let mut state = State::new();
    let queries = [
        query("id-1", "web", "web-exact"),
        template("id-2", "web", "web-template"),
        template("id-3", "we", "${name.suffix}-short"),
        template("id-4", "", "${name.full}-all"),
        query("id-5", "other", "other"),
    ];
    for (i, q) in (1..).zip(queries) {
        let (outcome, _) = state.apply(
            i,
            0,
            &Command::PreparedQuery(PreparedQueryOp::Create(Box::new(q))),
        );
        // id-2 is refused: its name is id-1's.
        assert!(
            matches!(outcome, crate::catalog::Outcome::Applied(_)) || i == 2,
            "{outcome:?}"
        );
    }
    let service = |name: &str| resolve(&state, name).unwrap().map(|q| q.service.service);
    assert_eq!(service("id-5").as_deref(), Some("other"));
    assert_eq!(service("WEB").as_deref(), Some("web-exact"));
    assert_eq!(service("webby").as_deref(), Some("bby-short"));
    assert_eq!(service("db").as_deref(), Some("db-all"));
    // By ID, a template is rendered for the ID asked (no prefix of it:
    // the suffix is the whole ID), as Consul's.
    assert_eq!(
        resolve(&state, "id-3").unwrap().unwrap().service.service,
        "id-3-short"
    );
}

/// A federation whose datacenters answer after a delay: `Some(n)` with
/// `n` instances, `None` with an error.
#[derive(Debug)]
struct Delayed(BTreeMap<String, (Duration, Option<usize>)>);

impl Failover for Delayed {
    fn other_datacenters(&self) -> BoxFuture<'static, Vec<String>> {
        let names = self.0.keys().cloned().collect();
        Box::pin(async move { names })
    }

    fn execute_in(
        &self,
        dc: String,
        query: PreparedQuery,
        _limit: usize,
        _token: Option<String>,
    ) -> BoxFuture<'static, Result<QueryResult, String>> {
        let (delay, answer) = self.0[&dc];
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let n = answer.ok_or_else(|| format!("{dc} is down"))?;
            Ok(QueryResult {
                service: query.service.service.clone(),
                nodes: (0..n).map(|i| entry(&dc, i)).collect(),
                datacenter: dc,
                ..QueryResult::default()
            })
        })
    }
}

/// An instance on node `<dc>-n<i>`.
fn entry(dc: &str, i: usize) -> Entry {
    Entry {
        node: crate::catalog::Node {
            name: format!("{dc}-n{i}"),
            id: String::new(),
            address: "10.0.0.1".into(),
            datacenter: dc.into(),
            tagged_addresses: BTreeMap::new(),
            meta: Default::default(),
            create_index: 1,
            modify_index: 1,
        },
        service: crate::catalog::Service {
            id: "web".into(),
            service: "web".into(),
            tags: Default::default(),
            address: Default::default(),
            tagged_addresses: Default::default(),
            meta: Default::default(),
            port: 80,
            weights: crate::catalog::Weights::default(),
            enable_tag_override: false,
            create_index: 1,
            modify_index: 1,
        },
        checks: Vec::new(),
    }
}

/// An executor over an empty catalog (nothing here: always fails over)
/// holding `web`, failing over through `dcs`.
fn executor(dcs: &[(&str, u64, Option<usize>)], failover: QueryFailover) -> (Executor, Request) {
    let replica = Arc::new(Replica::new());
    let mut q = query("q", "web", "web");
    q.service.failover = failover;
    replica.apply(
        1,
        &Command::PreparedQuery(PreparedQueryOp::Create(Box::new(q))),
    );
    let fed = Delayed(
        dcs.iter()
            .map(|(dc, ms, n)| (dc.to_string(), (Duration::from_millis(*ms), *n)))
            .collect(),
    );
    let ex = Executor::new(replica, "dc1".into(), "n1".into(), Arc::new(fed));
    let req = Request {
        id_or_name: "web".into(),
        limit: 0,
        near: None,
        authz: Arc::new(Authorizer::management()),
        secret: None,
    };
    (ex, req)
}

fn listed(dcs: &[&str]) -> QueryFailover {
    QueryFailover {
        nearest_n: 0,
        datacenters: dcs.iter().map(|d| d.to_string()).collect(),
    }
}

#[tokio::test(start_paused = true)]
async fn failover_asks_in_parallel_and_the_first_non_empty_by_priority_wins() {
    // dc2 is dead (fails after 2 s), dc3 answers empty, dc4 and dc5 answer;
    // dc5 answers first, but dc4 comes before it in the list.
    let dcs = [
        ("dc2", 2_000, None),
        ("dc3", 100, Some(0)),
        ("dc4", 500, Some(2)),
        ("dc5", 10, Some(1)),
    ];
    let (ex, req) = executor(&dcs, listed(&["dc2", "dc3", "dc4", "dc5"]));
    let started = tokio::time::Instant::now();
    let r = ex.execute(&req).await.unwrap();
    assert_eq!(
        (r.datacenter.as_str(), r.failovers, r.nodes.len()),
        ("dc4", 3, 2)
    );
    // In parallel: the dead dc2's 2 s, not the sum of every wait.
    assert_eq!(started.elapsed(), Duration::from_millis(2_000));
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_choice_costs_only_its_own_deadline_and_an_answer_before_it_wins_at_once() {
    let dcs = [("dc2", 50, Some(1)), ("dc3", 3_000, None)];
    let (ex, req) = executor(&dcs, listed(&["dc2", "dc3"]));
    let started = tokio::time::Instant::now();
    let r = ex.execute(&req).await.unwrap();
    assert_eq!((r.datacenter.as_str(), r.failovers), ("dc2", 1));
    assert_eq!(started.elapsed(), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn with_nothing_anywhere_the_answer_is_local_and_empty_with_every_attempt_counted() {
    let dcs = [("dc2", 10, Some(0)), ("dc3", 60_000, Some(1))];
    let nearest = QueryFailover {
        nearest_n: 2,
        datacenters: vec!["dc9".into()],
    };
    let (ex, req) = executor(&dcs, nearest);
    let started = tokio::time::Instant::now();
    let r = ex.execute(&req).await.unwrap();
    // dc3 never answers within the failover deadline: it counts as failed.
    assert_eq!(
        (r.datacenter.as_str(), r.failovers, r.nodes.len()),
        ("dc1", 2, 0)
    );
    assert_eq!(started.elapsed(), FAILOVER_DEADLINE);
    // Without failover settings there is nothing to ask.
    let (ex, req) = executor(&dcs, QueryFailover::default());
    let r = ex.execute(&req).await.unwrap();
    assert_eq!((r.datacenter.as_str(), r.failovers), ("dc1", 0));
}
