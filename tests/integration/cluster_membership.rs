//! Changing a running cluster's membership: a server added later joins as a
//! learner and is promoted, `trellis leave` takes a server out cleanly, and
//! `trellis operator raft remove-peer` drops a dead one.

use std::time::Duration;

use serde_json::Value;
use trellis_testkit::{Agent, Placement, register_body, wait_until_async};

use crate::harness::trellis;

const DEADLINE: Duration = Duration::from_secs(30);

fn cli(agent: &Agent, args: &[&str]) -> std::process::Output {
    trellis()
        .command()
        .args(args)
        .args(["--http-addr", &agent.addrs().http.to_string()])
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
    let c = trellis().cluster().servers(3).start().await;
    let leader = c.leader().await;

    // A fourth server, told only of one member, and not bootstrapping.
    let place = Placement::loopback();
    let s4 = trellis()
        .server()
        .node("s4")
        .place(&place)
        .retry_join(c.node("s1").serf())
        .start();
    let s4_rpc = place.rpc().to_string();
    wait_until_async("the new server promoted to voter", DEADLINE, || {
        let s4_rpc = s4_rpc.clone();
        async move {
            let servers = leader.raft_servers().await?;
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
    let r = s4
        .put(
            "/v1/catalog/register",
            &register_body("late", "late-1", "10.9.0.1", 80),
        )
        .await
        .expect("register through s4");
    assert_eq!(r.status, 200);
    let list = cli(&s4, &["operator", "raft", "list-peers"]);
    assert!(list.status.success(), "{list:?}");
    let text = String::from_utf8_lossy(&list.stdout);
    assert_eq!(text.lines().count(), 5, "header and four servers:\n{text}");
    assert!(text.contains("s4") && text.contains("leader"), "{text}");

    // `trellis leave`: s4 leaves the configuration and exits 0.
    let out = cli(&s4, &["leave"]);
    assert!(out.status.success(), "{out:?}\n{}", s4.log());
    let status = s4.wait_exit(DEADLINE).expect("s4 exits after leaving");
    assert!(status.success(), "{status:?}\n{}", s4.log());
    wait_until_async("three voters again, without s4", DEADLINE, || {
        let s4_rpc = s4_rpc.clone();
        async move {
            let servers = leader.raft_servers().await?;
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
    let dead_rpc = dead.rpc().to_string();
    dead.kill();
    let out = cli(
        leader,
        &["operator", "raft", "remove-peer", "--address", &dead_rpc],
    );
    assert!(out.status.success(), "{out:?}");
    let servers = leader.raft_servers().await.expect("configuration");
    assert_eq!(voters(&servers).len(), 2, "{servers:?}");
    // Two of two voters: writes keep working.
    let acked = leader
        .register("after", "after-1", "10.9.0.2", 80)
        .await
        .expect("write");
    assert_eq!(acked.status, 200, "{acked:?}");
    // Removing an unknown address is an error that names it.
    let out = cli(
        leader,
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
    c.assert_no_panics();
}
