//! Consul's catalog register and deregister over the nodes, services and
//! checks tables, and what each change touches for the DNS view.
//!
//! - A registration is checked whole before anything is written, so a
//!   refusal changes nothing: a node needs an address unless it exists and
//!   is left alone, a service needs a name, a check a name or ID, and a
//!   check must name an instance on its own node (or the one registered
//!   with it), and a node's name stays with its node ID while the node is
//!   healthy (`identity.rs`).
//! - A node's name, and an instance's service name and tags, are copied
//!   into its checks (as Consul does) and kept current here.
//! - Deregistering a node removes its services and checks; deregistering an
//!   instance removes its checks.
//! - A change to a node (or a node-level check) touches the node and every
//!   service with an instance on it; a change to an instance or its checks
//!   touches that service name.
//! - Sessions die with what they depend on: a node's deregistration
//!   invalidates its sessions, a check's deregistration or turn to critical
//!   the sessions that name it (`sessions.rs` releases their locks).

use super::super::command::{CatalogError, CatalogOp};
use super::super::kv_types::Time;
use super::super::tables::{Tables, check_id, instance_id, key, row_key};
use super::super::types::{Deregistration, HealthStatus, Index, Registration};
use super::Touched;
use super::identity;
use super::sessions::invalidate;

/// Applies one catalog op at `index`; a refusal changes nothing.
pub(crate) fn apply(
    tables: &mut Tables,
    index: Index,
    time: Time,
    op: &CatalogOp,
    touched: &mut Touched,
) -> Result<(), CatalogError> {
    match op {
        CatalogOp::Register(r) => register(tables, index, time, r, touched),
        CatalogOp::Deregister(d) => deregister(tables, index, time, d, touched),
    }
}

/// Checks a registration against the tables as they are, before any write.
fn validate(tables: &Tables, r: &Registration) -> Result<(), CatalogError> {
    if r.node.is_empty() {
        return Err(CatalogError::Missing("Node".into()));
    }
    let node_key = key(&r.node);
    // As Consul: an address is required unless the node's own fields are
    // left alone, and that needs a node to leave alone.
    if r.address.is_empty() && !r.skip_node_update {
        return Err(CatalogError::Missing("Address".into()));
    }
    if r.address.is_empty() && tables.nodes.get(&node_key).is_none() {
        return Err(CatalogError::NoNodeAddress(r.node.clone()));
    }
    identity::check(tables, r)?;
    if let Some(s) = &r.service
        && s.service.is_empty()
    {
        return Err(CatalogError::Missing("Service.Service".into()));
    }
    let new_service_id = r.service.as_ref().map(instance_id);
    for c in &r.checks {
        if c.name.is_empty() && c.check_id.is_empty() {
            return Err(CatalogError::Missing("Check.Name".into()));
        }
        if !c.service_id.is_empty()
            && new_service_id != Some(c.service_id.as_str())
            && tables
                .services
                .get(&row_key(&node_key, &c.service_id))
                .is_none()
        {
            return Err(CatalogError::UnknownServiceForCheck {
                check_id: check_id(c).to_string(),
                service_id: c.service_id.clone(),
            });
        }
    }
    Ok(())
}

