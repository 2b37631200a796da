//! A lost quorum recovered as with Consul's `peers.json`: two of three
//! servers die for good, the survivor can no longer commit anything, and
//! restarting it with a `peers.json` that names only itself makes it a
//! one-server cluster that takes writes and still holds the catalog.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::json;
use trellis_testkit::dns::a_records;
use trellis_testkit::wait_until_async;

use crate::harness::trellis;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_survivor_recovers_the_cluster_from_peers_json() {
    let c = trellis().cluster().servers(3).start().await;
    let survivor = c.leader().await;
    let r = survivor
        .register_service("db", 3306)
        .await
        .expect("register db");
    assert_eq!(r.status, 200, "{r:?}");
    let servers = survivor.raft_servers().await.expect("configuration");
    let id = servers
        .iter()
        .find(|s| s["Node"] == json!(survivor.name()))
        .and_then(|s| s["ID"].as_str())
        .expect("the survivor's Raft ID")
        .to_string();

    for s in c.servers().filter(|s| s.name() != survivor.name()) {
        s.kill();
    }
    wait_until_async("the survivor to lose its quorum", DEADLINE, || async {
        let r = survivor.register_service("web", 80).await?;
        if r.status == 200 {
            Err("a write still commits".to_string())
        } else {
            Ok(())
        }
    })
    .await;

    // The operator's recovery: stop the survivor, write the file, start it.
    survivor.kill();
    let raft_dir = survivor.data_dir().expect("a durable server").join("raft");
    let peers = json!([{"id": id, "address": survivor.rpc().to_string(), "non_voter": false}]);
    std::fs::write(raft_dir.join("peers.json"), peers.to_string()).expect("write peers.json");
    survivor.restart();
    wait_until_async("writes on the recovered cluster", DEADLINE, || async {
        let r = survivor.register_service("web", 80).await?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    assert!(!raft_dir.join("peers.json").exists());
    assert!(raft_dir.join("peers.json.applied").exists());
    assert!(
        survivor
            .log()
            .contains("recovered the Raft configuration from peers.json"),
        "{}",
        survivor.log()
    );
    let voters = survivor.raft_servers().await.expect("configuration");
    assert_eq!(voters.len(), 1, "{voters:?}");
    assert_eq!(voters[0]["ID"], json!(id), "{voters:?}");
    // What the cluster held before is all there.
    let db = a_records(&survivor.query_tcp("db.service.consul.", RecordType::A));
    assert_eq!(db, [survivor.ip()], "db after recovery");

    // A bad file stops the start, naming the file and the problem.
    survivor.kill();
    std::fs::write(
        raft_dir.join("peers.json"),
        r#"[{"id": "zz", "address": "x"}]"#,
    )
    .expect("write a bad peers.json");
    let failed = survivor.try_restart();
    assert!(failed.is_err(), "a bad peers.json must stop the start");
    assert!(
        survivor
            .log()
            .contains("peers.json: entry 0: id \"zz\" is not a Raft ID"),
        "{}",
        survivor.log()
    );
}
