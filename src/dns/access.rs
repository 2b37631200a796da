//! Who DNS answers as. With ACLs on, every lookup in the catalog answers as
//! the agent's default token (`acl.tokens.default`), else the anonymous
//! token, as Consul 1.15–1.20 does (`tokens.UserToken()`): a service's
//! instance is answered only if the token may read the service and the
//! instance's node (Consul's `filterCheckServiceNodes`), a node only if it
//! may read the node. What is filtered away does not exist: a name left
//! with nothing is NXDOMAIN, never a refusal that would tell it exists. A
//! default token the replica does not know is Consul's "ACL not found" on
//! the server side, which its DNS answers with SERVFAIL.
//!
//! The token is resolved from the replica's published [`Tokens`], by the
//! hash of its secret computed once at start: a map lookup per answer
//! (fast path or responder), and nothing at all with ACLs off.

use crate::acl::Authorizer;
use crate::catalog::{ANONYMOUS_SECRET_ID, SecretHash, Tokens, secret_hash};
use crate::config::DnsSettings;

/// What a lookup may see.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// ACLs are off: everything.
    Anyone,
    /// What this token may read.
    Token(&'a Authorizer),
    /// ACLs are on and the token DNS answers as is unknown: catalog
    /// lookups fail (SERVFAIL), as Consul's do.
    Unknown,
}

impl Caller<'_> {
    /// May see the instances of service `service` on node `node`.
    pub(super) fn reads_instance(&self, service: &str, node: &str) -> bool {
        match self {
            Self::Anyone => true,
            Self::Token(a) => a.service_read(service) && a.node_read(node),
            Self::Unknown => false,
        }
    }

    /// May see node `node`.
    pub(super) fn reads_node(&self, node: &str) -> bool {
        match self {
            Self::Anyone => true,
            Self::Token(a) => a.node_read(node),
            Self::Unknown => false,
        }
    }

    /// Whether the token DNS answers as is unknown.
    pub(super) fn unknown(&self) -> bool {
        matches!(self, Self::Unknown)
    }
}

/// The token DNS answers as, fixed at start; there is one only with ACLs
/// on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsToken {
    /// The hash of `acl.tokens.default`; `None` for the anonymous token
    /// (no default token, or the anonymous token's own secret).
    hash: Option<SecretHash>,
}

impl DnsToken {
    /// The token `settings` name (`acl_token`): `None` when ACLs are off.
    pub(crate) fn new(settings: &DnsSettings) -> Option<Self> {
        let secret = settings.acl_token.as_deref()?;
        Some(Self {
            hash: (!secret.is_empty() && secret != ANONYMOUS_SECRET_ID)
                .then(|| secret_hash(secret)),
        })
    }

    /// The token resolved in `tokens` (the replica's, `None` if it has not
    /// resolved any): [`Self::resolve`], shared, for what outlives the
    /// lookup (a prepared query's execution); `None` when unknown.
    pub(crate) fn resolve_shared(
        &self,
        tokens: Option<&Tokens>,
    ) -> Option<std::sync::Arc<Authorizer>> {
        let tokens = tokens?;
        let resolved = match &self.hash {
            None => Some(tokens.anonymous()),
            Some(hash) => tokens.by_hash(hash),
        };
        resolved.map(|r| r.authorizer.clone())
    }

