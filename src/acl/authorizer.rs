//! The decisions of one token: its policies merged, per resource kind, into a
//! byte trie built once, then the default policy under it. A question is a
//! walk down the trie along the name's bytes (a binary search among a
//! node's children per byte), with no allocation; a kind without rules
//! answers from the default policy at once.

use super::{Access, DefaultPolicy, Need, Policy, Resource};

/// A rule's verdict before the default policy is consulted: Consul's
/// `EnforcementDecision`, where `Default` means "no rule of mine matched".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny,
    Default,
}

fn enforce(access: Option<Access>, need: Need) -> Decision {
    match access {
        Some(a) if a.grants(need) => Decision::Allow,
        Some(_) => Decision::Deny,
        None => Decision::Default,
    }
}

/// One node of a [`Tree`]: the rules whose name ends here, and its children.
#[derive(Debug, Clone, Default)]
struct Node {
    /// The exact rule for the name spelled by the path to this node.
    exact: Option<Access>,
    /// The prefix rule for that name.
    prefix: Option<Access>,
    /// Children by next byte, sorted for binary search.
    children: Vec<(u8, u32)>,
    /// Every rule at this node and below grants write: what
    /// `key_write_prefix` (a recursive delete) needs.
    all_write: bool,
}

/// The rules of one resource kind. Empty (no nodes) when the token has no
/// rule of the kind. Node 0 is the root (the empty name); a child always has
/// a larger index than its parent.
#[derive(Debug, Clone, Default)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Adds a rule, merging with one already there for the same name and
    /// match by Consul's precedence (deny, write, list, read).
    fn insert(&mut self, name: &str, prefix: bool, access: Access) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut at = 0usize;
        for byte in name.bytes() {
            let children = &self.nodes[at].children;
            at = match children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(i) => children[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len();
                    // Node counts are bounded by the rules' total name
                    // length, far below u32::MAX (MAX_RULES_BYTES per policy).
                    self.nodes[at].children.insert(i, (byte, next as u32));
                    self.nodes.push(Node::default());
                    next
                }
            };
        }
        let node = &mut self.nodes[at];
        let slot = if prefix {
            &mut node.prefix
        } else {
            &mut node.exact
        };
        *slot = Some(slot.map_or(access, |old| old.merge(access)));
    }

    /// Fills `all_write` bottom-up without recursion (names can be long):
    /// children come after their parent, so a reverse pass sees them first.
    fn finish(&mut self) {
        for i in (0..self.nodes.len()).rev() {
            let node = &self.nodes[i];
            let own = [node.exact, node.prefix]
                .into_iter()
                .flatten()
                .all(|a| a == Access::Write);
            let below = node
                .children
                .iter()
                .all(|&(_, c)| self.nodes[c as usize].all_write);
            self.nodes[i].all_write = own && below;
        }
    }

    fn child(&self, node: &Node, byte: u8) -> Option<&Node> {
        node.children
            .binary_search_by_key(&byte, |&(b, _)| b)
            .ok()
            .map(|i| &self.nodes[node.children[i].1 as usize])
    }

    /// The rule that applies to `name` (Consul's `getPolicy`): the exact rule
    /// for the whole name if there is one, else the longest prefix rule.
    fn lookup(&self, name: &str) -> Option<Access> {
        let mut node = self.nodes.first()?;
        let mut best = None;
        for byte in name.bytes() {
            if node.prefix.is_some() {
                best = node.prefix;
            }
            match self.child(node, byte) {
                Some(next) => node = next,
                None => return best,
            }
        }
        node.exact.or(node.prefix).or(best)
    }

    /// Consul's `KeyWritePrefix`: allowed when the longest prefix rule at or
    /// above `prefix` grants write and no rule at or under it grants less;
    /// denied when either fails; `Default` when no prefix rule applies and
    /// nothing under it denies.
    fn write_prefix(&self, prefix: &str) -> Decision {
        let Some(mut node) = self.nodes.first() else {
            return Decision::Default;
        };
        let mut base = Decision::Default;
        let mut reached = true;
        for byte in prefix.bytes() {
            base = prefix_base(node, base);
            match self.child(node, byte) {
                Some(next) => node = next,
                None => {
                    reached = false;
                    break;
                }
            }
        }
        if reached {
            base = prefix_base(node, base);
        }
        if base == Decision::Deny || (reached && !node.all_write) {
            return Decision::Deny;
        }
        base
    }

    /// Consul's `allAllowed`: denied if any rule of the kind refuses `need`,
    /// allowed if none does and the catch-all prefix `""` grants it.
    fn all(&self, need: Need) -> Decision {
        let Some(root) = self.nodes.first() else {
            return Decision::Default;
        };
        let refuses = self
            .nodes
            .iter()
            .flat_map(|n| [n.exact, n.prefix])
            .flatten()
            .any(|a| !a.grants(need));
        if refuses {
            Decision::Deny
        } else {
            enforce(root.prefix, need)
        }
    }

    /// Consul's `anyAllowed`: allowed if any rule of the kind grants `need`,
    /// else what the catch-all prefix `""` says.
    fn any(&self, need: Need) -> Decision {
        let Some(root) = self.nodes.first() else {
            return Decision::Default;
        };
        let grants = self
            .nodes
            .iter()
            .flat_map(|n| [n.exact, n.prefix])
            .flatten()
            .any(|a| a.grants(need));
        if grants {
            Decision::Allow
        } else {
            enforce(root.prefix, need)
        }
    }
}

