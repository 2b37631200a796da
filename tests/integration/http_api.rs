//! The HTTP API of a dev agent, driven with reqwest.

use std::time::Duration;

use serde_json::{Value, json};
use trellis_testkit::Agent;

use crate::harness::trellis;

/// Registers `name` with the agent at `address:port` with optional tags;
/// the agent must acknowledge it.
pub(crate) async fn register(
    agent: &Agent,
    id: &str,
    name: &str,
    address: &str,
    port: u16,
    tags: &[&str],
) {
    let r = agent
        .register_instance(id, name, address, port, tags)
        .await
        .expect("PUT");
    assert_eq!(r.status, 200, "register {id}: {}", r.text);
}

#[tokio::test]
async fn catalog_reads_carry_consul_headers_and_field_names() {
    let agent = trellis().dev().start();
    register(&agent, "web-1", "web", "10.1.0.1", 8080, &["v1"]).await;
    let r = agent.get("/v1/catalog/service/web").await.expect("GET");
    assert_eq!(r.status, 200);
    let index: u64 = r.headers["x-consul-index"].parse().unwrap();
    assert!(index > 0);
    assert_eq!(r.headers["x-consul-knownleader"], "true");
    assert!(r.headers.contains_key("x-consul-lastcontact"));
    let body = r.json();
    let e = &body[0];
    assert_eq!(e["ServiceID"], "web-1");
    assert_eq!(e["ServiceName"], "web");
    assert_eq!(e["ServiceAddress"], "10.1.0.1");
    assert_eq!(e["ServicePort"], 8080);
    assert_eq!(e["ServiceTags"], json!(["v1"]));
    assert_eq!(e["Datacenter"], "dc1");

    let services = agent.get("/v1/catalog/services").await.expect("GET").json();
    assert_eq!(services["web"], json!(["v1"]));
    assert!(
        services.get("consul").is_some(),
        "the server registers itself: {services}"
    );
    let dcs = agent
        .get("/v1/catalog/datacenters")
        .await
        .expect("GET")
        .json();
    assert_eq!(dcs, json!(["dc1"]));
    let leader = agent.get("/v1/status/leader").await.expect("GET").json();
    assert!(
        leader.as_str().is_some_and(|s| !s.is_empty()),
        "leader: {leader}"
    );
}

#[tokio::test]
async fn blocking_query_returns_when_the_service_changes() {
    let agent = trellis().dev().start();
    register(&agent, "api-1", "api", "10.1.0.2", 80, &[]).await;
    let r = agent.get("/v1/health/service/api").await.expect("GET");
    let index: u64 = r.index.expect("X-Consul-Index");

    // Longer than the kit's request timeout: a blocking query waits.
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
    let agent = trellis().dev().start();
    let before = agent.get("/v1/catalog/services").await.expect("GET").json();

    let resp = reqwest::Client::new()
        .put(agent.url("/v1/agent/service/register"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    let r = agent
        .put(
            "/v1/agent/service/register",
            &json!({"Name": "x", "Port": "eighty"}),
        )
        .await
        .expect("PUT");
    assert_eq!(r.status, 400);
    assert!(
        r.text.to_lowercase().contains("port"),
        "error names the field: {}",
        r.text
    );

    let r = agent
        .put("/v1/catalog/register", &json!({"Address": "10.0.0.1"}))
        .await
        .expect("PUT");
    assert_eq!(r.status, 400);
    assert!(
        r.text.to_lowercase().contains("node"),
        "error names the field: {}",
        r.text
    );

    let big = "x".repeat(2 * 1024 * 1024);
    let resp = reqwest::Client::new()
        .put(agent.url("/v1/agent/service/register"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);

    let after = agent.get("/v1/catalog/services").await.expect("GET").json();
    assert_eq!(before, after);
}
