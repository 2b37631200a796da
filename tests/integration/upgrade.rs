//! The upgrade a user takes: a data dir written by an older main opens in
//! the current binary, which upgrades it in place once, serves its catalog,
//! and takes catalog and KV writes. The fixtures (`tests/fixtures`, never
//! regenerated; how each was made is in its README):
//!
//! - `datadir-v1`, from before formats were versioned: a durable single
//!   server `fixture1` in dc1, agent services web-1, web-2, db-1 (with a TTL
//!   check) and cache-1, and catalog nodes ext1..ext6 with service ext,
//!   ext-5 deregistered; a snapshot at index 7 and the log from 6 to 14.
//! - `datadir-v2`, format 2 (before KV): `fixture2`, agent services api-1..3
//!   and catalog nodes far1..far5 with services queue, cron and edge, one
//!   queue instance critical; a snapshot at index 9 and the log from 8 to 13.
//! - `datadir-v3`, format 3 (before ACLs): `fixture3`, agent service web-1,
//!   KV keys with flags, a deleted key, a session holding `lock/leader`; a
//!   snapshot and a log of 9 entries.
//! - `datadir-v4`, format 4 (before prepared queries): `fixture4` with ACLs
//!   on, a policy and a token reading `web`, agent service web-1, catalog
//!   nodes far1..far3 with web instances (far3's critical), KV `config/v4`.
//! - `datadir-v5`, format 5 (the snapshot inside the database): `fixture5`,
//!   agent service web-1, catalog nodes far1..far3 with web instances
//!   (far3's critical), KV `config/v5` and `bulk/k1..k6`, a prepared query
//!   `web`; a snapshot at index 9 in `META` and the log after it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use trellis_testkit::Agent;
use trellis_testkit::dns::{self, a_records};
use trellis_testkit::wait::wait_until_async;

use crate::harness::{temp_dir, trellis};

const UPGRADED: &str = "upgraded the raft data to the current format";

/// Copies the fixture `name` into a fresh directory, so the committed one is
/// never written to.
fn copy_of_fixture(name: &str) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read fixture") {
            let entry = entry.expect("fixture entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).expect("copy fixture file");
            }
        }
    }
    let dir = temp_dir();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    copy(&fixture, dir.path());
    dir
}

