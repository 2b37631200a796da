//! `/v1/txn` on a real dev agent, held to Consul's behaviour: operations
//! applied in order at one index and seeing each other, all or none, every
//! failure named with its OpIndex, Consul's limits and statuses, and reads
//! that skip the log.

use serde_json::{Value, json};
use trellis_testkit::Resp;

use crate::kv::{MAX_VALUE, b64, call, dev, get, put_ok, raw, raw_request, read, session};

/// One KV operation.
fn op(verb: &str, key: &str, value: Option<&[u8]>, index: u64) -> Value {
    let mut kv = json!({"Verb": verb, "Key": key, "Index": index});
    if let Some(v) = value {
        kv["Value"] = json!(b64(v));
    }
    json!({"KV": kv})
}

/// PUTs `ops` to `/v1/txn<query>`.
async fn txn(agent: &trellis_testkit::Agent, query: &str, ops: &Value) -> Resp {
    call(
        agent,
        "PUT",
        &format!("/v1/txn{query}"),
        ops.to_string().as_bytes(),
    )
    .await
}

/// The `KV` of every result.
fn results(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(body["Errors"], Value::Null, "{}", r.text);
    body["Results"]
        .as_array()
        .unwrap_or_else(|| panic!("Results: {}", r.text))
        .iter()
        .map(|x| x["KV"].clone())
        .collect()
}

#[tokio::test]
async fn a_transaction_applies_in_order_at_one_index_and_ops_see_earlier_ops() {
    let agent = dev().await;
    let before = put_ok(&agent, "t/old", b"old").await;
    let ops = json!([
        op("set", "t/a", Some(b"A"), 0),
        op("get", "t/a", None, 0),
        op("set", "t/b", Some(b"B"), 0),
        op("delete", "t/old", None, 0),
        op("check-not-exists", "t/old", None, 0),
        op("get-tree", "t/", None, 0),
    ]);
    let r = txn(&agent, "", &ops).await;
    let res = results(&r);
    let index = r.index.expect("a write reports its index");
    assert!(index > before);
    assert_eq!(r.known_leader, Some(true));
    // set: no value; get: the value set before it; delete and check: none;
    // get-tree: what the transaction sees, t/old gone.
    let shape: Vec<(Value, Value)> = res
        .iter()
        .map(|e| (e["Key"].clone(), e["Value"].clone()))
        .collect();
    assert_eq!(
        shape,
        [
            (json!("t/a"), Value::Null),
            (json!("t/a"), json!(b64(b"A"))),
            (json!("t/b"), Value::Null),
            (json!("t/a"), json!(b64(b"A"))),
            (json!("t/b"), json!(b64(b"B"))),
        ],
        "{}",
        r.text
    );
    for e in &res {
        assert_eq!(e["ModifyIndex"], json!(index), "one index for all: {e}");
    }
    assert_eq!(read(&agent, "t/a").await["ModifyIndex"], json!(index));
    assert_eq!(read(&agent, "t/b").await["CreateIndex"], json!(index));
    assert_eq!(raw(&agent, "t/old").await, None);

    // A cas against the index the transaction reported.
    let r = txn(
        &agent,
        "",
        &json!([
            op("cas", "t/a", Some(b"A2"), index),
            op("check-index", "t/b", None, index)
        ]),
    )
    .await;
    let res = results(&r);
    let next = r.index.expect("index");
    assert_eq!(res[0]["ModifyIndex"], json!(next));
    assert_eq!(raw(&agent, "t/a").await.as_deref(), Some(&b"A2"[..]));
}

#[tokio::test]
async fn a_failing_transaction_changes_nothing_and_names_every_failure() {
    let agent = dev().await;
    let first = put_ok(&agent, "e", b"one").await;
    let current = put_ok(&agent, "e", b"two").await;
    let ops = json!([
        op("set", "n", Some(b"new"), 0),
        op("cas", "e", Some(b"three"), first),
        op("check-not-exists", "e", None, 0),
        op("get", "absent", None, 0),
        op("delete-cas", "e", None, first),
        op("delete-tree", "", None, 0),
    ]);
    let r = txn(&agent, "", &ops).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"Results": null, "Errors": [
            {"OpIndex": 1, "What": "failed to set key \"e\", index is stale"},
            {"OpIndex": 2, "What": "key \"e\" exists"},
            {"OpIndex": 3, "What": "key \"absent\" doesn't exist"},
            {"OpIndex": 4, "What": "failed to delete key \"e\", index is stale"},
        ]}),
        "{}",
        r.text
    );
    assert_eq!(
        raw(&agent, "n").await,
        None,
        "the set before the failure did not happen"
    );
    let e = read(&agent, "e").await;
    assert_eq!(
        (e["Value"].clone(), e["ModifyIndex"].clone()),
        (json!(b64(b"two")), json!(current))
    );

    // An unknown verb is the transaction's own error, and stops it all.
    let r = txn(
        &agent,
        "",
        &json!([op("set", "n", Some(b"new"), 0), op("x", "n", None, 0)]),
    )
    .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(
        r.json()["Errors"],
        json!([{"OpIndex": 1, "What": "unknown KV verb \"x\""}])
    );
    assert_eq!(raw(&agent, "n").await, None);
}

