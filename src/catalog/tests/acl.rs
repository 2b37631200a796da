//! Writes to tokens and policies (`rules/acl.rs`) and their resolution
//! into authorizers (`tokens.rs`): each of Consul's refusals, and a
//! rebuild that reuses what did not change.

use std::sync::Arc;

use super::*;
use crate::acl::DefaultPolicy;
use crate::catalog::{AclContext, State, Tokens};

/// A token with `secret` linking `policies`, the rest left for the state
/// to fill.
fn token(accessor: &str, secret: &str, policies: &[&str]) -> AclToken {
    AclToken {
        accessor_id: accessor.into(),
        secret_id: secret.into(),
        secret_hash: secret_hash(secret),
        description: String::new(),
        policies: policies.iter().map(|p| (*p).to_owned()).collect(),
        local: false,
        create_time: 0,
        create_index: 0,
        modify_index: 0,
    }
}

fn policy(id: &str, name: &str, rules: &str) -> AclPolicy {
    AclPolicy {
        id: id.into(),
        name: name.into(),
        description: String::new(),
        rules: rules.into(),
        datacenters: Vec::new(),
        create_index: 0,
        modify_index: 0,
    }
}

const READ_WEB: &str = r#"service "web" { policy = "read" }"#;
const WRITE_WEB: &str = r#"service "web" { policy = "write" }"#;

/// A state and the index of its next write.
struct Acl {
    state: State,
    next: Index,
}

impl Acl {
    fn new() -> Self {
        Self {
            state: State::new(),
            next: 1,
        }
    }

    /// Applies `op` at the next index, at time `index * 10`.
    fn apply(&mut self, op: AclOp) -> Outcome {
        let index = self.next;
        self.next += 1;
        self.state.apply(index, index * 10, &Command::Acl(op)).0
    }

    /// Applies `op`, which must succeed.
    fn ok(&mut self, op: AclOp) -> Index {
        let at = self.next;
        let outcome = self.apply(op);
        assert_eq!(outcome, Outcome::Applied(at));
        at
    }

    /// Applies `op`, which must be refused with `error`, changing nothing.
    fn refused(&mut self, op: AclOp, error: AclError) {
        let before = self.table();
        let outcome = self.apply(op);
        assert_eq!(outcome, Outcome::Refused(CatalogError::Acl(error)));
        assert_eq!(self.table(), before);
    }

    /// Everything the ACL table shows.
    fn table(&self) -> (Vec<AclToken>, Vec<AclPolicy>, Index, Index) {
        let s = &self.state;
        (
            s.acl_tokens().cloned().collect(),
            s.acl_policies().cloned().collect(),
            s.acl_index(),
            s.acl_bootstrapped(),
        )
    }

    fn tokens(&self, previous: Option<&Tokens>) -> Tokens {
        Tokens::build(&self.state, &ctx("dc1"), previous)
    }
}

fn ctx(datacenter: &str) -> AclContext {
    AclContext {
        default: DefaultPolicy::Deny,
        datacenter: datacenter.into(),
    }
}

#[test]
fn bootstrap_happens_once() {
    let mut acl = Acl::new();
    assert_eq!(acl.state.acl_bootstrapped(), 0);
    let at = acl.ok(AclOp::Bootstrap(token("a-1", "s-1", &[])));
    assert_eq!(acl.state.acl_bootstrapped(), at);
    // The first token is a management token, with the built-in policy
    // created for it.
    let first = acl.state.acl_token("a-1").expect("the bootstrap token");
    assert!(first.is_management());
    assert_eq!((first.create_index, first.create_time), (at, at * 10));
    let builtin = acl
        .state
        .acl_policy(MANAGEMENT_POLICY_ID)
        .expect("built in");
    assert_eq!(builtin.name, MANAGEMENT_POLICY_NAME);
    assert!(
        acl.tokens(None)
            .by_secret("s-1")
            .expect("s-1")
            .authorizer
            .acl_write()
    );

    acl.refused(
        AclOp::Bootstrap(token("a-2", "s-2", &[])),
        AclError::BootstrapDone(at),
    );
}

#[test]
fn initial_management_is_idempotent_and_ends_bootstrapping() {
    let mut acl = Acl::new();
    // The leader proposes it with a fresh accessor each time it finds the
    // token missing; a second proposal of the same secret changes nothing.
    let at = acl.ok(AclOp::InitialManagement(token("a-1", "root", &[])));
    let table = acl.table();
    acl.ok(AclOp::InitialManagement(token("a-2", "root", &[])));
    assert_eq!(acl.table(), table);
    assert_eq!(acl.state.acl_tokens().count(), 1);
    assert!(acl.state.acl_token("a-1").expect("a-1").is_management());
    // It counts as the bootstrap, as Consul's.
    acl.refused(
        AclOp::Bootstrap(token("a-3", "s-3", &[])),
        AclError::BootstrapDone(at),
    );
    // Another secret later (the configuration changed) is a second
    // management token; bootstrapping stays where it ended.
    acl.ok(AclOp::InitialManagement(token("a-4", "root-2", &[])));
    assert!(acl.state.acl_token("a-4").expect("a-4").is_management());
    assert_eq!(acl.state.acl_bootstrapped(), at);
}

