//! A small catalog for the DNS tests: every kind of node and instance the
//! answers must tell apart.

use std::sync::Arc;

use crate::catalog::{
    CheckRegistration, Command, HealthStatus, Meta, Registration, Replica, ServiceRegistration,
    Weights,
};

/// One registration: a node, optionally one service instance and its check.
pub(crate) struct Reg<'a> {
    pub(crate) node: &'a str,
    pub(crate) address: &'a str,
    pub(crate) service: Option<(&'a str, &'a str, u16)>,
    pub(crate) service_address: &'a str,
    pub(crate) tags: &'a [&'a str],
    pub(crate) status: HealthStatus,
    pub(crate) meta: &'a [(&'a str, &'a str)],
    pub(crate) weights: Option<Weights>,
}

impl Default for Reg<'_> {
    fn default() -> Self {
        Self {
            node: "",
            address: "",
            service: None,
            service_address: "",
            tags: &[],
            status: HealthStatus::Passing,
            meta: &[],
            weights: None,
        }
    }
}

pub(crate) fn register(replica: &Replica, index: u64, r: Reg<'_>) {
    let service = r.service.map(|(name, id, port)| ServiceRegistration {
        id: id.into(),
        service: name.into(),
        tags: r.tags.iter().map(|t| (*t).to_owned()).collect(),
        address: r.service_address.into(),
        tagged_addresses: Default::default(),
        meta: Meta::new(),
        port,
        weights: r.weights,
        enable_tag_override: false,
    });
    let checks = match &service {
        Some(s) => vec![CheckRegistration {
            check_id: format!("check-{}", s.id),
            name: format!("check {}", s.id),
            status: r.status,
            notes: String::new(),
            output: String::new(),
            service_id: s.id.clone(),
            kind: "ttl".into(),
        }],
        None => Vec::new(),
    };
    let cmd = Command::register(Registration {
        node: r.node.into(),
        id: String::new(),
        address: r.address.into(),
        datacenter: "dc1".into(),
        tagged_addresses: Default::default(),
        node_meta: r
            .meta
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        skip_node_update: false,
        service,
        checks,
    });
    let outcome = replica.apply(index, &cmd);
    assert!(
        matches!(outcome, crate::catalog::Outcome::Applied(_)),
        "{outcome:?}"
    );
}

/// The fixture catalog:
/// - `web`: web1 on n1 (10.0.0.1, tags primary/v1, passing), web2 on n2
///   (10.0.0.2, tag secondary, warning), web3 on n3 (critical, never answered);
/// - `v6only` on n4 (2001:db8::4); `ext` on n5 with host name `db.example.com`;
/// - `alt` on n1 with its own address 10.9.9.9; `consul` (the server) on n1;
/// - `big`: 50 passing instances on nodes big-0..49 (10.1.0.x).
pub(crate) fn replica() -> Arc<Replica> {
    let replica = Arc::new(Replica::new());
    let mut index = 0;
    let mut reg = |r: Reg<'_>| {
        index += 1;
        register(&replica, index, r);
    };
    reg(Reg {
        node: "n1",
        address: "10.0.0.1",
        service: Some(("web", "web1", 8080)),
        tags: &["primary", "v1"],
        meta: &[("rack", "r1"), ("os", "linux")],
        ..Reg::default()
    });
    reg(Reg {
        node: "n2",
        address: "10.0.0.2",
        service: Some(("web", "web2", 8081)),
        tags: &["secondary"],
        status: HealthStatus::Warning,
        ..Reg::default()
    });
    reg(Reg {
        node: "n3",
        address: "10.0.0.3",
        service: Some(("web", "web3", 8082)),
        tags: &["primary"],
        status: HealthStatus::Critical,
        ..Reg::default()
    });
    reg(Reg {
        node: "n4",
        address: "2001:db8::4",
        service: Some(("v6only", "v6only", 9000)),
        ..Reg::default()
    });
    reg(Reg {
        node: "n5",
        address: "10.0.0.5",
        service: Some(("ext", "ext", 5432)),
        service_address: "db.example.com",
        ..Reg::default()
    });
    reg(Reg {
        node: "n1",
        address: "10.0.0.1",
        service: Some(("alt", "alt", 7000)),
        service_address: "10.9.9.9",
        meta: &[("rack", "r1"), ("os", "linux")],
        ..Reg::default()
    });
    reg(Reg {
        node: "n1",
        address: "10.0.0.1",
        service: Some(("consul", "consul", 8300)),
        meta: &[("rack", "r1"), ("os", "linux")],
        ..Reg::default()
    });
    for i in 0..50 {
        let node = format!("big-{i}");
        let address = format!("10.1.0.{i}");
        reg(Reg {
            node: &node,
            address: &address,
            service: Some(("big", "big", 80)),
            ..Reg::default()
        });
    }
    replica
}
