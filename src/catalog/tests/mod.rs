//! Tests of the catalog: state-machine semantics, the DNS view, and
//! property tests against a simple model.
//!
//! The helpers here build commands with Consul's defaults so each test states
//! only what it is about.

mod acl;
mod capture;
mod kv;
mod kv_props;
mod model;
mod props;
mod replica;
mod sessions;
mod state;
mod txn;
mod view;

use super::acl_types::*;
pub(super) use super::command::*;
use super::kv_types::*;
use super::types::*;

/// Asserts that `new` is written as `old`, the type it replaced, was: the
/// same postcard bytes (what the log and snapshots store), those bytes read
/// back as `new`, and the same JSON (what the API writes). A row's field
/// may change its shape in memory only this way, so that a stored log or
/// snapshot reads back unchanged.
pub(super) fn written_as<New, Old>(new: &New, old: &Old)
where
    New: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    Old: serde::Serialize,
{
    let bytes = postcard::to_allocvec(old).expect("encode the old type");
    assert_eq!(postcard::to_allocvec(new).expect("encode"), bytes);
    assert_eq!(&postcard::from_bytes::<New>(&bytes).expect("decode"), new);
    assert_eq!(
        serde_json::to_string(new).expect("json"),
        serde_json::to_string(old).expect("json of the old type")
    );
}

/// A registration of just a node.
fn node(name: &str, address: &str) -> Registration {
    Registration {
        node: name.into(),
        id: String::new(),
        address: address.into(),
        datacenter: "dc1".into(),
        tagged_addresses: Default::default(),
        node_meta: Default::default(),
        skip_node_update: false,
        service: None,
        checks: Vec::new(),
    }
}

/// A service registration with an empty ID (so it defaults to the name).
fn svc(name: &str) -> ServiceRegistration {
    ServiceRegistration {
        id: String::new(),
        service: name.into(),
        tags: Vec::new(),
        address: String::new(),
        tagged_addresses: Default::default(),
        meta: Default::default(),
        port: 8080,
        weights: None,
        enable_tag_override: false,
    }
}

/// A node-level check with an empty ID (so it defaults to the name).
fn chk(name: &str, status: HealthStatus) -> CheckRegistration {
    CheckRegistration {
        check_id: String::new(),
        name: name.into(),
        status,
        notes: String::new(),
        output: String::new(),
        service_id: String::new(),
        kind: String::new(),
    }
}

/// A service-level check.
fn svc_chk(name: &str, service_id: &str, status: HealthStatus) -> CheckRegistration {
    CheckRegistration {
        service_id: service_id.into(),
        ..chk(name, status)
    }
}

/// A node registration carrying one service.
fn with_svc(mut r: Registration, s: ServiceRegistration) -> Registration {
    r.service = Some(s);
    r
}

/// A node registration carrying checks.
fn with_checks(mut r: Registration, checks: Vec<CheckRegistration>) -> Registration {
    r.checks = checks;
    r
}

fn reg(r: Registration) -> Command {
    Command::register(r)
}

fn dereg(node: &str, service_id: &str, check_id: &str) -> Command {
    Command::deregister(Deregistration {
        node: node.into(),
        service_id: service_id.into(),
        check_id: check_id.into(),
    })
}

/// A session on `node` with Consul's defaults: no checks, no TTL, no
/// lock-delay, `release`.
fn session(id: &str, node: &str) -> Session {
    Session {
        id: id.into(),
        name: String::new(),
        node: node.into(),
        node_checks: Vec::new(),
        service_checks: Vec::new(),
        lock_delay_ns: 0,
        behavior: Behavior::Release,
        ttl: String::new(),
        ttl_ms: 0,
        expires: None,
        create_index: 0,
        modify_index: 0,
    }
}

/// A KV op of `verb` on `key` with `value`, no flags, index or session.
fn kv(verb: KvVerb, key: &str, value: &str) -> KvOp {
    KvOp {
        value: value.as_bytes().to_vec(),
        ..KvOp::new(verb, key)
    }
}

/// A lock or unlock of `key` by `session`.
fn kv_by(verb: KvVerb, key: &str, value: &str, session: &str) -> KvOp {
    KvOp {
        session: session.into(),
        ..kv(verb, key, value)
    }
}
