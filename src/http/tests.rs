//! The real router over real HTTP on loopback, against a real replica and
//! consensus handle.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use std::sync::atomic::Ordering;

use super::{Admission, ApiState, Ctx, MAX_BLOCKING, MAX_IN_FLIGHT, build, listen};
use crate::local::NodeIdentity;
use crate::local::testing::InProcess;

/// ACL enforcement on every endpoint but `/v1/acl/*`.
mod acl;
/// `/v1/coordinate/*` and `?near=`.
mod coordinate;

/// One API server on 127.0.0.1:0; stops when dropped.
struct TestApi {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    ctx: Ctx,
}

/// Waits until `n` blocking queries are parked.
async fn wait_parked(ctx: &Ctx, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ctx.parked.load(Ordering::Relaxed) != n {
        assert!(tokio::time::Instant::now() < deadline, "never {n} parked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApi {
    async fn start() -> Self {
        Self::start_with_limit(Admission::new(MAX_IN_FLIGHT, MAX_BLOCKING)).await
    }

    async fn start_with_limit(admission: Admission) -> Self {
        Self::start_inner(admission, crate::config::AclSettings::default()).await
    }

    /// An API with these ACL settings, resolving tokens from its replica.
    async fn start_with_acl(acl: crate::config::AclSettings) -> Self {
        Self::start_inner(Admission::new(MAX_IN_FLIGHT, MAX_BLOCKING), acl).await
    }

    async fn start_inner(admission: Admission, acl: crate::config::AclSettings) -> Self {
        let identity = NodeIdentity {
            node_id: "11111111-2222-3333-4444-555555555555".into(),
            tagged_addresses: [("lan".to_string(), "127.0.0.1".to_string())].into(),
            meta: [("rack".to_string(), "r1".to_string())].into(),
            ..NodeIdentity::for_tests("node1", "127.0.0.1", true)
        };
        let InProcess {
            replica,
            delegate,
            local,
        } = InProcess::start(identity, |l| l).await;
        local.register_self().await.unwrap();
        if acl.enabled {
            replica.enable_acl(crate::catalog::AclContext {
                default: acl.default_policy,
                datacenter: "dc1".into(),
            });
        }
        let state = ApiState {
            prepared_queries: crate::prepared_query::Executor::new(
                replica.clone(),
                "dc1".into(),
                "node1".into(),
                Arc::new(crate::prepared_query::NoFederation),
            ),
            shutdown: CancellationToken::new(),
            gossip: crate::gossip::Gossip::alone("n1").await,
            wan: None,
            datacenters: Arc::new(crate::datacenters::Datacenters::new("dc1", None)),
            replica,
            delegate,
            local,
            kv: crate::config::KvSettings::default(),
            acl,
            remote: crate::remote::Remote::alone("dc1"),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        // What `serve` does, keeping the context to watch parked queries.
        let ctx = Ctx::new(state, shutdown.clone());
        let api = build(ctx.clone(), admission);
        let (limits, token) = (crate::config::LimitsSettings::default(), shutdown.clone());
        let server = tokio::spawn(async move {
            listen::serve(
                listener,
                api,
                &limits,
                None,
                listen::Caps::new(&limits),
                token,
            )
            .await
        });
        Self {
            base,
            client: reqwest::Client::new(),
            shutdown,
            server: Some(server),
            ctx,
        }
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, String) {
        self.put_raw(path, body.to_string().into_bytes()).await
    }

    async fn put_raw(&self, path: &str, body: Vec<u8>) -> (StatusCode, String) {
        let r = self
            .client
            .put(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// A successful JSON read and its `X-Consul-Index`.
    async fn get(&self, path: &str) -> (Value, u64) {
        let r = self.get_raw(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        let index = r
            .headers()
            .get("X-Consul-Index")
            .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
        (r.json().await.unwrap(), index)
    }
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn ids(v: &Value, field: &str) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e.pointer(field).unwrap().as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn agent_register_reads_back_with_consul_field_names() {
    let api = TestApi::start().await;
    let (status, body) = api
        .put(
            "/v1/agent/service/register",
            json!({
                "name": "web", "ID": "web1", "TAGS": ["v1", "primary"], "port": 8080,
                "meta": {"env": "prod"}, "enable_tag_override": true,
                "check": {"ttl": "30s", "status": "passing", "notes": "n"},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (services, _) = api.get("/v1/agent/services").await;
    let web = &services["web1"];
    assert_eq!(
        keys(web),
        [
            "ID",
            "Service",
            "Tags",
            "Meta",
            "Port",
            "Address",
            "TaggedAddresses",
            "Weights",
            "EnableTagOverride",
            "Datacenter"
        ]
        .into()
    );
    assert_eq!(web["Service"], "web");
    assert_eq!(web["Tags"], json!(["v1", "primary"]));
    assert_eq!(web["Weights"], json!({"Passing": 1, "Warning": 1}));
    assert_eq!(web["EnableTagOverride"], true);
    let (one, _) = api.get("/v1/agent/service/web1").await;
    assert_eq!(one["Port"], 8080);

    let r = api.get_raw("/v1/catalog/service/web").await;
    assert_eq!(r.headers()["X-Consul-KnownLeader"], "true");
    assert!(r.headers().contains_key("X-Consul-LastContact"));
    let index: u64 = r.headers()["X-Consul-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(index > 0);
    let rows: Value = r.json().await.unwrap();
    let row = &rows[0];
    assert_eq!(
        keys(row),
        [
            "ID",
            "Node",
            "Address",
            "Datacenter",
            "TaggedAddresses",
            "NodeMeta",
            "ServiceID",
            "ServiceName",
            "ServiceTags",
            "ServiceAddress",
            "ServiceTaggedAddresses",
            "ServiceWeights",
            "ServiceMeta",
            "ServicePort",
            "ServiceEnableTagOverride",
            "CreateIndex",
            "ModifyIndex"
        ]
        .into()
    );
    assert_eq!(row["Node"], "node1");
    assert_eq!(row["Address"], "127.0.0.1");
    assert_eq!(row["NodeMeta"], json!({"rack": "r1"}));
    assert_eq!(row["ServiceID"], "web1");
    assert_eq!(row["ServicePort"], 8080);
    assert_eq!(row["ServiceMeta"], json!({"env": "prod"}));

    let (health, _) = api.get("/v1/health/service/web").await;
    assert_eq!(keys(&health[0]), ["Node", "Service", "Checks"].into());
    let checks = &health[0]["Checks"];
    assert_eq!(ids(checks, "/CheckID"), vec!["serfHealth", "service:web1"]);
    let svc_check = &checks[1];
    assert_eq!(svc_check["Status"], "passing");
    assert_eq!(svc_check["Name"], "Service 'web' check");
    assert_eq!(svc_check["Type"], "ttl");
    assert_eq!(svc_check["ServiceName"], "web");
    assert_eq!(checks[0]["Name"], "Serf Health Status");
    assert_eq!(checks[0]["Output"], "Agent alive and reachable");

    // The server registered itself as the `consul` service.
    let (consul, _) = api.get("/v1/catalog/service/consul").await;
    assert_eq!(consul[0]["ServicePort"], 8300);

    assert_eq!(
        api.put("/v1/agent/service/deregister/web1", json!({}))
            .await
            .0,
        StatusCode::OK
    );
    let (services, _) = api.get("/v1/agent/services").await;
    assert_eq!(services, json!({}));
    let (rows, _) = api.get("/v1/catalog/service/web").await;
    assert_eq!(rows, json!([]));
    let (status, body) = api
        .put("/v1/agent/service/deregister/web1", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        api.get_raw("/v1/agent/service/web1").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn agent_checks_default_to_critical_and_keep_status_on_reregister() {
    let api = TestApi::start().await;
    let def =
        json!({"Name": "db", "Checks": [{"TTL": "10s"}, {"TTL": "10s", "Status": "warning"}]});
    assert_eq!(
        api.put("/v1/agent/service/register", def.clone()).await.0,
        StatusCode::OK
    );
    let (checks, _) = api.get("/v1/health/checks/db").await;
    assert_eq!(
        ids(&checks, "/CheckID"),
        vec!["service:db:1", "service:db:2"]
    );
    assert_eq!(ids(&checks, "/Status"), vec!["critical", "warning"]);

    // Re-registering with only the first check keeps the second, as Consul does...
    let first = json!({"Name": "db", "Check": {"CheckID": "service:db:1", "TTL": "10s"}});
    assert_eq!(
        api.put("/v1/agent/service/register", first.clone()).await.0,
        StatusCode::OK
    );
    let (checks, _) = api.get("/v1/health/checks/db").await;
    assert_eq!(ids(&checks, "/Status"), vec!["critical", "warning"]);
    // ...unless asked to replace them.
    let (status, _) = api
        .put("/v1/agent/service/register?replace-existing-checks", first)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (checks, _) = api.get("/v1/health/checks/db").await;
    assert_eq!(ids(&checks, "/CheckID"), vec!["service:db:1"]);

    let (status, body) = api
        .put(
            "/v1/agent/service/register",
            json!({"Name": "x", "Check": {"HTTP": "http://a"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Interval"), "{body}");
}

#[tokio::test]
async fn catalog_register_deregister_and_node_reads() {
    let api = TestApi::start().await;
    let (status, body) = api
        .put(
            "/v1/catalog/register",
            json!({
                "Node": "ext1", "Address": "10.0.0.5", "NodeMeta": {"zone": "a"},
                "Service": {"Service": "redis", "ID": "redis1", "Port": 6379, "Tags": ["primary"]},
                "Check": {"Name": "redis alive", "ServiceID": "redis1", "Status": "passing"},
            }),
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "true"));

    let (services, _) = api.get("/v1/catalog/services").await;
    assert_eq!(services["redis"], json!(["primary"]));
    assert_eq!(services["consul"], json!([]));
    let (filtered, _) = api.get("/v1/catalog/services?node-meta=zone:a").await;
    assert_eq!(filtered, json!({"redis": ["primary"]}));

    let (nodes, _) = api.get("/v1/catalog/nodes").await;
    assert_eq!(ids(&nodes, "/Node"), vec!["ext1", "node1"]);
    assert_eq!(
        keys(&nodes[0]),
        [
            "ID",
            "Node",
            "Address",
            "Datacenter",
            "TaggedAddresses",
            "Meta",
            "CreateIndex",
            "ModifyIndex"
        ]
        .into()
    );
    assert_eq!(nodes[0]["Datacenter"], "dc1");

    let (node, _) = api.get("/v1/catalog/node/ext1").await;
    assert_eq!(node["Node"]["Address"], "10.0.0.5");
    assert_eq!(node["Services"]["redis1"]["Port"], 6379);
    let (missing, index) = api.get("/v1/catalog/node/nope").await;
    assert_eq!(missing, Value::Null);
    assert!(index > 0);

    let (tagged, _) = api.get("/v1/catalog/service/redis?tag=primary").await;
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    let (tagged, _) = api
        .get("/v1/catalog/service/redis?tag=primary&tag=other")
        .await;
    assert_eq!(tagged, json!([]));

    let (dcs, _) = api.get("/v1/catalog/datacenters").await;
    assert_eq!(dcs, json!(["dc1"]));

    let (status, body) = api
        .put(
            "/v1/catalog/deregister",
            json!({"Node": "ext1", "ServiceID": "redis1"}),
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "true"));
    let (rows, _) = api.get("/v1/catalog/service/redis").await;
    assert_eq!(rows, json!([]));
    assert_eq!(
        api.put("/v1/catalog/deregister", json!({"node": "ext1"}))
            .await
            .0,
        StatusCode::OK
    );
    let (nodes, _) = api.get("/v1/catalog/nodes").await;
    assert_eq!(ids(&nodes, "/Node"), vec!["node1"]);

    // A refusal from the state machine is a 400 with its message.
    let (status, body) = api
        .put(
            "/v1/catalog/register",
            json!({"Node": "n", "Address": "1.2.3.4", "Check": {"Name": "c", "ServiceID": "ghost"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("ghost"), "{body}");
}

#[tokio::test]
async fn health_filters_passing_and_states() {
    let api = TestApi::start().await;
    for (node, status) in [("a", "passing"), ("b", "critical"), ("c", "warning")] {
        let (s, body) = api
            .put(
                "/v1/catalog/register",
                json!({
                    "Node": node, "Address": "10.0.0.1",
                    "Service": {"Service": "api", "Port": 80},
                    "Checks": [{"CheckID": "api-check", "Name": "api", "ServiceID": "api", "Status": status}],
                }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let (all, _) = api.get("/v1/health/service/api").await;
    assert_eq!(ids(&all, "/Node/Node"), vec!["a", "b", "c"]);
    let (passing, _) = api.get("/v1/health/service/api?passing").await;
    assert_eq!(ids(&passing, "/Node/Node"), vec!["a"]);
    let (passing, _) = api.get("/v1/health/service/api?passing=false").await;
    assert_eq!(passing.as_array().unwrap().len(), 3);
    assert_eq!(
        api.get_raw("/v1/health/service/api?passing=maybe")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );

    let (critical, _) = api.get("/v1/health/state/critical").await;
    assert_eq!(ids(&critical, "/Node"), vec!["b"]);
    let (any, _) = api.get("/v1/health/state/any").await;
    assert_eq!(any.as_array().unwrap().len(), 4); // three api checks + serfHealth
    let (passing, _) = api.get("/v1/health/state/passing").await;
    assert_eq!(ids(&passing, "/CheckID"), vec!["api-check", "serfHealth"]);
    let r = api.get_raw("/v1/health/state/bogus").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.text().await.unwrap(), "Invalid state");

    let (node_checks, _) = api.get("/v1/health/node/node1").await;
    assert_eq!(ids(&node_checks, "/CheckID"), vec!["serfHealth"]);
    let (svc_checks, _) = api.get("/v1/health/checks/api").await;
    assert_eq!(svc_checks.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn maintenance_takes_a_service_out_and_back() {
    let api = TestApi::start().await;
    let def = json!({"Name": "web", "Port": 80, "Check": {"TTL": "10s", "Status": "passing"}});
    assert_eq!(
        api.put("/v1/agent/service/register", def).await.0,
        StatusCode::OK
    );
    let (passing, _) = api.get("/v1/health/service/web?passing").await;
    assert_eq!(passing.as_array().unwrap().len(), 1);

    let path = "/v1/agent/service/maintenance/web?enable=true&reason=deploying";
    assert_eq!(api.put(path, json!({})).await.0, StatusCode::OK);
    let (passing, _) = api.get("/v1/health/service/web?passing").await;
    assert_eq!(passing, json!([]));
    let (checks, _) = api.get("/v1/health/checks/web").await;
    let maint = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "_service_maintenance:web")
        .unwrap();
    assert_eq!(maint["Name"], "Service Maintenance Mode");
    assert_eq!(maint["Notes"], "deploying");
    assert_eq!(maint["Status"], "critical");

    let off = "/v1/agent/service/maintenance/web?enable=false";
    assert_eq!(api.put(off, json!({})).await.0, StatusCode::OK);
    let (passing, _) = api.get("/v1/health/service/web?passing").await;
    assert_eq!(passing.as_array().unwrap().len(), 1);

    // Without a reason, Consul's default notes.
    let on = "/v1/agent/service/maintenance/web?enable=true";
    assert_eq!(api.put(on, json!({})).await.0, StatusCode::OK);
    let (checks, _) = api.get("/v1/health/state/critical").await;
    assert!(
        checks[0]["Notes"]
            .as_str()
            .unwrap()
            .starts_with("Maintenance mode is enabled")
    );

    let (status, body) = api
        .put("/v1/agent/service/maintenance/web", json!({}))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, "Missing value for enable")
    );
    let (status, body) = api
        .put("/v1/agent/service/maintenance/web?enable=yes", json!({}))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            r#"Invalid value for enable: "yes""#
        )
    );
    let (status, _) = api
        .put("/v1/agent/service/maintenance/web?enable=", json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Go's boolean spellings work.
    let (status, _) = api
        .put("/v1/agent/service/maintenance/web?enable=0", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (passing, _) = api.get("/v1/health/service/web?passing").await;
    assert_eq!(passing.as_array().unwrap().len(), 1);
    let (status, _) = api
        .put("/v1/agent/service/maintenance/ghost?enable=true", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn blocking_query_wakes_on_a_write() {
    let api = Arc::new(TestApi::start().await);
    let reg = |node: &str| json!({"Node": node, "Address": "10.0.0.9", "Service": {"Service": "q", "Port": 1}});
    assert_eq!(
        api.put("/v1/catalog/register", reg("n1")).await.0,
        StatusCode::OK
    );
    let (rows, index) = api.get("/v1/catalog/service/q").await;
    assert_eq!(rows.as_array().unwrap().len(), 1);

    let waiter = {
        let api = api.clone();
        tokio::spawn(async move {
            api.get(&format!("/v1/health/service/q?index={index}&wait=30s"))
                .await
        })
    };
    wait_parked(&api.ctx, 1).await;
    // An unrelated write does not answer the query with unchanged content.
    assert_eq!(
        api.put(
            "/v1/catalog/register",
            json!({"Node": "other", "Address": "10.0.0.1"})
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        api.put("/v1/catalog/register", reg("n2")).await.0,
        StatusCode::OK
    );
    let (rows, new_index) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&rows, "/Node/Node"), vec!["n1", "n2"]);
    assert!(new_index > index);
}

#[tokio::test]
async fn blocking_query_times_out_with_the_same_index() {
    let api = TestApi::start().await;
    let (rows, index) = api.get("/v1/catalog/nodes").await;
    let (again, same) = api
        .get(&format!("/v1/catalog/nodes?index={index}&wait=100ms"))
        .await;
    assert_eq!((again, same), (rows.clone(), index));
    // index=0 answers at once; an index from the future waits out `wait` only.
    let (now, _) = api.get("/v1/catalog/nodes?index=0&wait=10m").await;
    assert_eq!(now, rows);
    let (future, i) = api
        .get(&format!(
            "/v1/catalog/nodes?index={}&wait=100ms",
            index + 1000
        ))
        .await;
    assert_eq!((future, i), (rows, index));
}

#[tokio::test]
async fn consistency_and_query_parameter_errors() {
    let api = TestApi::start().await;
    let (_, index) = api.get("/v1/catalog/services?consistent").await;
    assert!(index > 0);
    let (_, stale) = api.get("/v1/catalog/services?stale").await;
    assert_eq!(stale, index);
    for (q, mode) in [
        ("", "leader"),
        ("?stale", "stale"),
        ("?consistent", "consistent"),
    ] {
        let r = api.get_raw(&format!("/v1/catalog/nodes{q}")).await;
        assert_eq!(r.headers()["X-Consul-Effective-Consistency"], mode);
    }
    let r = api.get_raw("/v1/catalog/datacenters?pretty").await;
    assert_eq!(r.text().await.unwrap(), "[\"dc1\"]");
    let r = api.get_raw("/v1/catalog/nodes?pretty").await;
    let text = r.text().await.unwrap();
    assert!(text.starts_with("[\n  {"), "{text}");
    for (path, msg) in [
        (
            "/v1/catalog/services?stale&consistent",
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
        ("/v1/catalog/services?index=abc", "Invalid index"),
        (
            "/v1/catalog/services?index=1&wait=soon",
            "Invalid wait time",
        ),
    ] {
        let r = api.get_raw(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(r.text().await.unwrap(), msg);
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let api = TestApi::start().await;
    let before = api.get("/v1/catalog/services").await;
    let nodes_before = api.get("/v1/catalog/nodes").await;

    let big = vec![b' '; super::MAX_BODY_BYTES + 1];
    let (status, _) = api.put_raw("/v1/catalog/register", big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = api.put_raw("/v1/agent/service/register", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let cases = [
        (
            "/v1/agent/service/register",
            b"{not json".to_vec(),
            "Request decode failed",
        ),
        (
            "/v1/agent/service/register",
            b"".to_vec(),
            "Request decode failed",
        ),
        (
            "/v1/agent/service/register",
            br#"{"Name":"w","Port":"80"}"#.to_vec(),
            "Port",
        ),
        (
            "/v1/agent/service/register",
            br#"{"Port":80}"#.to_vec(),
            "Missing service name",
        ),
        (
            "/v1/agent/service/register",
            br#"{"Name":"w","Address":"0.0.0.0"}"#.to_vec(),
            "Invalid service address",
        ),
        (
            "/v1/agent/service/register",
            br#"{"Name":"w","Check":{"TTL":"soon"}}"#.to_vec(),
            "Check.TTL",
        ),
        (
            "/v1/catalog/register",
            br#"{"Address":"1.2.3.4"}"#.to_vec(),
            "Missing node name",
        ),
        (
            "/v1/catalog/register",
            br#"{"Node":"x"}"#.to_vec(),
            "Missing node address",
        ),
        (
            "/v1/catalog/register",
            br#"{"Node":"x","Address":"1.2.3.4","Service":{"Port":1}}"#.to_vec(),
            "Missing service name",
        ),
        (
            "/v1/catalog/register",
            br#"{"Node":5}"#.to_vec(),
            "Node: expected string",
        ),
        ("/v1/catalog/register", b"[]".to_vec(), "expected object"),
        (
            "/v1/catalog/deregister",
            br#"{}"#.to_vec(),
            "Missing node name",
        ),
    ];
    for (path, body, want) in cases {
        let (status, text) = api.put_raw(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {text}");
        assert!(
            text.contains(want),
            "{path}: {text:?} should mention {want:?}"
        );
    }

    let r = api.get_raw("/v1/catalog/register").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "PUT");
    assert_eq!(r.text().await.unwrap(), "method GET not allowed");
    let (status, _) = api.put("/v1/catalog/services", json!({})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        api.get_raw("/v1/nope").await.status(),
        StatusCode::NOT_FOUND
    );

    assert_eq!(api.get("/v1/catalog/services").await, before);
    assert_eq!(api.get("/v1/catalog/nodes").await, nodes_before);
    let (services, _) = api.get("/v1/agent/services").await;
    assert_eq!(services, json!({}));
}

#[tokio::test]
async fn agent_self_and_status() {
    let api = TestApi::start().await;
    let (me, _) = api.get("/v1/agent/self").await;
    assert_eq!(me["Config"]["NodeName"], "node1");
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Config"]["Server"], true);
    assert_eq!(me["Member"]["Name"], "node1");
    assert_eq!(me["Member"]["Port"], 8301);
    assert_eq!(me["Member"]["Tags"]["role"], "consul");
    assert_eq!(me["Meta"], json!({"rack": "r1"}));

    let (leader, _) = api.get("/v1/status/leader").await;
    assert!(leader.is_string(), "{leader}");
    let (peers, _) = api.get("/v1/status/peers").await;
    assert!(peers.is_array(), "{peers}");
}

#[tokio::test]
async fn overload_sheds_instead_of_queueing_and_parked_queries_starve_nobody() {
    let api = Arc::new(TestApi::start_with_limit(Admission::new(1, 1)).await);
    let (_, index) = api.get("/v1/catalog/nodes").await;
    // A blocking query holds the only blocking slot.
    let holder = {
        let api = api.clone();
        tokio::spawn(async move {
            api.get_raw(&format!("/v1/catalog/nodes?index={index}&wait=60s"))
                .await
        })
    };
    wait_parked(&api.ctx, 1).await;
    let r = api
        .get_raw(&format!("/v1/catalog/nodes?index={index}&wait=60s"))
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text().await.unwrap(), "Too many requests in flight");
    // Other requests have their own slot.
    let r = api.get_raw("/v1/status/leader").await;
    assert_eq!(r.status(), StatusCode::OK);
    // Dropping the client's request frees the slot.
    holder.abort();
    wait_parked(&api.ctx, 0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = api
            .get_raw(&format!("/v1/catalog/nodes?index={index}&wait=10ms"))
            .await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn other_datacenters_have_no_path() {
    let api = TestApi::start().await;
    let r = api.get_raw("/v1/catalog/nodes?dc=dc2").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.text().await.unwrap(), "No path to datacenter");
    let (nodes, _) = api.get("/v1/catalog/nodes?dc=dc1").await;
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    let (status, _) = api
        .put(
            "/v1/catalog/register",
            json!({"Node": "x", "Address": "1.1.1.1", "Datacenter": "dc2"}),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn shutdown_answers_parked_blocking_queries_and_stops() {
    let mut api = TestApi::start().await;
    let (rows, index) = api.get("/v1/catalog/nodes").await;
    let parked = {
        let client = api.client.clone();
        let url = format!("{}/v1/catalog/nodes?index={index}&wait=10m", api.base);
        tokio::spawn(async move { client.get(url).send().await })
    };
    wait_parked(&api.ctx, 1).await;
    api.shutdown.cancel();
    let answered = tokio::time::timeout(Duration::from_secs(10), parked)
        .await
        .expect("parked query answered on shutdown")
        .unwrap();
    let r = answered.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), rows);
    let server = api.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
}
