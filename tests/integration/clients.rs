//! Client agents next to a 3-server cluster, all real processes: what a
//! client registers is answered by every agent's DNS; a client whose machine
//! dies or hangs leaves the answers and comes back with it; a client that
//! leaves is deregistered; a client with the wrong gossip key stays out and
//! cannot write; clients keep answering and writing when the leader dies;
//! and anti-entropy repairs what changed in the catalog behind a client.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::cluster_harness::{Clients, Cluster, FORM_DEADLINE, SETTLE_DEADLINE};
use crate::harness::{TestAgent, a_records};

/// Failure detection, an election, or a restarted agent rejoining.
const DEADLINE: Duration = Duration::from_secs(30);
const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const OTHER_KEY: &str = "Ym9ndXMga2V5IGJvZ3VzIGtleSBib2d1cyBrZXkgISE=";

/// Serf's member status codes in `/v1/agent/members`.
const ALIVE: u64 = 1;
const LEFT: u64 = 3;
const FAILED: u64 = 4;

/// Three servers and three clients (`c1`..`c3`), all with `extra` flags,
/// once every client is alive in every server's pool and follows a server
/// that knows the leader.
async fn start(extra: &[&str]) -> (Cluster, Clients) {
    let servers = Cluster::start_with(3, extra).await;
    let clients = Clients::start(&servers, 3, extra);
    let all: Vec<usize> = (0..clients.len()).collect();
    wait_clients_ready(&servers, &clients, &all).await;
    (servers, clients)
}

/// The DNS of every agent: all servers and all clients.
const EVERYONE: (&[usize], &[usize]) = (&[0, 1, 2], &[0, 1, 2]);

/// [`start`], then `web` registered through every client and answered by
/// every agent.
async fn start_with_web(extra: &[&str]) -> (Cluster, Clients) {
    let (servers, clients) = start(extra).await;
    register_on_each(&clients, "web").await;
    let all = ips(&clients, &[0, 1, 2]);
    wait_answered(&servers, &clients, EVERYONE, "web.service.consul.", &all).await;
    (servers, clients)
}

/// Waits until `which` clients are alive in every running server's pool
/// and each names the leader the servers name.
async fn wait_clients_ready(servers: &Cluster, clients: &Clients, which: &[usize]) {
    let leader = servers.leader().await;
    let leader_rpc = servers.rpc(leader).to_string();
    let what = "clients alive in the pool and following the leader";
    servers
        .wait_until(what, FORM_DEADLINE, || {
            clients_ready(servers, clients, which, &leader_rpc)
        })
        .await;
}

async fn clients_ready(
    servers: &Cluster,
    clients: &Clients,
    which: &[usize],
    leader_rpc: &str,
) -> Result<(), String> {
    for s in servers.running() {
        let m = members(servers, s).await?;
        for &c in which {
            let st = status_of(&m, clients.name(c));
            if st != Some(ALIVE) {
                // The client's own view tells a hung client from one the
                // pool gave up on wrongly.
                let own = clients.get(c, "/v1/agent/members").await;
                return Err(format!(
                    "{} on s{}: {st:?}; its own view: {own:?}",
                    clients.name(c),
                    s + 1
                ));
            }
        }
    }
    for &c in which {
        let r = clients.get(c, "/v1/status/leader").await?;
        if r.json().as_str() != Some(leader_rpc) {
            return Err(format!("{} names leader {}", clients.name(c), r.text));
        }
    }
    Ok(())
}

/// The addresses `name` resolves to on `agent`'s DNS (over TCP, so no
/// truncation hides one).
fn answers(agent: &TestAgent, name: &str) -> Vec<IpAddr> {
    a_records(&agent.query_tcp(name, RecordType::A))
}

/// Sorted addresses of clients `which`.
fn ips(clients: &Clients, which: &[usize]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = which.iter().map(|&i| clients.ip(i)).collect();
    v.sort();
    v
}

