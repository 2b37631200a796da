//! A node name belongs to one node ID: a registration that would give an
//! existing node's name to another node ID is refused while that node is
//! healthy, as Consul refuses it.
//!
//! The rule, checked before anything is written:
//! - it applies when the registration writes the node's own fields (not
//!   `skip_node_update`) and carries a node ID, and the existing node of that
//!   name has a node ID of its own that differs (compared without case, as
//!   UUIDs are written either way);
//! - the existing node keeps its name while its `serfHealth` check is not
//!   critical. A node without that check was registered from outside the
//!   gossip pool and may be taken over; a node whose check is critical has
//!   failed, and another node may take its name (the leader marks a node
//!   critical when the gossip pool no longer holds its node ID).
//!
//! Only the tables decide, so every server refuses the same registration.

use super::super::command::CatalogError;
use super::super::tables::{Tables, key, row_key};
use super::super::types::{HealthStatus, Registration};

/// The check through which the leader reports a node's gossip health (the
/// same ID as the leader's reconciler writes).
const SERF_HEALTH: &str = "serfHealth";

/// Refuses `r` if it would move a healthy node's name to another node ID.
pub(super) fn check(tables: &Tables, r: &Registration) -> Result<(), CatalogError> {
    if r.skip_node_update || r.id.is_empty() {
        return Ok(());
    }
    let node_key = key(&r.node);
    let Some(existing) = tables.nodes.get(&node_key) else {
        return Ok(());
    };
    if existing.id.is_empty() || existing.id.eq_ignore_ascii_case(&r.id) {
        return Ok(());
    }
    let healthy = tables
        .checks
        .get(&row_key(&node_key, SERF_HEALTH))
        .is_some_and(|c| c.status != HealthStatus::Critical);
    if !healthy {
        return Ok(());
    }
    Err(CatalogError::NodeNameReserved {
        node: r.node.clone(),
        holder_id: existing.id.clone(),
        holder_name: existing.name.clone(),
        holder_address: existing.address.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::command::{Command, Outcome};
    use super::super::super::state::State;
    use super::super::super::types::{CheckRegistration, Registration};
    use super::*;

    const A: &str = "11111111-1111-4111-8111-111111111111";
    const B: &str = "22222222-2222-4222-8222-222222222222";

    fn node(id: &str, address: &str) -> Registration {
        Registration {
            node: "s3".into(),
            id: id.into(),
            address: address.into(),
            datacenter: "dc1".into(),
            tagged_addresses: Default::default(),
            node_meta: Default::default(),
            skip_node_update: false,
            service: None,
            checks: Vec::new(),
        }
    }

    fn serf(status: HealthStatus) -> CheckRegistration {
        CheckRegistration {
            check_id: SERF_HEALTH.into(),
            name: "Serf Health Status".into(),
            status,
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            kind: String::new(),
        }
    }

    fn apply(state: &mut State, index: &mut u64, r: Registration) -> Outcome {
        *index += 1;
        state.apply(*index, 0, &Command::register(r)).0
    }

    /// Node s3 with ID A at 10.0.0.3, its serfHealth as given.
    fn with_s3(status: HealthStatus) -> (State, u64) {
        let (mut state, mut index) = (State::new(), 0);
        let mut r = node(A, "10.0.0.3");
        r.checks.push(serf(status));
        assert!(!matches!(
            apply(&mut state, &mut index, r),
            Outcome::Refused(_)
        ));
        (state, index)
    }

    fn address(state: &State) -> (String, String) {
        let n = state.node("s3").expect("s3 registered");
        (n.id.clone(), n.address.clone())
    }

    #[test]
    fn another_node_id_is_refused_while_the_holder_is_healthy() {
        for status in [HealthStatus::Passing, HealthStatus::Warning] {
            let (mut state, mut index) = with_s3(status);
            let before = (state.node("s3").cloned(), state.node_checks("s3").count());
            let outcome = apply(&mut state, &mut index, node(B, "10.0.0.66"));
            let Outcome::Refused(err) = outcome else {
                panic!("accepted: {outcome:?}");
            };
            assert_eq!(
                err.to_string(),
                format!("Node name s3 is reserved by node {A} with name s3 (10.0.0.3)")
            );
            let after = (state.node("s3").cloned(), state.node_checks("s3").count());
            assert_eq!(after, before, "a refusal changes nothing");
        }
    }

    #[test]
    fn another_node_id_may_take_a_failed_nodes_name() {
        let (mut state, mut index) = with_s3(HealthStatus::Critical);
        apply(&mut state, &mut index, node(B, "10.0.0.66"));
        assert_eq!(address(&state), (B.into(), "10.0.0.66".into()));
    }

    #[test]
    fn a_node_without_serf_health_or_without_an_id_may_be_taken() {
        // Registered from outside the pool: Consul lets it be taken over.
        let (mut state, mut index) = (State::new(), 0);
        apply(&mut state, &mut index, node(A, "10.0.0.3"));
        apply(&mut state, &mut index, node(B, "10.0.0.66"));
        assert_eq!(address(&state), (B.into(), "10.0.0.66".into()));
        // No ID yet: the first ID claims it.
        let (mut state, mut index) = (State::new(), 0);
        let mut r = node("", "10.0.0.3");
        r.checks.push(serf(HealthStatus::Passing));
        apply(&mut state, &mut index, r);
        apply(&mut state, &mut index, node(B, "10.0.0.66"));
        assert_eq!(address(&state), (B.into(), "10.0.0.66".into()));
    }

    #[test]
    fn the_same_id_in_any_case_and_registrations_that_leave_the_node_alone_pass() {
        let (mut state, mut index) = with_s3(HealthStatus::Passing);
        apply(&mut state, &mut index, node(&A.to_uppercase(), "10.0.0.4"));
        assert_eq!(
            state.node("s3").map(|n| n.address.as_str()),
            Some("10.0.0.4")
        );
        // A check-only write from another agent, or one with no ID, is not a
        // claim on the node.
        let mut r = node(B, "");
        r.skip_node_update = true;
        r.checks.push(serf(HealthStatus::Critical));
        assert!(!matches!(
            apply(&mut state, &mut index, r),
            Outcome::Refused(_)
        ));
        let (mut state, mut index) = with_s3(HealthStatus::Passing);
        assert!(!matches!(
            apply(&mut state, &mut index, node("", "10.0.0.5")),
            Outcome::Refused(_)
        ));
    }

    #[test]
    fn a_refusal_in_a_later_position_is_decided_on_the_state_before_it() {
        // The leader's two steps for a node replaced in place: mark the old
        // ID critical, then register the new one; each is decided on the
        // tables as the previous left them.
        let (mut state, mut index) = with_s3(HealthStatus::Passing);
        let mut mark = node("", "");
        mark.skip_node_update = true;
        mark.checks.push(serf(HealthStatus::Critical));
        apply(&mut state, &mut index, mark);
        let mut r = node(B, "10.0.0.3");
        r.checks.push(serf(HealthStatus::Passing));
        assert!(!matches!(
            apply(&mut state, &mut index, r),
            Outcome::Refused(_)
        ));
        assert_eq!(address(&state), (B.into(), "10.0.0.3".into()));
    }
}
