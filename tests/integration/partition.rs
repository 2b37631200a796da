//! Network partitions between real agents, each in its own network
//! namespace of the test kit's [`Net`]. Cutting an agent's veth isolates
//! it: a server (the leader), or a client agent. Needs root, iproute2 and
//! nftables; without them the tests say SKIPPED.

use std::collections::BTreeSet;
use std::time::Instant;

use trellis_testkit::netns::Net;
use trellis_testkit::{
    Agent, CLIENT_TIMEOUT, Cluster, FORM_DEADLINE, SETTLE_DEADLINE, ServiceView, wait_until_async,
};

use crate::harness::trellis;

#[tokio::test]
async fn a_partitioned_leader_stops_taking_writes_and_rejoins_without_divergence() {
    let Some(net) = Net::for_test("partition", "leader", 3) else {
        return;
    };
    // Declared after `net`, so dropped (processes killed) before it.
    let c = trellis().cluster().servers_at(net.placements()).launch();
    c.wait_formed().await;
    let all: Vec<&Agent> = c.servers().collect();
    let old = c.leader().await;
    let mut acked = BTreeSet::new();
    for (k, s) in all.iter().enumerate() {
        let id = format!("part-before-{k}");
        s.register_acked("part", &id, "10.8.0.1", 1).await;
        acked.insert(id);
    }
    c.wait_converged(&all, "part", SETTLE_DEADLINE).await;

    net.cut(old);
    let majority: Vec<&Agent> = all.iter().copied().filter(|&s| s != old).collect();

    // The minority: writes stop being accepted, promptly and with Consul's
    // error. What it answers before noticing is recorded: an acknowledged
    // write must survive, any other must not appear.
    let mut refused = BTreeSet::new();
    let mut minority_acked = BTreeSet::new();
    let mut attempts = Vec::new();
    // Writes that got no answer within the client's timeout: asserted on at
    // the end, so that the rest of the scenario is checked too.
    let mut hung = Vec::new();
    let end = Instant::now() + SETTLE_DEADLINE;
    for attempt in 1.. {
        let id = format!("part-minority-{attempt}");
        match old.register("part", &id, "10.8.0.2", 1).await {
            Ok(r) => {
                attempts.push((id.clone(), r.status, r.text.clone()));
                if r.ok() {
                    minority_acked.insert(id);
                } else {
                    refused.insert(id);
                    if r.status == 500 && r.text.contains("No cluster leader") {
                        break;
                    }
                }
            }
            Err(e) => {
                hung.push(format!("{id}: {e}"));
                refused.insert(id);
            }
        }
        assert!(
            Instant::now() < end,
            "the cut-off leader never answered No cluster leader: {attempts:?}, unanswered {hung:?}"
        );
    }
    // Once it knows, it keeps refusing.
    for k in 0..3 {
        let id = format!("part-minority-final-{k}");
        match old.register("part", &id, "10.8.0.2", 1).await {
            Ok(r) => assert_eq!(
                (r.status, r.text.contains("No cluster leader")),
                (500, true),
                "{r:?}"
            ),
            Err(e) => hung.push(format!("{id}: {e}")),
        }
        refused.insert(id);
    }

    // The majority elects a new leader and keeps taking writes, through both.
    let new = c.wait_leader_among(&majority, SETTLE_DEADLINE).await;
    assert_ne!(new.name(), old.name());
    for m in &majority {
        let id = format!("part-majority-{}", m.name());
        m.register_acked("part", &id, "10.8.0.3", 1).await;
        acked.insert(id);
    }

    net.heal(old);
    let leader = c.wait_leader_among(&all, FORM_DEADLINE).await;
    assert_ne!(
        leader.name(),
        old.name(),
        "the healed server's log is behind"
    );
    let view: ServiceView = c.wait_converged(&all, "part", FORM_DEADLINE).await;
    acked.extend(minority_acked.iter().cloned());
    let missing: Vec<&String> = acked.difference(&view.ids).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let divergent: Vec<&String> = refused.intersection(&view.ids).collect();
    assert!(
        divergent.is_empty(),
        "writes refused by the minority appear after healing: {divergent:?}; attempts {attempts:?}"
    );
    // And nothing else: exactly what was acknowledged.
    assert_eq!(view.ids, acked, "catalog after healing");
    assert!(
        hung.is_empty(),
        "writes to the cut-off leader unanswered after {CLIENT_TIMEOUT:?}: {hung:?}"
    );
    c.assert_no_panics();
}

/// How many instances of `service` server `s` counts as passing, from its
/// own copy of the catalog.
async fn passing_on(s: &Agent, service: &str) -> Result<usize, String> {
    let r = s
        .get(&format!("/v1/health/service/{service}?passing&stale"))
        .await?;
    r.json()
        .as_array()
        .map(Vec::len)
        .ok_or_else(|| format!("{}: {r:?}", s.name()))
}

/// Waits until every server counts `want` passing instances of `service`.
async fn wait_passing(c: &Cluster, service: &str, want: usize) {
    let what = format!("{want} passing {service} on every server");
    wait_until_async(&what, FORM_DEADLINE, || async {
        for s in c.servers() {
            let n = passing_on(s, service).await?;
            if n != want {
                return Err(format!("{}: {n}", s.name()));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_cut_off_client_leaves_the_answers_keeps_its_copy_and_catches_up() {
    let Some(net) = Net::for_test("partition", "client", 4) else {
        return;
    };
    let mut places = net.placements();
    let client_place = places.pop().expect("four hosts");
    // Declared after `net`, so dropped (processes killed) before it.
    let mut c = trellis().cluster().servers_at(places).launch();
    c.wait_formed().await;
    c.add_client_at("c1", client_place, |b| b);
    let client = c.node("c1");
    wait_until_async(
        "web registered through the client",
        FORM_DEADLINE,
        || async {
            let r = client.register_service("web", 80).await?;
            if r.ok() {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .await;
    wait_passing(&c, "web", 1).await;

    // Cut off: the servers declare the machine failed and stop answering
    // for its service.
    net.cut(client);
    wait_passing(&c, "web", 0).await;
    // The client keeps answering from its own copy, which it cannot
    // refresh, and refuses writes with a clear error.
    let own = client
        .get("/v1/catalog/service/web?stale")
        .await
        .expect("the cut-off client answers");
    assert_eq!(own.json().as_array().map(Vec::len), Some(1), "{own:?}");
    wait_until_async(
        "a write on the cut-off client refused",
        FORM_DEADLINE,
        || async {
            let r = client.register_service("other", 81).await?;
            if r.status == 500 {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .await;
    // The rest of the cluster moves on meanwhile.
    c.node("s1")
        .register_acked("during", "during-1", "10.8.0.9", 1)
        .await;

    // Healed: the machine is alive again for the servers, and the client's
    // copy catches up with what it missed.
    net.heal(client);
    wait_passing(&c, "web", 1).await;
    wait_until_async(
        "the client's copy has what it missed",
        FORM_DEADLINE,
        || async {
            let r = client.get("/v1/catalog/service/during?stale").await?;
            match r.json().as_array().map(Vec::len) {
                Some(1) => Ok(()),
                _ => Err(format!("{r:?}")),
            }
        },
    )
    .await;
    c.assert_no_panics();
}
