//! DNS with ACLs on, against real agents: answers are what the agent's
//! default token (`acl.tokens.default`, else the anonymous token) may read,
//! as Consul's; what it may not read does not exist (NXDOMAIN), and a
//! default token nobody created is SERVFAIL. A client agent answers from
//! its own replica, which resolves tokens without holding their secrets.
//!
//! The tests that write tokens and policies use `/v1/acl/*` with the
//! initial management token, as an operator would.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use trellis_testkit::Agent;
use trellis_testkit::dns::a_records;
use trellis_testkit::wait::wait_until_async;

use crate::harness::{temp_dir, trellis};

/// The initial management token every agent here is configured with.
const MANAGEMENT: &str = "7d1e4c0a-5b1f-4c2e-9a83-3f0d2b6e1a01";

/// The anonymous token's AccessorID (Consul's).
const ANONYMOUS: &str = "00000000-0000-0000-0000-000000000002";

/// Long enough for a leader's election and a token's creation on a loaded
/// machine.
const DEADLINE: Duration = Duration::from_secs(20);

/// Rules that read every service and every node.
const READ_ALL: &str =
    "service_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }";

/// Writes a JSON configuration file `name` in `dir`.
fn config(dir: &Path, name: &str, body: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body.to_string()).expect("write the config file");
    path
}

/// `acl { … }` with default deny, the initial management token and, if
/// given, a default token.
fn acl(default_token: Option<&str>) -> Value {
    let mut tokens = json!({ "initial_management": MANAGEMENT });
    if let Some(t) = default_token {
        tokens["default"] = json!(t);
    }
    json!({ "enabled": true, "default_policy": "deny", "tokens": tokens })
}

fn code(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

fn ips(m: &Message) -> BTreeSet<IpAddr> {
    a_records(m).into_iter().collect()
}

/// PUTs `body` to the ACL API path `path` with the management token,
/// waiting out the moments before the leader has created that token.
async fn acl_put(agent: &Agent, path: &str, body: Value) -> Value {
    let url = format!("{path}?token={MANAGEMENT}");
    wait_until_async(&format!("PUT {path}"), DEADLINE, || {
        let (url, body) = (url.clone(), body.clone());
        async move {
            let r = agent.put(&url, &body).await?;
            if r.status == 200 {
                Ok(r.json())
            } else {
                Err(format!("{}: {}", r.status, r.text))
            }
        }
    })
    .await
}

/// Waits until `name` answers exactly `want` on `agent`'s DNS.
async fn wait_answers(agent: &Agent, name: &str, want: &[IpAddr]) {
    let want: BTreeSet<IpAddr> = want.iter().copied().collect();
    wait_until_async(&format!("{name} to answer {want:?}"), DEADLINE, || {
        let m = agent.query_udp(name, RecordType::A);
        let got = (code(&m), ips(&m));
        let hit = if got == (ResponseCode::NoError, want.clone()) {
            Ok(())
        } else {
            Err(format!("answered {got:?}"))
        };
        async move { hit }
    })
    .await;
}

#[tokio::test]
async fn acl_dns_anonymous_under_default_deny_sees_nothing_until_its_policy_allows() {
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "agent.json",
        &json!({
            "acl": acl(None),
            "service": { "name": "web", "address": "10.3.0.1", "port": 80 },
        }),
    );
    let agent = trellis().dev().node("dev1").config_file(&cfg).start();
    let node = "dev1.node.consul.".to_owned();

    // Registered (the agent registers its own definitions before serving),
    // but the anonymous token may read nothing.
    for name in [
        "web.service.consul.",
        "consul.service.consul.",
        node.as_str(),
    ] {
        let m = agent.query_udp(name, RecordType::A);
        assert_eq!(code(&m), ResponseCode::NXDomain, "{name}: {m:?}");
        assert!(m.answers.is_empty(), "{name}: {m:?}");
        assert_eq!(
            code(&agent.query_tcp(name, RecordType::A)),
            ResponseCode::NXDomain
        );
    }
    // The zone itself still answers.
    let soa = agent.query_udp("consul.", RecordType::SOA);
    assert_eq!(code(&soa), ResponseCode::NoError);
    assert_eq!(soa.answers.len(), 1, "{soa:?}");

    // The anonymous token is given a policy that reads every service and
    // node, through the API and the log.
    acl_put(
        &agent,
        "/v1/acl/policy",
        json!({ "Name": "dns-read", "Rules": READ_ALL }),
    )
    .await;
    acl_put(
        &agent,
        &format!("/v1/acl/token/{ANONYMOUS}"),
        json!({ "Description": "Anonymous Token", "Policies": [{ "Name": "dns-read" }] }),
    )
    .await;
    wait_answers(
        &agent,
        "web.service.consul.",
        &["10.3.0.1".parse().unwrap()],
    )
    .await;
    let m = agent.query_tcp("web.service.consul.", RecordType::A);
    assert_eq!(ips(&m), BTreeSet::from(["10.3.0.1".parse().unwrap()]));
    wait_answers(&agent, &node, &[agent.ip()]).await;
}

