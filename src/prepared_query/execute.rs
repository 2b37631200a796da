//! Executing a rendered query against one datacenter's state, as pure
//! functions (Consul's `agent/consul/prepared_query_endpoint.go`): the
//! health filter, the metadata and tag filters, the ACL filter, the
//! shuffle, the sort by distance (a seam: [`NearSort`]), the limit; and
//! which other datacenters a failover asks, in which order.

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::acl::Authorizer;
use crate::catalog::{
    Check, HealthStatus, Index, Node, PreparedQuery, QueryFailover, Service, State,
};

/// One instance of an answer, owned: answers cross tasks and datacenters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The node.
    pub node: Node,
    /// The instance.
    pub service: Service,
    /// Node-level and instance checks.
    pub checks: Vec<Check>,
}

/// What executing a query answered (Consul's
/// `PreparedQueryExecuteResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResult {
    /// The service name looked up (rendered).
    pub service: String,
    /// The instances, in the order to use them.
    pub nodes: Vec<Entry>,
    /// The query's `DNS.TTL`.
    pub dns_ttl: String,
    /// The datacenter that answered.
    pub datacenter: String,
    /// How many other datacenters were asked (the winner counted).
    pub failovers: u32,
    /// The answering datacenter's index of its prepared queries.
    pub index: Index,
}

/// Orders a result's instances by distance from a node (`near`) of the
/// answering datacenter: the agent sorts by the LAN pool's network
/// coordinates (`coordinate::near`); without them the order stays the
/// shuffle's ([`keep_order`]).
pub type NearSort = std::sync::Arc<dyn Fn(&str, &mut [Entry]) + Send + Sync>;

/// The [`NearSort`] without coordinates: the shuffle stands.
pub fn keep_order(_near: &str, _nodes: &mut [Entry]) {}

/// How deep Consul looks for the `near` node to put it first.
const NEAR_SEARCH_DEPTH: usize = 10;

/// The instances of `query` in `state` that `authz` may see, filtered as
/// Consul's `execute`, in storage order (unshuffled).
pub fn matching(state: &State, query: &PreparedQuery, authz: &Authorizer) -> Vec<Entry> {
    let svc = &query.service;
    let (must, must_not) = tag_sets(&svc.tags);
    state
        .health_service(&svc.service, &[], false)
        .into_iter()
        .filter(|e| healthy(&e.checks, svc.only_passing, &svc.ignore_check_ids))
        .filter(|e| {
            svc.node_meta
                .iter()
                .all(|(k, v)| e.node.meta.get(k) == Some(v))
        })
        .filter(|e| {
            svc.service_meta
                .iter()
                .all(|(k, v)| e.service.meta.get(k) == Some(v))
        })
        .filter(|e| {
            let tags: Vec<String> = e
                .service
                .tags
                .iter()
                .map(|t| t.as_str().to_lowercase())
                .collect();
            must.iter().all(|t| tags.contains(t)) && !must_not.iter().any(|t| tags.contains(t))
        })
        .filter(|e| authz.service_read(&e.service.service) && authz.node_read(&e.node.name))
        .map(|e| Entry {
            node: e.node.clone(),
            service: e.service.clone(),
            checks: e.checks.into_iter().cloned().collect(),
        })
        .collect()
}

/// Consul's `FilterIgnore`: an instance stays unless a check it does not
/// ignore is critical (or, with `only_passing`, anything but passing).
fn healthy(checks: &[&Check], only_passing: bool, ignore: &[String]) -> bool {
    checks
        .iter()
        .filter(|c| !ignore.iter().any(|i| **i == *c.check_id))
        .all(|c| match c.status {
            HealthStatus::Passing => true,
            HealthStatus::Critical => false,
            _ => !only_passing,
        })
}

/// The tags an instance must have and must not have (`!tag`), lowercased.
fn tag_sets(tags: &[String]) -> (Vec<String>, Vec<String>) {
    let mut must = Vec::new();
    let mut must_not = Vec::new();
    for t in tags {
        let t = t.to_lowercase();
        match t.strip_prefix('!') {
            Some(rest) => must_not.push(rest.to_string()),
            None => must.push(t),
        }
    }
    (must, must_not)
}

/// Shuffles `nodes`, sorts them by distance from `near` (when given) and
/// puts the `near` node itself first if it is among the first ten, then
/// keeps the first `limit` (0: all).
pub fn order(
    nodes: &mut Vec<Entry>,
    near: Option<&str>,
    sort: &(dyn Fn(&str, &mut [Entry]) + Send + Sync),
    limit: usize,
) {
    nodes.shuffle(&mut rand::rng());
    if let Some(near) = near.filter(|n| !n.is_empty()) {
        sort(near, nodes);
        if let Some(i) = nodes
            .iter()
            .take(NEAR_SEARCH_DEPTH)
            .position(|e| e.node.name.eq_ignore_ascii_case(near))
        {
            nodes.swap(0, i);
        }
    }
    if limit > 0 {
        nodes.truncate(limit);
    }
}