#[tokio::test]
async fn oversized_and_malformed_transactions_are_refused_with_consuls_status() {
    let agent = dev().await;
    let before = get(&agent, "/v1/kv/?keys").await;
    assert_eq!(before.json(), json!([]));

    let many: Vec<Value> = (0..129)
        .map(|i| op("set", &format!("m/{i}"), Some(b"x"), 0))
        .collect();
    let r = txn(&agent, "", &json!(many)).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (413, "Transaction contains too many operations (129 > 128)")
    );
    let at_limit: Vec<Value> = (0..128)
        .map(|i| op("set", &format!("m/{i}"), Some(b"x"), 0))
        .collect();
    let r = txn(&agent, "", &json!(at_limit)).await;
    assert_eq!(results(&r).len(), 128);
    let r = call(&agent, "DELETE", "/v1/kv/m/?recurse", b"").await;
    assert_eq!(r.text, "true");

    // A value over the limit once decoded; its body is over the body limit
    // too, with Content-Length and chunked alike.
    let big = json!([op("set", "big", Some(&vec![b'z'; MAX_VALUE + 1]), 0)]).to_string();
    for chunked in [false, true] {
        let r = raw_request(
            agent.addrs().http,
            "PUT",
            "/v1/txn",
            big.as_bytes(),
            chunked,
        )
        .await;
        assert_eq!(r.status, 413, "chunked {chunked}: {r:?}");
        assert!(r.body.contains("too large"), "{}", r.body);
    }

    let bad = [
        json!([{"KV": {"Verb": "set", "Key": "b64", "Value": "not base64!"}}]).to_string(),
        json!({"KV": {"Verb": "set", "Key": "obj", "Value": "eA=="}}).to_string(),
        json!([{"KV": {"Verb": "set", "Key": "flags", "Flags": "many"}}]).to_string(),
        json!([{"KV": {"Verb": "set", "Key": "/lead"}}]).to_string(),
        json!([{"KV": {"Verb": "set", "Key": "a/../b"}}]).to_string(),
        "[{not json".to_string(),
    ];
    for body in &bad {
        let r = call(&agent, "PUT", "/v1/txn", body.as_bytes()).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(
            r.text.starts_with("Failed to parse body"),
            "{body}: {}",
            r.text
        );
    }
    // Only delete-tree may name the empty key, as Consul's kvsPreApply: a
    // set of "" would store a key `/v1/kv` cannot address.
    let r = txn(
        &agent,
        "",
        &json!([
            op("set", "", Some(b"x"), 0),
            op("get", "", None, 0),
            op("delete-tree", "", None, 0),
        ]),
    )
    .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(
        r.json()["Errors"],
        json!([
            {"OpIndex": 0, "What": "Must provide key"},
            {"OpIndex": 1, "What": "Must provide key"},
        ])
    );

    let r = get(&agent, "/v1/kv/?keys").await;
    assert_eq!(r.json(), json!([]), "nothing refused was stored");
}

#[tokio::test]
async fn a_read_only_transaction_skips_the_log_and_honours_the_consistency_mode() {
    let agent = dev().await;
    let at = put_ok(&agent, "ro", b"v").await;
    let ops = json!([op("get", "ro", None, 0), op("check-index", "ro", None, at)]);
    for query in ["", "?stale", "?consistent"] {
        let r = txn(&agent, query, &ops).await;
        let res = results(&r);
        assert_eq!(res[0]["Value"], json!(b64(b"v")), "{query}");
        assert_eq!(res[1]["ModifyIndex"], json!(at), "{query}");
        assert_eq!(r.index, None, "{query}: no X-Consul-Index for a read");
        assert_eq!(r.known_leader, Some(true), "{query}: {r:?}");
        assert!(
            r.headers.contains_key("x-consul-lastcontact"),
            "{query}: {r:?}"
        );
    }
    let r = txn(&agent, "?stale&consistent", &ops).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics."
        )
    );
    let r = txn(&agent, "", &json!([op("check-index", "ro", None, at + 1)])).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(
        r.json()["Errors"],
        json!([{"OpIndex": 0, "What": format!("failed index check for key \"ro\", current modify index {at} != {}", at + 1)}])
    );
    // No log entry: the KV table's index has not moved.
    assert_eq!(get(&agent, "/v1/kv/?keys").await.index, Some(at));
}

#[tokio::test]
async fn locks_in_a_transaction_check_their_holder() {
    let agent = dev().await;
    let s1 = session(&agent, json!({"Name": "one"})).await;
    let s2 = session(&agent, json!({"Name": "two"})).await;
    let with = |verb: &str, s: &str| json!({"KV": {"Verb": verb, "Key": "lk", "Value": b64(b"x"), "Session": s}});

    let r = txn(
        &agent,
        "",
        &json!([with("lock", &s1), with("check-session", &s1)]),
    )
    .await;
    let res = results(&r);
    assert_eq!(
        (res[0]["LockIndex"].clone(), res[0]["Session"].clone()),
        (json!(1), json!(s1))
    );
    assert_eq!(res[1]["Session"], json!(s1));

    let r = txn(&agent, "", &json!([with("lock", &s2), with("unlock", &s2)])).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(
        r.json()["Errors"],
        json!([
            {"OpIndex": 0, "What": "failed to lock key \"lk\", lock is already held"},
            {"OpIndex": 1, "What": "failed to unlock key \"lk\", lock isn't held, or is held by another session"},
        ])
    );
    let r = txn(&agent, "", &json!([with("check-session", &s2)])).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(
        r.json()["Errors"][0]["What"],
        json!(format!(
            "failed session check for key \"lk\", current session \"{s1}\" != \"{s2}\""
        ))
    );

    let r = txn(&agent, "", &json!([with("unlock", &s1), with("lock", &s2)])).await;
    let res = results(&r);
    assert_eq!(res[1]["LockIndex"], json!(2), "{}", r.text);
    let e = read(&agent, "lk").await;
    assert_eq!(
        (e["LockIndex"].clone(), e["Session"].clone()),
        (json!(2), json!(s2))
    );
}
