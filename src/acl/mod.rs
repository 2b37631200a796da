//! ACL policies and the decisions they make: Consul's rules language, parsed
//! into typed [`Policy`]s ([`rules`]), and the [`Authorizer`] a token's
//! policies become ([`authorizer`]). Pure: no I/O, no clock, no catalog.
//!
//! # What we follow of Consul
//!
//! Rule kinds (Consul's `acl/policy.go`): `service`, `node`, `key`,
//! `session`, `agent`, `query`, each as an exact rule (`service "web"`) and
//! a prefix rule (`service_prefix "web"`), with `policy = "read" | "write" |
//! "deny"`, and `"list"` on `key`/`key_prefix` only; and the single-value
//! rules `operator`, `acl` and `keyring`. Both of Consul's spellings parse:
//! HCL, and JSON when the text starts with `{` (as Consul's HCL decoder
//! decides). Consul's other kinds (`event`, `mesh`, `peering`, `identity`,
//! Enterprise's `namespace`/`partition`, a service rule's `intentions`)
//! are refused as "not supported by trellis", and anything else as unknown:
//! Consul's decoder ignores unknown keys, so a typo there silently grants
//! nothing; here it fails loudly with its line.
//!
//! Matching (`acl/policy_authorizer.go`, `getPolicy`): among the rules of one
//! kind, the longest prefix rule that is a prefix of the name applies,
//! except that an exact rule for the whole name beats a prefix rule of the
//! same length. So `service_prefix "" { policy = "read" }` plus
//! `service "web" { policy = "deny" }` reads every service but `web`.
//!
//! Levels (`enforce`): `write` grants read, list and write; `list` grants
//! read and list; `read` only read; `deny` nothing, and stops the search.
//! `read` does not grant list: Consul checks `key_list` only when the agent
//! sets `acl.enable_key_list_policy`, and otherwise filters a listing by
//! [`Authorizer::key_read`] per key.
//!
//! Several policies of one token (`acl/policy_merger.go`, `MergePolicies`,
//! and `takesPrecedenceOver` in `acl/policy.go`): rules for the same kind and
//! the same name merge to one, `deny` winning over `write` over `list` over
//! `read`, whichever policy they came from; rules for different names stay
//! apart and the matching above picks among them. Duplicates inside one
//! policy merge the same way.
//!
//! The default policy (`acl/chained_authorizer.go`, `acl/static_authorizer.go`):
//! a token's merged rules answer first; where no rule of the kind matches,
//! `default_policy` answers: `allow` grants everything except ACL management
//! (`acl_read`/`acl_write` stay denied), `deny` grants nothing. The
//! management token ([`Authorizer::management`]) grants everything.
//!
//! # Where it is used
//!
//! Pure as it is, this module is the vocabulary of the ACL system: the
//! catalog keeps tokens and policies and resolves every token into an
//! [`Authorizer`] (`catalog/tokens.rs`), the HTTP API asks it per request
//! (`http/route.rs`), DNS asks it as the agent's default token
//! (`dns/access.rs`), and a server asks it for a peer removal a client
//! agent forwards (`consensus/serve.rs`).

pub mod authorizer;
pub mod rules;

use std::fmt;

pub use authorizer::Authorizer;
pub use rules::{RulesError, parse};

/// What a rule grants: Consul's four policy words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `read`: read only.
    Read,
    /// `list`: read and list (keys only).
    List,
    /// `write`: read, list and write.
    Write,
    /// `deny`: nothing, and no shorter prefix rule is consulted.
    Deny,
}

impl Access {
    /// The word as it appears in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::List => "list",
            Self::Write => "write",
            Self::Deny => "deny",
        }
    }

    /// Which of two levels for the same rule survives a merge:
    /// Consul's `takesPrecedenceOver` (`acl/policy.go`), deny over write
    /// over list over read.
    pub fn merge(self, other: Self) -> Self {
        fn rank(a: Access) -> u8 {
            match a {
                Access::Read => 0,
                Access::List => 1,
                Access::Write => 2,
                Access::Deny => 3,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// Whether this level grants `need` (Consul's `enforce`).
    fn grants(self, need: Need) -> bool {
        match self {
            Self::Write => true,
            Self::List => matches!(need, Need::Read | Need::List),
            Self::Read => matches!(need, Need::Read),
            Self::Deny => false,
        }
    }
}

/// The permission an operation requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    List,
    Write,
}

/// The kinds of resource a named rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Services, by service name.
    Service,
    /// Nodes, by node name.
    Node,
    /// KV entries, by key.
    Key,
    /// Sessions, by the name of the node they are tied to.
    Session,
    /// The agent endpoints, by the agent's node name.
    Agent,
    /// Prepared queries, by query name.
    Query,
}

