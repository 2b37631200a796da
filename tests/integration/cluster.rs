//! Three- and five-server clusters of real processes on loopback: bootstrap,
//! forwarding, DNS agreement, failover under load, durability when every
//! server dies, rejoining with a wiped disk, quorum loss and a hung leader.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use serde_json::json;
use trellis_testkit::dns::{a_records, srv_ports};
use trellis_testkit::{
    Agent, CLIENT_TIMEOUT, Cluster, Consistency, FORM_DEADLINE, Load, SETTLE_DEADLINE, ServiceView,
    wait_until_async,
};

use crate::harness::trellis;

/// Panics listing the acknowledged writes missing from `view`.
fn assert_has_all(acked: &BTreeSet<String>, view: &ServiceView, on: &str) {
    let missing: Vec<&String> = acked.difference(&view.ids).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes missing on {on} (index {}): {:?}",
        missing.len(),
        acked.len(),
        view.index,
        &missing[..missing.len().min(20)]
    );
}

/// A `?consistent` read of `service` on server `s`, retried only while the
/// read itself fails (e.g. during an election); the content is the caller's
/// to judge.
async fn consistent_read(s: &Agent, service: &str) -> ServiceView {
    wait_until_async(
        &format!("a ?consistent read of {service} on {}", s.name()),
        SETTLE_DEADLINE,
        || s.service(service, Consistency::Consistent),
    )
    .await
}

/// Registers through server `s` until one write is acknowledged (unique IDs
/// per attempt, so an unacknowledged attempt is never confused with it).
async fn write_until_acked(s: &Agent, service: &str, tag: &str) -> String {
    let mut attempt = 0;
    wait_until_async(
        &format!("a write through {} to be acknowledged", s.name()),
        SETTLE_DEADLINE,
        || {
            attempt += 1;
            let id = format!("{service}-{tag}-{attempt}");
            async move {
                let r = s.register(service, &id, "10.201.0.1", 2).await?;
                if r.ok() {
                    Ok(id)
                } else {
                    Err(format!("{} {}", r.status, r.text))
                }
            }
        },
    )
    .await
}

/// Whether every member of `c` agrees on one bootstrapped configuration: all
/// members as voters at their addresses, distinct IDs, their node names, and
/// the one leader that every member names.
async fn agreed_configuration(c: &Cluster) -> Result<(), String> {
    let n = c.servers().count();
    let all: BTreeSet<String> = c.servers().map(|s| s.rpc().to_string()).collect();
    let nodes: BTreeSet<String> = (1..=n).map(|k| format!("s{k}")).collect();
    let mut leaders = BTreeSet::new();
    for s in c.servers() {
        let on = s.name();
        leaders.insert(s.leader_seen().await.unwrap_or_default());
        let servers = s.raft_servers().await?;
        let strings = |key: &str, only_voters: bool| -> BTreeSet<String> {
            servers
                .iter()
                .filter(|s| !only_voters || s["Voter"] == json!(true))
                .filter_map(|s| s[key].as_str().map(String::from))
                .collect()
        };
        let flagged: Vec<String> = servers
            .iter()
            .filter(|s| s["Leader"] == json!(true))
            .filter_map(|s| s["Address"].as_str().map(String::from))
            .collect();
        if servers.len() != n
            || strings("Address", true) != all
            || strings("ID", false).len() != n
            || strings("Node", false) != nodes
            || flagged.len() != 1
        {
            return Err(format!("configuration on {on}: {servers:?}"));
        }
        leaders.insert(flagged[0].clone());
        let peers = s.get("/v1/status/peers").await?.json();
        let peers: BTreeSet<String> = peers
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if peers != all {
            return Err(format!("/v1/status/peers on {on}: {peers:?}"));
        }
    }
    // Every status/leader answer and every configuration's Leader flag name
    // the same server.
    if leaders.len() == 1 && leaders.iter().all(|l| all.contains(l)) {
        Ok(())
    } else {
        Err(format!("leaders named: {leaders:?}"))
    }
}

async fn bootstraps(n: usize) {
    let c = trellis().cluster().servers(n).start().await;
    wait_until_async("one agreed configuration", FORM_DEADLINE, || {
        agreed_configuration(&c)
    })
    .await;
    c.assert_no_panics();
}

