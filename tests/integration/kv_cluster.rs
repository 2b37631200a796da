//! KV and txn across a real cluster of three servers and a client agent:
//! writes through the client reach every server; the client answers
//! `?stale` from its own replica even with every server hung, and wakes its
//! blocking reads from its change stream; a leader killed mid-stream loses
//! no acknowledged write and writes resume on the new leader; a server
//! restarted from its disk has every key, tombstone and index it had.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use trellis_testkit::{
    Agent, Cluster, FORM_DEADLINE, SETTLE_DEADLINE, try_wait_until_async, wait_until_async,
};

use crate::harness::{single_server, temp_dir, trellis};
use crate::kv::{b64, call, call_url, entry, put_ok, raw, spawn_get};

/// Three formed servers and client `c1`, once a write through the client
/// is acknowledged (it joined and follows the leader).
async fn cluster_with_client() -> Cluster {
    let mut c = trellis().cluster().servers(3).start().await;
    c.add_client("c1", |b| b);
    let url = c.node("c1").url("/v1/kv/ready");
    wait_until_async("a write through c1", FORM_DEADLINE, || async {
        match call_url(&url, "PUT", b"yes").await {
            Ok(r) if r.status == 200 && r.text == "true" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    c
}

/// Waits until `agent`, read with `?stale` (its own state), has `value` at
/// `key`.
async fn wait_value(agent: &Agent, key: &str, value: &[u8]) {
    let what = format!("{key} on {}", agent.name());
    let path = format!("/v1/kv/{key}?stale&raw");
    wait_until_async(&what, SETTLE_DEADLINE, || async {
        let r = agent.get(&path).await?;
        if r.status == 200 && r.bytes == value {
            Ok(())
        } else {
            Err(format!("{} {:?}", r.status, r.text))
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_writes_through_its_servers_and_reads_from_its_own_replica() {
    let c = cluster_with_client().await;
    let client = c.node("c1");

    put_ok(client, "cfg/db", b"primary").await;
    for s in c.servers() {
        wait_value(s, "cfg/db", b"primary").await;
    }
    // A follower takes writes too (forwarding them to the leader).
    let leader = c.leader().await;
    let follower = c.followers(leader)[0];
    put_ok(follower, "cfg/from-follower", b"yes").await;
    wait_value(client, "cfg/from-follower", b"yes").await;

    // Read your writes: a default read through the agent that took an
    // acknowledged write sees it, as Consul's (its default read goes to the
    // leader), so `kv put` then `kv get` on one agent never goes back.
    for m in [client, follower] {
        for i in 0..20 {
            let value = format!("{}-{i}", m.name());
            put_ok(m, "ryw", value.as_bytes()).await;
            assert_eq!(
                raw(m, "ryw").await.as_deref(),
                Some(value.as_bytes()),
                "{} read back its own acknowledged write",
                m.name()
            );
        }
    }

    // A transaction through the client.
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "cfg/mode", "Value": b64(b"active")}},
        {"KV": {"Verb": "get", "Key": "cfg/db"}},
    ]);
    let r = call(client, "PUT", "/v1/txn", ops.to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["Results"][1]["KV"]["Value"],
        json!(b64(b"primary"))
    );
    let txn_index = r.index.expect("the transaction's index");
    for s in c.servers() {
        wait_value(s, "cfg/mode", b"active").await;
    }

    // A blocking read on the client wakes when a server takes a write.
    wait_value(client, "cfg/mode", b"active").await;
    let r = crate::kv::get(client, "/v1/kv/cfg/mode").await;
    let i = r.index.expect("index");
    assert_eq!(i, txn_index);
    let waiter = spawn_get(client.url(&format!("/v1/kv/cfg/mode?index={i}&wait=20s")));
    let leader = c.leader().await;
    let at = Instant::now();
    let w = put_ok(leader, "cfg/mode", b"standby").await;
    let r = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("the client's blocking read answers")
        .expect("reader task");
    assert_eq!(r.index, Some(w), "{r:?}");
    assert_eq!(entry(&r)["Value"], json!(b64(b"standby")));
    assert!(
        at.elapsed() < Duration::from_secs(5),
        "woke after {:?}",
        at.elapsed()
    );

    let r = crate::kv::get(client, "/v1/kv/cfg/db?consistent").await;
    assert_eq!(entry(&r)["Value"], json!(b64(b"primary")));

    // Every server hung: the client still answers ?stale from its replica,
    // while a default read needs a leader it no longer has.
    for s in c.servers() {
        s.pause();
    }
    wait_until_async("c1 to see no leader", SETTLE_DEADLINE, || async {
        let r = client.get("/v1/kv/cfg/db").await?;
        if r.status == 500 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    })
    .await;
    let r = client.get("/v1/kv/cfg/db?stale").await.expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(entry(&r)["Value"], json!(b64(b"primary")));
    assert_eq!(r.known_leader, Some(false), "{r:?}");
    let r = client
        .get("/v1/kv/cfg/?recurse&stale")
        .await
        .expect("an answer");
    assert_eq!(r.json().as_array().map(Vec::len), Some(3), "{}", r.text);
    let r = client.get("/v1/kv/cfg/db").await.expect("an answer");
    assert_eq!(r.status, 500, "{r:?}");
    let r = client.get("/v1/kv/cfg/db?consistent").await;
    assert_eq!(
        r.map(|r| r.status),
        Ok(500),
        "a consistent read without servers fails at once"
    );
    // A read-only transaction too: no log entry, so `?stale` is local.
    let read = json!([{"KV": {"Verb": "get", "Key": "cfg/db"}}]).to_string();
    let r = call(client, "PUT", "/v1/txn?stale", read.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["Results"][0]["KV"]["Value"],
        json!(b64(b"primary"))
    );
    let r = call(client, "PUT", "/v1/txn", read.as_bytes()).await;
    assert_eq!(r.status, 500, "a default read needs the leader: {r:?}");
    for s in c.servers() {
        s.resume();
    }
    c.assert_no_panics();
}

#[tokio::test]
async fn killing_the_leader_loses_no_acknowledged_kv_write() {
    let mut c = cluster_with_client().await;
    let old = c.leader().await.name().to_string();
    const KEYS: usize = 60;

    // One writer through the client, each key retried until acknowledged;
    // `acked` holds what the cluster said yes to.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let url = c.node("c1").url("/v1/kv/");
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            for i in 0..KEYS {
                let (key, value) = (format!("acked/{i:03}"), format!("v{i}"));
                let what = format!("acknowledgement of {key}");
                let put = format!("{url}{key}");
                let r = try_wait_until_async(&what, SETTLE_DEADLINE, || async {
                    match call_url(&put, "PUT", value.as_bytes()).await {
                        Ok(r) if r.status == 200 && r.text == "true" => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                })
                .await;
                if let Err(e) = r {
                    return Err(e.to_string());
                }
                acked.lock().expect("acked").insert(key, value);
            }
            Ok(())
        })
    };
    wait_until_async("20 acknowledged writes", SETTLE_DEADLINE, || {
        let n = acked.lock().expect("acked").len();
        async move {
            if n >= 20 {
                Ok(())
            } else {
                Err(format!("{n} acknowledged"))
            }
        }
    })
    .await;
    c.node(&old).kill();

    tokio::time::timeout(Duration::from_secs(120), writer)
        .await
        .expect("the writer finishes")
        .expect("writer task")
        .unwrap_or_else(|e| panic!("writes did not resume after the leader died: {e}"));
    let new = c.leader().await;
    assert_ne!(new.name(), old);
    let acked = acked.lock().expect("acked").clone();
    assert_eq!(acked.len(), KEYS);
    for (key, value) in &acked {
        assert_eq!(
            raw(new, key).await.as_deref(),
            Some(value.as_bytes()),
            "{key} on the new leader"
        );
    }
    // Every survivor, the client, and a client that joins only now (its
    // replica caught up from the servers) converge on the same listing.
    c.add_client("c2", |b| b);
    let want: Vec<&String> = acked.keys().collect();
    for m in c.members().filter(|m| m.name() != old) {
        let what = format!("every acknowledged key on {}", m.name());
        wait_until_async(&what, SETTLE_DEADLINE, || async {
            let r = m.get("/v1/kv/acked/?keys&stale").await?;
            if r.json() == json!(want) {
                Ok(())
            } else {
                Err(r.text)
            }
        })
        .await;
    }
    c.assert_no_panics();
}

#[tokio::test]
async fn a_restarted_server_has_every_key_tombstone_and_index() {
    let dir = temp_dir();
    let agent = single_server(dir.path());
    wait_until_async("a write", FORM_DEADLINE, || async {
        let r = call_url(&agent.url("/v1/kv/ready"), "PUT", b"1").await?;
        if r.text == "true" {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    put_ok(&agent, "p/1", b"one").await;
    put_ok(&agent, "p/2?flags=7", b"two").await;
    put_ok(&agent, "p/3", b"three").await;
    let r = call(&agent, "DELETE", "/v1/kv/p/3", b"").await;
    assert_eq!(r.text, "true");
    let before = crate::kv::get(&agent, "/v1/kv/p/?recurse").await;
    assert_eq!(
        before.index, r.index,
        "the tombstone holds the prefix's index"
    );

    agent.restart_async().await.expect("restart");
    let after = wait_until_async("reads after the restart", FORM_DEADLINE, || async {
        let r = agent.get("/v1/kv/p/?recurse").await?;
        if r.status == 200 {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    assert_eq!(after.text, before.text, "every entry, index and flag");
    assert_eq!(after.index, before.index, "the tombstone survived");
    assert_eq!(raw(&agent, "p/3").await, None);
}

#[tokio::test]
async fn concurrent_cas_increments_through_every_member_lose_none() {
    const EACH: u64 = 8;
    let c = cluster_with_client().await;
    put_ok(c.node("c1"), "counter", b"0").await;

    // Every member increments the counter EACH times with read, then cas
    // on the index read; a refused cas reads again. Linearizable cas means
    // no increment is lost and no index is won twice.
    let mut tasks = Vec::new();
    for m in c.members() {
        let url = m.url("/v1/kv/counter");
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            while (won.len() as u64) < EACH {
                let r = call_url(&url, "GET", b"").await?;
                if r.status != 200 {
                    // An election or a follower catching up: read again.
                    continue;
                }
                let e = &r.json()[0];
                let seen = e["ModifyIndex"].as_u64().ok_or("ModifyIndex")?;
                let n: u64 = raw_value(e)?.parse().map_err(|e| format!("{e}"))?;
                let next = (n + 1).to_string();
                let w = call_url(&format!("{url}?cas={seen}"), "PUT", next.as_bytes()).await?;
                if w.text == "true" {
                    won.push((seen, n));
                }
            }
            Ok::<_, String>(won)
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        let w = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("the incrementer finishes")
            .expect("incrementer task")
            .unwrap_or_else(|e| panic!("incrementer: {e}"));
        won.extend(w);
    }
    let total = EACH * c.members().count() as u64;
    assert_eq!(won.len() as u64, total);
    let mut seen: Vec<u64> = won.iter().map(|(i, _)| *i).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len() as u64, total, "an index won twice: {won:?}");
    let mut counts: Vec<u64> = won.iter().map(|(_, n)| *n).collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (0..total).collect::<Vec<_>>(),
        "every value incremented once"
    );
    let leader = c.leader().await;
    assert_eq!(
        raw(leader, "counter").await,
        Some(total.to_string().into_bytes())
    );
}

/// The value of an entry from its base64 `Value`, as text.
fn raw_value(e: &serde_json::Value) -> Result<String, String> {
    use base64::Engine as _;
    let v = e["Value"].as_str().ok_or("no Value")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v)
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}
