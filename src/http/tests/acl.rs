//! ACL enforcement through the real router: tokens and policies written
//! through the replicated state as the ACL endpoints will write them, then
//! requests carrying those tokens.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::TestApi;
use crate::acl::DefaultPolicy;
use crate::catalog::{AclOp, AclPolicy, AclToken, Command, Outcome, secret_hash};
use crate::config::AclSettings;

/// The management token every test sets up with.
const ROOT: &str = "root-secret";
const FILTERED: &str = "x-consul-results-filtered-by-acls";

/// An API with ACLs on under `default_policy`, holding the management
/// token [`ROOT`].
async fn acl_api(default_policy: DefaultPolicy, key_list: bool) -> TestApi {
    let api = TestApi::start_with_acl(AclSettings {
        enabled: true,
        default_policy,
        enable_key_list_policy: key_list,
        ..AclSettings::default()
    })
    .await;
    let root = token_of(ROOT, "root-accessor", vec![]);
    write(&api, AclOp::InitialManagement(root)).await;
    api
}

fn token_of(secret: &str, accessor: &str, policies: Vec<String>) -> AclToken {
    AclToken {
        accessor_id: accessor.into(),
        secret_id: secret.into(),
        secret_hash: secret_hash(secret),
        description: String::new(),
        policies,
        local: false,
        create_time: 0,
        create_index: 0,
        modify_index: 0,
    }
}

async fn write(api: &TestApi, op: AclOp) {
    let outcome = api.ctx.api.delegate.write(Command::Acl(op)).await.unwrap();
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
}

/// A token with secret `secret` holding one policy with `rules`.
async fn token(api: &TestApi, secret: &str, rules: &str) {
    let id = format!("policy-{secret}");
    write(
        api,
        AclOp::SetPolicy(AclPolicy {
            id: id.clone(),
            name: id.clone(),
            description: String::new(),
            rules: rules.into(),
            datacenters: vec![],
            create_index: 0,
            modify_index: 0,
        }),
    )
    .await;
    let accessor = format!("accessor-{secret}");
    write(api, AclOp::SetToken(token_of(secret, &accessor, vec![id]))).await;
}

