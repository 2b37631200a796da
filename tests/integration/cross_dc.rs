//! Requests across datacenters, with real agents: two datacenters of three
//! servers and a client agent each, their servers joined into one WAN pool
//! by a single join. From dc1's client agent, `?dc=dc2` reads, blocking
//! queries and KV writes are answered by dc2 with dc2's index; DNS names of
//! dc2 are answered by dc2's servers; an unknown datacenter is 500 and
//! NXDOMAIN; a dead dc2 fails fast with the unreachable reason while dc1
//! answers for itself as before.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};
use trellis_testkit::dns::a_records;
use trellis_testkit::federation::Federation;
use trellis_testkit::netns::Net;
use trellis_testkit::{Agent, Cluster, FORM_DEADLINE, Resp, wait_until_async};

use crate::harness::trellis;

/// dc1 and dc2 of three servers each (127.0.1.x and 127.0.2.x), joined by
/// ONE WAN join, a client agent `c1` in each; once every dc1 agent can
/// reach dc2.
async fn two_datacenters() -> Federation {
    let mut f = trellis().federation(&["dc1", "dc2"], 3).start().await;
    f.add_client("dc1", "c1", |b| b);
    f.add_client("dc2", "c1", |b| b);
    let everyone: Vec<&Agent> = f.dc("dc1").members().collect();
    wait_until_async("every dc1 agent reaches dc2", FORM_DEADLINE, || async {
        for a in &everyone {
            let r = a.get("/v1/catalog/nodes?dc=dc2").await?;
            if r.status != 200 {
                return Err(format!("{}: {r:?}", a.name()));
            }
        }
        Ok(())
    })
    .await;
    f
}

