//! Three- and five-server clusters of real processes on loopback: bootstrap,
//! forwarding, DNS agreement, failover under load, durability when every
//! server dies, rejoining with a wiped disk, quorum loss and a hung leader.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

use crate::cluster_harness::{
    CLIENT_TIMEOUT, Cluster, FORM_DEADLINE, Load, SETTLE_DEADLINE, ServiceView,
};
use crate::harness::a_records;

/// SRV ports of an answer, sorted.
fn srv_ports(m: &Message) -> Vec<u16> {
    let mut v: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

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

/// A `?consistent` read of `service` on member `i`, retried only while the
/// read itself fails (e.g. during an election); the content is the caller's
/// to judge.
async fn consistent_read(c: &Cluster, i: usize, service: &str) -> ServiceView {
    c.wait_until(
        &format!("a ?consistent read of {service} on s{}", i + 1),
        SETTLE_DEADLINE,
        || c.service(i, service, "consistent"),
    )
    .await
}

/// Registers through member `i` until one write is acknowledged (unique IDs
/// per attempt, so an unacknowledged attempt is never confused with it).
async fn write_until_acked(c: &Cluster, i: usize, service: &str, tag: &str) -> String {
    let mut attempt = 0;
    c.wait_until(
        &format!("a write through s{} to be acknowledged", i + 1),
        SETTLE_DEADLINE,
        || {
            attempt += 1;
            let id = format!("{service}-{tag}-{attempt}");
            async move {
                let r = c.register(i, service, &id, "10.201.0.1", 2).await?;
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
    let n = c.len();
    let all: BTreeSet<String> = (0..n).map(|i| c.rpc(i).to_string()).collect();
    let nodes: BTreeSet<String> = (1..=n).map(|k| format!("s{k}")).collect();
    let mut leaders = BTreeSet::new();
    for i in 0..n {
        let on = format!("s{}", i + 1);
        leaders.insert(c.leader_seen_by(i).await.unwrap_or_default());
        let servers = c.raft_servers(i).await?;
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
        let peers = c.get(i, "/v1/status/peers").await?.json();
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
    let c = Cluster::start(n).await;
    c.wait_until("one agreed configuration", FORM_DEADLINE, || {
        agreed_configuration(&c)
    })
    .await;
    c.assert_no_server_panicked();
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
    let c = Cluster::start(3).await;
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
        c.register_acked(via, "web", &id, &ip, port).await;
        want_ips.push(ip.parse::<IpAddr>().expect("ip"));
        want_ports.push(port);
        want_ids.insert(id);
    }
    for i in 0..c.len() {
        let view = c.service(i, "web", "consistent").await.expect("read");
        assert_eq!(view.ids, want_ids, "?consistent read on s{}", i + 1);
        // After that read, this server's DNS must already answer the same.
        // Over TCP: UDP answers are trimmed to a few records, as Consul's.
        let a = c.agent(i).query_tcp("web.service.consul.", RecordType::A);
        assert_eq!(a_records(&a), want_ips, "A on s{}: {a:?}", i + 1);
        let srv = c.agent(i).query_tcp("web.service.consul.", RecordType::SRV);
        assert_eq!(srv_ports(&srv), want_ports, "SRV on s{}: {srv:?}", i + 1);
    }
    // And every server holds the write at the same index.
    let view = c.wait_converged(&[0, 1, 2], "web", SETTLE_DEADLINE).await;
    assert_eq!(view.ids, want_ids);
    c.assert_no_server_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_under_write_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3).await;
    let old = c.leader().await;
    let load = Load::start(&c, &[0, 1, 2], 6, "load");
    load.wait_acked(&c, 150, SETTLE_DEADLINE).await;

    c.kill(old);
    let survivors = c.running();
    let new = c.wait_leader_among(&survivors, SETTLE_DEADLINE).await;
    assert_ne!(new, old, "a killed server cannot lead");
    // Writes succeed again through every survivor, and the load resumes.
    let mut extra = BTreeSet::new();
    for &s in &survivors {
        extra.insert(write_until_acked(&c, s, "load", "after-kill").await);
    }
    let resumed = load.acked() + 50;
    load.wait_acked(&c, resumed, SETTLE_DEADLINE).await;
    let mut acked = load.finish().await;
    acked.extend(extra);

    for &s in &survivors {
        let view = consistent_read(&c, s, "load").await;
        assert_has_all(&acked, &view, &format!("survivor s{}", s + 1));
    }

    // The old leader comes back as a follower and catches up.
    c.restart(old);
    let leader = c.wait_leader_among(&[0, 1, 2], SETTLE_DEADLINE).await;
    assert_ne!(leader, old, "the restarted server's log is behind");
    let view = c.wait_converged(&[0, 1, 2], "load", SETTLE_DEADLINE).await;
    assert_has_all(&acked, &view, "every server after the restart");
    c.wait_voters(leader, SETTLE_DEADLINE).await;
    c.assert_no_server_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_every_server_under_write_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3).await;
    let load = Load::start(&c, &[0, 1, 2], 6, "load");
    load.wait_acked(&c, 200, SETTLE_DEADLINE).await;
    for i in 0..c.len() {
        c.kill(i);
    }
    let acked = load.finish().await;

    for i in 0..c.len() {
        c.restart(i);
    }
    c.wait_formed().await;
    for i in 0..c.len() {
        let view = consistent_read(&c, i, "load").await;
        assert_has_all(&acked, &view, &format!("s{} after restarting all", i + 1));
    }
    // The restarted cluster accepts writes again.
    let leader = c.leader().await;
    c.register_acked(c.followers(leader)[0], "after", "after-1", "10.4.0.1", 1)
        .await;
    c.assert_no_server_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_wiped_data_dir_rejoins_and_converges() {
    // Snapshots every 20 entries, keeping 5 behind: the 300 writes below
    // leave a log that starts long after the beginning, so the wiped server
    // can only catch up by installing a snapshot.
    let mut c = Cluster::start_with(
        3,
        &[
            "--raft-snapshot-threshold",
            "20",
            "--raft-trailing-logs",
            "5",
        ],
    )
    .await;
    let leader = c.leader().await;
    let load = Load::start(&c, &[0, 1, 2], 4, "load");
    load.wait_acked(&c, 300, SETTLE_DEADLINE).await;
    let acked = load.finish().await;

    let f = c.followers(leader)[0];
    let addr = c.rpc(f).to_string();
    let id_of = |servers: &[serde_json::Value]| {
        servers
            .iter()
            .find(|s| s["Address"] == json!(addr))
            .and_then(|s| s["ID"].as_str().map(String::from))
    };
    let old_id = id_of(&c.raft_servers(leader).await.expect("configuration"))
        .expect("the follower is in the configuration");

    c.wipe_and_restart(f);
    // Its new identity replaces the old entry: still three voters, the
    // wiped server's address under a new ID.
    let all: BTreeSet<String> = (0..c.len()).map(|i| c.rpc(i).to_string()).collect();
    let leader = c.leader().await;
    c.wait_until(
        "the wiped server's new ID to replace its old one",
        FORM_DEADLINE,
        || async {
            let servers = c.raft_servers(leader).await?;
            let voters: BTreeSet<String> = servers
                .iter()
                .filter(|s| s["Voter"] == json!(true))
                .filter_map(|s| s["Address"].as_str().map(String::from))
                .collect();
            let new_id = id_of(&servers);
            if servers.len() == 3
                && voters == all
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
    let view = c.wait_converged(&[0, 1, 2], "load", FORM_DEADLINE).await;
    assert_has_all(&acked, &view, "every server after the wipe");
    assert!(
        c.agent(f)
            .log()
            .contains("installed a snapshot from the leader"),
        "the wiped server caught up by snapshot"
    );

    // The rejoined server takes part in writes like any other.
    let id = write_until_acked(&c, f, "load", "after-wipe").await;
    let view = c.wait_converged(&[0, 1, 2], "load", SETTLE_DEADLINE).await;
    assert!(view.ids.contains(&id));
    c.assert_no_server_panicked();
}

/// Member `s` alone: its writes fail with Consul's error, while stale reads
/// and DNS answer `base`, the last state it applied. Returns the writes that
/// got no answer within the client's timeout, for the caller to assert on
/// once the rest of the scenario has been checked too.
async fn assert_alone(c: &Cluster, s: usize, base: &ServiceView, ips: &[IpAddr]) -> Vec<String> {
    let hung = RefCell::new(Vec::new());
    let mut attempt = 0;
    c.wait_until(
        &format!("s{} to refuse writes with No cluster leader", s + 1),
        SETTLE_DEADLINE,
        || {
            attempt += 1;
            let id = format!("alone-{s}-{attempt}");
            let hung = &hung;
            async move {
                match c.register(s, "alone", &id, "10.5.0.1", 1).await {
                    Ok(r) if r.status == 500 && r.text.contains("No cluster leader") => Ok(()),
                    Ok(r) => Err(format!("{} {}", r.status, r.text)),
                    Err(e) => {
                        hung.borrow_mut().push(format!("s{} {id}: {e}", s + 1));
                        Err(e)
                    }
                }
            }
        },
    )
    .await;
    // Once it knows, it keeps refusing.
    for k in 0..3 {
        let id = format!("alone-{s}-final-{k}");
        match c.register(s, "alone", &id, "10.5.0.1", 1).await {
            Ok(r) => assert_eq!(
                (r.status, r.text.contains("No cluster leader")),
                (500, true),
                "{r:?}"
            ),
            Err(e) => hung.borrow_mut().push(format!("s{} {id}: {e}", s + 1)),
        }
    }
    assert_eq!(c.leader_seen_by(s).await.as_deref(), Some(""));

    let stale = c
        .get(s, "/v1/catalog/service/keep?stale")
        .await
        .expect("stale read");
    assert_eq!(stale.status, 200, "{stale:?}");
    assert_eq!(stale.known_leader, Some(false), "{stale:?}");
    let view = c.service(s, "keep", "stale").await.expect("stale read");
    // The same instances; the index may have moved with the server's own
    // bookkeeping writes before the quorum went.
    assert_eq!(view.ids, base.ids, "s{} answers its last state", s + 1);
    assert!(view.index >= base.index, "{view:?} vs {base:?}");
    let a = c.agent(s).query_tcp("keep.service.consul.", RecordType::A);
    assert_eq!(
        a_records(&a),
        ips,
        "DNS on s{} without quorum: {a:?}",
        s + 1
    );
    hung.into_inner()
}

#[tokio::test]
async fn two_of_three_down_refuse_writes_promptly_and_keep_answering_reads() {
    let mut c = Cluster::start(3).await;
    let all = [0, 1, 2];
    let mut ips = Vec::new();
    for k in 0..3u8 {
        let ip = format!("10.6.0.{}", k + 1);
        c.register_acked(k.into(), "keep", &format!("keep-{k}"), &ip, 80)
            .await;
        ips.push(ip.parse::<IpAddr>().expect("ip"));
    }
    let base = c.wait_converged(&all, "keep", SETTLE_DEADLINE).await;

    // The leader survives alone: it must notice it lost its quorum.
    let leader = c.leader().await;
    for f in c.followers(leader) {
        c.kill(f);
    }
    let mut hung = assert_alone(&c, leader, &base, &ips).await;

    // Quorum back: the cluster takes writes again.
    for i in all {
        if i != leader {
            c.restart(i);
        }
    }
    c.wait_formed().await;
    c.register_acked(leader, "keep", "keep-3", "10.6.0.4", 80)
        .await;
    ips.push("10.6.0.4".parse().expect("ip"));
    let base = c.wait_converged(&all, "keep", SETTLE_DEADLINE).await;

    // A follower survives alone.
    let leader = c.leader().await;
    let followers = c.followers(leader);
    let survivor = followers[0];
    c.kill(leader);
    c.kill(followers[1]);
    hung.extend(assert_alone(&c, survivor, &base, &ips).await);
    // Every write without a quorum answers within the client's timeout
    // (the issue: none hangs for seconds).
    assert!(
        hung.is_empty(),
        "writes without quorum unanswered after {CLIENT_TIMEOUT:?}: {hung:?}"
    );
    c.assert_no_server_panicked();
}

#[tokio::test]
async fn a_paused_leader_is_replaced_and_steps_down_when_resumed() {
    let mut c = Cluster::start(3).await;
    let old = c.leader().await;
    let before = write_until_acked(&c, old, "paused", "before").await;

    c.pause(old);
    let rest = c.running();
    let new = c.wait_leader_among(&rest, SETTLE_DEADLINE).await;
    assert_ne!(new, old, "a paused server cannot lead");
    let mut written = BTreeSet::from([before]);
    for &s in &rest {
        written.insert(write_until_acked(&c, s, "paused", "during").await);
    }

    c.resume(old);
    let leader = c.wait_leader_among(&[0, 1, 2], SETTLE_DEADLINE).await;
    assert_ne!(leader, old, "the resumed server's log is behind");
    // One leader in everyone's configuration, and it is the same one.
    c.wait_until(
        "one leader in every configuration",
        SETTLE_DEADLINE,
        || async {
            let mut seen = Vec::new();
            for i in 0..3 {
                let servers = c.raft_servers(i).await?;
                let leaders: Vec<String> = servers
                    .iter()
                    .filter(|s| s["Leader"] == json!(true))
                    .filter_map(|s| s["Address"].as_str().map(String::from))
                    .collect();
                seen.push(leaders);
            }
            let want = vec![c.rpc(leader).to_string()];
            if seen.iter().all(|l| *l == want) {
                Ok(())
            } else {
                Err(format!("leaders per server: {seen:?}"))
            }
        },
    )
    .await;
    let view = c
        .wait_converged(&[0, 1, 2], "paused", SETTLE_DEADLINE)
        .await;
    assert_has_all(&written, &view, "every server after the resume");
    c.assert_no_server_panicked();
}