#[tokio::test]
async fn three_servers_bootstrap_with_one_leader_and_three_voters() {
    bootstraps(3).await;
}

#[tokio::test]
async fn five_servers_bootstrap_with_one_leader_and_five_voters() {
    bootstraps(5).await;
}

#[tokio::test]
async fn writes_through_followers_reach_every_servers_dns() {
    let c = trellis().cluster().servers(3).start().await;
    let leader = c.leader().await;
    let followers = c.followers(leader);
    let mut want_ips = Vec::new();
    let mut want_ports = Vec::new();
    let mut want_ids = BTreeSet::new();
    for k in 0..4u8 {
        // Alternate between the two followers: each forwards to the leader.
        let via = followers[usize::from(k) % followers.len()];
        let (id, ip, port) = (
            format!("web-{k}"),
            format!("10.3.0.{}", k + 1),
            8000 + u16::from(k),
        );
        via.register_acked("web", &id, &ip, port).await;
        want_ips.push(ip.parse::<IpAddr>().expect("ip"));
        want_ports.push(port);
        want_ids.insert(id);
    }
    for s in c.servers() {
        let view = s
            .service("web", Consistency::Consistent)
            .await
            .expect("read");
        assert_eq!(view.ids, want_ids, "?consistent read on {}", s.name());
        // After that read, this server's DNS must already answer the same.
        // Over TCP: UDP answers are trimmed to a few records, as Consul's.
        let a = s.query_tcp("web.service.consul.", RecordType::A);
        assert_eq!(a_records(&a), want_ips, "A on {}: {a:?}", s.name());
        let srv = s.query_tcp("web.service.consul.", RecordType::SRV);
        assert_eq!(srv_ports(&srv), want_ports, "SRV on {}: {srv:?}", s.name());
    }
    // And every server holds the write at the same index.
    let all: Vec<&Agent> = c.servers().collect();
    let view = c.wait_converged(&all, "web", SETTLE_DEADLINE).await;
    assert_eq!(view.ids, want_ids);
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_under_write_load_loses_no_acknowledged_write() {
    let c = trellis().cluster().servers(3).start().await;
    let all: Vec<&Agent> = c.servers().collect();
    let old = c.leader().await;
    let load = Load::start(&all, 6, "load");
    load.wait_acked(150, SETTLE_DEADLINE).await;

    old.kill();
    let survivors = c.running_servers();
    let new = c.wait_leader_among(&survivors, SETTLE_DEADLINE).await;
    assert_ne!(new.name(), old.name(), "a killed server cannot lead");
    // Writes succeed again through every survivor, and the load resumes.
    let mut extra = BTreeSet::new();
    for &s in &survivors {
        extra.insert(write_until_acked(s, "load", "after-kill").await);
    }
    let resumed = load.acked() + 50;
    load.wait_acked(resumed, SETTLE_DEADLINE).await;
    let mut acked = load.finish().await;
    acked.extend(extra);

    for &s in &survivors {
        let view = consistent_read(s, "load").await;
        assert_has_all(&acked, &view, &format!("survivor {}", s.name()));
    }

    // The old leader comes back as a follower and catches up.
    old.restart();
    let leader = c.wait_leader_among(&all, SETTLE_DEADLINE).await;
    assert_ne!(
        leader.name(),
        old.name(),
        "the restarted server's log is behind"
    );
    let view = c.wait_converged(&all, "load", SETTLE_DEADLINE).await;
    assert_has_all(&acked, &view, "every server after the restart");
    c.wait_voters(leader, SETTLE_DEADLINE).await;
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_every_server_under_write_load_loses_no_acknowledged_write() {
    let c = trellis().cluster().servers(3).start().await;
    let all: Vec<&Agent> = c.servers().collect();
    let load = Load::start(&all, 6, "load");
    load.wait_acked(200, SETTLE_DEADLINE).await;
    for s in &all {
        s.kill();
    }
    let acked = load.finish().await;

    for s in &all {
        s.restart();
    }
    c.wait_formed().await;
    for &s in &all {
        let view = consistent_read(s, "load").await;
        assert_has_all(&acked, &view, &format!("{} after restarting all", s.name()));
    }
    // The restarted cluster accepts writes again.
    let leader = c.leader().await;
    c.followers(leader)[0]
        .register_acked("after", "after-1", "10.4.0.1", 1)
        .await;
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_wiped_data_dir_rejoins_and_converges() {
    // Snapshots every 20 entries, keeping 5 behind: the 300 writes below
    // leave a log that starts long after the beginning, so the wiped server
    // can only catch up by installing a snapshot.
    let c = trellis()
        .cluster()
        .servers(3)
        .each(|b| {
            b.arg("--raft-snapshot-threshold", "20")
                .arg("--raft-trailing-logs", "5")
        })
        .start()
        .await;
    let all: Vec<&Agent> = c.servers().collect();
    let leader = c.leader().await;
    let load = Load::start(&all, 4, "load");
    load.wait_acked(300, SETTLE_DEADLINE).await;
    let acked = load.finish().await;

    let f = c.followers(leader)[0];
    let addr = f.rpc().to_string();
    let id_of = |servers: &[serde_json::Value]| {
        servers
            .iter()
            .find(|s| s["Address"] == json!(addr))
            .and_then(|s| s["ID"].as_str().map(String::from))
    };
    let old_id = id_of(&leader.raft_servers().await.expect("configuration"))
        .expect("the follower is in the configuration");

    f.wipe_and_restart();
    // Its new identity replaces the old entry: still three voters, the
    // wiped server's address under a new ID.
    let addrs: BTreeSet<String> = all.iter().map(|s| s.rpc().to_string()).collect();
    let leader = c.leader().await;
    wait_until_async(
        "the wiped server's new ID to replace its old one",
        FORM_DEADLINE,
        || async {
            let servers = leader.raft_servers().await?;
            let voters: BTreeSet<String> = servers
                .iter()
                .filter(|s| s["Voter"] == json!(true))
                .filter_map(|s| s["Address"].as_str().map(String::from))
                .collect();
            let new_id = id_of(&servers);
            if servers.len() == 3
                && voters == addrs
                && new_id.is_some()
                && new_id != Some(old_id.clone())
            {
                Ok(())
            } else {
                Err(format!("configuration (old ID {old_id}): {servers:?}"))
            }
        },
    )
    .await;
    let view = c.wait_converged(&all, "load", FORM_DEADLINE).await;
    assert_has_all(&acked, &view, "every server after the wipe");
    assert!(
        f.log().contains("installed a snapshot from the leader"),
        "the wiped server caught up by snapshot"
    );

    // The rejoined server takes part in writes like any other.
    let id = write_until_acked(f, "load", "after-wipe").await;
    let view = c.wait_converged(&all, "load", SETTLE_DEADLINE).await;
    assert!(view.ids.contains(&id));
    c.assert_no_panics();
}

/// Server `s` alone: its writes fail with Consul's error, while stale reads
/// and DNS answer `base`, the last state it applied. Returns the writes that
/// got no answer within the client's timeout, for the caller to assert on
/// once the rest of the scenario has been checked too.
async fn assert_alone(s: &Agent, base: &ServiceView, ips: &[IpAddr]) -> Vec<String> {
    let hung = RefCell::new(Vec::new());
    let mut attempt = 0;
    wait_until_async(
        &format!("{} to refuse writes with No cluster leader", s.name()),
        SETTLE_DEADLINE,
        || {
            attempt += 1;
            let id = format!("alone-{}-{attempt}", s.name());
            let hung = &hung;
            async move {
                match s.register("alone", &id, "10.5.0.1", 1).await {
                    Ok(r) if r.status == 500 && r.text.contains("No cluster leader") => Ok(()),
                    Ok(r) => Err(format!("{} {}", r.status, r.text)),
                    Err(e) => {
                        hung.borrow_mut().push(format!("{} {id}: {e}", s.name()));
                        Err(e)
                    }
                }
            }
        },
    )
    .await;
    // Once it knows, it keeps refusing.
    for k in 0..3 {
        let id = format!("alone-{}-final-{k}", s.name());
        match s.register("alone", &id, "10.5.0.1", 1).await {
            Ok(r) => assert_eq!(
                (r.status, r.text.contains("No cluster leader")),
                (500, true),
                "{r:?}"
            ),
            Err(e) => hung.borrow_mut().push(format!("{} {id}: {e}", s.name())),
        }
    }
    assert_eq!(s.leader_seen().await.as_deref(), Some(""));

    let stale = s
        .get("/v1/catalog/service/keep?stale")
        .await
        .expect("stale read");
    assert_eq!(stale.status, 200, "{stale:?}");
    assert_eq!(stale.known_leader, Some(false), "{stale:?}");
    let view = s
        .service("keep", Consistency::Stale)
        .await
        .expect("stale read");
    // The same instances; the index may have moved with the server's own
    // bookkeeping writes before the quorum went.
    assert_eq!(view.ids, base.ids, "{} answers its last state", s.name());
    assert!(view.index >= base.index, "{view:?} vs {base:?}");
    let a = s.query_tcp("keep.service.consul.", RecordType::A);
    assert_eq!(
        a_records(&a),
        ips,
        "DNS on {} without quorum: {a:?}",
        s.name()
    );
    hung.into_inner()
}

#[tokio::test]
async fn two_of_three_down_refuse_writes_promptly_and_keep_answering_reads() {
    let c = trellis().cluster().servers(3).start().await;
    let all: Vec<&Agent> = c.servers().collect();
    let mut ips = Vec::new();
    for (k, s) in all.iter().enumerate() {
        let ip = format!("10.6.0.{}", k + 1);
        s.register_acked("keep", &format!("keep-{k}"), &ip, 80)
            .await;
        ips.push(ip.parse::<IpAddr>().expect("ip"));
    }
    let base = c.wait_converged(&all, "keep", SETTLE_DEADLINE).await;

    // The leader survives alone: it must notice it lost its quorum.
    let leader = c.leader().await;
    for f in c.followers(leader) {
        f.kill();
    }
    let mut hung = assert_alone(leader, &base, &ips).await;

    // Quorum back: the cluster takes writes again.
    for s in &all {
        if *s != leader {
            s.restart();
        }
    }
    c.wait_formed().await;
    leader
        .register_acked("keep", "keep-3", "10.6.0.4", 80)
        .await;
    ips.push("10.6.0.4".parse().expect("ip"));
    let base = c.wait_converged(&all, "keep", SETTLE_DEADLINE).await;

    // A follower survives alone.
    let leader = c.leader().await;
    let followers = c.followers(leader);
    let survivor = followers[0];
    leader.kill();
    followers[1].kill();
    hung.extend(assert_alone(survivor, &base, &ips).await);
    // Every write without a quorum answers within the client's timeout
    // (the issue: none hangs for seconds).
    assert!(
        hung.is_empty(),
        "writes without quorum unanswered after {CLIENT_TIMEOUT:?}: {hung:?}"
    );
    c.assert_no_panics();
}

#[tokio::test]
async fn a_paused_leader_is_replaced_and_steps_down_when_resumed() {
    let c = trellis().cluster().servers(3).start().await;
    let all: Vec<&Agent> = c.servers().collect();
    let old = c.leader().await;
    let before = write_until_acked(old, "paused", "before").await;

    old.pause();
    let rest = c.running_servers();
    let new = c.wait_leader_among(&rest, SETTLE_DEADLINE).await;
    assert_ne!(new.name(), old.name(), "a paused server cannot lead");
    let mut written = BTreeSet::from([before]);
    for &s in &rest {
        written.insert(write_until_acked(s, "paused", "during").await);
    }

    old.resume();
    let leader = c.wait_leader_among(&all, SETTLE_DEADLINE).await;
    assert_ne!(
        leader.name(),
        old.name(),
        "the resumed server's log is behind"
    );
    // One leader in everyone's configuration, and it is the same one.
    wait_until_async(
        "one leader in every configuration",
        SETTLE_DEADLINE,
        || async {
            let mut seen = Vec::new();
            for s in &all {
                let servers = s.raft_servers().await?;
                let leaders: Vec<String> = servers
                    .iter()
                    .filter(|s| s["Leader"] == json!(true))
                    .filter_map(|s| s["Address"].as_str().map(String::from))
                    .collect();
                seen.push(leaders);
            }
            let want = vec![leader.rpc().to_string()];
            if seen.iter().all(|l| *l == want) {
                Ok(())
            } else {
                Err(format!("leaders per server: {seen:?}"))
            }
        },
    )
    .await;
    let view = c.wait_converged(&all, "paused", SETTLE_DEADLINE).await;
    assert_has_all(&written, &view, "every server after the resume");
    c.assert_no_panics();
}
