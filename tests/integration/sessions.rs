//! Sessions on real agents: Consul's endpoints and JSON, the leader's TTL
//! expiry with Consul's grace of twice the TTL, deadlines that survive a
//! leader failover, invalidation when a node fails gossip or a check a
//! session names turns critical, and what an invalidation does to the keys
//! a session holds: released or deleted by its Behavior, then held for its
//! lock-delay.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trellis_testkit::{Agent, Resp, SETTLE_DEADLINE, wait_until_async};

use crate::harness::trellis;
use crate::kv::{put_ok, raw, read};

/// How long after its deadline an expiry may land: the leader's proposal
/// and the log's round trip, plus the poll that sees it.
const EXPIRY_MARGIN: Duration = Duration::from_secs(3);

/// How much earlier than twice the TTL after the create request was sent
/// an expiry may be observed: the deadline is dated by the create's log
/// entry, which is later than the request, so nothing earlier is allowed
/// but clock granularity.
const EARLY_SLACK: Duration = Duration::from_millis(200);

/// By when after its create a 10 s TTL session must be gone across a
/// leader failover 8 s in: its deadline (20 s) and the poll that sees it,
/// well before the ~28 s a new leader restarting the timer would give.
const FAILOVER_EXPIRY_BY: Duration = Duration::from_secs(22);

/// A PUT with `body` (none: no body at all).
async fn put(agent: &Agent, path: &str, body: Option<Value>) -> Resp {
    agent
        .request("PUT", path, body.as_ref())
        .await
        .unwrap_or_else(|e| panic!("PUT {path} on {}: {e}", agent.name()))
}

async fn get(agent: &Agent, path: &str) -> Resp {
    agent
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", agent.name()))
}

/// Creates a session on `agent` and returns its ID; panics unless created.
async fn create(agent: &Agent, body: Option<Value>) -> String {
    let r = put(agent, "/v1/session/create", body.clone()).await;
    assert_eq!(
        r.status,
        200,
        "create {body:?} on {}: {}",
        agent.name(),
        r.text
    );
    assert!(r.index.is_some_and(|i| i > 0), "a create has its index");
    assert_eq!(r.known_leader, Some(true), "{:?}", r.headers);
    let v = r.json();
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(1),
        "only the ID: {}",
        r.text
    );
    v["ID"].as_str().expect("an ID").to_string()
}

