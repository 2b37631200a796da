//! Changing a running cluster's membership: a server added later joins as a
//! learner and is promoted, `trellis leave` takes a server out cleanly, and
//! `trellis operator raft remove-peer` drops a dead one.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cluster_harness::{Cluster, Placement, register_body};
use crate::harness::{TestAgent, temp_dir};

const DEADLINE: Duration = Duration::from_secs(30);

fn cli(http: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .args(["--http-addr", &http.to_string()])
        .output()
        .expect("run trellis")
}

fn voters(servers: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = servers
        .iter()
        .filter(|s| s["Voter"] == Value::Bool(true))
        .filter_map(|s| s["Address"].as_str().map(String::from))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_join_later_leave_and_are_removed() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;

    // A fourth server, told only of one member, and not bootstrapping.
    let place = Placement::loopback();
    let dir = temp_dir();
    let data = dir.path().display().to_string();
    let port = place.server_port.to_string();
    let serf_port = place.serf_port.to_string();
    let join = c.serf(0).to_string();
    let mut s4 = TestAgent::start(
        &[
            "--server",
            "--node",
            "s4",
            "--data-dir",
            &data,
            "--server-port",
            &port,
            "--serf-lan-port",
            &serf_port,
            "--retry-join",
            &join,
        ],
        place.ip,
    );
    let s4_rpc = place.rpc().to_string();
    c.wait_until("the new server promoted to voter", DEADLINE, || {
        let s4_rpc = s4_rpc.clone();
        let c = &c;
        async move {
            let servers = c.raft_servers(leader).await?;
            let v = voters(&servers);
            if v.len() == 4 && v.contains(&s4_rpc) {
                Ok(())
            } else {
                Err(format!("{servers:?}"))
            }
        }
    })
    .await;

    // It takes writes (forwarded) and answers DNS for them.
    let client = reqwest::Client::new();
    let r = client
        .put(s4.url("/v1/catalog/register"))
        .json(&register_body("late", "late-1", "10.9.0.1", 80))
        .send()
        .await
        .expect("register through s4");
    assert_eq!(r.status(), 200);
    let list = cli(s4.http, &["operator", "raft", "list-peers"]);
    assert!(list.status.success(), "{list:?}");
    let text = String::from_utf8_lossy(&list.stdout);
    assert_eq!(text.lines().count(), 5, "header and four servers:\n{text}");
    assert!(text.contains("s4") && text.contains("leader"), "{text}");

    // `trellis leave`: s4 leaves the configuration and exits 0.
    let out = cli(s4.http, &["leave"]);
    assert!(out.status.success(), "{out:?}\n{}", s4.log());
    let status = s4.wait_exit(DEADLINE).expect("s4 exits after leaving");
    assert!(status.success(), "{status:?}\n{}", s4.log());
    c.wait_until("three voters again, without s4", DEADLINE, || {
        let c = &c;
        let s4_rpc = s4_rpc.clone();
        async move {
            let servers = c.raft_servers(leader).await?;
            let v = voters(&servers);
            let gone = !servers
                .iter()
                .any(|s| s["Address"] == Value::String(s4_rpc.clone()));
            if v.len() == 3 && gone {
                Ok(())
            } else {
                Err(format!("{servers:?}"))
            }
        }
    })
    .await;

    // A follower dies for good: remove-peer by address through the leader.
    let dead = c.followers(leader)[0];
    let dead_rpc = c.rpc(dead).to_string();
    c.kill(dead);
    let out = cli(
        c.agent(leader).http,
        &["operator", "raft", "remove-peer", "--address", &dead_rpc],
    );
    assert!(out.status.success(), "{out:?}");
    let servers = c.raft_servers(leader).await.expect("configuration");
    assert_eq!(voters(&servers).len(), 2, "{servers:?}");
    // Two of two voters: writes keep working.
    let acked = c
        .register(leader, "after", "after-1", "10.9.0.2", 80)
        .await
        .expect("write");
    assert_eq!(acked.status, 200, "{acked:?}");
    // Removing an unknown address is an error that names it.
    let out = cli(
        c.agent(leader).http,
        &[
            "operator",
            "raft",
            "remove-peer",
            "--address",
            "127.0.0.1:1",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"),
        "{out:?}"
    );
    c.assert_no_server_panicked();
}