/// Waits until `name` resolves to exactly `want` on the DNS of servers `on_servers`
/// and of clients `on_clients`.
async fn wait_answered(
    servers: &Cluster,
    clients: &Clients,
    (on_servers, on_clients): (&[usize], &[usize]),
    name: &str,
    want: &[IpAddr],
) {
    let what = format!(
        "{name} = {want:?} on servers {on_servers:?} and clients {:?}",
        on_clients
            .iter()
            .map(|&c| clients.name(c))
            .collect::<Vec<_>>()
    );
    servers
        .wait_until(&what, DEADLINE, || async {
            for &s in on_servers {
                let got = answers(servers.agent(s), name);
                if got != want {
                    return Err(format!("s{}: {got:?}", s + 1));
                }
            }
            for &c in on_clients {
                let got = answers(clients.agent(c), name);
                if got != want {
                    return Err(format!("{}: {got:?}", clients.name(c)));
                }
            }
            Ok(())
        })
        .await;
}

/// Server `i`'s `/v1/agent/members`.
async fn members(servers: &Cluster, i: usize) -> Result<Vec<Value>, String> {
    let r = servers.get(i, "/v1/agent/members").await?;
    serde_json::from_str(&r.text).map_err(|e| format!("members {}: {e}", r.text))
}

fn status_of(members: &[Value], name: &str) -> Option<u64> {
    members
        .iter()
        .find(|m| m["Name"] == json!(name))
        .and_then(|m| m["Status"].as_u64())
}

/// Waits until every server in `on` reports member `name` with `status`.
async fn wait_status(servers: &Cluster, on: &[usize], name: &str, status: u64) {
    let what = format!("{name} with status {status} on servers {on:?}");
    servers
        .wait_until(&what, DEADLINE, || async {
            for &s in on {
                let got = status_of(&members(servers, s).await?, name);
                if got != Some(status) {
                    return Err(format!("s{}: {got:?}", s + 1));
                }
            }
            Ok(())
        })
        .await;
}

/// Node names in server `i`'s `/v1/catalog/nodes`.
async fn catalog_nodes(servers: &Cluster, i: usize) -> Result<Vec<String>, String> {
    let r = servers.get(i, "/v1/catalog/nodes").await?;
    let nodes = r.json();
    let nodes = nodes
        .as_array()
        .ok_or_else(|| format!("nodes: {} {}", r.status, r.text))?;
    Ok(nodes
        .iter()
        .filter_map(|n| n["Node"].as_str().map(String::from))
        .collect())
}