#[test]
fn a_secret_belongs_to_one_token_and_never_changes() {
    let mut acl = Acl::new();
    let created = acl.ok(AclOp::SetToken(token("a-1", "s-1", &[])));
    acl.refused(
        AclOp::SetToken(token("a-2", "s-1", &[])),
        AclError::SecretInUse,
    );
    acl.refused(
        AclOp::SetToken(token("a-1", "s-other", &[])),
        AclError::SecretChanged,
    );
    // An update with the same secret keeps when and at what index the
    // token was created.
    let mut update = token("a-1", "s-1", &[]);
    update.description = "renamed".into();
    let updated = acl.ok(AclOp::SetToken(update));
    let row = acl.state.acl_token("a-1").expect("a-1");
    assert_eq!(row.description, "renamed");
    assert_eq!(
        (row.create_index, row.create_time, row.modify_index),
        (created, created * 10, updated)
    );
    // So does one without the secret, as a client agent's replica applies
    // it: the secret the row has stays.
    let mut redacted = token("a-1", "s-1", &[]).redacted();
    redacted.description = "again".into();
    acl.ok(AclOp::SetToken(redacted));
    assert_eq!(acl.state.acl_token("a-1").expect("a-1").secret_id, "s-1");
}

#[test]
fn a_token_links_only_policies_that_exist() {
    let mut acl = Acl::new();
    acl.refused(
        AclOp::SetToken(token("a-1", "s-1", &["p-missing"])),
        AclError::UnknownPolicy("p-missing".into()),
    );
    acl.ok(AclOp::SetPolicy(policy("p-1", "web-read", READ_WEB)));
    acl.ok(AclOp::SetToken(token("a-1", "s-1", &["p-1", "p-1"])));
    // Linked once.
    assert_eq!(acl.state.acl_token("a-1").expect("a-1").policies, ["p-1"]);
}

#[test]
fn policies_have_unique_names_and_rules_that_parse() {
    let mut acl = Acl::new();
    acl.ok(AclOp::SetPolicy(policy("p-1", "web", READ_WEB)));
    acl.refused(
        AclOp::SetPolicy(policy("p-2", "web", READ_WEB)),
        AclError::PolicyNameInUse("web".into()),
    );
    let outcome = acl.apply(AclOp::SetPolicy(policy("p-3", "bad", "service {")));
    assert!(
        matches!(
            outcome,
            Outcome::Refused(CatalogError::Acl(AclError::InvalidRules(_)))
        ),
        "{outcome:?}"
    );
    assert!(acl.state.acl_policy("p-3").is_none());
    // A rename frees the old name.
    acl.ok(AclOp::SetPolicy(policy("p-1", "web-2", READ_WEB)));
    acl.ok(AclOp::SetPolicy(policy("p-2", "web", READ_WEB)));
    assert_eq!(
        acl.state.acl_policy_by_name("web").map(|p| p.id.as_str()),
        Some("p-2")
    );
}

#[test]
fn the_builtin_policy_and_the_anonymous_token_are_kept() {
    let mut acl = Acl::new();
    acl.ok(AclOp::Bootstrap(token("a-1", "s-1", &[])));
    let builtin = acl
        .state
        .acl_policy(MANAGEMENT_POLICY_ID)
        .expect("built in")
        .clone();
    acl.refused(
        AclOp::DeletePolicy(MANAGEMENT_POLICY_ID.into()),
        AclError::Builtin(
            "Delete operation not permitted on the builtin global-management policy".into(),
        ),
    );
    acl.refused(
        AclOp::SetPolicy(AclPolicy {
            rules: WRITE_WEB.into(),
            ..builtin.clone()
        }),
        AclError::Builtin(
            "Changing the Rules for the builtin global-management policy is not permitted".into(),
        ),
    );
    // Renamed it may be, as Consul's; it still grants everything.
    acl.ok(AclOp::SetPolicy(AclPolicy {
        name: "root".into(),
        ..builtin
    }));
    assert!(
        acl.tokens(None)
            .by_secret("s-1")
            .expect("s-1")
            .authorizer
            .operator_write()
    );

    acl.ok(AclOp::SetToken(token(
        ANONYMOUS_ACCESSOR_ID,
        ANONYMOUS_SECRET_ID,
        &[],
    )));
    acl.refused(
        AclOp::DeleteToken(ANONYMOUS_ACCESSOR_ID.into()),
        AclError::Builtin("Delete operation not permitted on the anonymous token".into()),
    );
    // Deleting what is not there succeeds, as Consul's.
    acl.ok(AclOp::DeleteToken("a-missing".into()));
    acl.ok(AclOp::DeletePolicy("p-missing".into()));
}