/// The sessions `GET /v1/session/info/:id` answers (none or one).
async fn info(agent: &Agent, id: &str) -> Vec<Value> {
    let r = get(agent, &format!("/v1/session/info/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json().as_array().cloned().expect("a list")
}

/// Waits until `node`'s `serfHealth` check passes on `agent`: the default
/// check of a session on that node.
async fn wait_serf_passing(agent: &Agent, node: &str) {
    wait_until_async(
        &format!("{node}'s serfHealth to pass on {}", agent.name()),
        SETTLE_DEADLINE,
        || async move {
            let r = agent.get(&format!("/v1/health/node/{node}")).await?;
            let passing = r.json().as_array().is_some_and(|checks| {
                checks
                    .iter()
                    .any(|c| c["CheckID"] == "serfHealth" && c["Status"] == "passing")
            });
            if passing { Ok(()) } else { Err(r.text) }
        },
    )
    .await;
}

/// Waits until session `id` is gone on `agent` (at most `deadline`) and
/// says when it was first seen gone.
async fn wait_gone(agent: &Agent, id: &str, deadline: Duration) -> Instant {
    wait_until_async(
        &format!("session {id} to be gone on {}", agent.name()),
        deadline,
        || async move {
            let r = agent.get(&format!("/v1/session/info/{id}")).await?;
            match r.json().as_array().map(Vec::len) {
                Some(0) => Ok(Instant::now()),
                _ => Err(format!("{} {}", r.status, r.text)),
            }
        },
    )
    .await
}

/// Whether the keys appear in `text` in this order.
fn in_order(text: &str, keys: &[&str]) -> bool {
    let at: Vec<Option<usize>> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")))
        .collect();
    at.iter().all(Option::is_some) && at.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test]
async fn sessions_are_created_read_renewed_and_destroyed_with_consuls_json() {
    let agent = trellis().dev().node("dev1").start();
    wait_serf_passing(&agent, "dev1").await;

    // No body: this agent's node, serfHealth, 15 s of lock-delay, release.
    let plain = create(&agent, None).await;
    let r = get(&agent, &format!("/v1/session/info/{plain}")).await;
    assert!(r.index.is_some_and(|i| i > 0));
    assert!(
        in_order(
            &r.text,
            &[
                "ID",
                "Name",
                "Node",
                "LockDelay",
                "Behavior",
                "TTL",
                "NodeChecks",
                "ServiceChecks",
                "CreateIndex",
                "ModifyIndex"
            ]
        ),
        "{}",
        r.text
    );
    assert!(!r.text.contains("\"Checks\""), "{}", r.text);
    let s = &r.json()[0];
    assert_eq!(s["ID"], plain.as_str());
    assert_eq!(s["Name"], "");
    assert_eq!(s["Node"], "dev1");
    assert_eq!(s["LockDelay"], 15_000_000_000_u64);
    assert_eq!(s["Behavior"], "release");
    assert_eq!(s["TTL"], "");
    assert_eq!(s["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(s["ServiceChecks"], Value::Null);
    assert_eq!(s["CreateIndex"], s["ModifyIndex"]);

    // py-consul's spelling: lower-case keys.
    let named = create(
        &agent,
        Some(
            json!({"name": "db-leader", "behavior": "delete", "ttl": "30s",
                    "lockdelay": 5, "checks": []}),
        ),
    )
    .await;
    let s = &info(&agent, &named).await[0];
    assert_eq!(s["Name"], "db-leader");
    assert_eq!(s["Behavior"], "delete");
    assert_eq!(s["TTL"], "30s");
    assert_eq!(s["LockDelay"], 5_000_000_000_u64);
    assert_eq!(s["NodeChecks"], json!([]));

    // Lists: all, by node, for a node without sessions.
    let list = get(&agent, "/v1/session/list").await;
    let ids: BTreeSet<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["ID"].as_str().map(String::from))
        .collect();
    assert_eq!(ids, BTreeSet::from([plain.clone(), named.clone()]));
    let on_node = get(&agent, "/v1/session/node/dev1").await.json();
    assert_eq!(on_node.as_array().map(Vec::len), Some(2));
    let elsewhere = get(&agent, "/v1/session/node/nobody").await;
    assert_eq!((elsewhere.status, elsewhere.json()), (200, json!([])));

    // Renew: the session in a list, with the write's index; 404 when unknown.
    let r = put(&agent, &format!("/v1/session/renew/{named}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.index.is_some());
    let renewed = r.json();
    assert_eq!(renewed.as_array().map(Vec::len), Some(1));
    assert_eq!(renewed[0]["ID"], named.as_str());
    assert_eq!(renewed[0]["TTL"], "30s");
    let missing = "00000000-0000-4000-8000-00000000dead";
    let r = put(&agent, &format!("/v1/session/renew/{missing}"), None).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (404, format!("Session id '{missing}' not found").as_str())
    );

    // Destroy: true, gone from every read; destroying again is still true.
    for _ in 0..2 {
        let r = put(&agent, &format!("/v1/session/destroy/{named}"), None).await;
        assert_eq!((r.status, r.json()), (200, json!(true)), "{}", r.text);
        assert!(r.index.is_some());
    }
    assert!(info(&agent, &named).await.is_empty());
    let after = get(&agent, "/v1/session/list").await.json();
    assert_eq!(after.as_array().map(Vec::len), Some(1));
    assert_eq!(after[0]["ID"], plain.as_str());
}

#[tokio::test]
async fn bad_session_input_gets_consuls_status_and_writes_nothing() {
    let agent = trellis().dev().node("dev1").start();
    wait_serf_passing(&agent, "dev1").await;
    let before = get(&agent, "/v1/session/list").await;
    for (body, status, says) in [
        (
            json!({"Behavior": "keep"}),
            500,
            "Invalid Behavior setting 'keep'",
        ),
        (
            json!({"TTL": "5s"}),
            500,
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
        ),
        (json!({"TTL": "soon"}), 500, "Session TTL 'soon' invalid"),
        (json!({"LockDelay": "soon"}), 400, "LockDelay"),
        (json!({"Name": ["x"]}), 400, "Name"),
        (json!({"NodeChecks": "serfHealth"}), 400, "NodeChecks"),
        (json!({"Node": "nowhere"}), 500, "Missing node registration"),
        (
            json!({"NodeChecks": ["no-such-check"]}),
            500,
            "Missing check 'no-such-check' registration",
        ),
        (json!(["not", "an", "object"]), 400, "body"),
    ] {
        let r = put(&agent, "/v1/session/create", Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {:?} lacks {says:?}", r.text);
    }
    let r = agent
        .request("PUT", "/v1/session/create", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "an empty body is fine: {}", r.text);
    let id = r.json()["ID"].as_str().unwrap().to_string();
    // Nothing but the good create was written.
    let after = get(&agent, "/v1/session/list").await.json();
    assert_eq!(before.json(), json!([]));
    assert_eq!(after.as_array().map(Vec::len), Some(1));
    assert_eq!(after[0]["ID"], id.as_str());
    // Without an ID: Consul's 400s.
    let r = put(&agent, "/v1/session/destroy/", None).await;
    assert_eq!((r.status, r.text.as_str()), (400, "Missing session"));
    let r = get(&agent, "/v1/session/node/").await;
    assert_eq!((r.status, r.text.as_str()), (400, "Missing node name"));
    // Writes are PUTs.
    let r = get(&agent, "/v1/session/create").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn a_ttl_session_lives_twice_its_ttl_and_then_expires() {
    let agent = trellis().dev().node("dev1").start();
    wait_serf_passing(&agent, "dev1").await;
    let ttl = Duration::from_secs(10);
    let sent = Instant::now();
    let id = create(&agent, Some(json!({"TTL": "10s"}))).await;
    put_ok(&agent, &format!("ttl/lock?acquire={id}"), b"held").await;
    // Past its TTL it is still there: Consul grants twice the TTL.
    tokio::time::sleep_until((sent + ttl + Duration::from_secs(2)).into()).await;
    assert_eq!(info(&agent, &id).await.len(), 1, "gone before 2×TTL");
    assert_eq!(read(&agent, "ttl/lock").await["Session"], id.as_str());
    let gone = wait_gone(&agent, &id, ttl * 2 + EXPIRY_MARGIN).await;
    let lived = gone - sent;
    assert!(lived >= ttl * 2 - EARLY_SLACK, "expired after {lived:?}");
    assert!(lived <= ttl * 2 + EXPIRY_MARGIN, "expired after {lived:?}");
    // Expiry released its lock in the same entry; the value stays.
    let e = read(&agent, "ttl/lock").await;
    assert_eq!(e.get("Session"), None, "{e}");
    assert_eq!(raw(&agent, "ttl/lock").await.as_deref(), Some(&b"held"[..]));
}

#[tokio::test]
async fn a_renewal_extends_a_ttl_session() {
    let agent = trellis().dev().node("dev1").start();
    wait_serf_passing(&agent, "dev1").await;
    let ttl = Duration::from_secs(10);
    let sent = Instant::now();
    let id = create(&agent, Some(json!({"TTL": "10s"}))).await;
    // Renewed 15 s in, it is due 2×TTL after the renewal, not the create.
    tokio::time::sleep_until((sent + Duration::from_secs(15)).into()).await;
    let renewed = Instant::now();
    let r = put(&agent, &format!("/v1/session/renew/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    tokio::time::sleep_until((sent + ttl * 2 + Duration::from_secs(2)).into()).await;
    assert_eq!(info(&agent, &id).await.len(), 1, "the renewal was lost");
    let gone = wait_gone(&agent, &id, ttl * 2 + EXPIRY_MARGIN).await;
    assert!(gone - renewed >= ttl * 2 - EARLY_SLACK);
}

#[tokio::test]
async fn ttl_deadlines_survive_a_leader_failover() {
    let c = trellis().cluster().servers(3).start().await;
    let leader = c.leader().await;
    let follower = c.followers(leader)[0];
    wait_serf_passing(follower, follower.name()).await;
    // On a follower's node, which stays up: only the TTL can end it.
    let ttl = Duration::from_secs(10);
    let sent = Instant::now();
    let id = create(follower, Some(json!({"TTL": "10s"}))).await;
    tokio::time::sleep_until((sent + Duration::from_secs(8)).into()).await;
    assert_eq!(info(follower, &id).await.len(), 1);
    leader.kill();
    let survivors: Vec<&Agent> = c.servers().filter(|s| s.name() != leader.name()).collect();
    let new_leader = c.wait_leader_among(&survivors, SETTLE_DEADLINE).await;
    assert_ne!(new_leader.name(), leader.name());
    // Due 20 s after the create, as granted then; a leader that restarted
    // the timer would keep it until ~28 s.
    let gone = wait_gone(follower, &id, Duration::from_secs(30)).await;
    let lived = gone - sent;
    assert!(lived >= ttl * 2 - EARLY_SLACK, "expired after {lived:?}");
    assert!(
        lived <= FAILOVER_EXPIRY_BY,
        "expired after {lived:?}: the new leader restarted the TTL"
    );
}

#[tokio::test]
async fn a_nodes_sessions_end_when_its_agent_fails_gossip() {
    let mut c = trellis().cluster().servers(1).start().await;
    c.add_client("c1", |b| b);
    let server = c.node("s1");
    wait_serf_passing(server, "c1").await;
    let client = c.node("c1");
    let id = create(client, Some(json!({"Name": "on-c1", "LockDelay": "0s"}))).await;
    assert_eq!(info(server, &id).await[0]["Node"], "c1");
    // A client agent answers a renewal from its own replica once it has
    // the write, and stale reads from it too.
    let r = put(client, &format!("/v1/session/renew/{id}"), None).await;
    assert_eq!(
        (r.status, r.json()[0]["ID"].as_str()),
        (200, Some(id.as_str()))
    );
    let r = get(client, "/v1/session/node/c1?stale").await;
    assert_eq!(r.json()[0]["ID"], id.as_str(), "{}", r.text);
    put_ok(client, &format!("app/leader?acquire={id}"), b"c1").await;
    let kept = create(server, None).await;
    client.kill();
    wait_gone(server, &id, SETTLE_DEADLINE).await;
    assert_eq!(info(server, &kept).await.len(), 1, "another node's session");
    // Its lock is free for the next leader at once (no lock-delay).
    assert_eq!(read(server, "app/leader").await.get("Session"), None);
    put_ok(server, &format!("app/leader?acquire={kept}"), b"s1").await;
}

#[tokio::test]
async fn a_session_ends_when_a_check_it_names_turns_critical() {
    let agent = trellis().dev().node("dev1").start();
    wait_serf_passing(&agent, "dev1").await;
    let r = put(
        &agent,
        "/v1/agent/service/register",
        Some(json!({"Name": "web", "Port": 80, "Check": {"CheckID": "web-ttl", "TTL": "60s"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A TTL check starts critical: a session cannot name it yet.
    let r = put(
        &agent,
        "/v1/session/create",
        Some(json!({"ServiceChecks": [{"ID": "web-ttl"}]})),
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (500, "Check 'web-ttl' is in critical state")
    );
    let r = put(&agent, "/v1/agent/check/pass/web-ttl", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let by_service = wait_until_async("a session on web-ttl", SETTLE_DEADLINE, || async {
        let r = agent
            .put(
                "/v1/session/create",
                &json!({"ServiceChecks": [{"ID": "web-ttl", "Namespace": ""}]}),
            )
            .await?;
        if r.status == 200 {
            Ok(r.json()["ID"].as_str().unwrap_or_default().to_string())
        } else {
            Err(r.text)
        }
    })
    .await;
    let s = &info(&agent, &by_service).await[0];
    assert_eq!(
        s["ServiceChecks"],
        json!([{"ID": "web-ttl", "Namespace": ""}])
    );
    let by_old_field = create(&agent, Some(json!({"Checks": ["serfHealth", "web-ttl"]}))).await;
    let unrelated = create(&agent, None).await;
    let r = put(&agent, "/v1/agent/check/fail/web-ttl", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_gone(&agent, &by_service, SETTLE_DEADLINE).await;
    wait_gone(&agent, &by_old_field, SETTLE_DEADLINE).await;
    assert_eq!(info(&agent, &unrelated).await.len(), 1);
}

#[tokio::test]
async fn a_blocking_session_list_wakes_on_a_create() {
    let agent = trellis().dev().node("dev1").start();
    wait_serf_passing(&agent, "dev1").await;
    let r = get(&agent, "/v1/session/list").await;
    let index = r.index.expect("an index");
    let path = format!("/v1/session/list?index={index}&wait=8s");
    let blocked = agent.get(&path);
    tokio::pin!(blocked);
    // Parked: nothing changed, so it does not answer.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut blocked)
            .await
            .is_err(),
        "answered without a change"
    );
    let asked = Instant::now();
    let id = create(&agent, None).await;
    let r = blocked.await.expect("an answer");
    assert!(asked.elapsed() < Duration::from_secs(5), "woke late");
    assert!(r.index.is_some_and(|i| i > index), "{:?}", r.index);
    assert_eq!(r.json()[0]["ID"], id.as_str());
    // The same holds for one session's info: it wakes when it goes.
    let r = get(&agent, &format!("/v1/session/info/{id}")).await;
    let index = r.index.expect("an index");
    let path = format!("/v1/session/info/{id}?index={index}&wait=8s");
    let blocked = agent.get(&path);
    tokio::pin!(blocked);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut blocked)
            .await
            .is_err()
    );
    put(&agent, &format!("/v1/session/destroy/{id}"), None).await;
    let r = blocked.await.expect("an answer");
    assert_eq!(r.json(), json!([]));
}

/// `PUT /v1/kv/<key>?acquire=<id>`: whether the lock was taken.
async fn acquire(agent: &Agent, key: &str, id: &str) -> bool {
    let r = agent
        .request(
            "PUT",
            &format!("/v1/kv/{key}?acquire={id}"),
            Some(&json!("v")),
        )
        .await
        .unwrap_or_else(|e| panic!("acquire {key}: {e}"));
    assert_eq!(r.status, 200, "acquire {key}: {}", r.text);
    r.json() == json!(true)
}

#[tokio::test]
async fn a_destroyed_sessions_keys_are_released_and_held_for_its_lock_delay() {
    let agent = trellis().dev().node("dev1").start();
    wait_serf_passing(&agent, "dev1").await;
    let delay = Duration::from_secs(3);
    let holder = create(&agent, Some(json!({"LockDelay": "3s"}))).await;
    let next = create(&agent, Some(json!({"LockDelay": 0}))).await;
    assert!(acquire(&agent, "db/primary", &holder).await);
    assert!(!acquire(&agent, "db/primary", &next).await, "held");

    let sent = Instant::now();
    let r = put(&agent, &format!("/v1/session/destroy/{holder}"), None).await;
    assert_eq!(r.json(), json!(true));
    // Released, not deleted: Session cleared, LockIndex and value kept.
    let e = read(&agent, "db/primary").await;
    assert_eq!(e.get("Session"), None, "{e}");
    assert_eq!(e["LockIndex"], 1);
    // Nobody may take it for the lock-delay; then the next one may.
    assert!(!acquire(&agent, "db/primary", &next).await, "lock-delay");
    let taken = wait_until_async(
        "the lock after its lock-delay",
        delay + EXPIRY_MARGIN,
        || async {
            if acquire(&agent, "db/primary", &next).await {
                Ok(Instant::now())
            } else {
                Err("refused".to_string())
            }
        },
    )
    .await;
    assert!(
        taken - sent >= delay - EARLY_SLACK,
        "taken {:?} after the destroy",
        taken - sent
    );
    let e = read(&agent, "db/primary").await;
    assert_eq!(
        (e["Session"].as_str(), &e["LockIndex"]),
        (Some(next.as_str()), &json!(2))
    );
}

#[tokio::test]
async fn a_delete_behavior_session_takes_its_keys_with_it() {
    let agent = trellis().dev().node("dev1").start();
    wait_serf_passing(&agent, "dev1").await;
    let id = create(&agent, Some(json!({"Behavior": "delete"}))).await;
    let other = create(&agent, None).await;
    assert!(acquire(&agent, "sem/a", &id).await);
    assert!(acquire(&agent, "sem/b", &id).await);
    assert!(acquire(&agent, "sem/c", &other).await);
    put_ok(&agent, "sem/plain", b"x").await;
    let r = put(&agent, &format!("/v1/session/destroy/{id}"), None).await;
    assert_eq!(r.json(), json!(true));
    assert_eq!(raw(&agent, "sem/a").await, None);
    assert_eq!(raw(&agent, "sem/b").await, None);
    assert_eq!(read(&agent, "sem/c").await["Session"], other.as_str());
    assert!(raw(&agent, "sem/plain").await.is_some());
}
