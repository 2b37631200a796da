//! Health checks run by a real agent: instances whose checks fail leave the
//! DNS answers and come back when their target recovers; script checks are
//! refused unless enabled.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use trellis_testkit::dns::a_records;
use trellis_testkit::{Agent, wait_until_async};

use crate::harness::{temp_dir, trellis};

/// PUTs `body` as JSON; returns (status, body).
async fn put(agent: &Agent, path: &str, body: Value) -> (u16, String) {
    let r = agent.put(path, &body).await.expect("PUT");
    (r.status, r.text)
}

/// The A records of `name`, sorted; empty for NXDOMAIN.
fn addresses(agent: &Agent, name: &str) -> Vec<IpAddr> {
    let m = agent.query_udp(name, RecordType::A);
    let v = a_records(&m);
    if v.is_empty() {
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
    }
    v
}

/// Waits until `name` answers exactly `want`.
async fn wait_answers(agent: &Agent, name: &str, want: &[&str]) {
    let want: Vec<IpAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
    wait_until_async(
        &format!("{name} to answer {want:?}"),
        Duration::from_secs(15),
        || {
            let got = addresses(agent, name);
            let hit = if got == want {
                Ok(())
            } else {
                Err(format!("answers {got:?}"))
            };
            async move { hit }
        },
    )
    .await;
}