    /// The token resolved in `tokens` (the replica's, `None` if it has not
    /// resolved any, which with ACLs on is never the case once the agent
    /// serves: then it is unknown, so nothing is answered by mistake).
    pub(crate) fn resolve<'a>(&self, tokens: Option<&'a Tokens>) -> Caller<'a> {
        let Some(tokens) = tokens else {
            return Caller::Unknown;
        };
        let resolved = match &self.hash {
            None => Some(tokens.anonymous()),
            Some(hash) => tokens.by_hash(hash),
        };
        resolved.map_or(Caller::Unknown, |r| Caller::Token(&r.authorizer))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::IpAddr;

    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::acl::DefaultPolicy;
    use crate::catalog::{AclContext, AclOp, AclPolicy, AclToken, Command, Outcome, Replica};
    use crate::config::defaults::DATACENTER;
    use crate::dns::fit::Transport;
    use crate::dns::respond::{Reply, Responder};
    use crate::dns::{fixture, zones::Zones};

    /// An authorizer of `rules` under default deny.
    fn token(rules: &str) -> Authorizer {
        Authorizer::new(
            &[crate::acl::parse(rules).expect("rules")],
            DefaultPolicy::Deny,
        )
    }

    fn ask(caller: Caller<'_>, name: &str, qtype: RecordType) -> Message {
        let replica = fixture::replica();
        let responder =
            Responder::with_zones(&DnsSettings::default(), DATACENTER, Zones::default())
                .expect("responder");
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        match responder.respond_to_as(&replica.view(), caller, q, Transport::Tcp) {
            Reply::Respond(m) => m,
            other => panic!("expected a response for {name}, got {other:?}"),
        }
    }

    fn ips(m: &Message) -> HashSet<IpAddr> {
        m.answers.iter().filter_map(|r| r.data.ip_addr()).collect()
    }

    fn nxdomain(m: &Message) -> bool {
        m.metadata.response_code == ResponseCode::NXDomain
            && m.answers.is_empty()
            && m.authorities
                .first()
                .is_some_and(|r| r.record_type() == RecordType::SOA)
    }

    #[test]
    fn default_deny_hides_every_service_and_node_as_nxdomain() {
        let none = token("");
        for name in [
            "web.service.consul.",
            "n1.node.consul.",
            "primary.web.service.consul.",
        ] {
            let m = ask(Caller::Token(&none), name, RecordType::A);
            assert!(nxdomain(&m), "{name}: {m:?}");
        }
        // Names that read nothing of the catalog still answer.
        let soa = ask(Caller::Token(&none), "consul.", RecordType::SOA);
        assert_eq!(soa.metadata.response_code, ResponseCode::NoError);
        assert_eq!(soa.answers.len(), 1);
        // But the servers' NS records name nodes the token may not read.
        assert!(soa.authorities.is_empty(), "{:?}", soa.authorities);
        let addr = ask(Caller::Token(&none), "0a000001.addr.consul.", RecordType::A);
        assert_eq!(ips(&addr), HashSet::from(["10.0.0.1".parse().unwrap()]));
    }

    #[test]
    fn an_instance_needs_read_on_its_service_and_on_its_node() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let everything = ask(Caller::Anyone, "web.service.consul.", RecordType::A);
        assert_eq!(
            ips(&everything),
            HashSet::from([ip("10.0.0.1"), ip("10.0.0.2")])
        );

        let one_node = token(
            r#"service_prefix "" { policy = "read" }
node "n1" { policy = "read" }"#,
        );
        let m = ask(
            Caller::Token(&one_node),
            "web.service.consul.",
            RecordType::A,
        );
        assert_eq!(ips(&m), HashSet::from([ip("10.0.0.1")]));
        // SRV leaves the instance out too, and its target with it.
        let srv = ask(
            Caller::Token(&one_node),
            "web.service.consul.",
            RecordType::SRV,
        );
        assert_eq!(srv.answers.len(), 1, "{:?}", srv.answers);

        // Nodes without the service: nothing.
        let nodes_only = token(r#"node_prefix "" { policy = "read" }"#);
        let m = ask(
            Caller::Token(&nodes_only),
            "web.service.consul.",
            RecordType::A,
        );
        assert!(nxdomain(&m), "{m:?}");

        // A deny on the service wins over the prefix.
        let not_web = token(
            r#"service_prefix "" { policy = "read" }
service "web" { policy = "deny" }
node_prefix "" { policy = "read" }"#,
        );
        assert!(nxdomain(&ask(
            Caller::Token(&not_web),
            "web.service.consul.",
            RecordType::A
        )));
        let alt = ask(
            Caller::Token(&not_web),
            "alt.service.consul.",
            RecordType::A,
        );
        assert_eq!(ips(&alt), HashSet::from([ip("10.9.9.9")]));
    }

    #[test]
    fn a_node_needs_node_read_for_addresses_and_meta() {
        let n1 = token(r#"node "n1" { policy = "read" }"#);
        let m = ask(Caller::Token(&n1), "n1.node.consul.", RecordType::ANY);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.iter().any(|r| r.record_type() == RecordType::TXT));
        assert!(nxdomain(&ask(
            Caller::Token(&n1),
            "n2.node.consul.",
            RecordType::A
        )));
    }

    #[test]
    fn reverse_names_and_nameservers_show_only_what_may_be_read() {
        let ptr = |caller| ask(caller, "1.0.0.10.in-addr.arpa.", RecordType::PTR);
        assert!(!ptr(Caller::Anyone).answers.is_empty());
        let none = token("");
        // Nothing readable has the address: not ours to answer, and
        // without recursors an unknown reverse name is NXDOMAIN.
        assert!(nxdomain(&ptr(Caller::Token(&none))));

        let servers = token(
            r#"service "consul" { policy = "read" }
node "n1" { policy = "read" }"#,
        );
        let ns = ask(Caller::Token(&servers), "consul.", RecordType::NS);
        assert_eq!(ns.answers.len(), 1, "{:?}", ns.answers);
        let ns = ask(Caller::Token(&none), "consul.", RecordType::NS);
        assert!(ns.answers.is_empty(), "{:?}", ns.answers);
    }

    #[test]
    fn an_unknown_token_fails_catalog_lookups_with_servfail() {
        for name in ["web.service.consul.", "n1.node.consul."] {
            let m = ask(Caller::Unknown, name, RecordType::A);
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{name}");
            assert!(m.answers.is_empty());
        }
    }

    /// A replica holding `web` with ACLs resolved under default deny.
    fn acl_replica() -> std::sync::Arc<Replica> {
        let replica = fixture::replica();
        replica.enable_acl(AclContext {
            default: DefaultPolicy::Deny,
            datacenter: DATACENTER.into(),
        });
        replica
    }

    fn apply(replica: &Replica, op: AclOp) {
        let at = replica.applied_index() + 1;
        let outcome = replica.apply(at, &Command::Acl(op));
        assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
    }

    fn acl_token(accessor: &str, secret: &str, policies: &[&str]) -> AclToken {
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

    fn read_all_policy() -> AclPolicy {
        AclPolicy {
            id: "7e0e5d29-0000-4000-8000-000000000001".into(),
            name: "read-all".into(),
            description: String::new(),
            rules: r#"service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }"#
                .into(),
            datacenters: Vec::new(),
            create_index: 0,
            modify_index: 0,
        }
    }

    #[test]
    fn the_token_is_acl_tokens_default_else_anonymous_and_none_with_acls_off() {
        let dns = |acl_token: Option<&str>| DnsSettings {
            acl_token: acl_token.map(str::to_owned),
            ..DnsSettings::default()
        };
        assert_eq!(DnsToken::new(&dns(None)), None);

        let replica = acl_replica();
        apply(&replica, AclOp::SetPolicy(read_all_policy()));
        apply(
            &replica,
            AclOp::SetToken(acl_token(
                "2b5d7c1e-0000-4000-8000-000000000002",
                "dns-secret",
                &[&read_all_policy().id],
            )),
        );
        let tokens = replica.tokens().expect("ACLs are on");
        let may_read_web = |acl_token: &str| {
            let token = DnsToken::new(&dns(Some(acl_token))).expect("ACLs are on");
            match token.resolve(Some(&tokens)) {
                Caller::Token(a) => Some(a.service_read("web")),
                Caller::Unknown => None,
                Caller::Anyone => panic!("ACLs are on"),
            }
        };
        // The default token's policies.
        assert_eq!(may_read_web("dns-secret"), Some(true));
        // No default token, or the anonymous token's own secret: anonymous,
        // which has no policy here.
        assert_eq!(may_read_web(""), Some(false));
        assert_eq!(may_read_web(ANONYMOUS_SECRET_ID), Some(false));
        // A secret the replica does not know.
        assert_eq!(may_read_web("no-such-secret"), None);
        // No tokens resolved at all: unknown, never everything.
        let token = DnsToken::new(&dns(Some(""))).expect("on");
        assert!(token.resolve(None).unknown());
    }

    /// What the checks cost an answer of the responder:
    /// `big` has 50 instances, each checked for its service and its node.
    /// Run with `cargo test --release --lib responder_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn responder_cost_with_and_without_a_token() {
        let replica = fixture::replica();
        let view = replica.view();
        let responder =
            Responder::with_zones(&DnsSettings::default(), DATACENTER, Zones::default())
                .expect("responder");
        let read_all = token(
            r#"service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }"#,
        );
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("big.service.consul.").expect("name"),
            RecordType::A,
        ));
        for (label, caller) in [
            ("ACLs off", Caller::Anyone),
            ("ACLs on", Caller::Token(&read_all)),
        ] {
            let n = 20_000;
            let started = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(responder.respond_to_as(
                    &view,
                    caller,
                    q.clone(),
                    Transport::Udp,
                ));
            }
            let per = started.elapsed() / n;
            eprintln!("big.service.consul A (50 instances), {label}: {per:?} per answer");
        }
    }
}