#[test]
fn deleting_a_policy_unlinks_it_from_its_tokens() {
    let mut acl = Acl::new();
    acl.ok(AclOp::SetPolicy(policy("p-1", "web-read", READ_WEB)));
    acl.ok(AclOp::SetPolicy(policy(
        "p-2",
        "db-read",
        r#"service "db" { policy = "read" }"#,
    )));
    acl.ok(AclOp::SetToken(token("a-1", "s-1", &["p-1", "p-2"])));
    acl.ok(AclOp::SetToken(token("a-2", "s-2", &["p-2"])));
    let before = acl.tokens(None);
    assert!(
        before
            .by_secret("s-1")
            .expect("s-1")
            .authorizer
            .service_read("web")
    );

    let at = acl.ok(AclOp::DeletePolicy("p-1".into()));
    let linked = acl.state.acl_token("a-1").expect("a-1");
    assert_eq!(
        (linked.policies.as_slice(), linked.modify_index),
        (&["p-2".to_owned()][..], at)
    );
    // A token that did not link it is untouched.
    assert!(acl.state.acl_token("a-2").expect("a-2").modify_index < at);
    let after = acl.tokens(Some(&before));
    let a1 = &after.by_secret("s-1").expect("s-1").authorizer;
    assert!(!a1.service_read("web"));
    assert!(a1.service_read("db"));
}

#[test]
fn a_rebuild_reuses_the_authorizers_of_unchanged_policies() {
    let mut acl = Acl::new();
    acl.ok(AclOp::SetPolicy(policy("p-1", "web-read", READ_WEB)));
    acl.ok(AclOp::SetToken(token("a-1", "s-1", &["p-1"])));
    acl.ok(AclOp::SetToken(token("a-2", "s-2", &["p-1"])));
    let first = acl.tokens(None);
    let authz =
        |t: &Tokens, secret: &str| Arc::clone(&t.by_secret(secret).expect(secret).authorizer);
    // Two tokens of the same policies share one authorizer.
    assert!(Arc::ptr_eq(&authz(&first, "s-1"), &authz(&first, "s-2")));

    // Another token's write: the authorizer is the one built before.
    acl.ok(AclOp::SetToken(token("a-3", "s-3", &["p-1"])));
    let second = acl.tokens(Some(&first));
    assert!(Arc::ptr_eq(&authz(&first, "s-1"), &authz(&second, "s-1")));
    assert!(Arc::ptr_eq(&authz(&first, "s-1"), &authz(&second, "s-3")));

    // The policy changes: a new authorizer, with the new rules, for every
    // token linking it.
    acl.ok(AclOp::SetPolicy(policy("p-1", "web-read", WRITE_WEB)));
    let third = acl.tokens(Some(&second));
    assert!(!Arc::ptr_eq(&authz(&second, "s-1"), &authz(&third, "s-1")));
    assert!(Arc::ptr_eq(&authz(&third, "s-1"), &authz(&third, "s-3")));
    assert!(authz(&third, "s-1").service_write("web"));
    assert!(!authz(&second, "s-1").service_write("web"));
}

#[test]
fn a_policy_for_other_datacenters_grants_nothing_here() {
    let mut acl = Acl::new();
    acl.ok(AclOp::SetPolicy(AclPolicy {
        datacenters: vec!["dc2".into()],
        ..policy("p-1", "web-read-dc2", READ_WEB)
    }));
    acl.ok(AclOp::SetToken(token("a-1", "s-1", &["p-1"])));
    let read = |dc: &str| {
        Tokens::build(&acl.state, &ctx(dc), None)
            .by_secret("s-1")
            .expect("s-1")
            .authorizer
            .service_read("web")
    };
    assert!(!read("dc1"));
    assert!(read("dc2"));
}

#[test]
fn tokens_resolve_by_secret_and_anonymous_without_a_row() {
    let mut acl = Acl::new();
    acl.ok(AclOp::SetPolicy(policy("p-1", "web-read", READ_WEB)));
    acl.ok(AclOp::SetToken(token("a-1", "s-1", &["p-1"])));
    let tokens = acl.tokens(None);
    let a1 = tokens.by_secret("s-1").expect("s-1");
    assert_eq!(a1.accessor_id, "a-1");
    assert!(Arc::ptr_eq(
        a1,
        tokens.by_hash(&secret_hash("s-1")).expect("by hash")
    ));
    assert!(tokens.by_secret("s-unknown").is_none());
    // No anonymous row: the anonymous token has no policy, so the default
    // policy decides; by hash it is found only once it is a row.
    let anonymous = tokens.by_secret(ANONYMOUS_SECRET_ID).expect("anonymous");
    assert_eq!(anonymous.accessor_id, ANONYMOUS_ACCESSOR_ID);
    assert!(!anonymous.authorizer.service_read("web"));
    assert!(tokens.by_hash(&secret_hash(ANONYMOUS_SECRET_ID)).is_none());

    acl.ok(AclOp::SetToken(token(
        ANONYMOUS_ACCESSOR_ID,
        ANONYMOUS_SECRET_ID,
        &["p-1"],
    )));
    let tokens = acl.tokens(Some(&tokens));
    assert!(tokens.anonymous().authorizer.service_read("web"));
    assert!(Arc::ptr_eq(
        tokens.anonymous(),
        tokens.by_secret(ANONYMOUS_SECRET_ID).expect("anonymous")
    ));
}
