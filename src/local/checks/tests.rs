//! The checks end to end inside one process: a real consensus (in memory),
//! the real HTTP API on loopback, the runner, and targets the tests start
//! and stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::CheckRunner;
use crate::catalog::{HealthStatus, Replica};
use crate::config::CheckSettings;
use crate::definition::{CheckDefinition, Origin, ServiceDefinition};
use crate::http::ApiState;
use crate::local::testing::InProcess;
use crate::local::{LocalAgent, LocalError, NodeIdentity};

/// One agent: consensus, local agent, runner and API.
struct Env {
    replica: Arc<Replica>,
    local: Arc<LocalAgent>,
    base: String,
    client: reqwest::Client,
    runner: Option<CheckRunner>,
    stop_http: CancellationToken,
}

impl Env {
    async fn start(settings: CheckSettings) -> Self {
        Self::start_with(|l| l.with_check_settings(settings)).await
    }

    /// An agent with its local state as `configure` leaves it.
    async fn start_with(configure: impl FnOnce(LocalAgent) -> LocalAgent) -> Self {
        let identity = NodeIdentity::for_tests("n1", "127.0.0.1", true);
        let InProcess {
            replica,
            delegate,
            local,
        } = InProcess::start(identity, configure).await;
        local.register_self().await.unwrap();
        let runner = CheckRunner::start(local.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop_http = CancellationToken::new();
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
            replica: replica.clone(),
            delegate,
            local: local.clone(),
            kv: crate::config::KvSettings::default(),
            acl: crate::config::AclSettings::default(),
            remote: crate::remote::Remote::alone("dc1"),
        };
        let token = stop_http.clone();
        tokio::spawn(async move {
            let limits = crate::config::LimitsSettings::default();
            crate::http::serve(listener, state, &limits, token).await
        });
        Self {
            replica,
            local,
            base,
            client: reqwest::Client::new(),
            runner: Some(runner),
            stop_http,
        }
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, String) {
        let r = self
            .client
            .put(format!("{}{path}", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// How many instances of `service` DNS answers with.
    fn answered(&self, service: &str) -> usize {
        self.replica
            .view()
            .service(service)
            .map_or(0, |s| s.instances.len())
    }

    /// The catalog status of a check, if it is there.
    fn catalog_status(&self, check_id: &str) -> Option<HealthStatus> {
        self.replica
            .read()
            .node_checks("n1")
            .find(|c| &*c.check_id == check_id)
            .map(|c| c.status)
    }

    /// Waits (10 s at most) until the catalog has `check_id` at `want`.
    async fn wait_status(&self, check_id: &str, want: HealthStatus) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.catalog_status(check_id) == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{check_id} never became {want:?}; is {:?}",
                self.catalog_status(check_id)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        self.stop_http.cancel();
        if let Some(r) = self.runner.take() {
            r.stop().await;
        }
    }
}

/// An HTTP target answering `/health` with the code in `code`.
async fn target(code: Arc<AtomicU16>) -> (String, tokio::task::JoinHandle<()>) {
    let (url, handle, _) = counting_target(code).await;
    (url, handle)
}

/// [`target`], also counting the requests it answers.
async fn counting_target(
    code: Arc<AtomicU16>,
) -> (String, tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/health",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let c = code.load(Ordering::SeqCst);
            async move { (StatusCode::from_u16(c).unwrap(), format!("code {c}")) }
        }),
    );
    let h = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/health"), h, hits)
}