/// An HTTP target answering `/health` with the code in `code`.
async fn target(code: Arc<AtomicU16>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/health",
        get(move || {
            let c = code.load(Ordering::SeqCst);
            async move { (StatusCode::from_u16(c).unwrap(), format!("code {c}")) }
        }),
    );
    let h = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/health"), h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_http_checks_leave_dns_and_recovered_ones_return() {
    let agent = trellis().dev().start();
    let code = Arc::new(AtomicU16::new(200));
    let (url, server) = target(code.clone()).await;
    for (id, addr, check) in [
        (
            "web-1",
            "10.7.0.1",
            json!({"HTTP": url, "Interval": "200ms"}),
        ),
        // The second instance is always healthy (a TTL check kept passing).
        (
            "web-2",
            "10.7.0.2",
            json!({"TTL": "1h", "Status": "passing"}),
        ),
    ] {
        let (status, body) = put(
            &agent,
            "/v1/agent/service/register",
            json!({"ID": id, "Name": "web", "Address": addr, "Port": 80, "Check": check}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let both = ["10.7.0.1", "10.7.0.2"];
    wait_answers(&agent, "web.service.consul.", &both).await;

    // 503: critical, gone from DNS.
    code.store(503, Ordering::SeqCst);
    wait_answers(&agent, "web.service.consul.", &["10.7.0.2"]).await;
    let out = agent.dig(&["web.service.consul", "A", "+short"]);
    assert_eq!(out.trim(), "10.7.0.2", "dig: {out}");

    // 429: warning, answered again.
    code.store(429, Ordering::SeqCst);
    wait_answers(&agent, "web.service.consul.", &both).await;

    // Recovered.
    code.store(200, Ordering::SeqCst);
    wait_answers(&agent, "web.service.consul.", &both).await;
    let out = agent.dig(&["web.service.consul", "A", "+short"]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, both, "dig: {out}");

    // The target stops: no connection is critical too.
    server.abort();
    let _ = server.await;
    wait_answers(&agent, "web.service.consul.", &["10.7.0.2"]).await;

    // The health endpoints agree.
    let resp = reqwest::get(agent.url("/v1/agent/health/service/id/web-1"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["AggregatedStatus"], "critical");
    let resp = reqwest::get(agent.url("/v1/health/state/critical"))
        .await
        .unwrap();
    let critical: Value = resp.json().await.unwrap();
    assert_eq!(critical[0]["CheckID"], "service:web-1", "{critical}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_ttl_checks_move_instances_in_and_out_of_dns() {
    let agent = trellis().dev().start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = listener.local_addr().unwrap().to_string();
    for (id, addr, check) in [
        ("db-1", "10.8.0.1", json!({"TCP": tcp, "Interval": "200ms"})),
        (
            "db-2",
            "10.8.0.2",
            json!({"CheckID": "db-2-ttl", "TTL": "2s"}),
        ),
    ] {
        let (status, body) = put(
            &agent,
            "/v1/agent/service/register",
            json!({"ID": id, "Name": "db", "Address": addr, "Check": check}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // TTL checks start critical; the TCP one passes once it has run.
    wait_answers(&agent, "db.service.consul.", &["10.8.0.1"]).await;
    let (s, b) = put(&agent, "/v1/agent/check/pass/db-2-ttl?note=up", Value::Null).await;
    assert_eq!(s, 200, "{b}");
    wait_answers(&agent, "db.service.consul.", &["10.8.0.1", "10.8.0.2"]).await;
    drop(listener);
    wait_answers(&agent, "db.service.consul.", &["10.8.0.2"]).await;
    // No more updates: the TTL expires and db-2 leaves too.
    wait_answers(&agent, "db.service.consul.", &[]).await;
    let resp = reqwest::get(agent.url("/v1/agent/checks")).await.unwrap();
    let checks: Value = resp.json().await.unwrap();
    let out = checks["db-2-ttl"]["Output"].as_str().unwrap();
    assert!(out.contains("TTL expired"), "{out}");
}

#[tokio::test]
async fn script_checks_are_refused_over_http_unless_enabled() {
    let agent = trellis().dev().start();
    let script = json!({"Name": "s", "Args": ["/bin/true"], "Interval": "1s"});
    let (status, body) = put(&agent, "/v1/agent/check/register", script.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--enable-script-checks"), "{body}");

    // Allowed from a configuration file with --enable-local-script-checks,
    // still refused over HTTP.
    let dir = temp_dir();
    let cfg = dir.path().join("svc.json");
    std::fs::write(
        &cfg,
        json!({"service": {"name": "job", "address": "10.9.0.1",
               "check": {"args": ["/bin/true"], "interval": "200ms"}}})
        .to_string(),
    )
    .unwrap();
    let local = trellis()
        .dev()
        .flag("--enable-local-script-checks")
        .config_file(&cfg)
        .start();
    wait_answers(&local, "job.service.consul.", &["10.9.0.1"]).await;
    let (status, _) = put(&local, "/v1/agent/check/register", script.clone()).await;
    assert_eq!(status, 400);

    // --enable-script-checks allows them from anywhere.
    let open = trellis().dev().flag("--enable-script-checks").start();
    let (status, body) = put(&open, "/v1/agent/check/register", script).await;
    assert_eq!(status, 200, "{body}");
}

#[test]
fn validate_refuses_check_intervals_below_the_floor() {
    let dir = temp_dir();
    let cfg = dir.path().join("fast.toml");
    std::fs::write(
        &cfg,
        "check_update_interval = \"1m\"\nenable_local_script_checks = true\n\
         [service]\nname = \"w\"\n[service.check]\nhttp = \"http://127.0.0.1/\"\ninterval = \"50ms\"\n",
    )
    .unwrap();
    let out = trellis()
        .command()
        .arg("validate")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("service.check.interval"), "{err}");
}

#[tokio::test]
async fn a_ttl_checks_status_survives_an_agent_restart() {
    let dir = temp_dir();
    let cfg = dir.path().join("app.json");
    std::fs::write(
        &cfg,
        json!({"service": {"name": "app", "address": "10.9.1.1",
               "check": {"id": "app-ttl", "ttl": "1h"}}})
        .to_string(),
    )
    .unwrap();
    let agent = trellis()
        .server()
        .bootstrap_expect(1)
        .node("s1")
        .data_dir(dir.path().join("data"))
        .config_file(&cfg)
        .start();
    // A TTL check starts critical.
    assert_eq!(
        addresses(&agent, "app.service.consul."),
        Vec::<IpAddr>::new()
    );
    let (s, b) = put(
        &agent,
        "/v1/agent/check/pass/app-ttl?note=ready",
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    wait_answers(&agent, "app.service.consul.", &["10.9.1.1"]).await;

    agent.restart();
    // Answered again at once: the check came back passing, not critical.
    let resp = reqwest::get(agent.url("/v1/agent/checks")).await.unwrap();
    let checks: Value = resp.json().await.unwrap();
    assert_eq!(checks["app-ttl"]["Status"], "passing", "{checks}");
    assert_eq!(checks["app-ttl"]["Output"], "ready", "{checks}");
    assert_eq!(
        addresses(&agent, "app.service.consul."),
        vec!["10.9.1.1".parse::<IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn top_level_checks_in_config_files_guard_the_node_and_services() {
    let dir = temp_dir();
    let cfg = dir.path().join("node.json");
    std::fs::write(
        &cfg,
        json!({
            "service": {"name": "api", "id": "api-1", "address": "10.9.3.1"},
            "checks": [
                {"id": "node-ok", "name": "node ok", "ttl": "1h", "status": "passing"},
                {"id": "api-ok", "service_id": "api-1", "ttl": "1h", "status": "passing"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let agent = trellis().dev().config_file(&cfg).start();
    wait_answers(&agent, "api.service.consul.", &["10.9.3.1"]).await;
    let checks: Value = reqwest::get(agent.url("/v1/agent/checks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checks["node-ok"]["ServiceID"], "", "{checks}");
    assert_eq!(checks["api-ok"]["ServiceID"], "api-1", "{checks}");
    assert_eq!(checks["api-ok"]["ServiceName"], "api", "{checks}");

    // A failing node check takes every service of the node out of DNS.
    let (s, _) = put(&agent, "/v1/agent/check/fail/node-ok", Value::Null).await;
    assert_eq!(s, 200);
    wait_answers(&agent, "api.service.consul.", &[]).await;
    let (s, _) = put(&agent, "/v1/agent/check/pass/node-ok", Value::Null).await;
    assert_eq!(s, 200);
    wait_answers(&agent, "api.service.consul.", &["10.9.3.1"]).await;
    // The service's own check does the same for the service.
    let (s, _) = put(&agent, "/v1/agent/check/fail/api-ok", Value::Null).await;
    assert_eq!(s, 200);
    wait_answers(&agent, "api.service.consul.", &[]).await;

    // validate names the top-level key.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        json!({"check": {"tcp": "127.0.0.1:1", "interval": "10ms"}}).to_string(),
    )
    .unwrap();
    let out = trellis()
        .command()
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("check.interval"), "{err}");
}
