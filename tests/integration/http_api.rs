//! The HTTP API of a dev agent, driven with reqwest.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::TestAgent;

/// PUTs JSON and returns (status, body).
pub(crate) async fn put(agent: &TestAgent, path: &str, body: Value) -> (u16, String) {
    let resp = reqwest::Client::new()
        .put(agent.url(path))
        .json(&body)
        .send()
        .await
        .expect("PUT");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// GETs and parses JSON, returning the response headers too.
pub(crate) async fn get(agent: &TestAgent, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = reqwest::get(agent.url(path)).await.expect("GET");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Registers `name` with the agent at `address:port` with optional tags.
pub(crate) async fn register(
    agent: &TestAgent,
    id: &str,
    name: &str,
    address: &str,
    port: u16,
    tags: &[&str],
) {
    let (status, body) = put(
        agent,
        "/v1/agent/service/register",
        json!({"ID": id, "Name": name, "Address": address, "Port": port, "Tags": tags}),
    )
    .await;
    assert_eq!(status, 200, "register {id}: {body}");
}

#[tokio::test]
async fn catalog_reads_carry_consul_headers_and_field_names() {
    let agent = TestAgent::dev();
    register(&agent, "web-1", "web", "10.1.0.1", 8080, &["v1"]).await;
    let (status, headers, body) = get(&agent, "/v1/catalog/service/web").await;
    assert_eq!(status, 200);
    let index: u64 = headers["x-consul-index"].to_str().unwrap().parse().unwrap();
    assert!(index > 0);
    assert_eq!(headers["x-consul-knownleader"], "true");
    assert!(headers.contains_key("x-consul-lastcontact"));
    let e = &body[0];
    assert_eq!(e["ServiceID"], "web-1");
    assert_eq!(e["ServiceName"], "web");
    assert_eq!(e["ServiceAddress"], "10.1.0.1");
    assert_eq!(e["ServicePort"], 8080);
    assert_eq!(e["ServiceTags"], json!(["v1"]));
    assert_eq!(e["Datacenter"], "dc1");

    let (_, _, services) = get(&agent, "/v1/catalog/services").await;
    assert_eq!(services["web"], json!(["v1"]));
    assert!(
        services.get("consul").is_some(),
        "the server registers itself: {services}"
    );
    let (_, _, dcs) = get(&agent, "/v1/catalog/datacenters").await;
    assert_eq!(dcs, json!(["dc1"]));
    let (_, _, leader) = get(&agent, "/v1/status/leader").await;
    assert!(
        leader.as_str().is_some_and(|s| !s.is_empty()),
        "leader: {leader}"
    );
}

#[tokio::test]
async fn blocking_query_returns_when_the_service_changes() {
    let agent = TestAgent::dev();
    register(&agent, "api-1", "api", "10.1.0.2", 80, &[]).await;
    let (_, headers, _) = get(&agent, "/v1/health/service/api").await;
    let index: u64 = headers["x-consul-index"].to_str().unwrap().parse().unwrap();

    let url = agent.url(&format!("/v1/health/service/api?index={index}&wait=30s"));
    let waiter = tokio::spawn(async move {
        let resp = reqwest::get(url).await.expect("blocking GET");
        let idx: u64 = resp.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (idx, resp.json::<Value>().await.unwrap())
    });
    register(&agent, "api-2", "api", "10.1.0.3", 80, &[]).await;
    let (new_index, body) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("blocking query returned after the write")
        .unwrap();
    assert!(new_index > index);
    assert_eq!(body.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_bodies_get_clear_errors_and_change_nothing() {
    let agent = TestAgent::dev();
    let (_, _, before) = get(&agent, "/v1/catalog/services").await;

    let resp = reqwest::Client::new()
        .put(agent.url("/v1/agent/service/register"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    let (status, body) = put(
        &agent,
        "/v1/agent/service/register",
        json!({"Name": "x", "Port": "eighty"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.to_lowercase().contains("port"),
        "error names the field: {body}"
    );

    let (status, body) = put(
        &agent,
        "/v1/catalog/register",
        json!({"Address": "10.0.0.1"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.to_lowercase().contains("node"),
        "error names the field: {body}"
    );

    let big = "x".repeat(2 * 1024 * 1024);
    let resp = reqwest::Client::new()
        .put(agent.url("/v1/agent/service/register"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);

    let (_, _, after) = get(&agent, "/v1/catalog/services").await;
    assert_eq!(before, after);
}
