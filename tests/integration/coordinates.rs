//! Network coordinates of real agents: every member of a LAN pool gets an
//! 8-dimensional coordinate that the others learn through coordinate
//! pings, `?near=_agent` puts the agent's own node first, and (built with
//! the `test-delay` feature) datacenters come out of
//! `/v1/catalog/datacenters` in the order of the delays injected between
//! them.

use std::time::Duration;

use serde_json::Value;
use trellis_testkit::{Agent, wait_until_async};

use crate::harness::trellis;

const DEADLINE: Duration = Duration::from_secs(60);

/// `agent`'s JSON answer at `path`, if it is a 200.
async fn get_json(agent: &Agent, path: &str) -> Result<Value, String> {
    let r = agent.get(path).await?;
    if r.status != 200 {
        return Err(format!("{path}: {} {}", r.status, r.text));
    }
    Ok(r.json())
}

/// The `field` of each element of a JSON list.
fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|e| e.pointer(field)?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_gets_a_coordinate_and_near_agent_puts_its_own_node_first() {
    let mut cluster = trellis().cluster().servers(3).start().await;
    cluster.add_client("c1", |b| b);
    let all = ["c1", "s1", "s2", "s3"];

    // Each agent learns every node's coordinate, 8 dimensions and finite.
    for agent in cluster.members() {
        let what = format!("{} lists a coordinate for every node", agent.name());
        wait_until_async(&what, DEADLINE, || async {
            let list = get_json(agent, "/v1/coordinate/nodes").await?;
            let seen = names(&list, "/Node");
            let eight = list.as_array().into_iter().flatten().all(|e| {
                e["Coord"]["Vec"].as_array().is_some_and(|v| v.len() == 8)
                    && e["Coord"]["Height"].as_f64().is_some()
            });
            if seen == all && eight {
                Ok(())
            } else {
                Err(format!("{list}"))
            }
        })
        .await;
        let one = get_json(agent, "/v1/coordinate/node/s2").await.expect("s2");
        assert_eq!(names(&one, "/Node"), ["s2"]);
    }
    let missing = cluster.node("s1").get("/v1/coordinate/node/nobody").await;
    assert_eq!(missing.expect("answer").status, 404);

    // The agent's own node sorts first for `?near=_agent`, on a server and
    // on a client agent. (Only once our coordinate has settled: the
    // estimate to ourselves is our height and adjustment, which an early
    // coordinate may still have larger than a neighbour's.)
    for name in ["s2", "c1"] {
        let agent = cluster.node(name);
        let what = format!("{name} first in its own ?near=_agent answer");
        wait_until_async(&what, DEADLINE, || async {
            let list = get_json(agent, "/v1/catalog/nodes?near=_agent").await?;
            let order = names(&list, "/Node");
            if order.first().map(String::as_str) == Some(name) && order.len() == 4 {
                Ok(())
            } else {
                Err(format!("{order:?}"))
            }
        })
        .await;
        // And `?near=<node>` sorts from that node instead.
        let list = get_json(agent, "/v1/catalog/nodes?near=s3")
            .await
            .expect("near");
        assert_eq!(names(&list, "/Node").len(), 4);
    }
}

/// Datacenters ordered by the delay injected between them: dc2 80 ms and
/// dc3 20 ms away from dc1 (so 100 ms from each other). From dc1 that is
/// not the order of the names, which is what datacenters with no distance
/// fall back to: dc1's answer proves the estimates are used.
#[cfg(feature = "test-delay")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datacenters_are_ordered_by_injected_delay() {
    use trellis_testkit::federation::datacenters;

    let mut f = trellis()
        .federation(&["dc1", "dc2", "dc3"], 1)
        .each(|a| a.env("TRELLIS_TEST_DELAY", "dc2=80ms,dc3=20ms"))
        .start()
        .await;
    f.add_client("dc1", "c1", |b| b);
    let expect = [
        ("dc1", ["dc1", "dc3", "dc2"]),
        ("dc2", ["dc2", "dc1", "dc3"]),
        ("dc3", ["dc3", "dc1", "dc2"]),
    ];
    for (dc, order) in expect {
        let s1 = f.dc(dc).node("s1");
        let what = format!("{dc}'s s1 orders the datacenters {order:?}");
        let started = std::time::Instant::now();
        wait_until_async(&what, DEADLINE, || async {
            let seen = datacenters(s1).await?;
            if seen == order {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        })
        .await;
        eprintln!("{dc}: ordered after {:?}", started.elapsed());
    }
    // Every server's WAN coordinate is listed under its datacenter, named
    // without the `.dc` suffix as Consul's; a client agent (no WAN pool)
    // asks a server and answers the same, and orders datacenters as it.
    for agent in [f.dc("dc1").node("s1"), f.dc("dc1").node("c1")] {
        let what = format!("{}: every server's WAN coordinate", agent.name());
        let maps = wait_until_async(&what, DEADLINE, || async {
            let maps = get_json(agent, "/v1/coordinate/datacenters").await?;
            let listed = maps
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| names(&m["Coordinates"], "/Node") == ["s1"])
                .count();
            if listed == 3 {
                Ok(maps)
            } else {
                Err(format!("{maps}"))
            }
        })
        .await;
        assert_eq!(names(&maps, "/Datacenter"), ["dc1", "dc2", "dc3"]);
        for map in maps.as_array().expect("a list") {
            assert_eq!(map["AreaID"], "wan");
            let vec = map["Coordinates"][0]["Coord"]["Vec"].as_array();
            assert_eq!(vec.map(Vec::len), Some(8), "{map}");
        }
    }
    let c1 = f.dc("dc1").node("c1");
    wait_until_async(
        "dc1's client agent orders the datacenters",
        DEADLINE,
        || async {
            let seen = datacenters(c1).await?;
            if seen == ["dc1", "dc3", "dc2"] {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
}
