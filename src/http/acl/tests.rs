//! The ACL endpoints through the real router over HTTP on loopback, on a
//! one-server in-process cluster with ACLs on and `default_policy deny`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::super::{Admission, ApiState, Ctx, MAX_BLOCKING, MAX_IN_FLIGHT, build, listen};
use crate::acl::DefaultPolicy;
use crate::catalog::{ANONYMOUS_ACCESSOR_ID, AclContext, MANAGEMENT_POLICY_ID};
use crate::config::AclSettings;
use crate::local::NodeIdentity;
use crate::local::testing::InProcess;

/// One API server on 127.0.0.1:0; stops when dropped.
struct Api {
    base: String,
    /// The server's context, to see how many queries are parked.
    ctx: Ctx,
    client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An answer: status and body, parsed as JSON when it is.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    text: String,
    index: Option<u64>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// The JSON of a 200, failing with the body otherwise.
    fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        self.json()
    }
}

impl Api {
    async fn start(enabled: bool) -> Self {
        let identity = NodeIdentity::for_tests("node1", "127.0.0.1", true);
        let InProcess {
            replica,
            delegate,
            local,
        } = InProcess::start(identity.clone(), |l| l).await;
        replica.enable_acl(AclContext {
            default: DefaultPolicy::Deny,
            datacenter: identity.datacenter.clone(),
        });
        let state = ApiState {
            shutdown: CancellationToken::new(),
            gossip: crate::gossip::Gossip::alone("n1").await,
            wan: None,
            datacenters: std::sync::Arc::new(crate::datacenters::Datacenters::new("dc1", None)),
            replica,
            delegate,
            local,
            kv: crate::config::KvSettings::default(),
            acl: AclSettings {
                enabled,
                default_policy: DefaultPolicy::Deny,
                ..AclSettings::default()
            },
            remote: crate::remote::Remote::alone("dc1"),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let ctx = Ctx::new(state, shutdown.clone());
        let router = build(ctx.clone(), Admission::new(MAX_IN_FLIGHT, MAX_BLOCKING));
        let (limits, stop) = (crate::config::LimitsSettings::default(), shutdown.clone());
        tokio::spawn(async move {
            listen::serve(
                listener,
                router,
                &limits,
                None,
                listen::Caps::new(&limits),
                stop,
            )
            .await
        });
        Self {
            base,
            ctx,
            client: reqwest::Client::new(),
            shutdown,
        }
    }

    async fn send(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if !token.is_empty() {
            req = req.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let index = r
            .headers()
            .get("X-Consul-Index")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        Answer {
            status,
            text: r.text().await.unwrap(),
            index,
        }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send("GET", path, token, None).await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send("PUT", path, token, Some(body)).await
    }

    async fn delete(&self, path: &str, token: &str) -> Answer {
        self.send("DELETE", path, token, None).await
    }

    /// Bootstraps and returns the management secret.
    async fn bootstrap(&self) -> String {
        let a = self.put("/v1/acl/bootstrap", "", json!(null)).await.ok();
        a["SecretID"].as_str().unwrap().to_string()
    }

    /// Creates a policy and returns its ID.
    async fn policy(&self, root: &str, name: &str, rules: &str) -> String {
        let p = self
            .put(
                "/v1/acl/policy",
                root,
                json!({"Name": name, "Rules": rules}),
            )
            .await
            .ok();
        p["ID"].as_str().unwrap().to_string()
    }

    /// Creates a token linking policies by name; returns (accessor, secret).
    async fn token(&self, root: &str, policies: &[&str]) -> (String, String) {
        let links: Vec<Value> = policies.iter().map(|n| json!({"Name": n})).collect();
        let t = self
            .put("/v1/acl/token", root, json!({"Policies": links}))
            .await
            .ok();
        (
            t["AccessorID"].as_str().unwrap().to_string(),
            t["SecretID"].as_str().unwrap().to_string(),
        )
    }
}

#[tokio::test]
async fn every_acl_endpoint_answers_401_while_acls_are_off() {
    let api = Api::start(false).await;
    for (method, path) in [
        ("PUT", "/v1/acl/bootstrap"),
        ("PUT", "/v1/acl/token"),
        ("GET", "/v1/acl/token/self"),
        ("GET", "/v1/acl/token/x"),
        ("PUT", "/v1/acl/token/x"),
        ("DELETE", "/v1/acl/token/x"),
        ("GET", "/v1/acl/tokens"),
        ("PUT", "/v1/acl/policy"),
        ("GET", "/v1/acl/policy/x"),
        ("GET", "/v1/acl/policy/name/x"),
        ("DELETE", "/v1/acl/policy/x"),
        ("GET", "/v1/acl/policies"),
    ] {
        let a = api.send(method, path, "", Some(json!({}))).await;
        assert_eq!(
            (a.status, a.text.as_str()),
            (StatusCode::UNAUTHORIZED, "ACL support disabled"),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn bootstrap_makes_one_management_token_and_is_refused_after() {
    let api = Api::start(true).await;
    let first = api.put("/v1/acl/bootstrap", "", json!(null)).await.ok();
    let secret = first["SecretID"].as_str().unwrap();
    assert_eq!(
        first["ID"], first["SecretID"],
        "the legacy ID is the secret"
    );
    assert_eq!(first["Description"], "Bootstrap Token (Global Management)");
    assert_eq!(
        first["Policies"],
        json!([{"ID": MANAGEMENT_POLICY_ID, "Name": "global-management"}])
    );
    assert_eq!(first["Local"], false);
    let fields: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for f in [
        "AccessorID",
        "CreateTime",
        "Hash",
        "CreateIndex",
        "ModifyIndex",
    ] {
        assert!(fields.contains(&f), "{f} missing from {first}");
    }
    let again = api.put("/v1/acl/bootstrap", "", json!(null)).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(
        again
            .text
            .starts_with("Permission denied: ACL bootstrap no longer allowed (reset index: "),
        "{}",
        again.text
    );
    // The token works: it may read every token, secrets included.
    let me = api.get("/v1/acl/token/self", secret).await.ok();
    assert_eq!(me["AccessorID"], first["AccessorID"]);
    assert_eq!(me["SecretID"], secret);
}

#[tokio::test]
async fn a_bootstrap_secret_of_the_callers_choosing_is_kept() {
    let api = Api::start(true).await;
    let chosen = "3f0a1b2c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    let t = api
        .put("/v1/acl/bootstrap", "", json!({"BootstrapSecret": chosen}))
        .await
        .ok();
    assert_eq!(t["SecretID"], chosen);
    api.get("/v1/acl/tokens", chosen).await.ok();
}

#[tokio::test]
async fn policies_and_tokens_round_trip_and_links_resolve_by_id_or_name() {
    let api = Api::start(true).await;
    let root = api.bootstrap().await;
    let rules = "service \"web\" { policy = \"read\" }";
    let created = api
        .put(
            "/v1/acl/policy",
            &root,
            json!({"Name": "web-read", "Description": "read web", "Rules": rules}),
        )
        .await
        .ok();
    let pid = created["ID"].as_str().unwrap().to_string();
    assert_eq!(created["Rules"], rules);
    assert_eq!(
        api.get(&format!("/v1/acl/policy/{pid}"), &root).await.ok()["Name"],
        "web-read"
    );
    assert_eq!(
        api.get("/v1/acl/policy/name/web-read", &root).await.ok()["ID"],
        pid.as_str()
    );
    let list = api.get("/v1/acl/policies", &root).await.ok();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    assert!(names.contains(&"web-read") && names.contains(&"global-management"));
    assert!(list[0].get("Rules").is_none(), "stubs carry no rules");

    // Linked by name and by ID (the same policy once), then read back.
    let token = api
        .put(
            "/v1/acl/token",
            &root,
            json!({"Description": "web reader",
                   "Policies": [{"Name": "web-read"}, {"ID": pid}]}),
        )
        .await
        .ok();
    let accessor = token["AccessorID"].as_str().unwrap().to_string();
    assert_eq!(token["Policies"], json!([{"ID": pid, "Name": "web-read"}]));
    let read = api
        .get(&format!("/v1/acl/token/{accessor}"), &root)
        .await
        .ok();
    assert_eq!(read["SecretID"], token["SecretID"]);
    assert_eq!(read["Description"], "web reader");
    assert_eq!(read["Hash"], token["Hash"]);

    // An update keeps the secret and replaces the rest.
    let updated = api
        .put(
            &format!("/v1/acl/token/{accessor}"),
            &root,
            json!({"Description": "nothing now"}),
        )
        .await
        .ok();
    assert_eq!(updated["SecretID"], token["SecretID"]);
    assert!(updated.get("Policies").is_none(), "{updated}");
    assert_ne!(updated["Hash"], token["Hash"]);
    assert_eq!(updated["CreateIndex"], token["CreateIndex"]);

    // A policy renamed: tokens show the new name; deleted: the link goes.
    api.put(
        &format!("/v1/acl/token/{accessor}"),
        &root,
        json!({"Policies": [{"ID": pid}]}),
    )
    .await
    .ok();
    api.put(
        &format!("/v1/acl/policy/{pid}"),
        &root,
        json!({"Name": "web-read-2", "Rules": rules}),
    )
    .await
    .ok();
    let read = api
        .get(&format!("/v1/acl/token/{accessor}"), &root)
        .await
        .ok();
    assert_eq!(read["Policies"][0]["Name"], "web-read-2");
    let gone = api.delete(&format!("/v1/acl/policy/{pid}"), &root).await;
    assert_eq!((gone.status, gone.text.as_str()), (StatusCode::OK, "true"));
    let read = api
        .get(&format!("/v1/acl/token/{accessor}"), &root)
        .await
        .ok();
    assert!(read.get("Policies").is_none(), "{read}");
    let missing = api.get(&format!("/v1/acl/policy/{pid}"), &root).await;
    assert_eq!(
        (missing.status, missing.text.as_str()),
        (
            StatusCode::NOT_FOUND,
            "Requested policy does not exist: ACL not found"
        )
    );

    // Deleting the token, then reading it.
    let d = api
        .delete(&format!("/v1/acl/token/{accessor}"), &root)
        .await;
    assert_eq!((d.status, d.text.as_str()), (StatusCode::OK, "true"));
    let missing = api.get(&format!("/v1/acl/token/{accessor}"), &root).await;
    assert_eq!(
        (missing.status, missing.text.as_str()),
        (
            StatusCode::NOT_FOUND,
            "Requested token does not exist: ACL not found"
        )
    );
    // Deleting what is gone succeeds, as Consul's.
    let again = api
        .delete(&format!("/v1/acl/token/{accessor}"), &root)
        .await;
    assert_eq!(again.status, StatusCode::OK);
}

#[tokio::test]
async fn reading_needs_acl_read_and_secrets_need_acl_write() {
    let api = Api::start(true).await;
    let root = api.bootstrap().await;
    api.policy(&root, "acl-read", "acl = \"read\"").await;
    api.policy(&root, "nothing", "key \"x\" { policy = \"read\" }")
        .await;
    let (reader_id, reader) = api.token(&root, &["acl-read"]).await;
    let (plain_id, plain) = api.token(&root, &["nothing"]).await;

    let list = api.get("/v1/acl/tokens", &reader).await.ok();
    let tokens = list.as_array().unwrap();
    // Bootstrap, the two, and the anonymous token.
    assert_eq!(tokens.len(), 4, "{list}");
    assert!(tokens.iter().all(|t| t["SecretID"] == "<hidden>"), "{list}");
    assert!(
        tokens
            .iter()
            .any(|t| t["AccessorID"] == ANONYMOUS_ACCESSOR_ID)
    );
    let one = api
        .get(&format!("/v1/acl/token/{plain_id}"), &reader)
        .await
        .ok();
    assert_eq!(one["SecretID"], "<hidden>");
    let with_write = api
        .get(&format!("/v1/acl/token/{plain_id}"), &root)
        .await
        .ok();
    assert_eq!(with_write["SecretID"], plain.as_str());

    // Without acl:read: Consul's 403 naming the token.
    for path in [
        "/v1/acl/tokens",
        "/v1/acl/policies",
        "/v1/acl/policy/name/nothing",
    ] {
        let denied = api.get(path, &plain).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            denied.text,
            format!(
                "Permission denied: token with AccessorID '{plain_id}' lacks permission 'acl:read'"
            )
        );
    }
    // acl:read is not acl:write.
    let denied = api
        .put("/v1/acl/policy", &reader, json!({"Name": "p", "Rules": ""}))
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.text.contains("'acl:write'"), "{}", denied.text);
    let denied = api
        .delete(&format!("/v1/acl/token/{plain_id}"), &reader)
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    // token/self needs nothing, and shows the caller its own secret.
    let me = api.get("/v1/acl/token/self", &plain).await.ok();
    assert_eq!(me["AccessorID"], plain_id.as_str());
    assert_eq!(me["SecretID"], plain.as_str());
    let me = api.get("/v1/acl/token/self", &reader).await.ok();
    assert_eq!(me["AccessorID"], reader_id.as_str());
    // Without a token there is none to read; with an unknown one, 403.
    let none = api.get("/v1/acl/token/self", "").await;
    assert_eq!(
        (none.status, none.text.as_str()),
        (StatusCode::NOT_FOUND, "Supplied token does not exist")
    );
    let unknown = api
        .get("/v1/acl/token/self", "0f0f0f0f-0000-4000-8000-000000000000")
        .await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (StatusCode::FORBIDDEN, "ACL not found")
    );
}

#[tokio::test]
async fn the_anonymous_token_may_be_given_policies_but_not_deleted() {
    let api = Api::start(true).await;
    let root = api.bootstrap().await;
    let anon = format!("/v1/acl/token/{ANONYMOUS_ACCESSOR_ID}");
    let before = api.get(&anon, &root).await.ok();
    assert_eq!(before["SecretID"], "anonymous");
    assert_eq!(before["Description"], "Anonymous Token");
    let denied = api.get("/v1/acl/policies", "").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text);

    api.policy(&root, "acl-read", "acl = \"read\"").await;
    api.put(&anon, &root, json!({"Policies": [{"Name": "acl-read"}]}))
        .await
        .ok();
    // Requests without a token now act with that policy.
    api.get("/v1/acl/policies", "").await.ok();
    let after = api.get(&anon, &root).await.ok();
    assert_eq!(after["Policies"][0]["Name"], "acl-read");
    assert_eq!(after["SecretID"], "anonymous");

    let refused = api.delete(&anon, &root).await;
    assert_eq!(
        (refused.status, refused.text.as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Delete operation not permitted on the anonymous token"
        )
    );
}

#[tokio::test]
async fn a_token_may_not_delete_itself_nor_the_builtin_policy() {
    let api = Api::start(true).await;
    let root = api.bootstrap().await;
    let me = api.get("/v1/acl/token/self", &root).await.ok();
    let own = api
        .delete(
            &format!("/v1/acl/token/{}", me["AccessorID"].as_str().unwrap()),
            &root,
        )
        .await;
    assert_eq!(
        (own.status, own.text.as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Deletion of the request's authorization token is not permitted"
        )
    );
    let builtin = api
        .delete(&format!("/v1/acl/policy/{MANAGEMENT_POLICY_ID}"), &root)
        .await;
    assert_eq!(builtin.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        builtin.text,
        "Delete operation not permitted on the builtin global-management policy"
    );
    // Renaming it is allowed, its rules and datacenters are fixed.
    let path = format!("/v1/acl/policy/{MANAGEMENT_POLICY_ID}");
    api.put(&path, &root, json!({"Name": "root"})).await.ok();
    let rules = api
        .put(
            &path,
            &root,
            json!({"Name": "root", "Rules": "acl = \"read\""}),
        )
        .await;
    assert_eq!(rules.status, StatusCode::INTERNAL_SERVER_ERROR);
    let dcs = api
        .put(
            &path,
            &root,
            json!({"Name": "root", "Datacenters": ["dc2"]}),
        )
        .await;
    assert_eq!(
        dcs.text,
        "Changing the Datacenters of the builtin global-management policy is not permitted"
    );
}

#[tokio::test]
async fn bad_writes_are_refused_with_consuls_status_and_words() {
    let api = Api::start(true).await;
    let root = api.bootstrap().await;
    let pid = api.policy(&root, "p1", "").await;
    let (accessor, _) = api.token(&root, &["p1"]).await;
    let token_path = format!("/v1/acl/token/{accessor}");
    let policy_path = format!("/v1/acl/policy/{pid}");
    let cases: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "PUT",
            "/v1/acl/token",
            json!({"Policies": [{"Name": "nope"}]}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "No such ACL policy with name \"nope\"",
        ),
        (
            "PUT",
            "/v1/acl/token",
            json!({"Policies": [{"ID": "0b1c2d3e-0000-4000-8000-000000000000"}]}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "No such ACL policy with ID \"0b1c2d3e-0000-4000-8000-000000000000\"",
        ),
        (
            "PUT",
            "/v1/acl/token",
            json!({"AccessorID": "not-a-uuid"}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Token: AccessorID is not a valid UUID",
        ),
        (
            "PUT",
            "/v1/acl/token",
            json!({"AccessorID": accessor}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Token: AccessorID is already in use",
        ),
        (
            "PUT",
            "/v1/acl/token",
            json!({"SecretID": root}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Token: SecretID is already in use",
        ),
        (
            "PUT",
            "/v1/acl/token",
            json!({"Description": 5}),
            StatusCode::BAD_REQUEST,
            "Token decoding failed: Description: expected string, got number",
        ),
        (
            "PUT",
            "/v1/acl/token",
            json!({"ExpirationTTL": "2m"}),
            StatusCode::BAD_REQUEST,
            "Token decoding failed: ExpirationTTL: not supported by trellis: tokens do not expire",
        ),
        (
            "PUT",
            &token_path,
            json!({"AccessorID": "0b1c2d3e-0000-4000-8000-000000000000"}),
            StatusCode::BAD_REQUEST,
            "Token Accessor ID in URL and payload do not match",
        ),
        (
            "PUT",
            &token_path,
            json!({"SecretID": "0b1c2d3e-0000-4000-8000-000000000001"}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Changing a tokens SecretID is not permitted",
        ),
        (
            "PUT",
            "/v1/acl/token/0b1c2d3e-0000-4000-8000-000000000002",
            json!({}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot find token \"0b1c2d3e-0000-4000-8000-000000000002\"",
        ),
        (
            "PUT",
            "/v1/acl/policy",
            json!({"ID": pid, "Name": "x"}),
            StatusCode::BAD_REQUEST,
            "Cannot specify the ID when creating a new policy",
        ),
        (
            "PUT",
            "/v1/acl/policy",
            json!({"Name": "has space"}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Policy: invalid Name",
        ),
        (
            "PUT",
            "/v1/acl/policy",
            json!({"Name": "p1"}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Policy: A Policy with Name \"p1\" already exists",
        ),
        (
            "PUT",
            &policy_path,
            json!({"ID": "0b1c2d3e-0000-4000-8000-000000000000", "Name": "p1"}),
            StatusCode::BAD_REQUEST,
            "Policy ID in URL and payload do not match",
        ),
        (
            "PUT",
            "/v1/acl/policy/0b1c2d3e-0000-4000-8000-000000000003",
            json!({"Name": "p9"}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot find policy 0b1c2d3e-0000-4000-8000-000000000003",
        ),
    ];
    for (method, path, body, status, text) in cases {
        let a = api.send(method, path, &root, Some(body.clone())).await;
        assert_eq!((a.status, a.text.as_str()), (status, text), "{path} {body}");
    }
    let bad_rules = api
        .put(
            "/v1/acl/policy",
            &root,
            json!({"Name": "r", "Rules": "service {"}),
        )
        .await;
    assert_eq!(bad_rules.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        bad_rules.text.starts_with("Invalid Policy: "),
        "{}",
        bad_rules.text
    );
    let bad_json = api
        .send("PUT", "/v1/acl/policy", &root, Some(json!("[")))
        .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_json.text.starts_with("Policy decoding failed: "),
        "{}",
        bad_json.text
    );
    // Nothing refused was written.
    let list = api.get("/v1/acl/policies", &root).await.ok();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn a_policy_list_blocks_until_a_policy_is_written() {
    let api = Api::start(true).await;
    let root = api.bootstrap().await;
    let first = api.get("/v1/acl/policies", &root).await;
    let index = first.index.expect("X-Consul-Index");
    let parked = {
        let (base, root) = (api.base.clone(), root.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(format!("{base}/v1/acl/policies?index={index}&wait=30s"))
                .header("X-Consul-Token", root)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // Parked, and still so once parked: it did not answer without a change.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.ctx.parked.load(Ordering::Relaxed) != 1 {
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!parked.is_finished(), "answered without a change");
    api.policy(&root, "late", "").await;
    let woke = tokio::time::timeout(Duration::from_secs(10), parked)
        .await
        .expect("woke on the write")
        .unwrap();
    assert_eq!(woke.as_array().unwrap().len(), 2, "{woke}");
}

#[tokio::test]
async fn a_token_list_filters_by_policy() {
    let api = Api::start(true).await;
    let root = api.bootstrap().await;
    let pid = api.policy(&root, "p1", "").await;
    api.policy(&root, "p2", "").await;
    let (a, _) = api.token(&root, &["p1"]).await;
    api.token(&root, &["p2"]).await;
    let list = api
        .get(&format!("/v1/acl/tokens?policy={pid}"), &root)
        .await
        .ok();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["AccessorID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str()]);
}

#[tokio::test]
async fn the_go_clients_bodies_are_accepted_as_it_sends_them() {
    let api = Api::start(true).await;
    let root = api.bootstrap().await;
    // `api.ACLPolicy` and `api.ACLToken` marshalled whole: zero times,
    // null hashes and lists, empty IDs.
    let policy = api
        .put(
            "/v1/acl/policy",
            &root,
            json!({"ID": "", "Name": "go", "Description": "", "Rules": "acl = \"read\"",
                   "Datacenters": null, "Hash": null, "CreateIndex": 0, "ModifyIndex": 0}),
        )
        .await
        .ok();
    let token = api
        .put(
            "/v1/acl/token",
            &root,
            json!({"CreateIndex": 0, "ModifyIndex": 0, "AccessorID": "", "SecretID": "",
                   "Description": "from go", "Policies": [{"ID": policy["ID"], "Name": ""}],
                   "Local": false, "CreateTime": "0001-01-01T00:00:00Z"}),
        )
        .await
        .ok();
    assert_eq!(token["Policies"][0]["Name"], "go");
    let accessor = token["AccessorID"].as_str().unwrap();
    let mut update = token.clone();
    update["Description"] = json!("changed");
    let updated = api
        .put(&format!("/v1/acl/token/{accessor}"), &root, update)
        .await
        .ok();
    assert_eq!(updated["Description"], "changed");
    assert_eq!(updated["SecretID"], token["SecretID"]);
}