#[tokio::test]
async fn acl_dns_answers_as_the_default_token_and_fails_on_an_unknown_one() {
    let dir = temp_dir();
    let service = json!({ "name": "web", "address": "10.3.0.2", "port": 80 });
    // The default token is the management token, which the leader creates
    // from the configuration: once it exists, everything answers.
    let managed = trellis()
        .dev()
        .node("managed")
        .config_file(config(
            dir.path(),
            "managed.json",
            &json!({ "acl": acl(Some(MANAGEMENT)), "service": service }),
        ))
        .start();
    // A default token that no one created: Consul's "ACL not found" on
    // every catalog lookup, which its DNS answers with SERVFAIL.
    let unknown = trellis()
        .dev()
        .config_file(config(
            dir.path(),
            "unknown.json",
            &json!({
                "acl": acl(Some("0b7a4f52-1c4e-4b8e-8d0c-6f1e2a3b4c5d")),
                "service": service,
            }),
        ))
        .start();

    wait_answers(
        &managed,
        "web.service.consul.",
        &["10.3.0.2".parse().unwrap()],
    )
    .await;
    wait_answers(&managed, "managed.node.consul.", &[managed.ip()]).await;

    // By now its leader has created its own management token too.
    wait_until_async("the management token to exist", DEADLINE, || async {
        let r = unknown
            .get(&format!("/v1/agent/self?token={MANAGEMENT}"))
            .await?;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("{}: {}", r.status, r.text))
    })
    .await;
    for name in ["web.service.consul.", "consul.service.consul."] {
        let m = unknown.query_udp(name, RecordType::A);
        assert_eq!(code(&m), ResponseCode::ServFail, "{name}: {m:?}");
        assert!(m.answers.is_empty(), "{name}: {m:?}");
    }
    // Names outside the catalog do not depend on the token.
    assert_eq!(
        code(&unknown.query_udp("consul.", RecordType::SOA)),
        ResponseCode::NoError
    );
}

#[tokio::test]
async fn acl_dns_a_client_agent_answers_from_its_own_replica_as_its_default_token() {
    // The client's default token is created later, through a server's API,
    // with this secret.
    const DNS_SECRET: &str = "4c2f9e1d-8a7b-4e6f-b5d4-c3b2a1908f7e";
    let dir = temp_dir();
    let common = config(
        dir.path(),
        "common.json",
        &json!({ "acl": acl(None), "service": { "name": "web", "port": 80 } }),
    );
    let client_cfg = config(
        dir.path(),
        "client.json",
        &json!({ "acl": acl(Some(DNS_SECRET)) }),
    );
    // A server and a client agent, started by hand rather than as a test
    // cluster: under default deny the anonymous token may not read the
    // Raft configuration a cluster start waits on.
    let server = trellis()
        .server()
        .node("s1")
        .bootstrap_expect(1)
        .config_file(&common)
        .start_async()
        .await
        .expect("start s1");
    let client = trellis()
        .client()
        .node("c1")
        .retry_join(server.serf())
        .config_file(&common)
        .config_file(&client_cfg)
        .start_async()
        .await
        .expect("start c1");
    let (server, client) = (&server, &client);
    let (s1, c1) = (server.ip(), client.ip());

    // Until the token exists, the client's lookups fail; the server's
    // anonymous token reads nothing.
    wait_until_async("the client to know of web", DEADLINE, || async {
        let r = client
            .get(&format!("/v1/catalog/service/web?token={MANAGEMENT}"))
            .await?;
        let n = r.json().as_array().map_or(0, Vec::len);
        (r.status == 200 && n == 2)
            .then_some(())
            .ok_or(format!("{}: {}", r.status, r.text))
    })
    .await;
    let m = client.query_udp("web.service.consul.", RecordType::A);
    assert_eq!(code(&m), ResponseCode::ServFail, "{m:?}");
    let m = server.query_udp("web.service.consul.", RecordType::A);
    assert_eq!(code(&m), ResponseCode::NXDomain, "{m:?}");

    // Created on the server: the client learns the token, without its
    // secret, from the change stream, and resolves its own default token
    // by the secret's hash.
    let policy = acl_put(
        server,
        "/v1/acl/policy",
        json!({ "Name": "dns-read", "Rules": READ_ALL }),
    )
    .await;
    acl_put(
        server,
        "/v1/acl/token",
        json!({ "SecretID": DNS_SECRET, "Policies": [{ "Name": "dns-read" }] }),
    )
    .await;
    wait_answers(client, "web.service.consul.", &[s1, c1]).await;
    wait_answers(client, "s1.node.consul.", &[s1]).await;
    // The server's own DNS still answers as its anonymous token.
    let m = server.query_udp("web.service.consul.", RecordType::A);
    assert_eq!(code(&m), ResponseCode::NXDomain, "{m:?}");

    // The policy narrows to one node: the other node's instance leaves the
    // client's answers, and so does that node.
    let id = policy["ID"].as_str().expect("the policy's ID").to_owned();
    acl_put(
        server,
        &format!("/v1/acl/policy/{id}"),
        json!({
            "ID": id,
            "Name": "dns-read",
            "Rules": "service_prefix \"\" { policy = \"read\" }\nnode \"s1\" { policy = \"read\" }",
        }),
    )
    .await;
    wait_answers(client, "web.service.consul.", &[s1]).await;
    let m = client.query_udp("c1.node.consul.", RecordType::A);
    assert_eq!(code(&m), ResponseCode::NXDomain, "{m:?}");
}
