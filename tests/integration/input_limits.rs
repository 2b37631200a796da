//! Catalog input limits as Consul's, through every road in: what issue 13
//! found accepted (10,000 tags, 10,000 metadata keys, names with NUL bytes)
//! is refused with a 400 naming the field over HTTP, and a configuration
//! file with such a service is refused naming the key and the file. What is
//! just within the limits is taken.

use serde_json::{Map, Value, json};
use trellis_testkit::Agent;

use crate::harness::{temp_dir, trellis};

fn tags(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!(format!("t{i}"))).collect())
}

fn meta(n: usize) -> Value {
    let m: Map<String, Value> = (0..n).map(|i| (format!("k{i}"), json!("v"))).collect();
    Value::Object(m)
}

/// PUTs `body` to `path` and expects a 400 whose text has every one of
/// `needles`.
async fn refused(agent: &Agent, path: &str, body: &Value, needles: &[&str]) {
    let r = agent.put(path, body).await.expect("an answer");
    assert_eq!(r.status, 400, "{path} took it: {}", r.text);
    for needle in needles {
        assert!(
            r.text.contains(needle),
            "{path}: no {needle:?} in {:?}",
            r.text
        );
    }
}

async fn service_names(agent: &Agent) -> Vec<String> {
    let r = agent.get("/v1/catalog/services").await.expect("services");
    assert_eq!(r.status, 200);
    r.json()
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn oversized_or_control_character_registrations_are_refused_naming_the_field() {
    let agent = trellis().dev().start();
    let register = "/v1/agent/service/register";

    // The agent's own registrations.
    refused(
        &agent,
        register,
        &json!({"Name": "many-tags", "Tags": tags(10_000)}),
        &["Service tags", "more than 256 tags"],
    )
    .await;
    refused(
        &agent,
        register,
        &json!({"Name": "many-meta", "Meta": meta(10_000)}),
        &["Invalid Service Meta", "more than 64 key/value pairs"],
    )
    .await;
    refused(
        &agent,
        register,
        &json!({"Name": "we\u{0}b"}),
        &["Service name", "control character"],
    )
    .await;
    refused(
        &agent,
        register,
        &json!({"Name": "web", "ID": "web\u{0}1"}),
        &["Service ID", "control character"],
    )
    .await;
    refused(
        &agent,
        register,
        &json!({"Name": "web", "Meta": {"bad.key": "v"}}),
        &["Invalid Service Meta", "Key contains invalid characters"],
    )
    .await;
    refused(
        &agent,
        register,
        &json!({"Name": "web", "Meta": {"consul-x": "v"}}),
        &["Invalid Service Meta", "reserved"],
    )
    .await;
    refused(
        &agent,
        register,
        &json!({"Name": "web", "Meta": {"k": "v".repeat(513)}}),
        &[
            "Invalid Service Meta",
            "Value is too long (limit: 512 characters)",
        ],
    )
    .await;
    refused(
        &agent,
        register,
        &json!({"Name": "web", "Check": {"Name": "c\u{0}", "TTL": "10s"}}),
        &["Check", "control character"],
    )
    .await;

    // The catalog's.
    let catalog = "/v1/catalog/register";
    let node = |extra: Value| {
        let mut body = json!({"Node": "ext1", "Address": "10.1.0.1"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    refused(
        &agent,
        catalog,
        &node(json!({"Service": {"Service": "many-tags", "Tags": tags(10_000)}})),
        &["Service tags"],
    )
    .await;
    refused(
        &agent,
        catalog,
        &node(json!({"Service": {"Service": "many-meta", "Meta": meta(10_000)}})),
        &["Invalid Service Meta"],
    )
    .await;
    refused(
        &agent,
        catalog,
        &node(json!({"NodeMeta": meta(10_000)})),
        &["Invalid Node Meta", "more than 64 key/value pairs"],
    )
    .await;
    refused(
        &agent,
        catalog,
        &json!({"Node": "ex\u{0}t", "Address": "10.1.0.2"}),
        &["Node name", "control character"],
    )
    .await;
    refused(
        &agent,
        catalog,
        &node(json!({"Service": {"Service": "n\u{0}ul"}})),
        &["Service name", "control character"],
    )
    .await;

    // Nothing of it reached the catalog.
    let names = service_names(&agent).await;
    for name in ["many-tags", "many-meta", "we\u{0}b", "n\u{0}ul"] {
        assert!(
            !names.iter().any(|n| n == name),
            "{name:?} registered: {names:?}"
        );
    }
    let r = agent.get("/v1/catalog/nodes").await.expect("nodes");
    assert!(!r.text.contains("ext1"), "{}", r.text);

    // Just within the limits is taken, on both roads.
    let full = json!({"Name": "full", "Tags": tags(256), "Meta": meta(64)});
    let r = agent.put(register, &full).await.expect("register");
    assert_eq!(r.status, 200, "{}", r.text);
    let r = agent
        .put(
            catalog,
            &node(json!({
                "NodeMeta": meta(64),
                "Service": {"Service": "full-ext", "Tags": tags(256), "Meta": meta(64)}
            })),
        )
        .await
        .expect("catalog register");
    assert_eq!(r.status, 200, "{}", r.text);
    let names = service_names(&agent).await;
    assert!(
        names.iter().any(|n| n == "full") && names.iter().any(|n| n == "full-ext"),
        "{names:?}"
    );
}

#[test]
fn a_config_file_with_an_oversized_service_is_refused_naming_the_key_and_the_file() {
    let dir = temp_dir();
    let file = dir.path().join("services.json");
    let body = json!({"service": {"name": "web", "port": 80, "meta": meta(65)}});
    std::fs::write(&file, body.to_string()).expect("write");
    let out = trellis()
        .command()
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run validate");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "services.json",
        "service.meta",
        "more than 64 key/value pairs",
    ] {
        assert!(err.contains(needle), "no {needle:?} in {err}");
    }

    let toml = dir.path().join("tags.toml");
    let tags: Vec<String> = (0..300).map(|i| format!("\"t{i}\"")).collect();
    std::fs::write(
        &toml,
        format!(
            "[[services]]\nname = \"web\"\ntags = [{}]\n",
            tags.join(", ")
        ),
    )
    .expect("write");
    let out = trellis()
        .command()
        .arg("validate")
        .arg(&toml)
        .output()
        .expect("run validate");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["tags.toml", "service.tags", "more than 256 tags"] {
        assert!(err.contains(needle), "no {needle:?} in {err}");
    }
}
