//! Pools of real members on loopback UDP sockets (127.0.1.x, port 0), in
//! one process. Every wait is for a condition, with a generous deadline;
//! the times printed are information, not assertions.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::*;

/// Deadline for anything that should take about a second.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start_at(addr: SocketAddr, name: &str, key: Option<Key>) -> Gossip {
    let socket = UdpSocket::bind(addr).await.expect("bind loopback");
    Gossip::start(GossipConfig {
        socket,
        name: name.to_owned(),
        node_id: uuid::Uuid::new_v4(),
        role: Role::Client,
        dc: "dc1".to_owned(),
        rpc_addr: None,
        generation_floor: 0,
        key,
        profile: Profile::lan(),
    })
    .expect("start gossip")
}

async fn start(host: u8, name: &str, key: Option<Key>) -> Gossip {
    start_at(
        SocketAddr::from((Ipv4Addr::new(127, 0, 1, host), 0)),
        name,
        key,
    )
    .await
}

/// Starts `n` members and joins each to the first.
async fn pool(n: u8, key: Option<Key>) -> Vec<Gossip> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(start(i + 1, &format!("node{i}"), key.clone()).await);
    }
    let seed = nodes[0].local_addr();
    for node in &nodes[1..] {
        node.join(seed).await.expect("join the seed");
    }
    for node in &nodes {
        assert!(
            wait_for(node, PATIENCE, |ms| ms.len() == usize::from(n)
                && ms.iter().all(|m| m.status == MemberStatus::Alive))
            .await,
            "{} never saw the whole pool alive: {:?}",
            node.local_addr(),
            node.members()
        );
    }
    nodes
}

