//! Gossip membership of real agents: a machine that dies leaves every
//! server's DNS answers and comes back when it does, a graceful leave
//! deregisters the node, and an agent with the wrong key cannot join.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use trellis_testkit::dns::a_records;
use trellis_testkit::{Agent, wait_until_async};

use crate::harness::trellis;

const DEADLINE: Duration = Duration::from_secs(30);
const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const OTHER_KEY: &str = "Ym9ndXMga2V5IGJvZ3VzIGtleSBib2d1cyBrZXkgISE=";

/// The addresses `db.service.consul` resolves to on `s` (over TCP, so no
/// truncation hides one).
fn db_addrs(s: &Agent) -> Vec<IpAddr> {
    a_records(&s.query_tcp("db.service.consul.", RecordType::A))
}

async fn members(s: &Agent) -> Vec<Value> {
    let r = s.get("/v1/agent/members").await.expect("members");
    serde_json::from_str(&r.text).expect("members JSON")
}

fn status_of(members: &[Value], name: &str) -> Option<u64> {
    members
        .iter()
        .find(|m| m["Name"] == json!(name))
        .and_then(|m| m["Status"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_machine_leaves_every_answer_and_a_wrong_key_stays_out() {
    let c = trellis()
        .cluster()
        .servers(3)
        .each(|b| b.encrypt(KEY))
        .start()
        .await;
    let servers: Vec<&Agent> = c.servers().collect();
    // Every server runs a `db` instance on its own node.
    for s in &servers {
        let body = json!({"Name": "db", "ID": "db", "Port": 3306});
        let r = s
            .put("/v1/agent/service/register", &body)
            .await
            .expect("register db");
        assert_eq!(r.status, 200, "{r:?}");
    }
    let all: Vec<IpAddr> = {
        let mut v: Vec<IpAddr> = servers.iter().map(|s| s.rpc().ip()).collect();
        v.sort();
        v
    };
    wait_until_async("db on every node, in every server's DNS", DEADLINE, || {
        let (servers, all) = (&servers, all.clone());
        async move {
            for s in servers {
                let got = db_addrs(s);
                if got != all {
                    return Err(format!("{}: {got:?}", s.name()));
                }
            }
            Ok(())
        }
    })
    .await;

    // SIGKILL a follower's machine: it leaves the answers of both others.
    let leader = c.leader().await;
    let dead = c.followers(leader)[0];
    let dead_ip = dead.rpc().ip();
    let dead_name = dead.name().to_string();
    let survivors: Vec<&Agent> = servers.iter().copied().filter(|s| *s != dead).collect();
    let killed = Instant::now();
    dead.kill();
    wait_until_async(
        "the dead node out of every survivor's DNS",
        DEADLINE,
        || {
            let survivors = &survivors;
            async move {
                for s in survivors {
                    let got = db_addrs(s);
                    if got.contains(&dead_ip) || got.len() != 2 {
                        return Err(format!("{}: {got:?}", s.name()));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    eprintln!("killed node left DNS after {:?}", killed.elapsed());
    let m = members(leader).await;
    assert_eq!(status_of(&m, &dead_name), Some(4), "failed: {m:?}");
    let checks = leader
        .get(&format!("/v1/health/node/{dead_name}"))
        .await
        .expect("node health");
    let checks: Vec<Value> = serde_json::from_str(&checks.text).expect("checks JSON");
    assert!(
        checks
            .iter()
            .any(|ch| ch["CheckID"] == json!("serfHealth") && ch["Status"] == json!("critical")),
        "{checks:?}"
    );

    // It comes back: alive again, answered again.
    dead.restart();
    wait_until_async("the restarted node alive and back in DNS", DEADLINE, || {
        let (all, name) = (all.clone(), dead_name.clone());
        async move {
            let got = db_addrs(leader);
            let status = status_of(&members(leader).await, &name);
            if got == all && status == Some(1) {
                Ok(())
            } else {
                Err(format!("{got:?}, status {status:?}"))
            }
        }
    })
    .await;

    // An agent with another key never gets in.
    let outsider = trellis()
        .server()
        .node("outsider")
        .encrypt(OTHER_KEY)
        .retry_join(leader.serf())
        .start();
    wait_until_async("the outsider's join to fail", DEADLINE, || {
        let log = outsider.log();
        async move {
            if log.contains("join failed") {
                Ok(())
            } else {
                Err("no failed join logged yet".to_string())
            }
        }
    })
    .await;
    let m = members(leader).await;
    assert_eq!(status_of(&m, "outsider"), None, "{m:?}");

    // A graceful leave: Left in the pool, deregistered from the catalog.
    let leaving = survivors
        .into_iter()
        .find(|s| *s != leader)
        .expect("a follower");
    let leaving_name = leaving.name().to_string();
    let r = leaving
        .put("/v1/agent/leave", &json!({}))
        .await
        .expect("leave");
    assert_eq!(r.status, 200, "{r:?}");
    wait_until_async("the leaver deregistered and Left", DEADLINE, || {
        let name = leaving_name.clone();
        async move {
            let nodes = leader.get("/v1/catalog/nodes").await?;
            let m = members(leader).await;
            let status = status_of(&m, &name);
            if !nodes.text.contains(&format!("\"{name}\"")) && status == Some(3) {
                Ok(())
            } else {
                Err(format!("status {status:?}, nodes {}", nodes.text))
            }
        }
    })
    .await;
    c.assert_no_panics();
}
