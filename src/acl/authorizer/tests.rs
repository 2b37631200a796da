//! The authorizer against the cases of Consul's `acl/policy_authorizer_test.go`
//! and `acl/policy_test.go` (merging), written as rules text.

use super::*;
use crate::acl::parse;

fn authz(rules: &[&str], default: DefaultPolicy) -> Authorizer {
    let policies: Vec<Policy> = rules
        .iter()
        .map(|r| parse(r).expect("test rules parse"))
        .collect();
    Authorizer::new(&policies, default)
}

/// (read, write) of `name` for one resource kind.
fn rw(a: &Authorizer, resource: Resource, name: &str) -> (bool, bool) {
    match resource {
        Resource::Service => (a.service_read(name), a.service_write(name)),
        Resource::Node => (a.node_read(name), a.node_write(name)),
        Resource::Key => (a.key_read(name), a.key_write(name)),
        Resource::Session => (a.session_read(name), a.session_write(name)),
        Resource::Agent => (a.agent_read(name), a.agent_write(name)),
        Resource::Query => (a.query_read(name), a.query_write(name)),
    }
}

#[test]
fn an_exact_rule_beats_a_prefix_rule_and_the_longest_prefix_wins_for_every_kind() {
    // Consul's "Prefer Exact Matches": exact foo write, exact football
    // deny, prefix foot read, prefix fo read; under default allow, so a
    // wrong fall-through to the default would show as an allowed write.
    for resource in Resource::ALL {
        let exact = resource.keyword(crate::acl::Match::Exact);
        let prefix = resource.keyword(crate::acl::Match::Prefix);
        let rules = format!(
            "{exact} \"foo\" {{ policy = \"write\" }}\n\
             {exact} \"football\" {{ policy = \"deny\" }}\n\
             {prefix} \"foot\" {{ policy = \"read\" }}\n\
             {prefix} \"fo\" {{ policy = \"read\" }}\n"
        );
        let a = authz(&[&rules], DefaultPolicy::Allow);
        for (name, want) in [
            ("fo", (true, false)),
            ("for", (true, false)),
            ("foo", (true, true)),
            ("foot", (true, false)),
            ("foot2", (true, false)),
            ("food", (true, false)),
            ("football", (false, false)),
            // No rule matches: the default policy answers.
            ("f", (true, true)),
            ("bar", (true, true)),
        ] {
            assert_eq!(rw(&a, resource, name), want, "{exact} {name:?}");
        }
    }
}