fn register(
    tables: &mut Tables,
    index: Index,
    time: Time,
    r: &Registration,
    touched: &mut Touched,
) -> Result<(), CatalogError> {
    validate(tables, r)?;
    let node_key = key(&r.node);
    let node = tables.nodes.upsert(index, &node_key, r);
    // The node is there now: its rows share its key.
    let shared = node.key;
    if node.created {
        // No check or instance names it yet: nothing to rename or touch.
        touched.nodes.insert(node_key.clone());
    } else if let Some(node) = node.changed {
        // Checks carry the node's name as registered; a respelling must reach them.
        tables.checks.rename_node(index, &node_key, &node.name);
        touch_node(tables, &node_key, touched);
    }
    if let Some(s) = &r.service
        && let Some(change) = tables.services.upsert(index, &shared, s)
    {
        if let Some(old) = &change.renamed_from {
            touched.services.insert(key(old));
        }
        touched.services.insert(key(&change.row.service));
        // Checks carry the instance's name and tags; keep them current
        // (a new instance has none: a check names an instance that exists,
        // and an instance's removal takes its checks).
        if !change.created {
            tables.checks.follow_service(index, &node_key, change.row);
        }
    }
    for c in &r.checks {
        // Validated above: a named instance exists by now.
        let service = (!c.service_id.is_empty())
            .then(|| tables.services.get(&row_key(&node_key, &c.service_id)))
            .flatten();
        let node = tables
            .nodes
            .get(&node_key)
            .map_or(r.node.as_str(), |n| n.name.as_str());
        if let Some(change) = tables.checks.upsert(index, &shared, node, c, service) {
            // A check that moved to another instance affects the old one too.
            if let Some(left) = &change.left {
                touch_check_target(tables, &node_key, left, touched);
            }
            touch_check_target(tables, &node_key, &change.covers, touched);
        }
        // As Consul: a check turning critical ends the sessions that name it
        // (warning does not).
        let id = check_id(c);
        let critical = tables
            .checks
            .get(&row_key(&node_key, id))
            .is_some_and(|c| c.status == HealthStatus::Critical);
        if critical {
            for session in tables.sessions.on_check(&node_key, id) {
                invalidate(tables, index, time, &session);
            }
        }
    }
    Ok(())
}

fn deregister(
    tables: &mut Tables,
    index: Index,
    time: Time,
    d: &Deregistration,
    touched: &mut Touched,
) -> Result<(), CatalogError> {
    if d.node.is_empty() {
        return Err(CatalogError::Missing("Node".into()));
    }
    let node_key = key(&d.node);
    if tables.nodes.get(&node_key).is_none() {
        // Consul treats removing what is not there as success.
        return Ok(());
    }
    if !d.service_id.is_empty() {
        let k = row_key(&node_key, &d.service_id);
        if let Some(s) = tables.services.remove(index, &k) {
            touched.services.insert(key(&s.service));
            let gone: Vec<String> = tables
                .checks
                .on_node(&node_key)
                .filter(|c| *c.service_id == *d.service_id)
                .map(|c| c.check_id.to_string())
                .collect();
            tables
                .checks
                .remove_on_node(index, &node_key, |c| *c.service_id == *d.service_id);
            for check in gone {
                for session in tables.sessions.on_check(&node_key, &check) {
                    invalidate(tables, index, time, &session);
                }
            }
        }
    }
    if !d.check_id.is_empty() {
        let k = row_key(&node_key, &d.check_id);
        if let Some(c) = tables.checks.remove(index, &k) {
            touch_check_target(tables, &node_key, &c.service_name, touched);
            for session in tables.sessions.on_check(&node_key, &d.check_id) {
                invalidate(tables, index, time, &session);
            }
        }
    }
    if d.service_id.is_empty() && d.check_id.is_empty() {
        touch_node(tables, &node_key, touched);
        tables.nodes.remove(index, &node_key);
        tables.services.remove_on_node(index, &node_key);
        tables.checks.remove_on_node(index, &node_key, |_| true);
        for session in tables.sessions.on_node(&node_key) {
            invalidate(tables, index, time, &session);
        }
    }
    Ok(())
}

/// Marks what a check change affects: one service, or (for a node check,
/// whose service name is empty) the whole node.
fn touch_check_target(tables: &Tables, node_key: &str, service_name: &str, touched: &mut Touched) {
    if service_name.is_empty() {
        touch_node(tables, node_key, touched);
    } else {
        touched.services.insert(key(service_name));
    }
}

/// Marks a node and every service with an instance on it as changed.
fn touch_node(tables: &Tables, node_key: &str, touched: &mut Touched) {
    touched.nodes.insert(node_key.to_string());
    for s in tables.services.on_node(node_key) {
        touched.services.insert(key(&s.service));
    }
}