fn prefix_base(node: &Node, base: Decision) -> Decision {
    match node.prefix {
        Some(Access::Write) => Decision::Allow,
        Some(_) => Decision::Deny,
        None => base,
    }
}

/// What one token may do: built once from its policies and the agent's
/// default policy, then asked on every request.
#[derive(Debug, Clone)]
pub struct Authorizer {
    /// The merged rules; `None` for the management token, which may do
    /// everything.
    rules: Option<Box<Rules>>,
}

#[derive(Debug, Clone)]
struct Rules {
    /// One tree per [`Resource`], by [`Resource::index`].
    trees: [Tree; 6],
    operator: Option<Access>,
    acl: Option<Access>,
    keyring: Option<Access>,
    /// Answers where no rule matched.
    default: DefaultPolicy,
}

impl Authorizer {
    /// The authorizer of a token holding `policies`, under the agent's
    /// `default_policy`.
    pub fn new(policies: &[Policy], default: DefaultPolicy) -> Self {
        let mut rules = Rules {
            trees: Default::default(),
            operator: None,
            acl: None,
            keyring: None,
            default,
        };
        for policy in policies {
            for rule in &policy.rules {
                rules.trees[rule.resource.index()].insert(
                    &rule.name,
                    rule.matching == super::Match::Prefix,
                    rule.access,
                );
            }
            for (slot, value) in [
                (&mut rules.operator, policy.operator),
                (&mut rules.acl, policy.acl),
                (&mut rules.keyring, policy.keyring),
            ] {
                if let Some(v) = value {
                    *slot = Some(slot.map_or(v, |old| old.merge(v)));
                }
            }
        }
        for tree in &mut rules.trees {
            tree.finish();
        }
        Self {
            rules: Some(Box::new(rules)),
        }
    }

    /// The management token's authorizer: everything allowed, ACL
    /// management included (Consul's `ManageAll`).
    pub fn management() -> Self {
        Self { rules: None }
    }