/// The node names of a `health/service` answer, sorted.
fn nodes_of(r: &Resp) -> Vec<String> {
    let mut v: Vec<String> = r
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["Node"]["Node"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The datacenters named by a `health/service` answer's nodes.
fn datacenters_of(r: &Resp) -> Vec<String> {
    let mut v: Vec<String> = r
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["Node"]["Datacenter"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.dedup();
    v
}

/// Registers `web` on dc2's client agent and waits until dc2 answers it.
async fn register_web(dc2: &Cluster, id: &str, port: u16) {
    let c1 = dc2.node("c1");
    let r = c1
        .register_instance(id, "web", &c1.ip().to_string(), port, &["v1"])
        .await
        .expect("register web in dc2");
    assert_eq!(r.status, 200, "register web in dc2: {r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_datacenters_catalog_kv_and_dns_are_one_request_away() {
    let f = two_datacenters().await;
    let (dc1, dc2) = (f.dc("dc1"), f.dc("dc2"));
    let here = dc1.node("c1");
    let there = dc2.node("c1");
    register_web(dc2, "web-1", 8080).await;

    // HTTP: dc2's instances, with dc2's index, through dc1's client agent.
    let ours = wait_until_async("dc2's web through dc1", FORM_DEADLINE, || async {
        let r = here.get("/v1/health/service/web?dc=dc2").await?;
        match nodes_of(&r).as_slice() {
            [n] if n == "c1" && r.status == 200 => Ok(r),
            _ => Err(format!("{r:?}")),
        }
    })
    .await;
    assert_eq!(datacenters_of(&ours), ["dc2"]);
    assert_eq!(
        here.get("/v1/health/service/web").await.unwrap().json(),
        json!([])
    );
    // dc2 may write between the two reads (its leader registers serfHealth
    // checks), so they are compared until they meet.
    wait_until_async("X-Consul-Index is dc2's", FORM_DEADLINE, || async {
        let ours = here.get("/v1/health/service/web?dc=dc2").await?;
        let theirs = there.get("/v1/health/service/web").await?;
        if ours.index == theirs.index {
            Ok(())
        } else {
            Err(format!("{ours:?} vs {theirs:?}"))
        }
    })
    .await;
    assert!(
        ours.headers.contains_key("x-consul-knownleader"),
        "{ours:?}"
    );
    assert!(
        ours.headers.contains_key("x-consul-lastcontact"),
        "{ours:?}"
    );

    // A blocking query parked in dc2, woken by a dc2 write. dc2 may write
    // other things meanwhile (its leader's serfHealth checks), each of
    // which wakes the query too: as a real watcher does, block again from
    // each answer's index until the new instance is there.
    let started = Instant::now();
    let watch = async {
        let mut index = ours.index.expect("an index");
        loop {
            let path = format!("/v1/health/service/web?dc=dc2&index={index}&wait=30s");
            let r = here.get(&path).await.expect("the blocking query answered");
            assert_eq!(r.status, 200, "{r:?}");
            let next = r.index.expect("an index");
            assert!(next >= index, "the index never goes back: {r:?}");
            if r.json().as_array().map(Vec::len) == Some(2) {
                return (r, Instant::now());
            }
            assert!(next > index, "woken without a change: {r:?}");
            index = next;
        }
    };
    let write = async {
        // Give the query time to park before the write that wakes it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = Instant::now();
        register_web(dc2, "web-2", 8081).await;
        before
    };
    let ((woken, woken_at), written) = tokio::join!(watch, write);
    assert_eq!(datacenters_of(&woken), ["dc2"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken by the write, not the wait"
    );
    eprintln!(
        "cross-DC blocking query answered {:?} after the dc2 write was sent",
        woken_at.saturating_duration_since(written)
    );

    // Read-your-writes across datacenters: each request from dc1 goes to
    // any dc2 server, so a read may reach a server other than the one that
    // relayed the write, before its replica applied it. Many pairs, as a
    // pair hits that order only now and then.
    for i in 0..30 {
        let path = format!("/v1/kv/cross/ryw-{i}?dc=dc2");
        let r = here.request("PUT", &path, Some(&json!(i))).await.unwrap();
        assert_eq!((r.status, r.text.trim()), (200, "true"), "{r:?}");
        let r = here.get(&format!("{path}&raw")).await.unwrap();
        assert_eq!((r.status, r.text.clone()), (200, i.to_string()), "{r:?}");
    }

    // KV: written through dc1 into dc2, read back both ways, not in dc1.
    let r = here
        .request("PUT", "/v1/kv/cross/key?dc=dc2", Some(&json!("from-dc1")))
        .await
        .unwrap();
    assert_eq!((r.status, r.text.trim()), (200, "true"), "{r:?}");
    let r = here.get("/v1/kv/cross/key?dc=dc2&raw").await.unwrap();
    assert_eq!((r.status, r.text.as_str()), (200, "\"from-dc1\""), "{r:?}");
    let r = wait_until_async("the key in dc2", FORM_DEADLINE, || async {
        let r = there.get("/v1/kv/cross/key?raw").await?;
        if r.status == 200 {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    assert_eq!(r.text, "\"from-dc1\"");
    assert_eq!(here.get("/v1/kv/cross/key").await.unwrap().status, 404);

    // DNS: dc2's names, answered by dc2, from dc1's client agent.
    let dc2_client_ip = there.ip();
    let m = here.query_udp("web.service.dc2.consul.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(a_records(&m), vec![dc2_client_ip], "{m:?}");
    let m = here.query_tcp("_web._tcp.service.dc2.consul.", RecordType::SRV);
    let targets: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.target.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(targets.len(), 2, "{m:?}");
    assert!(
        targets.iter().all(|t| t == "c1.node.dc2.consul."),
        "{targets:?}"
    );
    let m = here.query_udp("s1.node.dc2.consul.", RecordType::A);
    assert_eq!(a_records(&m), vec![dc2.node("s1").ip()], "{m:?}");
    // And the same name in dc1 is dc1's own server.
    let m = here.query_udp("s1.node.consul.", RecordType::A);
    assert_eq!(a_records(&m), vec![dc1.node("s1").ip()], "{m:?}");

    // An unknown datacenter: Consul's 500 and NXDOMAIN, with our reason.
    let r = here.get("/v1/health/service/web?dc=nodc").await.unwrap();
    assert_eq!(
        (r.status, r.text.as_str()),
        (500, "No path to datacenter"),
        "{r:?}"
    );
    assert_eq!(
        r.headers.get("x-trellis-reason").map(String::as_str),
        Some("unknown-dc")
    );
    assert_eq!(
        r.headers.get("x-trellis-datacenter").map(String::as_str),
        Some("nodc")
    );
    let m = here.query_udp("web.service.nodc.consul.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_datacenter_fails_within_seconds_and_ours_answers_as_before() {
    let f = two_datacenters().await;
    let (dc1, dc2) = (f.dc("dc1"), f.dc("dc2"));
    let here = dc1.node("c1");
    let local_ip: IpAddr = here.ip();
    let r = here
        .register_instance("web-dc1", "web", &local_ip.to_string(), 80, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    wait_until_async("web in dc1's DNS", FORM_DEADLINE, || async {
        let m = here.query_udp("web.service.consul.", RecordType::A);
        if a_records(&m) == vec![local_ip] {
            Ok(())
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await;

    let normal = local_dns_p99(here, None);
    let beside_local = local_dns_p99(here, Some("s1.node.consul."));

    // One dc2 server gone: requests are served through the other two,
    // every one of them, even while the WAN pool still lists it alive.
    let dc2_servers: Vec<&Agent> = dc2.servers().collect();
    dc2_servers[0].kill();
    for _ in 0..6 {
        let r = here.get("/v1/catalog/nodes?dc=dc2").await.unwrap();
        assert_eq!(r.status, 200, "served by dc2's other servers: {r:?}");
    }

    for agent in dc2.members() {
        agent.kill();
    }
    // Right after the kill the WAN pool still lists dc2's servers alive:
    // each call finds their ports closed. Later the pool marks them
    // failed. Either way the answer is the unreachable one, and quick.
    for round in 0..3 {
        let started = Instant::now();
        let r = here.get("/v1/health/service/web?dc=dc2").await.unwrap();
        let took = started.elapsed();
        eprintln!("?dc=dc2 with dc2 dead (round {round}) failed in {took:?}");
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(
            r.text, "Remote DC has no server currently reachable",
            "{r:?}"
        );
        assert_eq!(
            r.headers.get("x-trellis-reason").map(String::as_str),
            Some("dc-unreachable")
        );
        assert_eq!(
            r.headers.get("x-trellis-datacenter").map(String::as_str),
            Some("dc2")
        );
        let m = here.query_tcp("web.service.dc2.consul.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");

        // dc1 answers for itself as before.
        let m = here.query_udp("web.service.consul.", RecordType::A);
        assert_eq!(a_records(&m), vec![local_ip], "{m:?}");
        let r = here.get("/v1/health/service/web").await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(nodes_of(&r), ["c1"]);
        let r = here
            .request("PUT", "/v1/kv/still/writable", Some(&Value::from(round)))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    let beside_dead = local_dns_p99(here, Some("web.service.dc2.consul."));
    eprintln!(
        "dc1 DNS p99: {normal:?} alone; beside a flood of questions for dc1: {beside_local:?}, \
         for dead dc2: {beside_dead:?}"
    );
}

/// The 99th percentile of 400 UDP lookups of dc1's own `web` at `agent`;
/// with `beside`, while another thread keeps asking it that name (the same
/// load, for our own datacenter or for another).
fn local_dns_p99(agent: &Agent, beside: Option<&str>) -> Duration {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        if let Some(name) = beside {
            let stop = &stop;
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    agent.query_udp(name, RecordType::A);
                }
            });
        }
        // Warm the path (the UDP workers' memo) before measuring.
        for _ in 0..50 {
            agent.query_udp("web.service.consul.", RecordType::A);
        }
        let mut took: Vec<Duration> = (0..400)
            .map(|_| {
                let started = Instant::now();
                let m = agent.query_udp("web.service.consul.", RecordType::A);
                let took = started.elapsed();
                assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
                took
            })
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        took.sort();
        took[took.len() * 99 / 100]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_wan_pool_every_other_datacenter_is_unknown() {
    let mut c = trellis().cluster().servers(1).start().await;
    c.wait_formed().await;
    c.add_client("c1", |b| b);
    for agent in c.members() {
        let r = wait_until_async("an answer", FORM_DEADLINE, || async {
            let r = agent.get("/v1/catalog/service/web?dc=dc9").await?;
            // A client agent that has not found its server yet says so.
            if r.text.contains("no server of this datacenter") {
                return Err(format!("{r:?}"));
            }
            Ok(r)
        })
        .await;
        assert_eq!(
            (r.status, r.text.as_str()),
            (500, "No path to datacenter"),
            "{r:?}"
        );
        assert_eq!(
            r.headers.get("x-trellis-reason").map(String::as_str),
            Some("unknown-dc")
        );
        let m = agent.query_udp("web.service.dc9.consul.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
        // `?dc=` naming our own datacenter is a local request.
        let r = agent.get("/v1/catalog/service/web?dc=dc1").await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_translate_wan_addrs_other_datacenters_answer_with_wan_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("translate.toml");
    std::fs::write(&config, "translate_wan_addrs = true\n").expect("write the config");
    let mut f = trellis().federation(&["dc1", "dc2"], 1).start().await;
    let wan_ip: IpAddr = "127.0.2.200".parse().unwrap();
    let config_path = config.clone();
    f.add_client("dc1", "c1", move |b| b.config_file(config_path));
    f.add_client("dc2", "c1", move |b| b.advertise_wan(wan_ip));
    let (here, there) = (f.dc("dc1").node("c1"), f.dc("dc2").node("c1"));
    let lan_ip = there.ip();
    let r = there
        .register_instance("web-1", "web", "", 8080, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    // HTTP: the node's address is its WAN one, and the answer says so.
    let r = wait_until_async("dc2's web, translated", FORM_DEADLINE, || async {
        let r = here.get("/v1/health/service/web?dc=dc2").await?;
        match r.json()[0]["Node"]["Address"].as_str() {
            Some(a) if r.status == 200 => Ok((r.clone(), a.to_owned())),
            _ => Err(format!("{r:?}")),
        }
    })
    .await;
    assert_eq!(r.1, wan_ip.to_string(), "{:?}", r.0);
    assert_eq!(
        r.0.headers
            .get("x-consul-translate-addresses")
            .map(String::as_str),
        Some("true")
    );
    // dc2's own answer keeps the LAN address.
    let theirs = there.get("/v1/health/service/web").await.unwrap();
    assert_eq!(theirs.json()[0]["Node"]["Address"], lan_ip.to_string());
    assert!(!theirs.headers.contains_key("x-consul-translate-addresses"));
    // Consul's header is on every answer of an agent that translates.
    let local = here.get("/v1/catalog/nodes").await.unwrap();
    assert_eq!(
        local
            .headers
            .get("x-consul-translate-addresses")
            .map(String::as_str),
        Some("true"),
        "{local:?}"
    );

    // DNS: the same.
    let m = here.query_udp("web.service.dc2.consul.", RecordType::A);
    assert_eq!(a_records(&m), vec![wan_ip], "{m:?}");
    let m = there.query_udp("web.service.consul.", RecordType::A);
    assert_eq!(a_records(&m), vec![lan_ip], "{m:?}");

    // A prepared query of dc1 that fails over to dc2: the same, over HTTP
    // and DNS.
    let query = json!({"Name": "web", "Service": {"Service": "web",
        "Failover": {"Datacenters": ["dc2"]}}});
    let r = here
        .request("POST", "/v1/query", Some(&query))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let r = here.get("/v1/query/web/execute").await.unwrap();
    assert_eq!(r.json()["Datacenter"], "dc2", "{r:?}");
    assert_eq!(
        r.json()["Nodes"][0]["Node"]["Address"],
        wan_ip.to_string(),
        "{r:?}"
    );
    let m = here.query_udp("web.query.consul.", RecordType::A);
    assert_eq!(a_records(&m), vec![wan_ip], "{m:?}");
}

/// dc1 and dc2 of one server each, each on its own host of a test network,
/// federated; then the WAN between them is cut (a blackhole: packets
/// vanish) and healed. Needs root and nftables; SKIPPED without.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_wan_fails_within_seconds_and_works_again_after_healing() {
    let Some(net) = Net::for_test("cross_dc", "wan", 2) else {
        return;
    };
    let places = net.placements();
    // Declared after `net`, so dropped (processes killed) before it.
    let dc1 = trellis()
        .cluster()
        .servers_at(vec![places[0].clone()])
        .each(|b| b.datacenter("dc1").http_timeout(Duration::from_secs(20)))
        .start()
        .await;
    let dc2 = trellis()
        .cluster()
        .servers_at(vec![places[1].clone()])
        .each(|b| b.datacenter("dc2"))
        .start()
        .await;
    let (s1, remote) = (dc1.node("s1"), dc2.node("s1"));
    let join = format!("/v1/agent/join/{}?wan=1", s1.serf_wan());
    let r = remote.request("PUT", &join, None).await.expect("WAN join");
    assert_eq!(r.status, 200, "WAN join: {r:?}");
    wait_until_async("dc1 reaches dc2", FORM_DEADLINE, || async {
        let r = s1.get("/v1/catalog/nodes?dc=dc2").await?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;

    net.block(&[s1], &[remote]);
    for round in 0..3 {
        let started = Instant::now();
        let r = s1.get("/v1/catalog/nodes?dc=dc2").await.expect("an answer");
        eprintln!(
            "?dc=dc2 with the WAN cut (round {round}) failed in {:?}",
            started.elapsed()
        );
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(
            r.headers.get("x-trellis-reason").map(String::as_str),
            Some("dc-unreachable"),
            "{r:?}"
        );
        // dc1 answers for itself all the while.
        let r = s1.get("/v1/catalog/nodes").await.expect("an answer");
        assert_eq!(r.status, 200, "{r:?}");
    }

    net.unblock();
    let healed = Instant::now();
    wait_until_async("dc2 again after healing", FORM_DEADLINE, || async {
        let r = s1.get("/v1/catalog/nodes?dc=dc2").await?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    eprintln!("?dc=dc2 worked again {:?} after healing", healed.elapsed());
}

/// dc1 and dc2 of three servers each, each server on its own host of a
/// test network, federated. One dc1 server loses dc2 (its WAN link alone
/// is cut): its `?dc=dc2` calls and DNS names of dc2 are carried by the
/// other dc1 servers. Then the whole WAN is cut: every dc1 server fails
/// them with the unreachable reason. Needs root and nftables; SKIPPED
/// without.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_alone_lost_the_other_datacenter_is_served_through_its_peers() {
    let Some(net) = Net::for_test("cross_dc", "relay", 6) else {
        return;
    };
    let mut places = net.placements();
    let dc2_places = places.split_off(3);
    // Declared after `net`, so dropped (processes killed) before it.
    let f = trellis()
        .federation(&["dc1", "dc2"], 3)
        .placed(vec![places, dc2_places])
        .each(|b| b.http_timeout(Duration::from_secs(20)))
        .start()
        .await;
    let dc1: Vec<&Agent> = f.dc("dc1").servers().collect();
    let dc2: Vec<&Agent> = f.dc("dc2").servers().collect();
    let lone = dc1[0];
    wait_until_async("every dc1 server reaches dc2", FORM_DEADLINE, || async {
        for s in &dc1 {
            let r = s.get("/v1/catalog/nodes?dc=dc2").await?;
            if r.status != 200 {
                return Err(format!("{}: {r:?}", s.name()));
            }
        }
        Ok(())
    })
    .await;

    // The partial cut: `lone` and dc2 no longer hear each other; the other
    // dc1 servers still do.
    net.block(&[lone], &dc2);
    for round in 0..3 {
        let started = Instant::now();
        let r = lone
            .get("/v1/catalog/nodes?dc=dc2")
            .await
            .expect("an answer");
        eprintln!(
            "?dc=dc2 on the cut-off server (round {round}): {} in {:?}",
            r.status,
            started.elapsed()
        );
        assert_eq!(r.status, 200, "relayed through a peer: {r:?}");
        let nodes = r.json();
        let mut names: Vec<(&str, &str)> = nodes
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|n| Some((n["Node"].as_str()?, n["Datacenter"].as_str()?)))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [("s1", "dc2"), ("s2", "dc2"), ("s3", "dc2")],
            "dc2's nodes: {r:?}"
        );
    }
    // DNS takes the same road (dig runs in the server's namespace).
    let dns = lone.addrs().dns;
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", net.namespace(Net::host_of(lone)), "dig"])
        .args([&format!("@{}", dns.ip()), "-p", &dns.port().to_string()])
        .args(["+short", "+time=5", "s2.node.dc2.consul", "A"])
        .output()
        .expect("run dig");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert_eq!(answer.trim(), dc2[1].ip().to_string(), "{answer}");

    // The whole WAN cut: no dc1 server reaches dc2, directly or through a
    // peer, and each says so within seconds.
    net.block(&dc1, &dc2);
    for s in &dc1 {
        let started = Instant::now();
        let r = wait_until_async("the unreachable answer", FORM_DEADLINE, || async {
            let r = s.get("/v1/catalog/nodes?dc=dc2").await?;
            if r.status == 500 {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        })
        .await;
        eprintln!(
            "?dc=dc2 on {} with the WAN cut: {:?}",
            s.name(),
            started.elapsed()
        );
        assert_eq!(
            r.headers.get("x-trellis-reason").map(String::as_str),
            Some("dc-unreachable"),
            "{r:?}"
        );
    }
    net.unblock();
    f.dc("dc1").assert_no_panics();
}