/// Waits until `pred` holds for `node`'s membership; false on timeout.
async fn wait_for(node: &Gossip, deadline: Duration, pred: impl Fn(&[Member]) -> bool) -> bool {
    let mut rx = node.subscribe();
    let waiting = async {
        loop {
            let holds = pred(rx.borrow_and_update().as_slice());
            if holds {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::time::timeout(deadline, waiting).await.is_ok()
}

fn status_of(members: &[Member], addr: SocketAddr) -> Option<MemberStatus> {
    members.iter().find(|m| m.addr == addr).map(|m| m.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_converge() {
    let nodes = pool(5, None).await;
    let names: Vec<_> = nodes[4].members().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["node0", "node1", "node2", "node3", "node4"]);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_dropped_without_leaving_is_declared_failed() {
    let mut nodes = pool(5, None).await;
    let victim = nodes.remove(2);
    let gone = victim.local_addr();
    let killed = Instant::now();
    victim.shutdown().await;
    let mut times = Vec::new();
    for node in &nodes {
        assert!(
            wait_for(node, PATIENCE, |ms| status_of(ms, gone)
                == Some(MemberStatus::Failed))
            .await,
            "{} never saw {gone} fail: {:?}",
            node.local_addr(),
            node.members()
        );
        times.push(killed.elapsed());
    }
    eprintln!("failure seen by the others after {times:?}");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_member_forced_to_leave_is_seen_as_left_by_all() {
    let mut nodes = pool(4, None).await;
    let victim = nodes.remove(3);
    let (gone, name) = (victim.local_addr(), "node3".to_string());
    assert_eq!(
        nodes[0]
            .members()
            .iter()
            .find(|m| m.addr == gone)
            .map(|m| m.name.clone()),
        Some(name.clone())
    );
    // Alive: refused, and nothing changes.
    assert!(matches!(
        nodes[0].force_leave(&name).await,
        Err(GossipError::NotFailed(_))
    ));
    assert!(matches!(
        nodes[0].force_leave("nobody").await,
        Err(GossipError::UnknownMember(_))
    ));
    victim.shutdown().await;
    assert!(
        wait_for(&nodes[0], PATIENCE, |ms| status_of(ms, gone)
            == Some(MemberStatus::Failed))
        .await
    );
    nodes[0]
        .force_leave(&name)
        .await
        .expect("force-leave a failed member");
    for node in &nodes {
        assert!(
            wait_for(node, PATIENCE, |ms| status_of(ms, gone)
                == Some(MemberStatus::Left))
            .await,
            "{} never saw {gone} forced out: {:?}",
            node.local_addr(),
            node.members()
        );
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_as_left() {
    let mut nodes = pool(4, None).await;
    let leaver = nodes.remove(1);
    let gone = leaver.local_addr();
    leaver.leave().await.expect("leave");
    assert_eq!(status_of(&leaver.members(), gone), Some(MemberStatus::Left));
    for node in &nodes {
        assert!(
            wait_for(node, PATIENCE, |ms| status_of(ms, gone)
                == Some(MemberStatus::Left))
            .await,
            "{} never saw {gone} leave: {:?}",
            node.local_addr(),
            node.members()
        );
    }
    // Once left, the member refuses to do more.
    assert!(matches!(
        leaver.join(nodes[0].local_addr()).await,
        Err(GossipError::Stopped)
    ));
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_the_wrong_key_cannot_join() {
    let key = Key::generate();
    let nodes = pool(2, Some(key)).await;
    let intruder = start(9, "intruder", Some(Key::generate())).await;
    let result = intruder.join(nodes[0].local_addr()).await;
    assert!(
        matches!(result, Err(GossipError::JoinTimeout { .. })),
        "{result:?}"
    );
    assert!(nodes[0].stats().dropped_bad_key > 0);
    assert_eq!(intruder.members().len(), 1);
    for node in &nodes {
        assert_eq!(status_of(&node.members(), intruder.local_addr()), None);
    }
    // A member in the clear is kept out the same way.
    let plain = start(10, "plain", None).await;
    assert!(plain.join(nodes[0].local_addr()).await.is_err());
    intruder.shutdown().await;
    plain.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_rejoins_alive_with_a_new_generation() {
    let key = Key::generate();
    let mut nodes = pool(3, Some(key.clone())).await;
    let old = nodes.remove(2);
    let addr = old.local_addr();
    let old_generation = old.generation();
    assert!(old_generation > 0);
    old.shutdown().await;
    // Restart on the same address at once, before the others notice.
    let new = start_at(addr, "node2", Some(key)).await;
    new.join(nodes[0].local_addr()).await.expect("rejoin");
    for node in &nodes {
        assert!(
            wait_for(node, PATIENCE, |ms| ms.iter().any(|m| m.addr == addr
                && m.status == MemberStatus::Alive
                && m.generation > old_generation))
            .await,
            "{} never saw the restarted member: {:?}",
            node.local_addr(),
            node.members()
        );
        // One entry per address: the new generation replaced the old.
        assert_eq!(node.members().iter().filter(|m| m.addr == addr).count(), 1);
    }
    new.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_datagrams_are_counted_and_dropped() {
    let node = start(11, "target", Some(Key::generate())).await;
    let sender = UdpSocket::bind((Ipv4Addr::new(127, 0, 1, 12), 0))
        .await
        .unwrap();
    let to = node.local_addr();
    sender.send_to(&[1, 2, 3], to).await.unwrap();
    sender.send_to(&vec![0u8; 4000], to).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while node.stats().dropped_bad_key < 1 || node.stats().dropped_oversize < 1 {
        assert!(Instant::now() < deadline, "{:?}", node.stats());
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(node.stats().packets_received, 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_ones_own_address_is_refused() {
    let node = start(13, "alone", None).await;
    assert!(matches!(
        node.join(node.local_addr()).await,
        Err(GossipError::JoinSelf(_))
    ));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_declared_failed_comes_back_alive_after_a_restart() {
    let mut nodes = pool(3, None).await;
    let old = nodes.remove(1);
    let addr = old.local_addr();
    let old_generation = old.generation();
    old.shutdown().await;
    for node in &nodes {
        assert!(
            wait_for(node, PATIENCE, |ms| status_of(ms, addr)
                == Some(MemberStatus::Failed))
            .await
        );
    }
    let socket = UdpSocket::bind(addr).await.expect("rebind");
    let new = Gossip::start(GossipConfig {
        socket,
        name: "node1".to_owned(),
        // A wiped data directory: the node comes back with a new ID on its
        // address, and simply replaces its previous life.
        node_id: uuid::Uuid::new_v4(),
        role: Role::Server,
        dc: "dc1".to_owned(),
        rpc_addr: Some(SocketAddr::from(([127, 0, 1, 2], 8300))),
        // As if the caller had kept the last generation and the clock had
        // stepped back: the floor still puts the new life ahead.
        generation_floor: old_generation + 1_000_000,
        key: None,
        profile: Profile::lan(),
    })
    .expect("restart");
    assert!(new.generation() > old_generation + 1_000_000);
    new.join(nodes[0].local_addr()).await.expect("rejoin");
    for node in &nodes {
        assert!(
            wait_for(node, PATIENCE, |ms| ms.iter().any(|m| m.addr == addr
                && m.status == MemberStatus::Alive
                && m.role == Role::Server
                && m.rpc_addr.is_some()))
            .await,
            "{:?}",
            node.members()
        );
    }
    new.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_under_a_live_members_name_is_refused_and_told() {
    let nodes = pool(3, None).await;
    let real = nodes[1].local_addr();
    let impostor = start(9, "node1", None).await;
    let mut refusal = impostor.refusal();
    // The seed answers the announcement, so it knows the impostor alive.
    impostor.join(nodes[0].local_addr()).await.expect("join");
    let told = tokio::time::timeout(PATIENCE, refusal.wait_for(Option::is_some))
        .await
        .expect("the impostor is told within the deadline")
        .expect("gossip still running")
        .clone()
        .expect("a refusal");
    assert_eq!((told.name.as_str(), told.holder_addr), ("node1", real));
    assert_eq!(told.claimant_addr, impostor.local_addr());
    // Neither the pool nor the impostor itself lists it under the name.
    for node in nodes.iter().chain([&impostor]) {
        let node1: Vec<_> = node
            .members()
            .into_iter()
            .filter(|m| m.name == "node1")
            .collect();
        assert_eq!(node1.len(), 1, "{:?}", node.members());
        assert_eq!(
            (node1[0].addr, node1[0].status),
            (real, MemberStatus::Alive),
            "as {} sees it: {:?}",
            node.local_addr(),
            node.members()
        );
    }
    assert!(
        nodes[1].refusal().borrow().is_none(),
        "the holder is not refused"
    );
    impostor.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_joining_a_lone_member_under_its_name_is_the_one_refused() {
    let real = start(1, "s1", None).await;
    let impostor = start(9, "s1", None).await;
    let mut refusal = impostor.refusal();
    impostor.join(real.local_addr()).await.expect("join");
    let told = tokio::time::timeout(PATIENCE, refusal.wait_for(Option::is_some))
        .await
        .expect("the impostor is told within the deadline")
        .expect("gossip still running")
        .clone()
        .expect("a refusal");
    assert_eq!(told.holder_addr, real.local_addr());
    assert!(real.refusal().borrow().is_none(), "{:?}", real.members());
    impostor.shutdown().await;
    real.shutdown().await;
}

/// Polls `node`'s coordinates until `pred` holds; false on timeout.
async fn wait_for_coordinates(
    node: &Gossip,
    deadline: Duration,
    pred: impl Fn(&Coordinates) -> bool,
) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if pred(&node.coordinates()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn coordinate_pings_give_every_member_a_coordinate_and_its_peers() {
    let nodes = pool(3, Some(Key::generate())).await;
    let origin = crate::coordinate::Coordinate::new(&crate::coordinate::Config::default());
    for node in &nodes {
        let learnt = wait_for_coordinates(node, PATIENCE, |c| {
            c.by_name.len() == 3
                && c.by_name.values().all(|v| v.vec.len() == 8 && v.is_valid())
                && c.own != origin
        })
        .await;
        assert!(learnt, "{:?}", node.coordinates());
        // Loopback: every estimate is well under a second.
        let c = node.coordinates();
        for (name, peer) in &c.by_name {
            let rtt = c.own.distance_to(peer).expect("same space");
            assert!(rtt < Duration::from_secs(1), "{name}: {rtt:?}");
        }
    }
    // A coordinate given from outside is kept; one of another space or
    // not finite is refused and changes nothing.
    let mut given = origin.clone();
    given.vec[0] = 0.5;
    nodes[0].set_coordinate("elsewhere", given.clone()).unwrap();
    assert_eq!(
        nodes[0].coordinates().by_name.get("elsewhere"),
        Some(&given)
    );
    given.vec.push(0.0);
    assert!(nodes[0].set_coordinate("wide", given).is_err());
    let mut nan = origin;
    nan.height = f64::NAN;
    assert!(nodes[0].set_coordinate("nan", nan).is_err());
    let names = nodes[0].coordinates();
    assert!(!names.by_name.contains_key("wide") && !names.by_name.contains_key("nan"));
    for node in nodes {
        node.shutdown().await;
    }
}