impl Resource {
    /// Every kind, in the order of [`Resource::index`].
    pub const ALL: [Self; 6] = [
        Self::Service,
        Self::Node,
        Self::Key,
        Self::Session,
        Self::Agent,
        Self::Query,
    ];

    /// A dense index, for tables with one slot per kind.
    pub fn index(self) -> usize {
        match self {
            Self::Service => 0,
            Self::Node => 1,
            Self::Key => 2,
            Self::Session => 3,
            Self::Agent => 4,
            Self::Query => 5,
        }
    }

    /// The rule keyword for an exact or a prefix rule of this kind.
    pub fn keyword(self, matching: Match) -> &'static str {
        match (self, matching) {
            (Self::Service, Match::Exact) => "service",
            (Self::Service, Match::Prefix) => "service_prefix",
            (Self::Node, Match::Exact) => "node",
            (Self::Node, Match::Prefix) => "node_prefix",
            (Self::Key, Match::Exact) => "key",
            (Self::Key, Match::Prefix) => "key_prefix",
            (Self::Session, Match::Exact) => "session",
            (Self::Session, Match::Prefix) => "session_prefix",
            (Self::Agent, Match::Exact) => "agent",
            (Self::Agent, Match::Prefix) => "agent_prefix",
            (Self::Query, Match::Exact) => "query",
            (Self::Query, Match::Prefix) => "query_prefix",
        }
    }

    /// The kind and match a rule keyword names, if it is one of ours.
    pub fn from_keyword(word: &str) -> Option<(Self, Match)> {
        Self::ALL.into_iter().find_map(|r| {
            [Match::Exact, Match::Prefix]
                .into_iter()
                .find(|m| r.keyword(*m) == word)
                .map(|m| (r, m))
        })
    }
}

/// Whether a named rule covers one name or every name that starts with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Match {
    /// `service "web"`: the name `web` only.
    Exact,
    /// `service_prefix "web"`: every name starting with `web`.
    Prefix,
}

/// One named rule: `service_prefix "web" { policy = "read" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What kind of thing it covers.
    pub resource: Resource,
    /// One name or a prefix.
    pub matching: Match,
    /// The name or the prefix; empty is a valid prefix (everything).
    pub name: String,
    /// What it grants.
    pub access: Access,
}

/// One parsed policy: its named rules in source order, and the three
/// single-value rules (absent when the text does not set them, which is not
/// the same as `deny`: an absent rule leaves the decision to other policies
/// and the default policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The named rules, as written.
    pub rules: Vec<Rule>,
    /// `operator = "..."`: Raft peers, autopilot, the operator endpoints.
    pub operator: Option<Access>,
    /// `acl = "..."`: reading and managing tokens and policies.
    pub acl: Option<Access>,
    /// `keyring = "..."`: the gossip encryption keyring.
    pub keyring: Option<Access>,
}

impl Policy {
    /// The policy in HCL, in a form [`parse`] reads back to an equal policy.
    pub fn to_hcl(&self) -> String {
        let mut out = String::new();
        for (word, value) in self.globals() {
            out.push_str(&format!("{word} = \"{}\"\n", value.as_str()));
        }
        for rule in &self.rules {
            out.push_str(&format!(
                "{} \"{}\" {{\n  policy = \"{}\"\n}}\n",
                rule.resource.keyword(rule.matching),
                hcl_escape(&rule.name),
                rule.access.as_str()
            ));
        }
        out
    }

    /// The policy in Consul's JSON form, one array entry per rule so
    /// duplicates and order survive; [`parse`] reads it back to an equal
    /// policy.
    pub fn to_json(&self) -> String {
        let mut top = serde_json::Map::new();
        for (word, value) in self.globals() {
            top.insert(word.to_owned(), value.as_str().into());
        }
        for rule in &self.rules {
            let entry = serde_json::json!({ &rule.name: { "policy": rule.access.as_str() } });
            let list = top
                .entry(rule.resource.keyword(rule.matching))
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(list) = list {
                list.push(entry);
            }
        }
        serde_json::Value::Object(top).to_string()
    }

    fn globals(&self) -> impl Iterator<Item = (&'static str, Access)> {
        [
            ("operator", self.operator),
            ("acl", self.acl),
            ("keyring", self.keyring),
        ]
        .into_iter()
        .filter_map(|(word, value)| value.map(|v| (word, v)))
    }
}

/// A name as an HCL quoted string's content: escapes, and the template
/// openers `${` and `%{` doubled so they stay literal.
fn hcl_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// What answers when no rule of a token matches: the agent's
/// `acl.default_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultPolicy {
    /// Everything not denied is allowed, except ACL management.
    #[default]
    Allow,
    /// Everything not granted is denied.
    Deny,
}

impl std::str::FromStr for DefaultPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            other => Err(format!(
                "invalid default policy {other:?}: expected \"allow\" or \"deny\""
            )),
        }
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}