async fn get_json(agent: &Agent, path: &str) -> Option<Value> {
    let resp = reqwest::get(agent.url(path)).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// The instance IDs `/v1/health/service/ext?passing` returns.
async fn passing_ext(agent: &Agent) -> Option<Vec<String>> {
    passing(agent, "ext").await
}

/// The instance IDs `/v1/health/service/<name>?passing` returns, sorted.
async fn passing(agent: &Agent, name: &str) -> Option<Vec<String>> {
    let body = get_json(agent, &format!("/v1/health/service/{name}?passing")).await?;
    let mut ids: Vec<String> = body
        .as_array()?
        .iter()
        .filter_map(|e| e["Service"]["ID"].as_str().map(String::from))
        .collect();
    ids.sort();
    Some(ids)
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The SRV targets' ports of `name`, sorted.
fn srv_ports(agent: &Agent, name: &str) -> Vec<u16> {
    dns::srv_ports(&agent.query_tcp(name, RecordType::SRV))
}

/// Waits until the agent serves the fixture's catalog over HTTP and DNS.
async fn assert_serves_the_fixture(agent: &Agent) {
    // What the old main served at `/v1/catalog/services`.
    let expected = json!({
        "cache": [], "consul": [], "db": [],
        "ext": ["t1", "t2", "t3", "t4", "t6"],
        "web": ["primary", "v1", "v2"],
    });
    wait_until_async(
        "the fixture's services",
        Duration::from_secs(30),
        || async {
            match get_json(agent, "/v1/catalog/services").await {
                Some(v) if v == expected => Ok(v),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let ext3 = get_json(agent, "/v1/catalog/node/ext3")
        .await
        .expect("ext3");
    assert_eq!(ext3["Node"]["Meta"]["rack"], "r3", "{ext3}");
    assert_eq!(ext3["Services"]["ext-3"]["Port"], 9003, "{ext3}");
    let passing = passing_ext(agent).await.expect("health");
    assert_eq!(passing, ids(&["ext-1", "ext-2", "ext-3", "ext-4", "ext-6"]));

    assert_eq!(srv_ports(agent, "web.service.consul."), vec![8080, 8081]);
    // Over TCP: UDP answers stop at three records, as Consul's do.
    let ext = agent.query_tcp("ext.service.consul.", RecordType::A);
    let want: Vec<IpAddr> = [1, 2, 3, 4, 6]
        .iter()
        .map(|n| IpAddr::from([127, 0, 1, *n]))
        .collect();
    assert_eq!(a_records(&ext), want);
}

#[tokio::test]
async fn a_data_dir_from_before_versioning_is_upgraded_serves_its_catalog_and_takes_writes() {
    let dir = copy_of_fixture("datadir-v1");
    let agent = trellis()
        .server()
        .node("fixture1")
        .bootstrap_expect(1)
        .data_dir(dir.path())
        .start();
    assert_serves_the_fixture(&agent).await;
    assert_eq!(agent.log().matches(UPGRADED).count(), 1, "{}", agent.log());

    // A write: ext6's service turns critical and leaves the passing answers.
    let check = json!({
        "Node": "ext6",
        "Address": "127.0.1.6",
        "NodeMeta": {"rack": "r6"},
        "Check": {"CheckID": "ext6-down", "Name": "ext6 down", "Status": "critical",
                  "ServiceID": "ext-6"},
    });
    let resp = reqwest::Client::new()
        .put(agent.url("/v1/catalog/register"))
        .json(&check)
        .send()
        .await
        .expect("register");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let passing = passing_ext(&agent).await.expect("health");
    assert_eq!(passing, ids(&["ext-1", "ext-2", "ext-3", "ext-4"]));
    // The KV store, which the old format had not, takes a write.
    put_kv(&agent, "x", "from v1").await;
    assert_eq!(get_kv_raw(&agent, "x").await.as_deref(), Some("from v1"));

    // Restarted, the upgraded dir opens as it is, with the write in it.
    agent.restart();
    wait_until_async("ext-6 still critical", Duration::from_secs(30), || async {
        match passing_ext(&agent).await {
            Some(p) if p == ids(&["ext-1", "ext-2", "ext-3", "ext-4"]) => Ok(p),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let ext = agent.query_tcp("ext.service.consul.", RecordType::A);
    let addrs: BTreeSet<IpAddr> = a_records(&ext).into_iter().collect();
    assert!(!addrs.contains(&IpAddr::from([127, 0, 1, 6])), "{addrs:?}");
    assert_eq!(addrs.len(), 4, "{addrs:?}");
    assert_eq!(srv_ports(&agent, "web.service.consul."), vec![8080, 8081]);
    assert_eq!(get_kv_raw(&agent, "x").await.as_deref(), Some("from v1"));
    assert_upgraded_once(&agent);
}

/// Insists the log says the data dir was upgraded before the restart and
/// not after it.
fn assert_upgraded_once(agent: &Agent) {
    let log = agent.log();
    let (first, restarted) = log.split_once("---- restarted ----").expect("restart log");
    assert_eq!(first.matches(UPGRADED).count(), 1, "{log}");
    assert!(!restarted.contains(UPGRADED), "upgraded twice:\n{log}");
}

/// `PUT /v1/kv/<key>` with `value` as the body; insists on Consul's `true`.
async fn put_kv(agent: &Agent, key: &str, value: &str) {
    let resp = reqwest::Client::new()
        .put(agent.url(&format!("/v1/kv/{key}")))
        .body(value.to_owned())
        .send()
        .await
        .expect("kv put");
    let status = resp.status();
    let body = resp.text().await.expect("kv put body");
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(body.trim(), "true");
}

/// `GET /v1/kv/<key>?raw`: the value, or `None` on 404 (or any failure).
async fn get_kv_raw(agent: &Agent, key: &str) -> Option<String> {
    let resp = reqwest::get(agent.url(&format!("/v1/kv/{key}?raw")))
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// Waits until the agent serves the v2 fixture's catalog over HTTP and DNS.
async fn assert_serves_the_v2_fixture(agent: &Agent) {
    // What format 2's main served at `/v1/catalog/services`.
    let expected = json!({
        "api": ["blue", "green", "v2"], "consul": [], "cron": [],
        "edge": ["x", "y"], "queue": ["fast", "slow", "v3"],
    });
    wait_until_async(
        "the v2 fixture's services",
        Duration::from_secs(30),
        || async {
            match get_json(agent, "/v1/catalog/services").await {
                Some(v) if v == expected => Ok(v),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let far5 = get_json(agent, "/v1/catalog/node/far5")
        .await
        .expect("far5");
    assert_eq!(far5["Node"]["Meta"]["rack"], "r5", "{far5}");
    assert_eq!(far5["Services"]["edge-1"]["Port"], 7500, "{far5}");
    let far1 = get_json(agent, "/v1/catalog/node/far1")
        .await
        .expect("far1");
    assert_eq!(far1["Services"]["queue-1"]["Meta"]["shard"], "1", "{far1}");
    let queue = passing(agent, "queue").await.expect("health");
    assert_eq!(queue, ids(&["queue-1", "queue-2"]));

    assert_eq!(
        srv_ports(agent, "api.service.consul."),
        vec![9100, 9101, 9102]
    );
    // queue-3's check is critical: DNS leaves it out.
    let answer = agent.query_tcp("queue.service.consul.", RecordType::A);
    let want: Vec<IpAddr> = [1, 2]
        .iter()
        .map(|n| IpAddr::from([127, 0, 2, *n]))
        .collect();
    assert_eq!(a_records(&answer), want);
}

#[tokio::test]
async fn a_format_2_data_dir_is_upgraded_serves_its_catalog_and_takes_kv_writes() {
    let dir = copy_of_fixture("datadir-v2");
    let agent = trellis()
        .server()
        .node("fixture2")
        .bootstrap_expect(1)
        .data_dir(dir.path())
        .start();
    assert_serves_the_v2_fixture(&agent).await;
    assert_eq!(agent.log().matches(UPGRADED).count(), 1, "{}", agent.log());

    // A catalog write: queue-3's check turns passing.
    let check = json!({
        "Node": "far3",
        "Address": "127.0.2.3",
        "NodeMeta": {"zone": "b"},
        "Check": {"CheckID": "queue-3-alive", "Name": "queue alive", "Status": "passing",
                  "ServiceID": "queue-3"},
    });
    let resp = reqwest::Client::new()
        .put(agent.url("/v1/catalog/register"))
        .json(&check)
        .send()
        .await
        .expect("register");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let queue = passing(&agent, "queue").await.expect("health");
    assert_eq!(queue, ids(&["queue-1", "queue-2", "queue-3"]));
    // And a KV write, read back.
    assert_eq!(get_kv_raw(&agent, "x").await, None);
    put_kv(&agent, "x", "from v2").await;
    assert_eq!(get_kv_raw(&agent, "x").await.as_deref(), Some("from v2"));

    // Restarted, the upgraded dir opens as it is, with both writes in it.
    agent.restart();
    wait_until_async("queue-3 still passing", Duration::from_secs(30), || async {
        match passing(&agent, "queue").await {
            Some(p) if p == ids(&["queue-1", "queue-2", "queue-3"]) => Ok(p),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(get_kv_raw(&agent, "x").await.as_deref(), Some("from v2"));
    assert_eq!(
        srv_ports(&agent, "api.service.consul."),
        vec![9100, 9101, 9102]
    );
    assert_upgraded_once(&agent);
}

/// The lock session of the v3 fixture.
const V3_SESSION: &str = "ce5c8301-af46-44e8-9469-b1dcb72e28f2";
/// The management token the v3 test configures.
const V3_ROOT: &str = "d6a2f7f0-0000-4000-8000-000000000003";

/// A GET with the management token; the JSON, or `None` on any failure.
async fn get_as_root(agent: &Agent, path: &str) -> Option<Value> {
    let resp = reqwest::Client::new()
        .get(agent.url(path))
        .header("X-Consul-Token", V3_ROOT)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Waits until the agent serves the v3 fixture's KV, session and lock.
async fn assert_serves_the_v3_fixture(agent: &Agent) {
    let keys = wait_until_async("the v3 fixture's keys", Duration::from_secs(30), || async {
        match get_as_root(agent, "/v1/kv/?keys").await {
            Some(v) => Ok(v),
            None => Err("no answer".to_string()),
        }
    })
    .await;
    assert_eq!(
        keys,
        json!([
            "bulk/k1",
            "bulk/k2",
            "bulk/k3",
            "bulk/k4",
            "bulk/k5",
            "bulk/k6",
            "config/a",
            "config/c",
            "flags/x",
            "lock/leader"
        ])
    );
    let flags = get_as_root(agent, "/v1/kv/flags/x").await.expect("flags/x");
    assert_eq!(flags[0]["Flags"], 7, "{flags}");
    assert_eq!(flags[0]["Value"], "b24=", "{flags}");
    let lock = get_as_root(agent, "/v1/kv/lock/leader")
        .await
        .expect("lock");
    assert_eq!(lock[0]["Session"], V3_SESSION, "{lock}");
    assert_eq!(lock[0]["LockIndex"], 1, "{lock}");
    let session = get_as_root(agent, &format!("/v1/session/info/{V3_SESSION}"))
        .await
        .expect("session");
    assert_eq!(session[0]["Name"], "leader", "{session}");
    // config/b was deleted before the snapshot: its tombstone keeps the
    // prefix's index at or above the delete.
    assert!(get_as_root(agent, "/v1/kv/config/b").await.is_none());
    let web = get_as_root(agent, "/v1/catalog/service/web")
        .await
        .expect("web");
    assert_eq!(web[0]["ServicePort"], 9200, "{web}");
}

#[tokio::test]
async fn a_format_3_data_dir_is_upgraded_keeps_its_kv_and_locks_and_takes_acls() {
    let dir = copy_of_fixture("datadir-v3");
    let etc = temp_dir();
    let config = etc.path().join("acl.json");
    let acl = json!({
        "acl": {"enabled": true, "default_policy": "deny",
                "tokens": {"initial_management": V3_ROOT}},
    });
    std::fs::write(&config, acl.to_string()).expect("write config");
    let agent = trellis()
        .server()
        .node("fixture3")
        .bootstrap_expect(1)
        .data_dir(dir.path())
        .config_file(&config)
        .start();
    // The initial management token is created in the upgraded dir's log,
    // and with it the reads below work under default deny.
    assert_serves_the_v3_fixture(&agent).await;
    assert_eq!(agent.log().matches(UPGRADED).count(), 1, "{}", agent.log());
    // Without a token, default deny: the keys are not listed.
    let anonymous = reqwest::get(agent.url("/v1/kv/config/a"))
        .await
        .expect("get");
    assert_eq!(anonymous.status(), reqwest::StatusCode::FORBIDDEN);
    // Bootstrapping is over: the initial management token ended it.
    let boot = reqwest::Client::new()
        .put(agent.url("/v1/acl/bootstrap"))
        .send()
        .await
        .expect("bootstrap");
    assert_eq!(boot.status(), reqwest::StatusCode::FORBIDDEN);

    // Restarted, the upgraded dir opens as it is, the token in it.
    agent.restart();
    assert_serves_the_v3_fixture(&agent).await;
    assert_upgraded_once(&agent);
}

/// The management token the v4 fixture was made with.
const V4_ROOT: &str = "d6a2f7f0-0000-4000-8000-000000000004";
/// The v4 fixture's token with the `web-read` policy.
const V4_WEB_READER: &str = "54000000-0000-4000-8000-000000000001";

/// A request with `token`; the status and the JSON body (`Null` if none).
async fn call(
    agent: &Agent,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, agent.url(path))
        .header("X-Consul-Token", token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Waits until the agent serves the v4 fixture's catalog, ACLs and KV.
async fn assert_serves_the_v4_fixture(agent: &Agent) {
    let passing = wait_until_async("the v4 fixture's web", Duration::from_secs(30), || async {
        let (status, body) = call(
            agent,
            reqwest::Method::GET,
            "/v1/health/service/web?passing",
            V4_ROOT,
            None,
        )
        .await;
        let mut ids: Vec<String> = body
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["Service"]["ID"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        if status.is_success() && ids.len() == 3 {
            Ok(ids)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    assert_eq!(passing, ids(&["web-1", "web-far1", "web-far2"]));
    // The token and its policy came through: it reads web, not the KV.
    let (status, web) = call(
        agent,
        reqwest::Method::GET,
        "/v1/catalog/service/web",
        V4_WEB_READER,
        None,
    )
    .await;
    assert!(status.is_success(), "{status} {web}");
    assert_eq!(web.as_array().map(Vec::len), Some(4), "{web}");
    let (status, _) = call(
        agent,
        reqwest::Method::GET,
        "/v1/kv/config/v4",
        V4_WEB_READER,
        None,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    let (status, kv) = call(
        agent,
        reqwest::Method::GET,
        "/v1/kv/config/v4",
        V4_ROOT,
        None,
    )
    .await;
    assert!(status.is_success(), "{status} {kv}");
    assert_eq!(kv[0]["Value"], "Zm91cg==", "{kv}");
    let (status, _) = call(
        agent,
        reqwest::Method::GET,
        "/v1/kv/config/gone",
        V4_ROOT,
        None,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_format_4_data_dir_is_upgraded_keeps_its_acls_and_takes_prepared_queries() {
    let dir = copy_of_fixture("datadir-v4");
    let etc = temp_dir();
    let config = etc.path().join("acl.json");
    let acl = json!({
        "acl": {"enabled": true, "default_policy": "deny",
                "tokens": {"initial_management": V4_ROOT}},
    });
    std::fs::write(&config, acl.to_string()).expect("write config");
    let agent = trellis()
        .server()
        .node("fixture4")
        .bootstrap_expect(1)
        .data_dir(dir.path())
        .config_file(&config)
        .start();
    assert_serves_the_v4_fixture(&agent).await;
    assert_eq!(agent.log().matches(UPGRADED).count(), 1, "{}", agent.log());

    // The new table takes writes: a prepared query over the fixture's web.
    let query = json!({"Name": "web", "Service": {"Service": "web", "OnlyPassing": true}});
    let (status, created) = call(
        &agent,
        reqwest::Method::POST,
        "/v1/query",
        V4_ROOT,
        Some(query),
    )
    .await;
    assert!(status.is_success(), "{status} {created}");
    let (status, executed) = call(
        &agent,
        reqwest::Method::GET,
        "/v1/query/web/execute",
        V4_ROOT,
        None,
    )
    .await;
    assert!(status.is_success(), "{status} {executed}");
    let mut ids: Vec<String> = executed["Nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|e| e["Service"]["ID"].as_str().map(String::from))
        .collect();
    ids.sort();
    assert_eq!(ids, ["web-1", "web-far1", "web-far2"], "{executed}");

    // Restarted, the upgraded dir opens as it is, the query in it.
    agent.restart();
    assert_serves_the_v4_fixture(&agent).await;
    assert_upgraded_once(&agent);
    let (status, listed) = call(&agent, reqwest::Method::GET, "/v1/query", V4_ROOT, None).await;
    assert!(status.is_success(), "{status} {listed}");
    assert_eq!(listed[0]["ID"], created["ID"], "{listed}");
}

/// Waits until the agent serves the v5 fixture: web's passing instances,
/// its KV (some of it in the snapshot, some in the log after it) and its
/// prepared query.
async fn assert_serves_the_v5_fixture(agent: &Agent) {
    let web = wait_until_async("the v5 fixture's web", Duration::from_secs(30), || async {
        match passing(agent, "web").await {
            Some(ids) if ids.len() == 3 => Ok(ids),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(web, ids(&["web-1", "web-far1", "web-far2"]));
    assert_eq!(
        get_kv_raw(agent, "config/v5").await.as_deref(),
        Some("five")
    );
    assert_eq!(get_kv_raw(agent, "config/gone").await, None);
    for i in 1..=6 {
        let value = get_kv_raw(agent, &format!("bulk/k{i}")).await;
        assert_eq!(value, Some(format!("v{i}")), "bulk/k{i}");
    }
    let executed = get_json(agent, "/v1/query/web/execute")
        .await
        .expect("the prepared query");
    let mut nodes: Vec<&str> = executed["Nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|e| e["Service"]["ID"].as_str())
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["web-1", "web-far1", "web-far2"], "{executed}");
}

#[tokio::test]
async fn a_format_5_data_dir_moves_its_snapshot_to_its_file_and_serves() {
    let dir = copy_of_fixture("datadir-v5");
    let snapshot_file = dir
        .path()
        .join("raft")
        .join(trellis::store::snapshot_file::FILE_NAME);
    assert!(!snapshot_file.exists());
    let agent = trellis()
        .server()
        .node("fixture5")
        .bootstrap_expect(1)
        .data_dir(dir.path())
        .start();
    assert_serves_the_v5_fixture(&agent).await;
    let log = agent.log();
    assert!(
        log.contains("from=5 to=6 log_entries=0 snapshot=true"),
        "{log}"
    );
    assert!(
        snapshot_file.exists(),
        "the snapshot was not moved to its file"
    );

    // Writes go on, and the moved snapshot and the log open again as they
    // are after a restart.
    put_kv(&agent, "after/v6", "six").await;
    agent.restart();
    assert_serves_the_v5_fixture(&agent).await;
    assert_eq!(get_kv_raw(&agent, "after/v6").await.as_deref(), Some("six"));
    assert_upgraded_once(&agent);
}