/// One request with `X-Consul-Token: token` (none for `None`).
async fn call(
    api: &TestApi,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = api.client.request(method, format!("{}{path}", api.base));
    if let Some(t) = token {
        req = req.header("X-Consul-Token", t);
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

async fn get(api: &TestApi, path: &str, token: Option<&str>) -> (StatusCode, HeaderMap, String) {
    call(api, Method::GET, path, token, None).await
}

fn filtered(headers: &HeaderMap) -> bool {
    headers.get(FILTERED).is_some_and(|v| v == "true")
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Registers `web` (ID `web1`) on a node `other` and on this agent's node.
async fn register_web(api: &TestApi) {
    let (status, _, body) = call(
        api,
        Method::PUT,
        "/v1/catalog/register",
        Some(ROOT),
        Some(json!({"Node": "other", "Address": "10.0.0.2",
            "Service": {"ID": "web1", "Service": "web", "Port": 80},
            "Check": {"Name": "web alive", "ServiceID": "web1", "Status": "passing"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = call(
        api,
        Method::PUT,
        "/v1/agent/service/register",
        Some(ROOT),
        Some(json!({"ID": "web1", "Name": "web", "Port": 80})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn default_deny_refuses_the_anonymous_token_and_empties_its_lists() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    register_web(&api).await;
    let (status, _, body) = call(&api, Method::PUT, "/v1/kv/a", None, Some(json!(1))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "Permission denied: anonymous token lacks permission 'key:write' on \"a\". The \
         anonymous token is used implicitly when a request does not specify a token."
    );
    // A single key is refused before it is looked up: missing or not.
    let (status, _, _) = get(&api, "/v1/kv/missing", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Lists are filtered, not refused, and the anonymous caller is not told.
    for path in [
        "/v1/catalog/service/web",
        "/v1/health/service/web",
        "/v1/catalog/nodes",
        "/v1/health/state/any",
        "/v1/session/list",
        "/v1/agent/members",
    ] {
        let (status, headers, body) = get(&api, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(json_of(&body), json!([]), "{path}");
        assert!(!filtered(&headers), "{path}");
    }
    for path in [
        "/v1/catalog/services",
        "/v1/agent/services",
        "/v1/agent/checks",
    ] {
        let (status, _, body) = get(&api, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(json_of(&body), json!({}), "{path}");
    }
    let (status, _, body) = get(&api, "/v1/catalog/node/other", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "null"));
    let (status, _, _) = get(&api, "/v1/kv/?recurse", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for path in [
        "/v1/agent/self",
        "/v1/agent/service/web1",
        "/v1/agent/health/service/name/web",
        "/v1/operator/raft/configuration",
    ] {
        let (status, _, body) = get(&api, path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.starts_with("Permission denied"), "{path}: {body}");
    }
    let (status, _, _) = get(&api, "/v1/status/leader", None).await;
    assert_eq!(status, StatusCode::OK);
    // The management token sees everything, unfiltered.
    let (_, headers, body) = get(&api, "/v1/catalog/service/web", Some(ROOT)).await;
    assert_eq!(json_of(&body).as_array().unwrap().len(), 2);
    assert!(!filtered(&headers));
}

#[tokio::test]
async fn a_token_that_may_read_web_may_not_write_it() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    register_web(&api).await;
    token(
        &api,
        "reader",
        r#"service "web" { policy = "read" }
node_prefix "" { policy = "read" }"#,
    )
    .await;
    let reader = Some("reader");
    let (_, headers, body) = get(&api, "/v1/catalog/service/web", reader).await;
    assert_eq!(json_of(&body).as_array().unwrap().len(), 2, "{body}");
    assert!(!filtered(&headers));
    let (_, headers, body) = get(&api, "/v1/health/service/web", reader).await;
    assert_eq!(json_of(&body).as_array().unwrap().len(), 2, "{body}");
    assert!(!filtered(&headers));
    // The server's own `consul` service is left out, and the header says so.
    let (_, headers, body) = get(&api, "/v1/catalog/services", reader).await;
    assert_eq!(json_of(&body), json!({"web": []}));
    assert!(filtered(&headers));
    let (status, _, _) = get(&api, "/v1/agent/service/web1", reader).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, body) = call(
        &api,
        Method::PUT,
        "/v1/agent/service/register",
        reader,
        Some(json!({"ID": "web2", "Name": "web", "Port": 81})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "Permission denied: token with AccessorID 'accessor-reader' lacks permission \
         'service:write' on \"web\""
    );
    let (status, _, _) = call(
        &api,
        Method::PUT,
        "/v1/catalog/deregister",
        reader,
        Some(json!({"Node": "other", "ServiceID": "web1"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(
        &api,
        Method::PUT,
        "/v1/agent/service/deregister/web1",
        reader,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, _, body) = get(&api, "/v1/catalog/service/web", Some(ROOT)).await;
    assert_eq!(
        json_of(&body).as_array().unwrap().len(),
        2,
        "nothing changed"
    );
}

#[tokio::test]
async fn instances_also_need_node_read_on_their_node() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    register_web(&api).await;
    token(
        &api,
        "one-node",
        r#"service "web" { policy = "read" }
node "other" { policy = "read" }"#,
    )
    .await;
    let t = Some("one-node");
    for path in ["/v1/catalog/service/web", "/v1/health/service/web"] {
        let (_, headers, body) = get(&api, path, t).await;
        let list = json_of(&body);
        let nodes: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e.pointer("/Node")
                    .and_then(Value::as_str)
                    .or_else(|| e.pointer("/Node/Node").and_then(Value::as_str))
                    .unwrap()
            })
            .collect();
        assert_eq!(nodes, vec!["other"], "{path}");
        assert!(filtered(&headers), "{path}");
    }
    // The service list needs no node permission.
    let (_, _, body) = get(&api, "/v1/catalog/services", t).await;
    assert_eq!(json_of(&body), json!({"web": []}));
    let (_, headers, body) = get(&api, "/v1/catalog/nodes", t).await;
    assert_eq!(json_of(&body).as_array().unwrap().len(), 1);
    assert!(filtered(&headers));
    let (_, headers, body) = get(&api, "/v1/catalog/node/node1", t).await;
    assert_eq!(body, "null");
    assert!(filtered(&headers));
    // Checks: node1's serfHealth is left out, web's check on `other` kept.
    let (_, headers, body) = get(&api, "/v1/health/state/any", t).await;
    let checks = json_of(&body);
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["web alive"], "{body}");
    assert!(filtered(&headers));
}

#[tokio::test]
async fn kv_reads_are_filtered_and_writes_refused_by_key_rules() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    for key in ["app/a", "app/secret", "other/x"] {
        let (status, _, _) = call(
            &api,
            Method::PUT,
            &format!("/v1/kv/{key}"),
            Some(ROOT),
            Some(json!(1)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    token(
        &api,
        "kv",
        r#"key_prefix "app/" { policy = "read" }
key "app/secret" { policy = "deny" }"#,
    )
    .await;
    let t = Some("kv");
    let (status, _, _) = get(&api, "/v1/kv/app/a", t).await;
    assert_eq!(status, StatusCode::OK);
    for key in ["app/secret", "other/x", "other/missing"] {
        let (status, _, body) = get(&api, &format!("/v1/kv/{key}"), t).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{key}");
        assert!(body.contains("'key:read'"), "{body}");
    }
    let (status, headers, body) = get(&api, "/v1/kv/app/?recurse", t).await;
    assert_eq!(status, StatusCode::OK);
    let list = json_of(&body);
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["app/a"]);
    assert!(filtered(&headers));
    let (_, headers, body) = get(&api, "/v1/kv/?keys", t).await;
    assert_eq!(json_of(&body), json!(["app/a"]));
    assert!(filtered(&headers));
    // Nothing readable left: Consul's 404, still marked.
    let (status, headers, _) = get(&api, "/v1/kv/other/?recurse", t).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(filtered(&headers));

    let (status, _, body) = call(&api, Method::PUT, "/v1/kv/app/a", t, Some(json!(2))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("'key:write' on \"app/a\""), "{body}");
    let (status, _, _) = call(&api, Method::DELETE, "/v1/kv/app/?recurse", t, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, _, body) = get(&api, "/v1/kv/app/a?raw", Some(ROOT)).await;
    assert_eq!(body, "1", "the refused write changed nothing");
}

#[tokio::test]
async fn a_recursive_delete_needs_write_on_everything_under_the_prefix() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    token(
        &api,
        "w",
        r#"key_prefix "app/" { policy = "write" }
key_prefix "app/locked/" { policy = "read" }"#,
    )
    .await;
    let (status, _, _) = call(&api, Method::PUT, "/v1/kv/app/x", Some("w"), Some(json!(1))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&api, Method::DELETE, "/v1/kv/app/?recurse", Some("w"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(&api, Method::DELETE, "/v1/kv/app/x", Some("w"), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn enable_key_list_policy_needs_list_on_the_prefix() {
    let api = acl_api(DefaultPolicy::Deny, true).await;
    token(&api, "reader", r#"key_prefix "app/" { policy = "read" }"#).await;
    token(&api, "lister", r#"key_prefix "app/" { policy = "list" }"#).await;
    let (status, _, body) = get(&api, "/v1/kv/app/?recurse", Some("reader")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("'key:list' on \"app/\""), "{body}");
    let (status, _, _) = get(&api, "/v1/kv/app/?keys", Some("reader")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // `list` alone lists (nothing here: 404), it does not refuse.
    let (status, _, _) = get(&api, "/v1/kv/app/?keys", Some("lister")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_transaction_is_checked_per_operation_and_its_reads_filtered() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    for key in ["app/a", "app/secret"] {
        call(
            &api,
            Method::PUT,
            &format!("/v1/kv/{key}"),
            Some(ROOT),
            Some(json!(1)),
        )
        .await;
    }
    token(
        &api,
        "t",
        r#"key_prefix "app/" { policy = "read" }
key "app/secret" { policy = "deny" }
key "app/mine" { policy = "write" }"#,
    )
    .await;
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "app/mine", "Value": "MQ=="}},
        {"KV": {"Verb": "set", "Key": "app/a", "Value": "MQ=="}},
        {"KV": {"Verb": "check-index", "Key": "app/secret", "Index": 1}},
        {"KV": {"Verb": "get", "Key": "app/secret"}},
    ]);
    let (status, _, body) = call(&api, Method::PUT, "/v1/txn", Some("t"), Some(ops)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["Results"], Value::Null);
    let errors: Vec<u64> = answer["Errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["What"].as_str().unwrap().starts_with("Permission denied"));
            e["OpIndex"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(errors, vec![1, 2]);
    let (status, _, _) = get(&api, "/v1/kv/app/mine", Some(ROOT)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing ran");

    let reads = json!([{"KV": {"Verb": "get-tree", "Key": "app/"}}]);
    let (status, headers, body) = call(&api, Method::PUT, "/v1/txn", Some("t"), Some(reads)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys: Vec<String> = json_of(&body)["Results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["KV"]["Key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, vec!["app/a"]);
    assert!(filtered(&headers));
}

#[tokio::test]
async fn sessions_need_write_on_their_node_and_are_read_by_node() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    token(&api, "reader", r#"session_prefix "" { policy = "read" }"#).await;
    token(&api, "nobody", r#"key "x" { policy = "read" }"#).await;
    let (status, _, body) = call(
        &api,
        Method::PUT,
        "/v1/session/create",
        Some("reader"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("'session:write' on \"node1\""), "{body}");
    let (status, _, body) = call(&api, Method::PUT, "/v1/session/create", Some(ROOT), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = json_of(&body)["ID"].as_str().unwrap().to_string();
    let (_, headers, body) = get(&api, "/v1/session/list", Some("reader")).await;
    assert_eq!(json_of(&body).as_array().unwrap().len(), 1);
    assert!(!filtered(&headers));
    let (_, headers, body) = get(&api, &format!("/v1/session/info/{id}"), Some("nobody")).await;
    assert_eq!(json_of(&body), json!([]));
    assert!(filtered(&headers));
    let renew = format!("/v1/session/renew/{id}");
    let (status, _, _) = call(&api, Method::PUT, &renew, Some("reader"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let destroy = format!("/v1/session/destroy/{id}");
    let (status, _, _) = call(&api, Method::PUT, &destroy, Some("reader"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A session that is gone needs no permission to be destroyed again,
    // and renewing it is a 404 before any check.
    let gone = "/v1/session/destroy/00000000-0000-0000-0000-00000000dead";
    let (status, _, body) = call(&api, Method::PUT, gone, Some("reader"), None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "true"));
    let gone = "/v1/session/renew/00000000-0000-0000-0000-00000000dead";
    let (status, _, _) = call(&api, Method::PUT, gone, Some("reader"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn agent_and_operator_endpoints_need_their_permissions() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    register_web(&api).await;
    let (status, _, body) = call(
        &api,
        Method::PUT,
        "/v1/agent/check/register",
        Some(ROOT),
        Some(json!({"ID": "ttl", "Name": "ttl", "TTL": "30s"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    token(
        &api,
        "ops",
        r#"agent "node1" { policy = "read" }
operator = "read"
service "web" { policy = "write" }"#,
    )
    .await;
    let t = Some("ops");
    let (status, _, _) = get(&api, "/v1/agent/self", t).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&api, "/v1/operator/raft/configuration", t).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) =
        call(&api, Method::DELETE, "/v1/operator/raft/peer?id=1", t, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.ends_with("lacks permission 'operator:write'"),
        "{body}"
    );
    let (status, _, _) = call(&api, Method::PUT, "/v1/agent/leave", t, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(&api, Method::PUT, "/v1/agent/force-leave/x", t, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(&api, Method::PUT, "/v1/agent/join/127.0.0.1", t, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(
        &api,
        Method::PUT,
        "/v1/agent/maintenance?enable=true",
        t,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A node check needs node:write; service web's may be changed.
    let (status, _, body) = call(&api, Method::PUT, "/v1/agent/check/pass/ttl", t, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("'node:write' on \"node1\""), "{body}");
    let (status, _, _) = call(&api, Method::PUT, "/v1/agent/check/pass/nope", t, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown before denied");
    let maintenance = "/v1/agent/service/maintenance/web1?enable=true";
    let (status, _, body) = call(&api, Method::PUT, maintenance, t, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Checks: the node's are left out without node:read.
    let (_, headers, body) = get(&api, "/v1/agent/checks", t).await;
    let checks = json_of(&body);
    assert!(checks.get("ttl").is_none(), "{body}");
    assert!(checks.get("_service_maintenance:web1").is_some(), "{body}");
    assert!(filtered(&headers));
    let (_, headers, body) = get(&api, "/v1/agent/members", t).await;
    assert_eq!(json_of(&body), json!([]));
    assert!(filtered(&headers));
}

#[tokio::test]
async fn with_acls_off_nothing_is_refused_or_marked() {
    let api = TestApi::start().await;
    let (status, _, _) = call(
        &api,
        Method::PUT,
        "/v1/kv/a",
        Some("no-such-token"),
        Some(json!(1)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) = get(&api, "/v1/kv/?recurse", Some("no-such-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!filtered(&headers));
    let (status, _, _) = get(&api, "/v1/agent/self", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn catalog_writes_need_node_write_for_the_node_and_service_write_for_the_service() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    register_web(&api).await;
    token(&api, "svc", r#"service "web" { policy = "write" }"#).await;
    let t = Some("svc");
    let register = |body: Value| call(&api, Method::PUT, "/v1/catalog/register", t, Some(body));
    // A new node needs node:write.
    let (status, _, body) = register(json!({"Node": "new", "Address": "10.0.0.9",
        "Service": {"Service": "web", "ID": "web9"}}))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("'node:write' on \"new\""), "{body}");
    // The same node unchanged: the service alone is checked.
    let (status, _, body) = register(json!({"Node": "other", "Address": "10.0.0.2",
        "Service": {"Service": "web", "ID": "web2", "Port": 81}}))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A moved address changes the node.
    let (status, _, _) = register(json!({"Node": "other", "Address": "10.0.0.3",
        "Service": {"Service": "web", "ID": "web2"}}))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Another service, or a node check, is not web's to write.
    let (status, _, body) = register(json!({"Node": "other", "Address": "10.0.0.2",
        "Service": {"Service": "db", "ID": "db1"}}))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("'service:write' on \"db\""), "{body}");
    let (status, _, _) = register(json!({"Node": "other", "Address": "10.0.0.2",
        "Check": {"Name": "disk"}}))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Deregistering web's instance needs service:write only; the node, node:write.
    let deregister = |body: Value| call(&api, Method::PUT, "/v1/catalog/deregister", t, Some(body));
    let (status, _, body) = deregister(json!({"Node": "other", "ServiceID": "web2"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = deregister(json!({"Node": "other"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("'node:write' on \"other\""), "{body}");
    let (_, _, body) = get(&api, "/v1/catalog/service/web", Some(ROOT)).await;
    assert_eq!(
        json_of(&body).as_array().unwrap().len(),
        2,
        "web1 on both nodes"
    );
}

#[tokio::test]
async fn the_agents_default_token_stands_in_for_a_missing_one_and_is_told_of_filtering() {
    let api = TestApi::start_with_acl(AclSettings {
        enabled: true,
        default_policy: DefaultPolicy::Deny,
        default_token: Some("fallback".into()),
        ..AclSettings::default()
    })
    .await;
    write(
        &api,
        AclOp::InitialManagement(token_of(ROOT, "root-accessor", vec![])),
    )
    .await;
    token(&api, "fallback", r#"node_prefix "" { policy = "read" }"#).await;
    register_web(&api).await;
    // No token: the default one reads the nodes, not the services, and as
    // a token was in play the caller is told what was left out.
    let (_, headers, body) = get(&api, "/v1/catalog/nodes", None).await;
    assert_eq!(json_of(&body).as_array().unwrap().len(), 2);
    assert!(!filtered(&headers));
    let (_, headers, body) = get(&api, "/v1/catalog/services", None).await;
    assert_eq!(json_of(&body), json!({}));
    assert!(filtered(&headers));
}

#[tokio::test]
async fn coordinates_are_filtered_by_node_read_and_updated_with_node_write() {
    let api = acl_api(DefaultPolicy::Deny, false).await;
    register_web(&api).await;
    let mut c = crate::coordinate::Coordinate::new(&crate::coordinate::Config::default());
    c.vec[0] = 0.2;
    api.ctx
        .api
        .gossip
        .set_coordinate("other", c.clone())
        .unwrap();
    api.ctx
        .api
        .gossip
        .set_coordinate("node1", c.clone())
        .unwrap();

    let (status, headers, body) = get(&api, "/v1/coordinate/nodes", None).await;
    assert_eq!((status, json_of(&body)), (StatusCode::OK, json!([])));
    assert!(!filtered(&headers));
    let (status, _, _) = get(&api, "/v1/coordinate/node/other", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    token(&api, "reader", r#"node "other" { policy = "read" }"#).await;
    let (_, headers, body) = get(&api, "/v1/coordinate/nodes", Some("reader")).await;
    let rows = json_of(&body);
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["Node"], "other");
    assert!(filtered(&headers));
    let (_, _, body) = get(&api, "/v1/coordinate/nodes", Some(ROOT)).await;
    assert_eq!(json_of(&body).as_array().unwrap().len(), 2);

    let update = json!({"Node": "n1", "Coord": c});
    let (status, _, body) = call(
        &api,
        Method::PUT,
        "/v1/coordinate/update",
        Some("reader"),
        Some(update.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("node:write"), "{body}");
    let (status, _, body) = call(
        &api,
        Method::PUT,
        "/v1/coordinate/update",
        Some(ROOT),
        Some(update),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
