//! The rules parser: Consul's documented forms in HCL and JSON, every
//! refusal naming its line or rule, the limits, and properties: no input
//! panics, and a policy written back as HCL or JSON parses to itself.

use proptest::prelude::*;

use super::*;
use crate::acl::{Authorizer, DefaultPolicy};

fn rule(resource: Resource, matching: Match, name: &str, access: Access) -> Rule {
    Rule {
        resource,
        matching,
        name: name.into(),
        access,
    }
}

fn message(text: &str) -> String {
    parse(text).expect_err("refused").to_string()
}

#[test]
fn the_documented_hcl_policy_parses_to_its_rules_in_order() {
    let policy = parse(
        r#"
# Consul's example: read everything, write under foo/, hide foo/private/.
key_prefix "" {
  policy = "read"
}
key_prefix "foo/" { policy = "write" }
key_prefix "foo/private/" { policy = "deny" }
key "foo/list" { policy = "list" }
service_prefix "" { policy = "read" }
service "web" { policy = "write" }
node_prefix "" { policy = "read" }
node "n1" { policy = "write" }
session_prefix "" { policy = "write" }
session "n1" { policy = "deny" }
agent_prefix "" { policy = "read" }
agent "n1" { policy = "write" }
query_prefix "" { policy = "read" }
query "q" { policy = "write" }
operator = "read"
acl = "write"
keyring = "deny"
"#,
    )
    .expect("parses");
    use Access::*;
    use Match::*;
    use Resource::*;
    assert_eq!(
        policy.rules,
        vec![
            rule(Key, Prefix, "", Read),
            rule(Key, Prefix, "foo/", Write),
            rule(Key, Prefix, "foo/private/", Deny),
            rule(Key, Exact, "foo/list", List),
            rule(Service, Prefix, "", Read),
            rule(Service, Exact, "web", Write),
            rule(Node, Prefix, "", Read),
            rule(Node, Exact, "n1", Write),
            rule(Session, Prefix, "", Write),
            rule(Session, Exact, "n1", Deny),
            rule(Agent, Prefix, "", Read),
            rule(Agent, Exact, "n1", Write),
            rule(Query, Prefix, "", Read),
            rule(Query, Exact, "q", Write),
        ]
    );
    assert_eq!(policy.operator, Some(Read));
    assert_eq!(policy.acl, Some(Write));
    assert_eq!(policy.keyring, Some(Deny));
}

#[test]
fn the_json_form_parses_to_the_same_policy_as_the_hcl() {
    let hcl = parse(
        r#"
service_prefix "" { policy = "read" }
service "web" { policy = "write" }
key_prefix "app/" { policy = "list" }
operator = "read"
"#,
    )
    .expect("hcl");
    let json = parse(
        r#"{
  "service_prefix": { "": { "policy": "read" } },
  "service": { "web": { "policy": "write" } },
  "key_prefix": [ { "app/": [ { "policy": "list" } ] } ],
  "operator": "read"
}"#,
    )
    .expect("json");
    assert_eq!(hcl, json);
}

#[test]
fn blank_text_is_the_empty_policy() {
    assert_eq!(parse("").expect("empty"), Policy::default());
    assert_eq!(
        parse("  \n# nothing\n").expect("comment"),
        Policy::default()
    );
    assert_eq!(parse("{}").expect("json"), Policy::default());
}

