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
use trellis_testkit::dns::a_records;
use trellis_testkit::{
    Agent, AgentBuilder, Cluster, FORM_DEADLINE, SETTLE_DEADLINE, wait_until_async,
};

use crate::harness::trellis;

/// Failure detection, an election, or a restarted agent rejoining.
const DEADLINE: Duration = Duration::from_secs(30);
const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const OTHER_KEY: &str = "Ym9ndXMga2V5IGJvZ3VzIGtleSBib2d1cyBrZXkgISE=";

/// Serf's member status codes in `/v1/agent/members`.
const ALIVE: u64 = 1;
const LEFT: u64 = 3;
const FAILED: u64 = 4;

/// Three servers, formed, then `n` clients (`c1`..), all launched with
/// `each`.
async fn launch(
    n: usize,
    each: impl Fn(AgentBuilder) -> AgentBuilder + Send + Sync + 'static,
) -> Cluster {
    let mut c = trellis().cluster().servers(3).each(each).start().await;
    for k in 1..=n {
        c.add_client(&format!("c{k}"), |b| b);
    }
    c
}

/// Three servers and three clients (`c1`..`c3`), all launched with `each`,
/// once every client is alive in every server's pool and follows a server
/// that knows the leader.
async fn start(each: impl Fn(AgentBuilder) -> AgentBuilder + Send + Sync + 'static) -> Cluster {
    let c = launch(3, each).await;
    let clients: Vec<&Agent> = c.clients().collect();
    wait_clients_ready(&c, &clients).await;
    c
}

/// [`start`], then `web` registered through every client and answered by
/// every agent.
async fn start_with_web(
    each: impl Fn(AgentBuilder) -> AgentBuilder + Send + Sync + 'static,
) -> Cluster {
    let c = start(each).await;
    register_on_each(&c, "web").await;
    let everyone: Vec<&Agent> = c.members().collect();
    let all = ips(&c.clients().collect::<Vec<_>>());
    wait_answered(&everyone, "web.service.consul.", &all).await;
    c
}

/// Waits until `which` clients are alive in every running server's pool
/// and each names the leader the servers name.
async fn wait_clients_ready(c: &Cluster, which: &[&Agent]) {
    let leader_rpc = c.leader().await.rpc().to_string();
    let what = "clients alive in the pool and following the leader";
    wait_until_async(what, FORM_DEADLINE, || clients_ready(c, which, &leader_rpc)).await;
}

async fn clients_ready(c: &Cluster, which: &[&Agent], leader_rpc: &str) -> Result<(), String> {
    for s in c.running_servers() {
        let m = members(s).await?;
        for client in which {
            let st = status_of(&m, client.name());
            if st != Some(ALIVE) {
                // The client's own view tells a hung client from one the
                // pool gave up on wrongly.
                let own = client.get("/v1/agent/members").await;
                return Err(format!(
                    "{} on {}: {st:?}; its own view: {own:?}",
                    client.name(),
                    s.name()
                ));
            }
        }
    }
    for client in which {
        let r = client.get("/v1/status/leader").await?;
        if r.json().as_str() != Some(leader_rpc) {
            return Err(format!("{} names leader {}", client.name(), r.text));
        }
    }
    Ok(())
}

/// The addresses `name` resolves to on `agent`'s DNS (over TCP, so no
/// truncation hides one).
fn answers(agent: &Agent, name: &str) -> Vec<IpAddr> {
    a_records(&agent.query_tcp(name, RecordType::A))
}

/// Sorted addresses of `clients`.
fn ips(clients: &[&Agent]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = clients.iter().map(|a| a.ip()).collect();
    v.sort();
    v
}

/// The members of `c` named `names`.
fn named<'a>(c: &'a Cluster, names: &[&str]) -> Vec<&'a Agent> {
    names.iter().map(|n| c.node(n)).collect()
}

/// Waits until `name` resolves to exactly `want` on the DNS of every agent
/// in `on`.
async fn wait_answered(on: &[&Agent], name: &str, want: &[IpAddr]) {
    let names: Vec<&str> = on.iter().map(|a| a.name()).collect();
    let what = format!("{name} = {want:?} on {names:?}");
    wait_until_async(&what, DEADLINE, || async {
        for a in on {
            let got = answers(a, name);
            if got != want {
                return Err(format!("{}: {got:?}", a.name()));
            }
        }
        Ok(())
    })
    .await;
}

/// Server `s`'s `/v1/agent/members`.
async fn members(s: &Agent) -> Result<Vec<Value>, String> {
    let r = s.get("/v1/agent/members").await?;
    serde_json::from_str(&r.text).map_err(|e| format!("members {}: {e}", r.text))
}

