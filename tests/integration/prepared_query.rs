//! Prepared queries on a real agent: Consul's `/v1/query` endpoints and
//! JSON (create, list, read, update, delete, refusals that write nothing),
//! executing with the health, tag and metadata filters and the limit,
//! templates (a prefix with a regular expression, the catch-all) and
//! explain, and the DNS names `name.query.consul` and
//! `_name._tcp.query.consul` with the query's TTL.

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};
use trellis_testkit::dns::{a_records, srv_ports};
use trellis_testkit::{Agent, Resp};

use crate::harness::trellis;

async fn call(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> Resp {
    agent
        .request(method, path, body.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Registers `node` at `address` with a `web` instance and a check of
/// `status` on it.
async fn web(agent: &Agent, node: &str, address: &str, tags: &[&str], status: &str) {
    let body = json!({
        "Node": node,
        "Address": address,
        "NodeMeta": {"rack": node},
        "Service": {"ID": format!("web-{node}"), "Service": "web", "Tags": tags, "Port": 8080,
                    "Meta": {"node": node}},
        "Check": {"CheckID": format!("{node}-web"), "Name": "web", "Status": status,
                  "ServiceID": format!("web-{node}")},
    });
    let r = call(agent, "PUT", "/v1/catalog/register", Some(body)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Creates a query; its ID.
async fn create(agent: &Agent, body: Value) -> String {
    let r = call(agent, "POST", "/v1/query", Some(body.clone())).await;
    assert_eq!(r.status, 200, "{body}: {r:?}");
    assert!(r.index.is_some_and(|i| i > 0), "{r:?}");
    r.json()["ID"].as_str().expect("ID").to_string()
}

/// The node names `execute` answered, sorted, and the whole answer.
async fn execute(agent: &Agent, path: &str) -> (Vec<String>, Value) {
    let r = call(agent, "GET", path, None).await;
    assert_eq!(r.status, 200, "{path}: {r:?}");
    let body = r.json();
    let mut nodes: Vec<String> = body["Nodes"]
        .as_array()
        .expect("Nodes")
        .iter()
        .map(|e| e["Node"]["Node"].as_str().expect("node").to_string())
        .collect();
    nodes.sort();
    (nodes, body)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The three web nodes every test starts from: n1 passing (tags blue,
/// v1), n2 warning (blue), n3 critical (green).
async fn agent_with_web() -> Agent {
    let agent = trellis().dev().start();
    web(&agent, "n1", "127.0.1.1", &["blue", "v1"], "passing").await;
    web(&agent, "n2", "127.0.1.2", &["Blue"], "warning").await;
    web(&agent, "n3", "127.0.1.3", &["green"], "critical").await;
    agent
}

#[tokio::test]
async fn queries_are_created_listed_read_updated_and_deleted_and_bad_ones_write_nothing() {
    let agent = agent_with_web().await;
    let id = create(
        &agent,
        json!({"Name": "web-q", "Token": "t-secret",
               "Service": {"Service": "web", "Tags": ["blue"],
                           "Failover": {"NearestN": 2, "Datacenters": ["dc2"]}},
               "DNS": {"TTL": "10s"}}),
    )
    .await;
    let listed = call(&agent, "GET", "/v1/query", None).await;
    assert_eq!(listed.status, 200);
    let list = listed.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let q = &list[0];
    assert_eq!(q["ID"], id.as_str());
    assert_eq!(q["Name"], "web-q");
    // ACLs are off: every caller is management and sees the token.
    assert_eq!(q["Token"], "t-secret");
    assert_eq!(q["Service"]["Failover"]["NearestN"], 2);
    assert_eq!(q["Service"]["Failover"]["Datacenters"], json!(["dc2"]));
    assert_eq!(q["DNS"]["TTL"], "10s");
    assert!(q["CreateIndex"].as_u64().unwrap() > 0, "{q}");

    // Update: the whole query is replaced, its CreateIndex kept.
    let r = call(
        &agent,
        "PUT",
        &format!("/v1/query/{id}"),
        Some(json!({"Name": "web-q", "Service": {"Service": "web", "OnlyPassing": true}})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let read = call(&agent, "GET", &format!("/v1/query/{id}"), None).await;
    assert_eq!(read.status, 200);
    let one = &read.json()[0];
    assert_eq!(one["Service"]["OnlyPassing"], true, "{one}");
    assert_eq!(one["Service"]["Tags"], Value::Null, "{one}");
    assert_eq!(one["CreateIndex"], q["CreateIndex"]);
    assert!(one["ModifyIndex"].as_u64() > q["ModifyIndex"].as_u64());

    // Refusals, each writing nothing: no service, no session for an
    // unnamed query, a bad TTL, a bad template, a name taken, an unknown
    // session, an update of a query that does not exist.
    let before = call(&agent, "GET", "/v1/query", None).await.json();
    for (body, status, says) in [
        (
            json!({"Name": "x"}),
            400,
            "Must provide a Service name to query",
        ),
        (
            json!({"Service": {"Service": "web"}}),
            400,
            "Must be bound to a session",
        ),
        (
            json!({"Name": "x", "Service": {"Service": "web"}, "DNS": {"TTL": "soon"}}),
            400,
            "Bad DNS TTL",
        ),
        (
            json!({"Name": "x", "Template": {"Type": "name_prefix_match", "Regexp": "("},
                "Service": {"Service": "web"}}),
            400,
            "Bad Regexp",
        ),
        (
            json!({"Name": "x", "Template": {"Type": "name_prefix_match"},
                "Service": {"Service": "${nope}"}}),
            400,
            "unknown variable accessed: nope",
        ),
        (
            json!({"Name": "x", "Template": {"Type": "other"}, "Service": {"Service": "web"}}),
            400,
            "Bad Template.Type",
        ),
        (
            json!({"Name": "WEB-Q", "Service": {"Service": "web"}}),
            500,
            "aliases an existing query name",
        ),
        (
            json!({"Name": id, "Service": {"Service": "web"}}),
            500,
            "aliases an existing query ID",
        ),
        (
            json!({"Name": "y", "Session": "nope", "Service": {"Service": "web"}}),
            500,
            "invalid session",
        ),
        (
            json!({"Name": "x", "Service": {"Service": "web"}, "Token": "<hidden>"}),
            400,
            "redacted token",
        ),
    ] {
        let r = call(&agent, "POST", "/v1/query", Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}: {r:?}");
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }
    let r = call(&agent, "POST", "/v1/query", None).await;
    assert_eq!(r.status, 400, "an empty body: {r:?}");
    let r = call(
        &agent,
        "PUT",
        "/v1/query/no-such-id",
        Some(json!({"Name": "z", "Service": {"Service": "web"}})),
    )
    .await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        r.text.contains("Cannot modify non-existent prepared query"),
        "{}",
        r.text
    );
    assert_eq!(call(&agent, "GET", "/v1/query", None).await.json(), before);

    // Delete: gone, a second delete refused, a read 404.
    let r = call(&agent, "DELETE", &format!("/v1/query/{id}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = call(&agent, "DELETE", &format!("/v1/query/{id}"), None).await;
    assert_eq!(r.status, 500, "{r:?}");
    let r = call(&agent, "GET", &format!("/v1/query/{id}"), None).await;
    assert_eq!((r.status, r.text.as_str()), (404, "Query not found"));
    assert_eq!(
        call(&agent, "GET", "/v1/query", None).await.json(),
        json!([])
    );
}

#[tokio::test]
async fn execute_filters_health_tags_and_metadata_and_applies_the_limit() {
    let agent = agent_with_web().await;
    let id = create(
        &agent,
        json!({"Name": "web", "Service": {"Service": "web"}}),
    )
    .await;
    // Critical instances are dropped; warnings stay unless OnlyPassing.
    let (nodes, body) = execute(&agent, "/v1/query/web/execute").await;
    assert_eq!(nodes, names(&["n1", "n2"]));
    assert_eq!(body["Service"], "web");
    assert_eq!(body["Datacenter"], "dc1");
    assert_eq!(body["Failovers"], 0);
    assert_eq!(body["DNS"]["TTL"], "");
    assert!(
        body["Nodes"][0]["Checks"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    // By ID, and by name in any case.
    assert_eq!(
        execute(&agent, &format!("/v1/query/{id}/execute")).await.0,
        nodes
    );
    assert_eq!(execute(&agent, "/v1/query/WEB/execute").await.0, nodes);
    let (one, _) = execute(&agent, "/v1/query/web/execute?limit=1").await;
    assert_eq!(one.len(), 1);
    // ?near puts that node first.
    for _ in 0..5 {
        let (_, body) = execute(&agent, "/v1/query/web/execute?near=n2").await;
        assert_eq!(body["Nodes"][0]["Node"]["Node"], "n2", "{body}");
    }

    let cases = [
        (json!({"Service": "web", "OnlyPassing": true}), vec!["n1"]),
        (
            json!({"Service": "web", "IgnoreCheckIDs": ["n3-web"]}),
            vec!["n1", "n2", "n3"],
        ),
        (
            json!({"Service": "web", "Tags": ["BLUE"]}),
            vec!["n1", "n2"],
        ),
        (
            json!({"Service": "web", "Tags": ["blue", "!v1"]}),
            vec!["n2"],
        ),
        (
            json!({"Service": "web", "NodeMeta": {"rack": "n2"}}),
            vec!["n2"],
        ),
        (
            json!({"Service": "web", "ServiceMeta": {"node": "n1"}}),
            vec!["n1"],
        ),
        (json!({"Service": "nothing"}), vec![]),
    ];
    for (i, (service, want)) in cases.into_iter().enumerate() {
        let name = format!("case-{i}");
        create(&agent, json!({"Name": name, "Service": service})).await;
        let (got, body) = execute(&agent, &format!("/v1/query/{name}/execute")).await;
        assert_eq!(got, names(&want), "{service}: {body}");
    }
    let r = call(&agent, "GET", "/v1/query/missing/execute", None).await;
    assert_eq!((r.status, r.text.as_str()), (404, "Query not found"));
    let r = call(&agent, "GET", "/v1/query/web/execute?limit=many", None).await;
    assert_eq!(r.status, 400, "{r:?}");
}

#[tokio::test]
async fn templates_render_for_the_name_asked_and_the_catch_all_answers_the_rest() {
    let agent = agent_with_web().await;
    create(
        &agent,
        json!({"Name": "geo-", "Template": {"Type": "name_prefix_match",
                                            "Regexp": "^geo-([a-z]+)-([a-z0-9]+)$",
                                            "RemoveEmptyTags": true},
               "Service": {"Service": "${match(1)}", "Tags": ["${match(2)}", "${match(9)}"]}}),
    )
    .await;
    let (nodes, body) = execute(&agent, "/v1/query/geo-web-v1/execute").await;
    assert_eq!(nodes, names(&["n1"]), "{body}");
    assert_eq!(body["Service"], "web");
    let r = call(&agent, "GET", "/v1/query/geo-web-blue/explain", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let explained = r.json();
    assert_eq!(
        explained["Query"]["Service"]["Service"], "web",
        "{explained}"
    );
    assert_eq!(
        explained["Query"]["Service"]["Tags"],
        json!(["blue"]),
        "{explained}"
    );
    assert_eq!(explained["Query"]["Name"], "geo-", "{explained}");

    // Before a catch-all, an unknown name is not found; after, it renders.
    let r = call(&agent, "GET", "/v1/query/web/execute", None).await;
    assert_eq!(r.status, 404, "{r:?}");
    create(
        &agent,
        json!({"Name": "", "Template": {"Type": "name_prefix_match"},
               "Service": {"Service": "${name.full}", "OnlyPassing": true}}),
    )
    .await;
    assert_eq!(
        execute(&agent, "/v1/query/web/execute").await.0,
        names(&["n1"])
    );
    // The longest prefix still wins over the catch-all.
    assert_eq!(
        execute(&agent, "/v1/query/geo-web-v1/execute").await.0,
        names(&["n1"])
    );
    let r = call(
        &agent,
        "POST",
        "/v1/query",
        Some(json!({"Template": {"Type": "name_prefix_match"}, "Service": {"Service": "x"}})),
    )
    .await;
    assert_eq!(r.status, 500, "a second catch-all: {r:?}");
    assert!(
        r.text
            .contains("a query template with an empty name already exists"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn dns_answers_query_names_with_addresses_srv_targets_and_the_query_ttl() {
    let agent = agent_with_web().await;
    create(
        &agent,
        json!({"Name": "web", "Service": {"Service": "web"}, "DNS": {"TTL": "7s"}}),
    )
    .await;
    let want: Vec<IpAddr> = vec!["127.0.1.1".parse().unwrap(), "127.0.1.2".parse().unwrap()];
    for m in [
        agent.query_udp("web.query.consul.", RecordType::A),
        agent.query_tcp("WEB.query.consul.", RecordType::A),
    ] {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        assert_eq!(a_records(&m), want, "{m:?}");
        assert!(m.answers.iter().all(|r| r.ttl == 7), "{m:?}");
    }
    let srv = agent.query_udp("_web._tcp.query.consul.", RecordType::SRV);
    assert_eq!(srv_ports(&srv), vec![8080, 8080], "{srv:?}");
    let mut targets: Vec<String> = srv
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.target.to_string()),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(targets, ["n1.node.dc1.consul.", "n2.node.dc1.consul."]);
    // Each target's address in the additional section.
    let mut extra = srv.clone();
    extra.answers = srv.additionals.clone();
    assert_eq!(a_records(&extra), want);
    let missing = agent.query_udp("nothing.query.consul.", RecordType::A);
    assert_eq!(
        missing.metadata.response_code,
        ResponseCode::NXDomain,
        "{missing:?}"
    );
    // A query that finds no instance is NXDOMAIN too.
    create(
        &agent,
        json!({"Name": "none", "Service": {"Service": "web", "Tags": ["absent"]}}),
    )
    .await;
    let empty = agent.query_tcp("none.query.consul.", RecordType::A);
    assert_eq!(
        empty.metadata.response_code,
        ResponseCode::NXDomain,
        "{empty:?}"
    );
}

/// The management token of the ACL test.
const ROOT: &str = "0a1b2c3d-0000-4000-8000-0000000000aa";

/// `path` with `?token=`.
fn as_token(path: &str, token: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}token={token}")
}

/// Makes a policy of `rules` and a token with it; the token's secret.
async fn token_with(agent: &Agent, name: &str, rules: &str) -> String {
    let r = call(
        agent,
        "PUT",
        &as_token("/v1/acl/policy", ROOT),
        Some(json!({"Name": name, "Rules": rules})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = call(
        agent,
        "PUT",
        &as_token("/v1/acl/token", ROOT),
        Some(json!({"Policies": [{"Name": name}]})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["SecretID"].as_str().expect("secret").to_string()
}

#[tokio::test]
async fn with_acls_writes_need_query_write_reads_hide_tokens_and_execute_filters_by_the_token() {
    let etc = crate::harness::temp_dir();
    let config = etc.path().join("acl.json");
    let acl = json!({"acl": {"enabled": true, "default_policy": "deny",
                             "tokens": {"initial_management": ROOT}}});
    std::fs::write(&config, acl.to_string()).expect("write config");
    let agent = trellis()
        .server()
        .node("s1")
        .bootstrap_expect(1)
        .config_file(&config)
        .start();
    trellis_testkit::wait_until_async("the management token", Duration::from_secs(30), || async {
        let r = agent.get(&as_token("/v1/query", ROOT)).await?;
        if r.status == 200 { Ok(()) } else { Err(r.text) }
    })
    .await;
    for (node, address, status) in [
        ("n1", "127.0.1.1", "passing"),
        ("n2", "127.0.1.2", "passing"),
    ] {
        let body = json!({"Node": node, "Address": address,
                          "Service": {"ID": "web", "Service": "web", "Port": 80},
                          "Check": {"CheckID": "web", "Name": "web", "Status": status, "ServiceID": "web"}});
        let r = call(
            &agent,
            "PUT",
            &as_token("/v1/catalog/register", ROOT),
            Some(body),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let writer = token_with(
        &agent,
        "q-web",
        r#"query_prefix "web" { policy = "write" }
           service_prefix "" { policy = "read" }
           node_prefix "" { policy = "read" }"#,
    )
    .await;
    let reader = token_with(
        &agent,
        "q-read",
        r#"query_prefix "" { policy = "read" }
           service "web" { policy = "read" }
           node "n1" { policy = "read" }"#,
    )
    .await;

    let web = json!({"Name": "web-a", "Service": {"Service": "web"}});
    let r = call(&agent, "POST", &as_token("/v1/query", &writer), Some(web)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let db = json!({"Name": "db", "Token": ROOT, "Service": {"Service": "web"}});
    let r = call(
        &agent,
        "POST",
        &as_token("/v1/query", &writer),
        Some(db.clone()),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.text.contains("query:write"), "{}", r.text);
    let r = call(&agent, "POST", &as_token("/v1/query", ROOT), Some(db)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let db_id = r.json()["ID"].as_str().expect("ID").to_string();

    // The reader sees both, the db query's token hidden; management sees it.
    let tokens = |v: Value| -> Vec<String> {
        let mut t: Vec<String> = v
            .as_array()
            .expect("list")
            .iter()
            .map(|q| {
                format!(
                    "{}={}",
                    q["Name"].as_str().unwrap(),
                    q["Token"].as_str().unwrap()
                )
            })
            .collect();
        t.sort();
        t
    };
    let seen = call(&agent, "GET", &as_token("/v1/query", &reader), None).await;
    assert_eq!(tokens(seen.json()), ["db=<hidden>", "web-a="]);
    let all = call(&agent, "GET", &as_token("/v1/query", ROOT), None).await;
    assert_eq!(
        tokens(all.json()),
        [format!("db={ROOT}"), "web-a=".to_string()]
    );
    // Anonymous: nothing listed, a read refused.
    let anon = call(&agent, "GET", "/v1/query", None).await;
    assert_eq!((anon.status, anon.json()), (200, json!([])));
    let r = call(&agent, "GET", &format!("/v1/query/{db_id}"), None).await;
    assert_eq!(r.status, 403, "{r:?}");
    // A token deleting a query it may not write is refused; it stays.
    let r = call(
        &agent,
        "DELETE",
        &as_token(&format!("/v1/query/{db_id}"), &writer),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");

    // Executing filters by the caller's token when the query has none...
    let r = call(
        &agent,
        "GET",
        &as_token("/v1/query/web-a/execute", &reader),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let nodes: Vec<Value> = r.json()["Nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["Node"]["Node"], "n1");
    // ...and by the query's own token when it has one (management here).
    let r = call(
        &agent,
        "GET",
        &as_token("/v1/query/db/execute", &reader),
        None,
    )
    .await;
    assert_eq!(r.json()["Nodes"].as_array().map(Vec::len), Some(2), "{r:?}");
}

#[tokio::test]
async fn a_client_agent_writes_and_executes_queries_from_its_own_replica() {
    let server = trellis().server().node("s1").bootstrap_expect(1).start();
    let client = trellis()
        .client()
        .node("c1")
        .retry_join(server.serf())
        .start();
    trellis_testkit::wait_until_async("c1 joined", Duration::from_secs(30), || async {
        let r = client.get("/v1/catalog/nodes").await?;
        if r.json().as_array().map_or(0, Vec::len) == 2 {
            Ok(())
        } else {
            Err(r.text)
        }
    })
    .await;
    web(&client, "n1", "127.0.1.1", &["blue"], "passing").await;
    // A session-bound query, written through the client agent.
    let r = call(
        &client,
        "PUT",
        "/v1/session/create",
        Some(json!({"Node": "c1"})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let session = r.json()["ID"].as_str().expect("ID").to_string();
    let id = create(
        &client,
        json!({"Session": session, "Service": {"Service": "web"}}),
    )
    .await;
    let (nodes, _) = execute(&client, &format!("/v1/query/{id}/execute")).await;
    assert_eq!(nodes, names(&["n1"]));
    let m = client.query_tcp(&format!("{id}.query.consul."), RecordType::A);
    assert_eq!(
        a_records(&m),
        vec!["127.0.1.1".parse::<IpAddr>().unwrap()],
        "{m:?}"
    );
    // The session's end deletes the query, on the server and the client.
    let r = call(
        &client,
        "PUT",
        &format!("/v1/session/destroy/{session}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    for agent in [&client, &server] {
        trellis_testkit::wait_until_async("the query is gone", Duration::from_secs(10), || async {
            let r = agent.get(&format!("/v1/query/{id}")).await?;
            if r.status == 404 { Ok(()) } else { Err(r.text) }
        })
        .await;
    }
}