#[test]
fn each_refusal_names_the_line_or_the_rule() {
    for (text, want) in [
        (
            "service \"a\" { policy = \"read\" }\nevent_prefix \"\" { policy = \"read\" }",
            "line 2: event_prefix rules are not supported by trellis",
        ),
        (
            "\n\nservcie_prefix \"\" { policy = \"read\" }",
            "line 3: unknown rule \"servcie_prefix\"",
        ),
        (
            "service \"web\" { policy = \"admin\" }",
            "line 1: invalid service \"web\" policy \"admin\": expected read, write or deny",
        ),
        (
            "service_prefix \"\" { policy = \"list\" }",
            "invalid service_prefix \"\" policy \"list\"",
        ),
        ("node \"n\" { }", "line 1: node \"n\" has no policy"),
        (
            "node \"n\" \"m\" { policy = \"read\" }",
            "line 1: node takes one name",
        ),
        ("node { policy = \"read\" }", "line 1: node takes one name"),
        (
            "service \"web\" {\n  policy = \"read\"\n  intentions = \"read\"\n}",
            "line 1: service: intentions are not supported by trellis",
        ),
        (
            "key \"k\" {\n policy = \"read\"\n sentinel { code = \"x\" }\n}",
            "line 1: key: unexpected block \"sentinel\"",
        ),
        (
            "key \"k\" { polcy = \"read\" }",
            "key: unknown field \"polcy\"",
        ),
        (
            "operator { policy = \"read\" }",
            "operator takes a value: operator = \"read\"",
        ),
        ("service_prefix = \"read\"", "service_prefix is a block"),
        ("operator = read", "operator must be a quoted string"),
        (
            "operator = \"read\"\noperator = \"write\"",
            "line 2, column 1: invalid attribute",
        ),
        ("operator = \"READ\"", "invalid operator policy \"READ\""),
        ("operator = \"list\"", "invalid operator policy \"list\""),
        (
            "key \"${x}\" { policy = \"read\" }",
            "line 1: templates (${…}, %{…}) are not allowed",
        ),
        (
            "service \"a\" { policy = \"${var.p}\" }",
            "line 1: templates",
        ),
        (
            "service \"a\" {\n policy = \"read\"\n",
            "Failed to parse ACL rules: line",
        ),
        (
            r#"{"service": {"web": {"policy": "own"}}}"#,
            "rule service \"web\": invalid service \"web\" policy \"own\"",
        ),
        (
            r#"{"event": {"": {"policy": "read"}}}"#,
            "rule event: event rules are not supported by trellis",
        ),
        (
            r#"{"service": {"web": {"policy": 1}}}"#,
            "policy must be a string",
        ),
        (r#"{"operator": 2}"#, "operator must be a string"),
        (r#"{"service": "web"}"#, "service must map names"),
        (
            "{\n\"service\": {\"web\": \n{\"policy\": \"read\",}}}",
            "Failed to parse ACL rules: line 3",
        ),
    ] {
        let got = message(text);
        assert!(got.contains(want), "{text:?}: {got:?} lacks {want:?}");
    }
}

#[test]
fn names_with_quotes_escapes_and_template_openers_write_back_as_themselves() {
    for name in [
        "a\"b",
        "c\\d",
        "${x}",
        "$${y}",
        "%{if}",
        "line\nbreak\t\u{1}",
        "é☃",
        "$",
        "%",
    ] {
        let policy = Policy {
            rules: vec![rule(Resource::Key, Match::Prefix, name, Access::Write)],
            ..Policy::default()
        };
        assert_eq!(
            parse(&policy.to_hcl()),
            Ok(policy.clone()),
            "{}",
            policy.to_hcl()
        );
        assert_eq!(
            parse(&policy.to_json()),
            Ok(policy.clone()),
            "{}",
            policy.to_json()
        );
    }
}

#[test]
fn duplicate_json_members_are_all_kept_so_the_merge_sees_the_deny() {
    let policy = parse(r#"{"service": {"web": {"policy": "write"}, "web": {"policy": "deny"}}}"#)
        .expect("parses");
    assert_eq!(policy.rules.len(), 2);
    let authz = Authorizer::new(&[policy], DefaultPolicy::Allow);
    assert!(!authz.service_read("web"));
}

#[test]
fn nested_expressions_the_parser_would_backtrack_on_are_refused_first() {
    // Found by the acl_rules fuzz target: 370 bytes that took hcl-edit over
    // five seconds. The message is the pre-scan's, so the parser never ran.
    let slow = include_str!("slow_nesting.hcl");
    assert!(
        message(slow).contains("nested too deep"),
        "{}",
        message(slow)
    );
    // And one whose strings ran over lines, so a lexer that ended them at
    // the newline lost track of which braces were inside them.
    let slow = include_str!("slow_strings.hcl");
    assert!(
        message(slow).contains("line 1: a quoted string does not end on its line"),
        "{}",
        message(slow)
    );
    for (text, want) in [
        ("a = { b = { c = [1] } }", "line 1: nested too deep"),
        ("\n\nk = [[[1]]]", "line 3: nested too deep"),
        ("x = \"${a}\"", "line 1: templates"),
        ("x = \"%{ if a }\"", "line 1: templates"),
        ("x = <<EOT\nhi\nEOT\n", "line 1: heredocs"),
        ("\nx = \"a\\\nb\"", "line 2: a quoted string does not end"),
    ] {
        let got = message(text);
        assert!(got.contains(want), "{text:?}: {got:?} lacks {want:?}");
    }
    // Braces in names and comments, and escaped openers, do not count.
    let ok = "# {{{ [[[ (((\n/* {{{\n */ key_prefix \"{{{$${x}%%{y}$$${z}\" { // {{{\n policy = \"read\"\n}";
    let policy = parse(ok).expect("parses");
    assert_eq!(policy.rules[0].name, "{{{${x}%{y}$${z}");
}

#[test]
fn text_over_the_size_limit_is_refused_before_parsing() {
    let text = " ".repeat(MAX_RULES_BYTES + 1);
    assert_eq!(
        parse(&text),
        Err(RulesError::TooLarge {
            len: MAX_RULES_BYTES + 1
        })
    );
}

#[test]
fn more_rules_than_the_limit_are_refused_naming_the_first_over() {
    let line = "node \"\" { policy = \"read\" }\n";
    let at_limit = line.repeat(MAX_RULES);
    assert_eq!(
        parse(&at_limit).expect("at the limit").rules.len(),
        MAX_RULES
    );
    let over = line.repeat(MAX_RULES + 1);
    assert_eq!(
        parse(&over),
        Err(RulesError::TooMany {
            at: At::Line(MAX_RULES + 1)
        })
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // Each runs on the test thread's small stack; a recursion without a
    // bound would abort the whole test binary.
    let half = MAX_RULES_BYTES / 2 - 8;
    for text in [
        format!("a = {}", "[".repeat(half)),
        format!("a = {}", "(".repeat(half)),
        format!("a = {}1", "!".repeat(half)),
        format!("a = {}1", "-".repeat(half)),
        format!("a = \"{}", "${".repeat(half / 2)),
        "a {".repeat(half / 3),
        format!("a = {}1", "a ? b : ".repeat(half / 8)),
        format!("a = {}1", "a ? ".repeat(half / 4)),
        format!("a = 1{}", " + 1".repeat(half / 4)),
        format!("a = x{}", ".y".repeat(half / 2)),
        format!("a = x{}", "[*]".repeat(half / 3)),
        format!("a = {}", "f(".repeat(half / 2)),
        format!("{{\"a\": {}", "[".repeat(half)),
        format!("{{\"a\": {}", "{\"a\":".repeat(half / 5)),
    ] {
        assert!(parse(&text).is_err(), "{}", &text[..20]);
    }
}

/// A rule kind and a level it accepts.
fn any_rule() -> impl Strategy<Value = Rule> {
    (
        prop::sample::select(Resource::ALL.to_vec()),
        prop::bool::ANY,
        // Names with the characters HCL and JSON must escape, template
        // openers, and multi-byte characters.
        prop::string::string_regex(r#"([a-z0-9/_.\-]|"|\\|\$\{|%\{|\$|%|\{|\n|\t|\x01|é|☃){0,12}"#)
            .expect("regex"),
        prop::sample::select(vec![
            Access::Read,
            Access::List,
            Access::Write,
            Access::Deny,
        ]),
    )
        .prop_map(|(resource, exact, name, access)| Rule {
            resource,
            matching: if exact { Match::Exact } else { Match::Prefix },
            access: if access == Access::List && resource != Resource::Key {
                Access::Read
            } else {
                access
            },
            name,
        })
}

fn any_level() -> impl Strategy<Value = Option<Access>> {
    prop::sample::select(vec![
        None,
        Some(Access::Read),
        Some(Access::Write),
        Some(Access::Deny),
    ])
}

fn any_policy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec(any_rule(), 0..12),
        any_level(),
        any_level(),
        any_level(),
    )
        .prop_map(|(rules, operator, acl, keyring)| Policy {
            rules,
            operator,
            acl,
            keyring,
        })
}

/// Every question the authorizer answers, for one name.
fn answers(a: &Authorizer, name: &str) -> Vec<bool> {
    vec![
        a.service_read(name),
        a.service_write(name),
        a.node_read(name),
        a.node_write(name),
        a.key_read(name),
        a.key_list(name),
        a.key_write(name),
        a.key_write_prefix(name),
        a.session_read(name),
        a.session_write(name),
        a.agent_read(name),
        a.agent_write(name),
        a.query_read(name),
        a.query_write(name),
        a.operator_read(),
        a.operator_write(),
        a.acl_read(),
        a.acl_write(),
        a.keyring_read(),
        a.keyring_write(),
        a.service_read_all(),
        a.service_write_any(),
        a.node_read_all(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_text_makes_the_parser_panic(text in ".{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn no_rules_like_text_makes_the_parser_panic(
        parts in prop::collection::vec(prop::sample::select(vec![
            "service", "key_prefix", "operator", "policy", " = ", "\"read\"", "\"list\"",
            "\"", "{", "}", "[", "]", "\n", " ", "${", "#", "//", "/*", "*/", "<<EOT\n",
            "EOT", ":", ",", "1", "null", "true", "\\", "é",
        ]), 0..40)
    ) {
        let text: String = parts.concat();
        let _ = parse(&text);
    }

    #[test]
    fn a_policy_written_as_hcl_or_json_parses_to_itself_and_authorizes_the_same(
        policy in any_policy(),
        names in prop::collection::vec("[a-z/é]{0,4}", 1..6),
    ) {
        let from_hcl = parse(&policy.to_hcl());
        prop_assert_eq!(from_hcl.as_ref(), Ok(&policy), "hcl:\n{}", policy.to_hcl());
        // JSON objects keep the rules of one keyword in order, not the
        // order between keywords, which no decision depends on.
        let by_keyword = |p: &Policy| {
            let mut p = p.clone();
            p.rules.sort_by_key(|r| r.resource.keyword(r.matching));
            p
        };
        let from_json = parse(&policy.to_json()).map(|p| by_keyword(&p));
        prop_assert_eq!(from_json, Ok(by_keyword(&policy)), "json: {}", policy.to_json());
        for default in [DefaultPolicy::Allow, DefaultPolicy::Deny] {
            let want = Authorizer::new(std::slice::from_ref(&policy), default);
            let got = Authorizer::new(&[from_hcl.clone().unwrap_or_default()], default);
            let names = names.iter().map(String::as_str)
                .chain(policy.rules.iter().map(|r| r.name.as_str()));
            for name in names {
                prop_assert_eq!(answers(&want, name), answers(&got, name), "{:?}", name);
            }
        }
    }
}