#[tokio::test]
async fn an_http_check_follows_its_target_into_the_catalog() {
    let env = Env::start(CheckSettings::default()).await;
    let code = Arc::new(AtomicU16::new(200));
    let (url, server) = target(code.clone()).await;
    let (status, body) = env
        .put(
            "/v1/agent/service/register",
            json!({"Name": "web", "Port": 80,
                   "Check": {"HTTP": url, "Interval": "200ms", "Timeout": "1s"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Critical until the first run, then passing.
    env.wait_status("service:web", HealthStatus::Passing).await;
    let (code_now, health) = env.get("/v1/agent/health/service/id/web").await;
    assert_eq!(code_now, StatusCode::OK, "{health}");
    assert_eq!(health["AggregatedStatus"], "passing");
    assert_eq!(health["Service"]["Service"], "web");
    assert!(
        health["Checks"][0]["Output"]
            .as_str()
            .unwrap()
            .starts_with(&format!("HTTP GET {url}: 200 OK Output: code 200")),
        "{health}"
    );
    assert_eq!(env.answered("web"), 1);

    code.store(429, Ordering::SeqCst);
    env.wait_status("service:web", HealthStatus::Warning).await;
    let (c, _) = env.get("/v1/agent/health/service/name/web").await;
    assert_eq!(c, StatusCode::TOO_MANY_REQUESTS);

    code.store(503, Ordering::SeqCst);
    env.wait_status("service:web", HealthStatus::Critical).await;
    assert!(env.answered("web") == 0);
    let (c, body) = env
        .get("/v1/agent/health/service/name/web?format=text")
        .await;
    assert_eq!(
        (c, body),
        (StatusCode::SERVICE_UNAVAILABLE, json!("critical"))
    );

    code.store(200, Ordering::SeqCst);
    env.wait_status("service:web", HealthStatus::Passing).await;
    server.abort();
    let _ = server.await;
    env.wait_status("service:web", HealthStatus::Critical).await;
    env.stop().await;
}

#[tokio::test]
async fn a_tcp_check_follows_its_listener() {
    let env = Env::start(CheckSettings::default()).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (status, body) = env
        .put(
            "/v1/agent/service/register",
            json!({"Name": "db", "Check": {"TCP": addr.to_string(), "Interval": "200ms"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.wait_status("service:db", HealthStatus::Passing).await;
    drop(listener);
    env.wait_status("service:db", HealthStatus::Critical).await;
    env.stop().await;
}

#[tokio::test]
async fn bad_check_definitions_are_refused_naming_the_field() {
    let env = Env::start(CheckSettings::default()).await;
    let cases = [
        (
            json!({"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "50ms"}),
            "Interval",
        ),
        (
            json!({"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "soon"}),
            "Interval",
        ),
        (
            json!({"Name": "c", "TTL": "10s", "Status": "sideways"}),
            "Status",
        ),
        (json!({"Name": "c", "Interval": "10s"}), "HTTP, TCP or Args"),
        (
            json!({"Name": "c", "TCP": "nohost", "Interval": "10s"}),
            "TCP",
        ),
        (
            json!({"Name": "c", "HTTP": "not a url", "Interval": "10s"}),
            "HTTP",
        ),
        (
            json!({"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "10s",
                   "Header": {"Bad Name": ["x"]}}),
            "Header",
        ),
        (
            json!({"Name": "c", "HTTP": "ftp://127.0.0.1:1/", "Interval": "10s"}),
            "HTTP: scheme",
        ),
        (
            json!({"Name": "c", "Args": ["/bin/true"], "Interval": "10s"}),
            "enable-script-checks",
        ),
    ];
    for (body, field) in cases {
        let (status, text) = env.put("/v1/agent/check/register", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(field), "{body}: {text:?} should name {field}");
    }
    // A check on a service this agent lacks: Consul's 404, before any ACL
    // check (agent_endpoint.go, AgentRegisterCheck).
    let ghost = json!({"Name": "c", "TTL": "10s", "ServiceID": "ghost"});
    let (status, text) = env.put("/v1/agent/check/register", ghost).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert_eq!(text, "ServiceID \"ghost\" does not exist");
    // The same through a service registration.
    let (status, text) = env
        .put(
            "/v1/agent/service/register",
            json!({"Name": "web", "Checks": [{"TTL": "10s"}, {"Args": ["/bin/true"], "Interval": "1s"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("Scripts are disabled"), "{text}");
    // Nothing was registered anywhere.
    assert!(env.local.checks().is_empty());
    assert!(env.local.services().is_empty());
    let (_, all) = env.get("/v1/agent/checks").await;
    assert_eq!(all, json!({}));
    let ids: Vec<String> = env
        .replica
        .read()
        .node_checks("n1")
        .map(|c| c.check_id.to_string())
        .collect();
    assert_eq!(ids, vec!["serfHealth".to_string()]);
    env.stop().await;
}

#[tokio::test]
async fn ttl_checks_are_driven_by_their_application() {
    let env = Env::start(CheckSettings::default()).await;
    let (status, body) = env
        .put(
            "/v1/agent/check/register",
            json!({"Name": "app alive", "CheckID": "app", "TTL": "30s", "Notes": "n"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(env.catalog_status("app"), Some(HealthStatus::Critical));

    for (verb, want) in [
        ("pass", HealthStatus::Passing),
        ("warn", HealthStatus::Warning),
        ("fail", HealthStatus::Critical),
    ] {
        let (s, b) = env
            .put(
                &format!("/v1/agent/check/{verb}/app?note=said+{verb}"),
                Value::Null,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{verb}: {b}");
        assert_eq!(env.catalog_status("app"), Some(want));
    }
    let (s, b) = env
        .put(
            "/v1/agent/check/update/app",
            json!({"Status": "passing", "Output": "all good"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(env.catalog_status("app"), Some(HealthStatus::Passing));
    let (_, all) = env.get("/v1/agent/checks").await;
    assert_eq!(all["app"]["Output"], "all good");
    assert_eq!(all["app"]["Status"], "passing");
    assert_eq!(all["app"]["Type"], "ttl");
    assert_eq!(all["app"]["ServiceID"], "");

    let (s, _) = env
        .put("/v1/agent/check/update/app", json!({"Status": "bogus"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = env.put("/v1/agent/check/pass/ghost", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Only TTL checks take updates.
    let (s, _) = env
        .put(
            "/v1/agent/check/register",
            json!({"Name": "tcp", "TCP": "127.0.0.1:1", "Interval": "10s"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = env.put("/v1/agent/check/pass/tcp", Value::Null).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    let (s, _) = env.put("/v1/agent/check/deregister/app", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(env.catalog_status("app"), None);
    let (s, _) = env.put("/v1/agent/check/deregister/app", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    env.stop().await;
}

#[tokio::test]
async fn service_checks_registered_alone_join_their_service() {
    let env = Env::start(CheckSettings::default()).await;
    let (s, _) = env
        .put("/v1/agent/service/register", json!({"Name": "api"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = env
        .put(
            "/v1/agent/check/register",
            json!({"Name": "api ttl", "ServiceID": "api", "TTL": "1m", "Status": "warning"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (code, health) = env.get("/v1/agent/health/service/id/api").await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{health}");
    assert_eq!(health["Checks"][0]["CheckID"], "api ttl");
    assert_eq!(health["Checks"][0]["ServiceName"], "api");
    let (code, _) = env.get("/v1/agent/health/service/id/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = env.get("/v1/agent/health/service/name/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    env.stop().await;
}

#[tokio::test]
async fn script_checks_follow_their_exit_code_when_enabled_locally() {
    let settings = CheckSettings {
        enable_local_script_checks: true,
        ..CheckSettings::default()
    };
    let env = Env::start(settings).await;
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, "").unwrap();
    let def = ServiceDefinition {
        name: "job".into(),
        checks: vec![CheckDefinition {
            args: vec!["/bin/test".into(), "-e".into(), flag.display().to_string()],
            interval: Some(Duration::from_millis(200)),
            ..CheckDefinition::default()
        }],
        ..ServiceDefinition::default()
    };
    // From the API it is refused; from configuration it runs.
    assert!(matches!(
        env.local.register_service(def.clone(), false).await,
        Err(LocalError::ScriptsDisabled)
    ));
    env.local
        .register_service_from(def, false, Origin::Config)
        .await
        .unwrap();
    env.wait_status("service:job", HealthStatus::Passing).await;
    // `test` exits 1 when the file is gone: a warning, still answered.
    std::fs::remove_file(&flag).unwrap();
    env.wait_status("service:job", HealthStatus::Warning).await;
    assert_eq!(env.answered("job"), 1);
    env.stop().await;
}

#[tokio::test]
async fn removing_a_check_stops_its_runner() {
    let env = Env::start(CheckSettings::default()).await;
    let code = Arc::new(AtomicU16::new(200));
    let (url, _server, hits) = counting_target(code.clone()).await;
    let (s, _) = env
        .put(
            "/v1/agent/check/register",
            json!({"Name": "h", "HTTP": url, "Interval": "100ms"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    env.wait_status("h", HealthStatus::Passing).await;
    let (s, _) = env.put("/v1/agent/check/deregister/h", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    // A result in flight may not resurrect it: it stays gone.
    code.store(503, Ordering::SeqCst);
    let before = hits.load(Ordering::SeqCst);

    // A sentinel check on the same interval: once it has run three times,
    // a still-running `h` would have run at least twice more.
    let (sentinel_url, _sentinel, sentinel_hits) =
        counting_target(Arc::new(AtomicU16::new(200))).await;
    let (s, _) = env
        .put(
            "/v1/agent/check/register",
            json!({"Name": "sentinel", "HTTP": sentinel_url, "Interval": "100ms"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sentinel_hits.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sentinel never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // At most the one request already in flight at removal.
    assert!(hits.load(Ordering::SeqCst) <= before + 1, "h kept running");
    assert_eq!(env.catalog_status("h"), None);
    env.stop().await;
}

#[tokio::test]
async fn a_ttl_checks_last_status_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let saving = |l: LocalAgent| l.with_check_state_dir(dir.path().to_path_buf());
    let def = json!({"Name": "app", "Check": {"CheckID": "app-ttl", "TTL": "1h"},
                     "Checks": []});
    let first = Env::start_with(saving).await;
    let (s, b) = first.put("/v1/agent/service/register", def.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = first
        .put("/v1/agent/check/warn/app-ttl?note=slow+disk", Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    first.stop().await;

    // A new process registers the same check: it starts where it was.
    let second = Env::start_with(saving).await;
    let (s, _) = second.put("/v1/agent/service/register", def.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        second.catalog_status("app-ttl"),
        Some(HealthStatus::Warning)
    );
    assert_eq!(second.local.check("app-ttl").unwrap().output, "slow disk");
    second.stop().await;

    // A state older than its TTL is not restored.
    let mut saved = crate::local::ttl::load_states(dir.path());
    saved.get_mut("app-ttl").unwrap().expires_unix_ms = 1;
    crate::local::ttl::save_states(dir.path(), &saved)
        .await
        .unwrap();
    let third = Env::start_with(saving).await;
    let (s, _) = third.put("/v1/agent/service/register", def).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        third.catalog_status("app-ttl"),
        Some(HealthStatus::Critical)
    );
    third.stop().await;
}

#[tokio::test]
async fn deregister_critical_service_after_is_raised_to_a_minute() {
    let env = Env::start(CheckSettings::default()).await;
    let (s, b) = env
        .put(
            "/v1/agent/service/register",
            json!({"Name": "w", "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "5s"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let c = env.local.check("service:w").unwrap();
    assert_eq!(
        c.definition.deregister_critical_service_after,
        Some(crate::definition::MIN_DEREGISTER_AFTER)
    );
    env.stop().await;
}

#[tokio::test]
async fn node_maintenance_removes_every_service_of_the_node() {
    let env = Env::start(CheckSettings::default()).await;
    let (s, _) = env
        .put(
            "/v1/agent/service/register",
            json!({"Name": "web", "Check": {"TTL": "1h", "Status": "passing"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = env
        .put(
            "/v1/agent/maintenance?enable=true&reason=patching",
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        env.catalog_status("_node_maintenance"),
        Some(HealthStatus::Critical)
    );
    assert!(env.answered("web") == 0);
    let (code, body) = env.get("/v1/agent/health/service/id/web").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["AggregatedStatus"], "maintenance");
    let (_, all) = env.get("/v1/agent/checks").await;
    assert_eq!(all["_node_maintenance"]["Notes"], "patching", "{all}");
    assert_eq!(all["_node_maintenance"]["Type"], "maintenance", "{all}");
    assert_eq!(all["_node_maintenance"]["Status"], "critical", "{all}");
    let (s, _) = env
        .put("/v1/agent/maintenance?enable=false", Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(env.catalog_status("_node_maintenance"), None);
    assert_eq!(env.answered("web"), 1);
    let (s, _) = env.put("/v1/agent/maintenance", Value::Null).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    env.stop().await;
}
