//! ACL enforcement on real agents: a server and a client agent with
//! `acl { enabled = true, default_policy = "deny" }`. The anonymous token
//! is refused writes and sees empty lists; the initial management token
//! may do everything; a token that may read `web` may not write it; KV
//! listings are filtered; the client agent resolves tokens from its own
//! replica and enforces them itself.
//!
//! The tests that make their own policies and tokens do it through
//! `/v1/acl/*`, as an operator would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use trellis_testkit::{Agent, wait_until_async};

use crate::harness::{temp_dir, trellis};

const DEADLINE: Duration = Duration::from_secs(60);
/// The initial management token's secret, from the servers' config.
const ROOT: &str = "3f6e2f0c-6a8e-4f7e-9d59-6d1c2b7a0c11";
const FILTERED: &str = "x-consul-results-filtered-by-acls";

/// The ACL config: default deny; the initial management token on servers
/// only (a client agent learns of it through replication).
fn acl_config(dir: &Path, name: &str, server: bool) -> PathBuf {
    let mut acl = json!({"enabled": true, "default_policy": "deny"});
    if server {
        acl["tokens"] = json!({"initial_management": ROOT});
    }
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, json!({ "acl": acl }).to_string()).expect("write the config");
    path
}

/// `path` with `?token=` (Consul's first token source).
fn with_token(path: &str, token: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}token={token}")
}

/// A server `s1` and a client `c1` joined to it, both with ACLs on; waits
/// until each resolves the initial management token.
async fn server_and_client(dir: &Path) -> (Agent, Agent) {
    let server = trellis()
        .server()
        .node("s1")
        .bootstrap_expect(1)
        .config_file(acl_config(dir, "server", true))
        .start_async()
        .await
        .expect("start s1");
    let client = trellis()
        .client()
        .node("c1")
        .retry_join(server.serf())
        .config_file(acl_config(dir, "client", false))
        .start_async()
        .await
        .expect("start c1");
    for agent in [&server, &client] {
        // The leader writes the initial management token once elected; the
        // client's replica holds it a follow poll later.
        wait_until_async("the management token resolves", DEADLINE, || async {
            let r = agent.get(&with_token("/v1/catalog/nodes", ROOT)).await?;
            let nodes = r.json().as_array().map_or(0, Vec::len);
            if r.status == 200 && nodes == 2 {
                Ok(())
            } else {
                Err(format!("{}: {} {}", agent.name(), r.status, r.text))
            }
        })
        .await;
    }
    (server, client)
}

