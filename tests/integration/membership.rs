//! Gossip membership of real agents: a machine that dies leaves every
//! server's DNS answers and comes back when it does, a graceful leave
//! deregisters the node, and an agent with the wrong key cannot join.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::cluster_harness::Cluster;
use crate::harness::{TestAgent, a_records, temp_dir};

const DEADLINE: Duration = Duration::from_secs(30);
const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const OTHER_KEY: &str = "Ym9ndXMga2V5IGJvZ3VzIGtleSBib2d1cyBrZXkgISE=";

/// The addresses `db.service.consul` resolves to on member `i` (over TCP,
/// so no truncation hides one).
fn db_addrs(c: &Cluster, i: usize) -> Vec<IpAddr> {
    a_records(&c.agent(i).query_tcp("db.service.consul.", RecordType::A))
}

async fn members(c: &Cluster, i: usize) -> Vec<Value> {
    let r = c.get(i, "/v1/agent/members").await.expect("members");
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
    let mut c = Cluster::start_with(3, &["--encrypt", KEY]).await;
    // Every server runs a `db` instance on its own node.
    for i in 0..3 {
        let body = json!({"Name": "db", "ID": "db", "Port": 3306});
        let r = c
            .put(i, "/v1/agent/service/register", &body)
            .await
            .expect("register db");
        assert_eq!(r.status, 200, "{r:?}");
    }
    let all: Vec<IpAddr> = {
        let mut v: Vec<IpAddr> = (0..3).map(|i| c.rpc(i).ip()).collect();
        v.sort();
        v
    };
    c.wait_until("db on every node, in every server's DNS", DEADLINE, || {
        let c = &c;
        let all = all.clone();
        async move {
            for i in 0..3 {
                let got = db_addrs(c, i);
                if got != all {
                    return Err(format!("s{}: {got:?}", i + 1));
                }
            }
            Ok(())
        }
    })
    .await;

    // SIGKILL a follower's machine: it leaves the answers of both others.
    let leader = c.leader().await;
    let dead = c.followers(leader)[0];
    let dead_ip = c.rpc(dead).ip();
    let dead_name = format!("s{}", dead + 1);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let killed = Instant::now();
    c.kill(dead);
    c.wait_until(
        "the dead node out of every survivor's DNS",
        DEADLINE,
        || {
            let (c, survivors) = (&c, survivors.clone());
            async move {
                for &i in &survivors {
                    let got = db_addrs(c, i);
                    if got.contains(&dead_ip) || got.len() != 2 {
                        return Err(format!("s{}: {got:?}", i + 1));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    eprintln!("killed node left DNS after {:?}", killed.elapsed());
    let m = members(&c, leader).await;
    assert_eq!(status_of(&m, &dead_name), Some(4), "failed: {m:?}");
    let checks = c
        .get(leader, &format!("/v1/health/node/{dead_name}"))
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
    c.restart(dead);
    c.wait_until("the restarted node alive and back in DNS", DEADLINE, || {
        let (c, all, name) = (&c, all.clone(), dead_name.clone());
        async move {
            let got = db_addrs(c, leader);
            let status = status_of(&members(c, leader).await, &name);
            if got == all && status == Some(1) {
                Ok(())
            } else {
                Err(format!("{got:?}, status {status:?}"))
            }
        }
    })
    .await;

    // An agent with another key never gets in.
    let dir = temp_dir();
    let data = dir.path().display().to_string();
    let join = c.serf(leader).to_string();
    let outsider = TestAgent::start(
        &[
            "--server",
            "--node",
            "outsider",
            "--data-dir",
            &data,
            "--encrypt",
            OTHER_KEY,
            "--retry-join",
            &join,
        ],
        crate::harness::next_loopback(),
    );
    crate::harness::wait_for("the outsider's join to fail", DEADLINE, || {
        let log = outsider.log();
        async move { log.contains("join failed").then_some(()) }
    })
    .await;
    let m = members(&c, leader).await;
    assert_eq!(status_of(&m, "outsider"), None, "{m:?}");

    // A graceful leave: Left in the pool, deregistered from the catalog.
    let leaving = survivors
        .into_iter()
        .find(|&i| i != leader)
        .expect("a follower");
    let leaving_name = format!("s{}", leaving + 1);
    let r = c
        .put(leaving, "/v1/agent/leave", &json!({}))
        .await
        .expect("leave");
    assert_eq!(r.status, 200, "{r:?}");
    c.wait_until("the leaver deregistered and Left", DEADLINE, || {
        let (c, name) = (&c, leaving_name.clone());
        async move {
            let nodes = c.get(leader, "/v1/catalog/nodes").await?;
            let m = members(c, leader).await;
            let status = status_of(&m, &name);
            if !nodes.text.contains(&format!("\"{name}\"")) && status == Some(3) {
                Ok(())
            } else {
                Err(format!("status {status:?}, nodes {}", nodes.text))
            }
        }
    })
    .await;
    c.assert_no_server_panicked();
}