#[test]
fn the_documented_key_example_reads_all_writes_foo_and_hides_private() {
    let a = authz(
        &[r#"
key_prefix "" { policy = "read" }
key_prefix "foo/" { policy = "write" }
key_prefix "foo/private/" { policy = "deny" }
operator = "read"
"#],
        DefaultPolicy::Deny,
    );
    assert!(a.key_read("bar") && !a.key_write("bar"));
    assert!(a.key_read("foo/x") && a.key_write("foo/x"));
    assert!(!a.key_read("foo/private/x") && !a.key_write("foo/private/x"));
    assert!(a.key_write("foo/private"), "only the prefix with the slash");
    assert!(a.operator_read() && !a.operator_write());
    assert!(!a.service_read("web"), "no service rule under deny");
}

#[test]
fn default_allow_grants_all_but_acl_management_and_default_deny_grants_nothing() {
    let allow = authz(&[], DefaultPolicy::Allow);
    let deny = authz(&[""], DefaultPolicy::Deny);
    for resource in Resource::ALL {
        assert_eq!(rw(&allow, resource, "x"), (true, true), "{resource:?}");
        assert_eq!(rw(&deny, resource, "x"), (false, false), "{resource:?}");
    }
    assert!(allow.operator_write() && allow.keyring_write() && allow.key_list(""));
    assert!(allow.key_write_prefix("") && allow.service_read_all());
    assert!(!allow.acl_read() && !allow.acl_write());
    assert!(!deny.operator_read() && !deny.keyring_read() && !deny.key_list(""));
    assert!(!deny.key_write_prefix("") && !deny.service_write_any());
    assert!(!deny.acl_read());
}

#[test]
fn the_management_token_may_do_everything() {
    let m = Authorizer::management();
    for resource in Resource::ALL {
        assert_eq!(rw(&m, resource, "x"), (true, true));
    }
    assert!(m.acl_write() && m.operator_write() && m.key_write_prefix(""));
}

#[test]
fn single_value_rules_answer_and_unset_ones_fall_to_the_default() {
    let a = authz(
        &[r#"operator = "write"
acl = "read"
keyring = "deny""#],
        DefaultPolicy::Allow,
    );
    assert!(a.operator_read() && a.operator_write());
    assert!(a.acl_read() && !a.acl_write());
    assert!(!a.keyring_read() && !a.keyring_write());
    let b = authz(&[r#"operator = "read""#], DefaultPolicy::Deny);
    assert!(b.operator_read() && !b.operator_write());
    assert!(!b.keyring_read(), "unset keyring under deny");
}

#[test]
fn merging_policies_deny_wins_then_write_then_list_then_read_for_the_same_rule() {
    let web = |p: &str| format!("service \"web\" {{ policy = \"{p}\" }}");
    for (a, b, want) in [
        ("read", "write", (true, true)),
        ("write", "read", (true, true)),
        ("write", "deny", (false, false)),
        ("deny", "read", (false, false)),
        ("read", "read", (true, false)),
    ] {
        let z = authz(&[&web(a), &web(b)], DefaultPolicy::Allow);
        assert_eq!(rw(&z, Resource::Service, "web"), want, "{a} + {b}");
    }
    let k = |p: &str| format!("key_prefix \"a/\" {{ policy = \"{p}\" }}");
    let z = authz(&[&k("read"), &k("list")], DefaultPolicy::Deny);
    assert!(z.key_list("a/") && !z.key_write("a/b"), "list beats read");
    let z = authz(&[&k("list"), &k("write")], DefaultPolicy::Deny);
    assert!(z.key_write("a/b"), "write beats list");
    let op = authz(
        &[r#"operator = "write""#, r#"operator = "deny""#],
        DefaultPolicy::Allow,
    );
    assert!(!op.operator_read(), "deny wins for single values too");
}

#[test]
fn rules_for_different_names_from_different_policies_stay_apart() {
    // A deny on everything in one policy and a grant on web in another: the
    // longer prefix decides, whichever policy it came from.
    let z = authz(
        &[
            r#"service_prefix "" { policy = "deny" }"#,
            r#"service_prefix "web" { policy = "read" }"#,
        ],
        DefaultPolicy::Allow,
    );
    assert!(z.service_read("web-1"));
    assert!(!z.service_read("db"));
}

#[test]
fn duplicates_inside_one_policy_merge_like_separate_policies() {
    let z = authz(
        &[r#"
node "n1" { policy = "write" }
node "n1" { policy = "deny" }
node "n1" { policy = "read" }
"#],
        DefaultPolicy::Allow,
    );
    assert_eq!(rw(&z, Resource::Node, "n1"), (false, false));
}

#[test]
fn list_grants_read_and_list_but_read_does_not_grant_list() {
    let list = authz(
        &[r#"key_prefix "" { policy = "list" }"#],
        DefaultPolicy::Deny,
    );
    assert!(list.key_list("any/") && list.key_read("any/x") && !list.key_write("any/x"));
    // A read rule answers list with a denial, not a fall-through: even
    // default allow does not grant it (Consul's `enforce`).
    let read = authz(
        &[r#"key_prefix "" { policy = "read" }"#],
        DefaultPolicy::Allow,
    );
    assert!(read.key_read("x") && !read.key_list("x"));
}

#[test]
fn a_recursive_delete_needs_write_on_the_prefix_and_everything_under_it() {
    let a = authz(
        &[r#"
key_prefix "" { policy = "write" }
key "foo/keep" { policy = "read" }
key_prefix "bar/" { policy = "read" }
"#],
        DefaultPolicy::Allow,
    );
    assert!(a.key_write_prefix("baz/"), "write and nothing under it");
    assert!(!a.key_write_prefix("foo/"), "an exact read rule under it");
    assert!(!a.key_write_prefix(""), "rules under the root refuse write");
    assert!(!a.key_write_prefix("bar/x"), "a read prefix above it");
    assert!(a.key_write_prefix("foo/keep2"), "not under foo/keep");
    // No prefix rule above, nothing under: the default decides.
    let b = authz(
        &[r#"key "other" { policy = "write" }"#],
        DefaultPolicy::Deny,
    );
    assert!(!b.key_write_prefix("x/"));
    let c = authz(
        &[r#"key "other" { policy = "write" }"#],
        DefaultPolicy::Allow,
    );
    assert!(c.key_write_prefix("x/"));
    assert!(
        c.key_write_prefix("o"),
        "an exact write under it refuses nothing"
    );
}

#[test]
fn read_all_and_write_any_follow_consul() {
    let all = authz(
        &[r#"service_prefix "" { policy = "read" }"#],
        DefaultPolicy::Deny,
    );
    assert!(all.service_read_all());
    assert!(!all.service_write_any());
    let holes = authz(
        &[r#"
service_prefix "" { policy = "read" }
service "secret" { policy = "deny" }
"#],
        DefaultPolicy::Allow,
    );
    assert!(!holes.service_read_all(), "one denied service");
    let one = authz(
        &[r#"service "web" { policy = "write" }"#],
        DefaultPolicy::Deny,
    );
    assert!(one.service_write_any());
    assert!(!one.service_read_all(), "no catch-all: default deny");
    let nodes = authz(
        &[r#"node_prefix "" { policy = "read" }"#],
        DefaultPolicy::Deny,
    );
    assert!(nodes.node_read_all());
}

#[test]
fn names_match_byte_for_byte_with_no_case_folding() {
    let a = authz(
        &[r#"service_prefix "Wé" { policy = "write" }"#],
        DefaultPolicy::Deny,
    );
    assert!(a.service_write("Wéb"));
    assert!(!a.service_write("wéb"));
    assert!(!a.service_write("W"));
}

#[test]
fn a_long_name_and_a_long_rule_are_fine() {
    let long = "a".repeat(60_000);
    let rules = format!("key_prefix \"{long}\" {{ policy = \"write\" }}");
    let a = authz(&[&rules], DefaultPolicy::Deny);
    assert!(a.key_write(&format!("{long}/x")));
    assert!(!a.key_write(&long[..59_999]));
    assert!(a.key_write_prefix(&long));
    assert!(!a.key_write_prefix(""));
}