/// Registers `name` on each client through its own agent API; all must be
/// acknowledged.
async fn register_on_each(clients: &Clients, name: &str) {
    for c in 0..clients.len() {
        let r = clients
            .register_service(c, name, 8080)
            .await
            .unwrap_or_else(|e| panic!("register {name} on {}: {e}", clients.name(c)));
        assert_eq!(
            r.status,
            200,
            "register {name} on {}: {r:?}",
            clients.name(c)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_clients_register_every_agent_answers() {
    let (servers, clients) = start(&[]).await;
    for c in 0..3 {
        let name = clients.name(c).to_string();
        let r = clients
            .register_service(c, "web", 8080)
            .await
            .expect("register web");
        assert_eq!(r.status, 200, "register on {name}: {r:?}");
        // Read-your-write through the client that took the write.
        let read = clients
            .get(c, "/v1/catalog/service/web?consistent")
            .await
            .expect("consistent read");
        assert_eq!(read.status, 200, "{read:?}");
        let body = read.json();
        let nodes: Vec<&str> = body
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["Node"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            nodes.contains(&name.as_str()),
            "?consistent read on {name} right after its registration: {}",
            read.text
        );
    }
    let all = ips(&clients, &[0, 1, 2]);
    wait_answered(&servers, &clients, EVERYONE, "web.service.consul.", &all).await;

    // Every server sees all six agents alive, the clients as role "node".
    for s in 0..3 {
        let m = members(&servers, s).await.expect("members");
        assert_eq!(m.len(), 6, "s{}: {m:?}", s + 1);
        for e in &m {
            assert_eq!(e["Status"], json!(ALIVE), "s{}: {e}", s + 1);
            let name = e["Name"].as_str().unwrap_or_default();
            let role = if name.starts_with('c') {
                "node"
            } else {
                "consul"
            };
            assert_eq!(e["Tags"]["role"], json!(role), "s{}: {e}", s + 1);
        }
    }
    servers.assert_no_server_panicked();
    clients.assert_no_client_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_leaves_every_answer_and_returns_on_restart() {
    let (servers, mut clients) = start_with_web(&[]).await;

    let dead = 1;
    let name = clients.name(dead).to_string();
    let killed = Instant::now();
    clients.kill(dead);
    wait_answered(
        &servers,
        &clients,
        (&[0, 1, 2], &[0, 2]),
        "web.service.consul.",
        &ips(&clients, &[0, 2]),
    )
    .await;
    eprintln!(
        "killed client left every answer after {:?}",
        killed.elapsed()
    );
    wait_status(&servers, &[0, 1, 2], &name, FAILED).await;

    // The same machine comes back with its data dir.
    let restarted = Instant::now();
    clients.restart(dead);
    wait_status(&servers, &[0, 1, 2], &name, ALIVE).await;
    wait_answered(
        &servers,
        &clients,
        EVERYONE,
        "web.service.consul.",
        &ips(&clients, &[0, 1, 2]),
    )
    .await;
    eprintln!(
        "restarted client answered everywhere after {:?}",
        restarted.elapsed()
    );
    // The restarted agent has its API registration back from its data dir,
    // so its first full sync keeps the service instead of removing it.
    servers
        .wait_until("web restored on the restarted client", DEADLINE, || async {
            let own = clients.get(dead, "/v1/agent/services").await?;
            match own.json().get("web") {
                Some(_) => Ok(()),
                None => Err(format!("its services: {}", own.text)),
            }
        })
        .await;
    servers.assert_no_server_panicked();
    clients.assert_no_client_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_repairs_what_changed_behind_a_clients_back() {
    let (servers, clients) = start_with_web(&["--ae-interval", "1s"]).await;
    let all = ips(&clients, &[0, 1, 2]);
    let name = clients.name(0).to_string();
    let nodes_of = |service: &'static str| {
        let servers = &servers;
        async move {
            let r = servers
                .get(0, &format!("/v1/catalog/service/{service}?consistent"))
                .await?;
            let list = r.json();
            let nodes: Vec<String> = list
                .as_array()
                .ok_or_else(|| format!("not a list: {r:?}"))?
                .iter()
                .filter_map(|e| e["Node"].as_str().map(str::to_string))
                .collect();
            Ok::<_, String>(nodes)
        }
    };

    // Removed from the catalog behind the agent's back: the next sync puts
    // it back.
    let r = servers
        .put(
            1,
            "/v1/catalog/deregister",
            &json!({"Node": name, "ServiceID": "web"}),
        )
        .await
        .expect("catalog deregister");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!nodes_of("web").await.unwrap().contains(&name));
    servers
        .wait_until("web back on the client's node", DEADLINE, || async {
            let nodes = nodes_of("web").await?;
            if nodes.contains(&name) {
                Ok(())
            } else {
                Err(format!("web on {nodes:?}"))
            }
        })
        .await;

    // A service the agent does not have, put on its node through the
    // catalog: the next sync removes it.
    let body = json!({
        "Node": name,
        "Address": clients.ip(0).to_string(),
        "Service": {"Service": "ghost", "Port": 1},
    });
    let r = servers
        .put(2, "/v1/catalog/register", &body)
        .await
        .expect("catalog register");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        nodes_of("ghost").await.unwrap(),
        std::slice::from_ref(&name)
    );
    servers
        .wait_until("ghost gone from the client's node", DEADLINE, || async {
            let nodes = nodes_of("ghost").await?;
            if nodes.is_empty() {
                Ok(())
            } else {
                Err(format!("ghost on {nodes:?}"))
            }
        })
        .await;
    wait_answered(&servers, &clients, EVERYONE, "web.service.consul.", &all).await;
    servers.assert_no_server_panicked();
    clients.assert_no_client_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_on_another_gossip_port_is_one_healthy_member() {
    let (servers, mut clients) = start_with_web(&[]).await;
    let all = ips(&clients, &[0, 1, 2]);

    // The machine dies and its agent comes back gossiping from another
    // port: the same node, at a new gossip address.
    let moved = 0;
    let name = clients.name(moved).to_string();
    clients.kill(moved);
    wait_status(&servers, &[0, 1, 2], &name, FAILED).await;
    clients.restart_moved(moved);
    // As in Consul, members are keyed by name: the new process replaces the
    // failed one rather than standing beside it.
    let what = format!("one member {name}, alive, on every server");
    servers
        .wait_until(&what, DEADLINE, || async {
            for s in 0..3 {
                let m = members(&servers, s).await?;
                let entries: Vec<(Value, Value)> = m
                    .iter()
                    .filter(|e| e["Name"] == json!(name))
                    .map(|e| (e["Port"].clone(), e["Status"].clone()))
                    .collect();
                if entries.len() != 1 || entries[0].1 != json!(ALIVE) {
                    return Err(format!("s{} lists (port, status): {entries:?}", s + 1));
                }
            }
            Ok(())
        })
        .await;
    wait_answered(&servers, &clients, EVERYONE, "web.service.consul.", &all).await;

    // And it stays healthy: every change the leader's catalog goes through
    // next (blocking reads wake on each) leaves its serfHealth passing.
    let leader = servers.leader().await;
    let mut index = 0;
    for _ in 0..3 {
        let path = format!("/v1/health/node/{name}?index={index}&wait=1s");
        let r = servers.get(leader, &path).await.expect("node health");
        let serf: Vec<Value> = r
            .json()
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["CheckID"] == json!("serfHealth"))
                    .map(|c| c["Status"].clone())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            serf,
            [json!("passing")],
            "{name} at index {:?}: {}",
            r.index,
            r.text
        );
        index = r.index.unwrap_or(0);
    }
    servers.assert_no_server_panicked();
    clients.assert_no_client_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_client_leaves_the_answers_until_it_resumes() {
    let (servers, mut clients) = start_with_web(&[]).await;

    let hung = 2;
    let stopped = Instant::now();
    clients.pause(hung);
    wait_answered(
        &servers,
        &clients,
        (&[0, 1, 2], &[0, 1]),
        "web.service.consul.",
        &ips(&clients, &[0, 1]),
    )
    .await;
    eprintln!(
        "stopped client left every answer after {:?}",
        stopped.elapsed()
    );

    let resumed = Instant::now();
    clients.resume(hung);
    wait_answered(
        &servers,
        &clients,
        EVERYONE,
        "web.service.consul.",
        &ips(&clients, &[0, 1, 2]),
    )
    .await;
    eprintln!(
        "resumed client answered everywhere after {:?}",
        resumed.elapsed()
    );
    servers.assert_no_server_panicked();
    clients.assert_no_client_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_deregistered() {
    let (servers, mut clients) = start_with_web(&[]).await;

    // SIGTERM: a client leaves the pool on terminate by default.
    let terminated = 2;
    let status = clients.terminate(terminated);
    assert!(
        status.success(),
        "{status:?}\n{}",
        clients.agent(terminated).log()
    );
    wait_left(&servers, clients.name(terminated)).await;

    // `PUT /v1/agent/leave`: answered, then the agent leaves and exits.
    let asked = 1;
    let r = clients
        .put(asked, "/v1/agent/leave", &json!({}))
        .await
        .expect("leave");
    assert_eq!(r.status, 200, "{r:?}");
    let status = clients
        .wait_exit(asked, DEADLINE)
        .expect("the client exits after leaving");
    assert!(
        status.success(),
        "{status:?}\n{}",
        clients.agent(asked).log()
    );
    wait_left(&servers, clients.name(asked)).await;

    wait_answered(
        &servers,
        &clients,
        (&[0, 1, 2], &[0]),
        "web.service.consul.",
        &ips(&clients, &[0]),
    )
    .await;
    servers.assert_no_server_panicked();
    clients.assert_no_client_panicked();
}

/// Waits until every server shows `name` as Left and its catalog no longer
/// has the node.
async fn wait_left(servers: &Cluster, name: &str) {
    wait_status(servers, &[0, 1, 2], name, LEFT).await;
    let what = format!("{name} deregistered on every server");
    servers
        .wait_until(&what, DEADLINE, || async {
            for s in 0..3 {
                let nodes = catalog_nodes(servers, s).await?;
                if nodes.iter().any(|n| n == name) {
                    return Err(format!("s{}: {nodes:?}", s + 1));
                }
            }
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_wrong_key_stays_out_and_cannot_write() {
    let encrypt = ["--encrypt", KEY];
    let servers = Cluster::start_with(3, &encrypt).await;
    let mut clients = Clients::start(&servers, 2, &encrypt);
    let outsider = clients.add(&servers, "outsider", &["--encrypt", OTHER_KEY]);
    wait_clients_ready(&servers, &clients, &[0, 1]).await;
    servers
        .wait_until("the outsider's join to fail", DEADLINE, || async {
            let log = clients.agent(outsider).log();
            if log.contains("join failed") {
                Ok(())
            } else {
                Err("no failed join logged yet".to_string())
            }
        })
        .await;

    // It knows no server, so a write through it has nowhere to go.
    let r = clients
        .register_service(outsider, "web", 8080)
        .await
        .expect("an answer from the outsider");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.text.contains("No known Consul servers"), "{r:?}");

    // The clients with the right key work as if it were not there.
    for c in 0..2 {
        let r = clients
            .register_service(c, "web", 8080)
            .await
            .expect("register web");
        assert_eq!(r.status, 200, "{r:?}");
    }
    wait_answered(
        &servers,
        &clients,
        (&[0, 1, 2], &[0, 1]),
        "web.service.consul.",
        &ips(&clients, &[0, 1]),
    )
    .await;
    for s in 0..3 {
        let m = members(&servers, s).await.expect("members");
        assert_eq!(status_of(&m, "outsider"), None, "s{}: {m:?}", s + 1);
        assert_eq!(m.len(), 5, "s{}: {m:?}", s + 1);
    }
    servers.assert_no_server_panicked();
    clients.assert_no_client_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_answer_and_write_through_a_leader_failure() {
    let (mut servers, clients) = start(&[]).await;
    register_on_each(&clients, "web").await;
    let web = ips(&clients, &[0, 1, 2]);
    wait_answered(
        &servers,
        &clients,
        (&[0, 1, 2], &[0, 1, 2]),
        "web.service.consul.",
        &web,
    )
    .await;

    let leader = servers.leader().await;
    let survivors = servers.followers(leader);
    let killed = Instant::now();
    servers.kill(leader);

    // Until each client's new registration is acknowledged, every client
    // keeps answering for what was registered before.
    let mut acked = [false; 3];
    let mut refusals: Vec<String> = Vec::new();
    let end = Instant::now() + SETTLE_DEADLINE;
    while acked.iter().any(|a| !a) {
        for c in 0..3 {
            let got = answers(clients.agent(c), "web.service.consul.");
            assert_eq!(got, web, "{} during the failover", clients.name(c));
        }
        for (c, done) in acked.iter_mut().enumerate() {
            if *done {
                continue;
            }
            match clients.register_service(c, "api", 9090).await {
                Ok(r) if r.status == 200 => *done = true,
                // An election in progress: "No cluster leader", or a write
                // interrupted with the leader. Anything but a 5xx is a bug.
                Ok(r) if r.status >= 500 => refusals.push(format!("{} {}", r.status, r.text)),
                Ok(r) => panic!("register api on {}: {r:?}", clients.name(c)),
                Err(e) => refusals.push(e),
            }
        }
        assert!(
            Instant::now() < end,
            "registrations through clients not all acknowledged {SETTLE_DEADLINE:?} \
             after the leader died: {acked:?}; refusals: {refusals:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!(
        "every client's write acknowledged {:?} after the leader died; {} refusals before: {refusals:?}",
        killed.elapsed(),
        refusals.len()
    );
    wait_answered(
        &servers,
        &clients,
        (&survivors, &[0, 1, 2]),
        "api.service.consul.",
        &web,
    )
    .await;
    servers.assert_no_server_panicked();
    clients.assert_no_client_panicked();
}
