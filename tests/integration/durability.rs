//! A durable single server loses no acknowledged write when SIGKILLed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use trellis_testkit::{Agent, wait_until_async};

use crate::harness::{single_server, temp_dir};

async fn registered_ids(agent: &Agent) -> BTreeSet<String> {
    let r = agent.get("/v1/catalog/service/load").await.expect("GET");
    assert_eq!(r.status, 200);
    r.json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["ServiceID"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn sigkill_under_write_load_loses_no_acknowledged_registration() {
    let dir = temp_dir();
    let agent = single_server(dir.path());
    let acked = Arc::new(Mutex::new(BTreeSet::new()));

    // 8 writers register distinct instances as fast as they can.
    let client = reqwest::Client::new();
    let mut writers = Vec::new();
    for w in 0..8 {
        let url = agent.url("/v1/catalog/register");
        let client = client.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("load-{w}-{i}");
                let body = json!({"Node": "n1", "Address": "10.9.0.1",
                                  "Service": {"ID": id, "Service": "load", "Port": 1}});
                match client.put(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().unwrap().insert(id);
                    }
                    _ => return,
                }
            }
        }));
    }
    // Kill once a good number of writes were acknowledged, mid-stream.
    wait_until_async("200 acknowledged writes", Duration::from_secs(60), || {
        let n = acked.lock().unwrap().len();
        async move {
            if n >= 200 {
                Ok(())
            } else {
                Err(format!("{n} acknowledged"))
            }
        }
    })
    .await;
    agent.kill();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();

    agent.restart();
    let found = wait_until_async("catalog restored", Duration::from_secs(30), || {
        let agent = &agent;
        let acked = &acked;
        async move {
            let ids = registered_ids(agent).await;
            if acked.is_subset(&ids) {
                Ok(ids)
            } else {
                Err(format!(
                    "{} of {} acknowledged writes missing",
                    acked.difference(&ids).count(),
                    acked.len()
                ))
            }
        }
    })
    .await;
    assert!(found.len() >= acked.len());

    // And the restarted server keeps accepting writes.
    let r = agent
        .put(
            "/v1/catalog/register",
            &json!({"Node": "n2", "Address": "10.9.0.2", "Service": {"Service": "after", "Port": 2}}),
        )
        .await
        .expect("PUT");
    assert_eq!(r.status, 200);
    let v = agent
        .get("/v1/catalog/service/after")
        .await
        .expect("GET")
        .json();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    let _: Value = v;
}