fn status_of(members: &[Value], name: &str) -> Option<u64> {
    members
        .iter()
        .find(|m| m["Name"] == json!(name))
        .and_then(|m| m["Status"].as_u64())
}

/// Waits until every server in `on` reports member `name` with `status`.
async fn wait_status(on: &[&Agent], name: &str, status: u64) {
    let names: Vec<&str> = on.iter().map(|a| a.name()).collect();
    let what = format!("{name} with status {status} on servers {names:?}");
    wait_until_async(&what, DEADLINE, || async {
        for s in on {
            let got = status_of(&members(s).await?, name);
            if got != Some(status) {
                return Err(format!("{}: {got:?}", s.name()));
            }
        }
        Ok(())
    })
    .await;
}

/// Node names in server `s`'s `/v1/catalog/nodes`.
async fn catalog_nodes(s: &Agent) -> Result<Vec<String>, String> {
    let r = s.get("/v1/catalog/nodes").await?;
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
async fn register_on_each(c: &Cluster, name: &str) {
    for client in c.clients() {
        let r = client
            .register_service(name, 8080)
            .await
            .unwrap_or_else(|e| panic!("register {name} on {}: {e}", client.name()));
        assert_eq!(r.status, 200, "register {name} on {}: {r:?}", client.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_clients_register_every_agent_answers() {
    let c = start(|b| b).await;
    for client in c.clients() {
        let name = client.name().to_string();
        let r = client
            .register_service("web", 8080)
            .await
            .expect("register web");
        assert_eq!(r.status, 200, "register on {name}: {r:?}");
        // Read-your-write through the client that took the write.
        let read = client
            .get("/v1/catalog/service/web?consistent")
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
    let everyone: Vec<&Agent> = c.members().collect();
    let all = ips(&c.clients().collect::<Vec<_>>());
    wait_answered(&everyone, "web.service.consul.", &all).await;

    // Every server sees all six agents alive, the clients as role "node".
    for s in c.servers() {
        let m = members(s).await.expect("members");
        assert_eq!(m.len(), 6, "{}: {m:?}", s.name());
        for e in &m {
            assert_eq!(e["Status"], json!(ALIVE), "{}: {e}", s.name());
            let name = e["Name"].as_str().unwrap_or_default();
            let role = if name.starts_with('c') {
                "node"
            } else {
                "consul"
            };
            assert_eq!(e["Tags"]["role"], json!(role), "{}: {e}", s.name());
        }
    }
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_leaves_every_answer_and_returns_on_restart() {
    let c = start_with_web(|b| b).await;
    let servers: Vec<&Agent> = c.servers().collect();
    let everyone: Vec<&Agent> = c.members().collect();

    let dead = c.node("c2");
    let name = dead.name().to_string();
    let killed = Instant::now();
    dead.kill();
    wait_answered(
        &named(&c, &["s1", "s2", "s3", "c1", "c3"]),
        "web.service.consul.",
        &ips(&named(&c, &["c1", "c3"])),
    )
    .await;
    eprintln!(
        "killed client left every answer after {:?}",
        killed.elapsed()
    );
    wait_status(&servers, &name, FAILED).await;

    // The same machine comes back with its data dir.
    let restarted = Instant::now();
    dead.restart();
    wait_status(&servers, &name, ALIVE).await;
    wait_answered(
        &everyone,
        "web.service.consul.",
        &ips(&named(&c, &["c1", "c2", "c3"])),
    )
    .await;
    eprintln!(
        "restarted client answered everywhere after {:?}",
        restarted.elapsed()
    );
    // The restarted agent has its API registration back from its data dir,
    // so its first full sync keeps the service instead of removing it.
    wait_until_async("web restored on the restarted client", DEADLINE, || async {
        let own = dead.get("/v1/agent/services").await?;
        match own.json().get("web") {
            Some(_) => Ok(()),
            None => Err(format!("its services: {}", own.text)),
        }
    })
    .await;
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_repairs_what_changed_behind_a_clients_back() {
    let c = start_with_web(|b| b.arg("--ae-interval", "1s")).await;
    let everyone: Vec<&Agent> = c.members().collect();
    let all = ips(&c.clients().collect::<Vec<_>>());
    let client = c.node("c1");
    let name = client.name().to_string();
    // A service's instances as (node, CreateIndex), and the listing's
    // X-Consul-Index, read from the leader's state.
    let listing = |service: &'static str| {
        let s1 = c.node("s1");
        async move {
            let r = s1
                .get(&format!("/v1/catalog/service/{service}?consistent"))
                .await?;
            let list = r.json();
            let entries: Vec<(String, u64)> = list
                .as_array()
                .ok_or_else(|| format!("not a list: {r:?}"))?
                .iter()
                .filter_map(|e| Some((e["Node"].as_str()?.to_string(), e["CreateIndex"].as_u64()?)))
                .collect();
            let index = r.index.ok_or_else(|| format!("no X-Consul-Index: {r:?}"))?;
            Ok::<_, String>((entries, index))
        }
    };

    // Removed from the catalog behind the agent's back: a later sync puts
    // it back. The agent syncs every second, so it may have done so before
    // any read here; the instance it puts back is a new one, created after
    // the deregistration.
    let r = c
        .node("s2")
        .put(
            "/v1/catalog/deregister",
            &json!({"Node": name, "ServiceID": "web"}),
        )
        .await
        .expect("catalog deregister");
    assert_eq!(r.status, 200, "{r:?}");
    let removed = r.index.expect("the deregistration's X-Consul-Index");
    wait_until_async("web recreated on the client's node", DEADLINE, || async {
        let (entries, _) = listing("web").await?;
        match entries.iter().find(|(node, _)| *node == name) {
            Some((_, created)) if *created > removed => Ok(()),
            other => Err(format!(
                "web on {name}: {other:?}, removed at {removed}; all: {entries:?}"
            )),
        }
    })
    .await;

    // A service the agent does not have, put on its node through the
    // catalog: a later sync removes it, which moves the service's index
    // past the registration's.
    let body = json!({
        "Node": name,
        "Address": client.ip().to_string(),
        "Service": {"Service": "ghost", "Port": 1},
    });
    let r = c
        .node("s3")
        .put("/v1/catalog/register", &body)
        .await
        .expect("catalog register");
    assert_eq!(r.status, 200, "{r:?}");
    let registered = r.index.expect("the registration's X-Consul-Index");
    wait_until_async("ghost gone from the client's node", DEADLINE, || async {
        let (entries, index) = listing("ghost").await?;
        if entries.is_empty() && index > registered {
            Ok(())
        } else {
            Err(format!(
                "ghost on {entries:?} at index {index}, registered at {registered}"
            ))
        }
    })
    .await;
    wait_answered(&everyone, "web.service.consul.", &all).await;
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_on_another_gossip_port_is_one_healthy_member() {
    let c = start_with_web(|b| b).await;
    let servers: Vec<&Agent> = c.servers().collect();
    let everyone: Vec<&Agent> = c.members().collect();
    let all = ips(&c.clients().collect::<Vec<_>>());

    // The machine dies and its agent comes back gossiping from another
    // port: the same node, at a new gossip address.
    let moved = c.node("c1");
    let name = moved.name().to_string();
    moved.kill();
    wait_status(&servers, &name, FAILED).await;
    let port = trellis_testkit::net::free_udp_port(moved.ip()).expect("a free gossip port");
    moved.restart_with(|b| b.serf_lan_port(port));
    // As in Consul, members are keyed by name: the new process replaces the
    // failed one rather than standing beside it.
    let what = format!("one member {name}, alive, on every server");
    wait_until_async(&what, DEADLINE, || async {
        for s in &servers {
            let m = members(s).await?;
            let entries: Vec<(Value, Value)> = m
                .iter()
                .filter(|e| e["Name"] == json!(name))
                .map(|e| (e["Port"].clone(), e["Status"].clone()))
                .collect();
            if entries.len() != 1 || entries[0].1 != json!(ALIVE) {
                return Err(format!("{} lists (port, status): {entries:?}", s.name()));
            }
        }
        Ok(())
    })
    .await;
    wait_answered(&everyone, "web.service.consul.", &all).await;

    // And it stays healthy: every change the leader's catalog goes through
    // next (blocking reads wake on each) leaves its serfHealth passing.
    let leader = c.leader().await;
    let mut index = 0;
    for _ in 0..3 {
        let path = format!("/v1/health/node/{name}?index={index}&wait=1s");
        let r = leader.get(&path).await.expect("node health");
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
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_client_leaves_the_answers_until_it_resumes() {
    let c = start_with_web(|b| b).await;
    let everyone: Vec<&Agent> = c.members().collect();

    let hung = c.node("c3");
    let stopped = Instant::now();
    hung.pause();
    wait_answered(
        &named(&c, &["s1", "s2", "s3", "c1", "c2"]),
        "web.service.consul.",
        &ips(&named(&c, &["c1", "c2"])),
    )
    .await;
    eprintln!(
        "stopped client left every answer after {:?}",
        stopped.elapsed()
    );

    let resumed = Instant::now();
    hung.resume();
    wait_answered(
        &everyone,
        "web.service.consul.",
        &ips(&named(&c, &["c1", "c2", "c3"])),
    )
    .await;
    eprintln!(
        "resumed client answered everywhere after {:?}",
        resumed.elapsed()
    );
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_deregistered() {
    let c = start_with_web(|b| b).await;

    // SIGTERM: a client leaves the pool on terminate by default.
    let terminated = c.node("c3");
    let status = terminated.terminate();
    assert!(status.success(), "{status:?}\n{}", terminated.log());
    wait_left(&c, terminated.name()).await;

    // `PUT /v1/agent/leave`: answered, then the agent leaves and exits.
    let asked = c.node("c2");
    let r = asked
        .put("/v1/agent/leave", &json!({}))
        .await
        .expect("leave");
    assert_eq!(r.status, 200, "{r:?}");
    let status = asked
        .wait_exit(DEADLINE)
        .expect("the client exits after leaving");
    assert!(status.success(), "{status:?}\n{}", asked.log());
    wait_left(&c, asked.name()).await;

    wait_answered(
        &named(&c, &["s1", "s2", "s3", "c1"]),
        "web.service.consul.",
        &ips(&named(&c, &["c1"])),
    )
    .await;
    c.assert_no_panics();
}

/// Waits until every server shows `name` as Left and its catalog no longer
/// has the node.
async fn wait_left(c: &Cluster, name: &str) {
    let servers: Vec<&Agent> = c.servers().collect();
    wait_status(&servers, name, LEFT).await;
    let what = format!("{name} deregistered on every server");
    wait_until_async(&what, DEADLINE, || async {
        for s in &servers {
            let nodes = catalog_nodes(s).await?;
            if nodes.iter().any(|n| n == name) {
                return Err(format!("{}: {nodes:?}", s.name()));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_wrong_key_stays_out_and_cannot_write() {
    let mut c = launch(2, |b| b.encrypt(KEY)).await;
    c.add_client("outsider", |b| b.encrypt(OTHER_KEY));
    wait_clients_ready(&c, &named(&c, &["c1", "c2"])).await;
    let outsider = c.node("outsider");
    wait_until_async("the outsider's join to fail", DEADLINE, || async {
        let log = outsider.log();
        if log.contains("join failed") {
            Ok(())
        } else {
            Err("no failed join logged yet".to_string())
        }
    })
    .await;

    // It knows no server, so a write through it has nowhere to go.
    let r = outsider
        .register_service("web", 8080)
        .await
        .expect("an answer from the outsider");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.text.contains("No known Consul servers"), "{r:?}");

    // The clients with the right key work as if it were not there.
    for client in named(&c, &["c1", "c2"]) {
        let r = client
            .register_service("web", 8080)
            .await
            .expect("register web");
        assert_eq!(r.status, 200, "{r:?}");
    }
    wait_answered(
        &named(&c, &["s1", "s2", "s3", "c1", "c2"]),
        "web.service.consul.",
        &ips(&named(&c, &["c1", "c2"])),
    )
    .await;
    for s in c.servers() {
        let m = members(s).await.expect("members");
        assert_eq!(status_of(&m, "outsider"), None, "{}: {m:?}", s.name());
        assert_eq!(m.len(), 5, "{}: {m:?}", s.name());
    }
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_answer_and_write_through_a_leader_failure() {
    let c = start(|b| b).await;
    register_on_each(&c, "web").await;
    let clients: Vec<&Agent> = c.clients().collect();
    let everyone: Vec<&Agent> = c.members().collect();
    let web = ips(&clients);
    wait_answered(&everyone, "web.service.consul.", &web).await;

    let leader = c.leader().await;
    let survivors = c.followers(leader);
    let killed = Instant::now();
    leader.kill();

    // Until each client's new registration is acknowledged, every client
    // keeps answering for what was registered before.
    let mut acked = [false; 3];
    let mut refusals: Vec<String> = Vec::new();
    let end = Instant::now() + SETTLE_DEADLINE;
    while acked.iter().any(|a| !a) {
        for client in &clients {
            let got = answers(client, "web.service.consul.");
            assert_eq!(got, web, "{} during the failover", client.name());
        }
        for (client, done) in clients.iter().zip(acked.iter_mut()) {
            if *done {
                continue;
            }
            match client.register_service("api", 9090).await {
                Ok(r) if r.status == 200 => *done = true,
                // An election in progress: "No cluster leader", or a write
                // interrupted with the leader. Anything but a 5xx is a bug.
                Ok(r) if r.status >= 500 => refusals.push(format!("{} {}", r.status, r.text)),
                Ok(r) => panic!("register api on {}: {r:?}", client.name()),
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
    let mut on = survivors;
    on.extend(&clients);
    wait_answered(&on, "api.service.consul.", &web).await;
    c.assert_no_panics();
}