/// The datacenters a failover asks, in priority order: the `nearest_n`
/// first of `others` (the other datacenters, nearest first), then the
/// query's `datacenters` that are known and not listed yet. Unknown names
/// are skipped, as Consul's.
pub fn candidates(others: &[String], failover: &QueryFailover) -> Vec<String> {
    let n = usize::try_from(failover.nearest_n)
        .unwrap_or(usize::MAX)
        .min(others.len());
    let mut out: Vec<String> = others[..n].to_vec();
    for dc in &failover.datacenters {
        if others.contains(dc) && !out.contains(dc) {
            out.push(dc.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalog::{CheckRegistration, Registration, ServiceRegistration};
    use crate::catalog::{Command, ServiceQuery};

    fn dcs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn candidates_are_the_nearest_n_then_the_listed_known_ones_once() {
        let others = dcs(&["dc2", "dc3", "dc4"]);
        let f = |n, list: &[&str]| QueryFailover {
            nearest_n: n,
            datacenters: dcs(list),
        };
        assert_eq!(candidates(&others, &f(0, &[])), dcs(&[]));
        assert_eq!(candidates(&others, &f(2, &[])), dcs(&["dc2", "dc3"]));
        assert_eq!(candidates(&others, &f(9, &[])), others);
        assert_eq!(
            candidates(&others, &f(1, &["dc4", "nowhere", "dc2", "dc1", "dc4"])),
            dcs(&["dc2", "dc4"])
        );
        assert_eq!(candidates(&[], &f(3, &["dc2"])), dcs(&[]));
    }

    fn register(state: &mut State, node: &str, id: &str, tags: &[&str], status: HealthStatus) {
        let index = state.last_index() + 1;
        let reg = Registration {
            node: node.into(),
            id: String::new(),
            address: "10.0.0.1".into(),
            datacenter: String::new(),
            tagged_addresses: BTreeMap::new(),
            node_meta: BTreeMap::from([("zone".to_string(), node.to_string())]).into(),
            skip_node_update: false,
            service: Some(ServiceRegistration {
                id: id.into(),
                service: "web".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                address: String::new(),
                tagged_addresses: BTreeMap::new(),
                meta: BTreeMap::from([("id".to_string(), id.to_string())]).into(),
                port: 80,
                weights: None,
                enable_tag_override: false,
            }),
            checks: vec![CheckRegistration {
                check_id: format!("{id}-check"),
                name: "c".into(),
                status,
                notes: String::new(),
                output: String::new(),
                service_id: id.into(),
                kind: String::new(),
            }],
        };
        state.apply(index, 0, &Command::register(reg));
    }

    fn ids(state: &State, svc: ServiceQuery) -> Vec<String> {
        let q = PreparedQuery {
            service: svc,
            ..PreparedQuery::default()
        };
        let mut out: Vec<String> = matching(state, &q, &Authorizer::management())
            .into_iter()
            .map(|e| e.service.id.to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn filters_drop_critical_warning_with_only_passing_meta_and_tags() {
        let mut s = State::new();
        register(&mut s, "n1", "a", &["Blue", "v1"], HealthStatus::Passing);
        register(&mut s, "n2", "b", &["blue"], HealthStatus::Warning);
        register(&mut s, "n3", "c", &["green"], HealthStatus::Critical);
        let q = |f: fn(&mut ServiceQuery)| {
            let mut svc = ServiceQuery {
                service: "web".into(),
                ..ServiceQuery::default()
            };
            f(&mut svc);
            svc
        };
        assert_eq!(ids(&s, q(|_| {})), dcs(&["a", "b"]));
        assert_eq!(ids(&s, q(|s| s.only_passing = true)), dcs(&["a"]));
        assert_eq!(
            ids(&s, q(|s| s.ignore_check_ids = vec!["c-check".into()])),
            dcs(&["a", "b", "c"])
        );
        assert_eq!(
            ids(&s, q(|s| s.tags = vec!["BLUE".into()])),
            dcs(&["a", "b"])
        );
        assert_eq!(
            ids(&s, q(|s| s.tags = vec!["blue".into(), "!v1".into()])),
            dcs(&["b"])
        );
        assert_eq!(
            ids(
                &s,
                q(|s| {
                    s.node_meta = BTreeMap::from([("zone".into(), "n2".into())]);
                })
            ),
            dcs(&["b"])
        );
        assert_eq!(
            ids(
                &s,
                q(|s| {
                    s.service_meta = BTreeMap::from([("id".into(), "a".into())]);
                })
            ),
            dcs(&["a"])
        );
    }

    #[test]
    fn order_puts_the_near_node_first_and_applies_the_limit() {
        let mut s = State::new();
        for n in 1..=5 {
            register(
                &mut s,
                &format!("n{n}"),
                &format!("i{n}"),
                &[],
                HealthStatus::Passing,
            );
        }
        let q = PreparedQuery {
            service: ServiceQuery {
                service: "web".into(),
                ..ServiceQuery::default()
            },
            ..PreparedQuery::default()
        };
        for _ in 0..20 {
            let mut nodes = matching(&s, &q, &Authorizer::management());
            order(&mut nodes, Some("N4"), &keep_order, 3);
            assert_eq!(nodes.len(), 3);
            assert_eq!(nodes[0].node.name, "n4");
        }
    }
}