    /// The final answer: the token's decision, else the default policy.
    fn decide(&self, f: impl FnOnce(&Rules) -> Decision) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        match f(rules) {
            Decision::Allow => true,
            Decision::Deny => false,
            Decision::Default => rules.default == DefaultPolicy::Allow,
        }
    }

    fn named(&self, resource: Resource, name: &str, need: Need) -> bool {
        self.decide(|r| enforce(r.trees[resource.index()].lookup(name), need))
    }

    /// May read (discover) service `name`.
    pub fn service_read(&self, name: &str) -> bool {
        self.named(Resource::Service, name, Need::Read)
    }

    /// May register or deregister service `name`.
    pub fn service_write(&self, name: &str) -> bool {
        self.named(Resource::Service, name, Need::Write)
    }

    /// May read every service: no service rule refuses read (Consul's
    /// `ServiceReadAll`).
    pub fn service_read_all(&self) -> bool {
        self.decide(|r| r.trees[Resource::Service.index()].all(Need::Read))
    }

    /// May write some service (Consul's `ServiceWriteAny`).
    pub fn service_write_any(&self) -> bool {
        self.decide(|r| r.trees[Resource::Service.index()].any(Need::Write))
    }

    /// May read node `name`.
    pub fn node_read(&self, name: &str) -> bool {
        self.named(Resource::Node, name, Need::Read)
    }

    /// May register or deregister node `name`.
    pub fn node_write(&self, name: &str) -> bool {
        self.named(Resource::Node, name, Need::Write)
    }

    /// May read every node (Consul's `NodeReadAll`).
    pub fn node_read_all(&self) -> bool {
        self.decide(|r| r.trees[Resource::Node.index()].all(Need::Read))
    }

    /// May read KV entry `key`.
    pub fn key_read(&self, key: &str) -> bool {
        self.named(Resource::Key, key, Need::Read)
    }

    /// May list the keys under `prefix`: needs `list` or `write`; `read`
    /// alone does not grant it. Consul asks this only with
    /// `acl.enable_key_list_policy`.
    pub fn key_list(&self, prefix: &str) -> bool {
        self.named(Resource::Key, prefix, Need::List)
    }

    /// May write KV entry `key`.
    pub fn key_write(&self, key: &str) -> bool {
        self.named(Resource::Key, key, Need::Write)
    }

    /// May delete everything under `prefix` (a recursive delete): write on
    /// the prefix and no rule under it that grants less.
    pub fn key_write_prefix(&self, prefix: &str) -> bool {
        self.decide(|r| r.trees[Resource::Key.index()].write_prefix(prefix))
    }

    /// May read the sessions of node `node`.
    pub fn session_read(&self, node: &str) -> bool {
        self.named(Resource::Session, node, Need::Read)
    }

    /// May create, renew or destroy sessions on node `node`.
    pub fn session_write(&self, node: &str) -> bool {
        self.named(Resource::Session, node, Need::Write)
    }

    /// May use the read endpoints of the agent on node `node`.
    pub fn agent_read(&self, node: &str) -> bool {
        self.named(Resource::Agent, node, Need::Read)
    }

    /// May use the changing endpoints of the agent on node `node`
    /// (join, leave, reload, maintenance).
    pub fn agent_write(&self, node: &str) -> bool {
        self.named(Resource::Agent, node, Need::Write)
    }

    /// May read prepared query `name`'s definition.
    pub fn query_read(&self, name: &str) -> bool {
        self.named(Resource::Query, name, Need::Read)
    }

    /// May create, change or delete prepared query `name`.
    pub fn query_write(&self, name: &str) -> bool {
        self.named(Resource::Query, name, Need::Write)
    }

    /// May use the read-only operator endpoints (Raft configuration,
    /// autopilot state).
    pub fn operator_read(&self) -> bool {
        self.decide(|r| enforce(r.operator, Need::Read))
    }

    /// May change the cluster as an operator (remove a Raft peer).
    pub fn operator_write(&self) -> bool {
        self.decide(|r| enforce(r.operator, Need::Write))
    }

    /// May read the gossip keyring.
    pub fn keyring_read(&self) -> bool {
        self.decide(|r| enforce(r.keyring, Need::Read))
    }

    /// May change the gossip keyring.
    pub fn keyring_write(&self) -> bool {
        self.decide(|r| enforce(r.keyring, Need::Write))
    }

    /// May read tokens and policies. Never from `default_policy = "allow"`
    /// alone: Consul's allow-all still refuses ACL management.
    pub fn acl_read(&self) -> bool {
        self.acl(Need::Read)
    }

    /// May create, change or delete tokens and policies; as
    /// [`Authorizer::acl_read`], never from the default policy.
    pub fn acl_write(&self) -> bool {
        self.acl(Need::Write)
    }

    fn acl(&self, need: Need) -> bool {
        match &self.rules {
            None => true,
            Some(r) => enforce(r.acl, need) == Decision::Allow,
        }
    }
}

#[cfg(test)]
mod tests;