/// PUT `body` (JSON) to `path`; the status and body.
async fn put(agent: &Agent, path: &str, body: &Value) -> (u16, String) {
    let r = agent.put(path, body).await.expect("an answer");
    (r.status, r.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_deny_refuses_the_anonymous_token_on_server_and_client_agents() {
    let dir = temp_dir();
    let (server, client) = server_and_client(dir.path()).await;
    for agent in [&server, &client] {
        let key = format!("/v1/kv/{}/k", agent.name());
        let (status, text) = put(agent, &key, &json!("v")).await;
        assert_eq!(status, 403, "{}: {text}", agent.name());
        assert!(
            text.starts_with("Permission denied") && text.contains("'key:write'"),
            "{text}"
        );
        let (status, text) = put(agent, &with_token(&key, ROOT), &json!("v")).await;
        assert_eq!((status, text.as_str()), (200, "true"), "{}", agent.name());
        // Reading one key: refused, even though it exists.
        let r = agent.get(&key).await.unwrap();
        assert_eq!(r.status, 403, "{}: {}", agent.name(), r.text);
        let r = agent.get(&with_token(&key, ROOT)).await.unwrap();
        assert_eq!(r.status, 200, "{}: {}", agent.name(), r.text);
        // Lists: empty, not refused, and the anonymous caller is not told.
        let r = agent.get("/v1/kv/?recurse").await.unwrap();
        assert_eq!(r.status, 404, "{}", agent.name());
        for path in ["/v1/catalog/nodes", "/v1/catalog/service/consul"] {
            let r = agent.get(path).await.unwrap();
            assert_eq!((r.status, r.json()), (200, json!([])), "{path}");
            assert!(!r.headers.contains_key(FILTERED), "{path}");
        }
        let r = agent.get("/v1/catalog/services").await.unwrap();
        assert_eq!(r.json(), json!({}));
        let r = agent.get("/v1/agent/self").await.unwrap();
        assert_eq!(r.status, 403, "{}: {}", agent.name(), r.text);
        let r = agent.get("/v1/status/leader").await.unwrap();
        assert_eq!(r.status, 200);
        // A secret nobody holds is Consul's "ACL not found".
        let r = agent
            .get(&with_token("/v1/catalog/nodes", "nope"))
            .await
            .unwrap();
        assert_eq!((r.status, r.text.as_str()), (403, "ACL not found"));
    }
    // The management token, by header too.
    let r = reqwest::Client::new()
        .get(client.url("/v1/catalog/services"))
        .header("X-Consul-Token", ROOT)
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 200);
    let services: Value = r.json().await.expect("JSON");
    assert!(services.get("consul").is_some(), "{services}");
}

/// A policy with `rules` and a token holding it, made with the management
/// token through `/v1/acl/*`; the token's SecretID.
async fn token_with(agent: &Agent, name: &str, rules: &str) -> String {
    let (status, text) = put(
        agent,
        &with_token("/v1/acl/policy", ROOT),
        &json!({"Name": name, "Rules": rules}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = put(
        agent,
        &with_token("/v1/acl/token", ROOT),
        &json!({"Description": name, "Policies": [{"Name": name}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let token: Value = serde_json::from_str(&text).expect("a token");
    token["SecretID"].as_str().expect("a SecretID").to_string()
}

/// Waits until `agent` resolves `secret` (a client agent's replica holds a
/// new token a follow poll after the write).
async fn wait_resolves(agent: &Agent, secret: &str) {
    wait_until_async("the token resolves", DEADLINE, || async {
        let r = agent.get(&with_token("/v1/catalog/nodes", secret)).await?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{}: {} {}", agent.name(), r.status, r.text))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_may_read_web_may_not_write_it_on_either_agent() {
    let dir = temp_dir();
    let (server, client) = server_and_client(dir.path()).await;
    let (status, text) = put(
        &client,
        &with_token("/v1/agent/service/register", ROOT),
        &json!({"Name": "web", "ID": "web1", "Port": 80}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let reader = token_with(
        &server,
        "web-read",
        "service \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }",
    )
    .await;
    for agent in [&server, &client] {
        wait_resolves(agent, &reader).await;
        wait_until_async("web registered", DEADLINE, || async {
            let r = agent
                .get(&with_token("/v1/catalog/service/web", &reader))
                .await?;
            match r.json().as_array().map(Vec::len) {
                Some(1) if !r.headers.contains_key(FILTERED) => Ok(()),
                _ => Err(format!("{}: {} {}", agent.name(), r.status, r.text)),
            }
        })
        .await;
        let r = agent
            .get(&with_token("/v1/health/service/web", &reader))
            .await
            .unwrap();
        assert_eq!(r.json().as_array().map(Vec::len), Some(1), "{}", r.text);
        // The servers' `consul` service is left out, and the caller told.
        let r = agent
            .get(&with_token("/v1/catalog/services", &reader))
            .await
            .unwrap();
        assert_eq!(r.json(), json!({"web": []}));
        assert_eq!(r.headers.get(FILTERED).map(String::as_str), Some("true"));

        let (status, text) = put(
            agent,
            &with_token("/v1/agent/service/register", &reader),
            &json!({"Name": "web", "ID": "web2", "Port": 81}),
        )
        .await;
        assert_eq!(status, 403, "{}: {text}", agent.name());
        assert!(
            text.contains("lacks permission 'service:write' on \"web\""),
            "{text}"
        );
        let (status, _) = put(
            agent,
            &with_token("/v1/catalog/deregister", &reader),
            &json!({"Node": "c1", "ServiceID": "web1"}),
        )
        .await;
        assert_eq!(status, 403, "{}", agent.name());
    }
    let r = server
        .get(&with_token("/v1/catalog/service/web", ROOT))
        .await
        .unwrap();
    assert_eq!(r.json().as_array().map(Vec::len), Some(1), "unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_rules_filter_a_recurse_and_refuse_a_write() {
    let dir = temp_dir();
    let (server, client) = server_and_client(dir.path()).await;
    for key in ["app/a", "app/secret", "other/x"] {
        let (status, text) = put(
            &server,
            &with_token(&format!("/v1/kv/{key}"), ROOT),
            &json!(1),
        )
        .await;
        assert_eq!(status, 200, "{text}");
    }
    let secret = token_with(
        &server,
        "app-read",
        "key_prefix \"app/\" { policy = \"read\" }\nkey \"app/secret\" { policy = \"deny\" }",
    )
    .await;
    for agent in [&server, &client] {
        wait_resolves(agent, &secret).await;
        let r = agent
            .get(&with_token("/v1/kv/app/?recurse", &secret))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}: {}", agent.name(), r.text);
        let list = r.json();
        let keys: Vec<&str> = list
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["Key"].as_str())
            .collect();
        assert_eq!(keys, vec!["app/a"]);
        assert_eq!(r.headers.get(FILTERED).map(String::as_str), Some("true"));
        let r = agent
            .get(&with_token("/v1/kv/app/secret", &secret))
            .await
            .unwrap();
        assert_eq!(r.status, 403);
        let (status, text) = put(agent, &with_token("/v1/kv/app/a", &secret), &json!(2)).await;
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("'key:write' on \"app/a\""), "{text}");
    }
    let r = server
        .get(&with_token("/v1/kv/app/a?raw", ROOT))
        .await
        .unwrap();
    assert_eq!(r.text, "1", "the refused writes changed nothing");
}

/// A client agent asks its server to remove a Raft peer with the
/// operator's token, and the server checks that token itself: here the
/// client agent runs without ACLs (so it checks nothing), the server with
/// default deny.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_checks_the_token_a_client_agent_forwards_with_a_peer_removal() {
    let dir = temp_dir();
    let server = trellis()
        .server()
        .node("s1")
        .bootstrap_expect(1)
        .config_file(acl_config(dir.path(), "server", true))
        .start_async()
        .await
        .expect("start s1");
    let client = trellis()
        .client()
        .node("c1")
        .retry_join(server.serf())
        .start_async()
        .await
        .expect("start c1");
    let remove = |token: Option<&'static str>| {
        let url = client.url(&format!("/v1/operator/raft/peer?address={}", server.rpc()));
        async move {
            let mut req = reqwest::Client::new().delete(url);
            if let Some(t) = token {
                req = req.header("X-Consul-Token", t);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            Ok::<_, String>((status, resp.text().await.unwrap_or_default()))
        }
    };
    // Anonymous: refused by the server, in Consul's words.
    let (status, body) = wait_until_async("the server's answer", DEADLINE, || async {
        match remove(None).await? {
            (500, body) if body.contains("No known Consul servers") => Err(body),
            other => Ok(other),
        }
    })
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Permission denied"), "{body}");
    assert!(body.contains("operator:write"), "{body}");
    // The management token (once the leader made it) passes the server's
    // check; the removal is then refused for what it is: the last voter.
    wait_until_async("the management token on s1", DEADLINE, || async {
        let r = server.get(&with_token("/v1/acl/token/self", ROOT)).await?;
        if r.status == 200 { Ok(()) } else { Err(r.text) }
    })
    .await;
    let (status, body) = remove(Some(ROOT)).await.expect("an answer");
    assert_ne!(status, 403, "{body}");
    assert!(!body.contains("Permission denied"), "{body}");
    let config = server
        .get(&with_token("/v1/operator/raft/configuration", ROOT))
        .await
        .expect("the configuration");
    assert_eq!(
        config.json()["Servers"].as_array().map(Vec::len),
        Some(1),
        "{}",
        config.text
    );
}
