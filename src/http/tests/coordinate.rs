//! The coordinate endpoints and `?near=` over the real router: the
//! coordinates are put into the agent's gossip cache directly (one member
//! alone does not measure), the catalog through the API.

use serde_json::{Value, json};

use super::*;
use crate::coordinate::{Config, Coordinate};

fn at(x: f64) -> Coordinate {
    let mut c = Coordinate::new(&Config::default());
    c.vec[0] = x;
    c
}

async fn with_web_on(api: &TestApi, nodes: &[&str]) {
    for node in nodes {
        let reg =
            json!({"Node": node, "Address": "10.0.0.9", "Service": {"Service": "web", "Port": 1}});
        assert_eq!(api.put("/v1/catalog/register", reg).await.0, StatusCode::OK);
    }
}

fn nodes_of(rows: &Value, field: &str) -> Vec<String> {
    ids(rows, field)
}

#[tokio::test]
async fn nodes_list_the_catalog_nodes_with_a_coordinate_in_consuls_json() {
    let api = TestApi::start().await;
    with_web_on(&api, &["n1", "n2", "n3"]).await;
    let gossip = &api.ctx.api.gossip;
    gossip.set_coordinate("n2", at(0.3)).unwrap();
    // Known to gossip but not to the catalog: not listed.
    gossip.set_coordinate("stranger", at(0.1)).unwrap();

    let (rows, index) = api.get("/v1/coordinate/nodes").await;
    assert!(index > 0, "clients parse X-Consul-Index");
    // n1 is the gossip member itself (at the origin); n3 has no coordinate.
    assert_eq!(nodes_of(&rows, "/Node"), ["n1", "n2"]);
    for row in rows.as_array().unwrap() {
        assert_eq!(keys(row), BTreeSet::from(["Node", "Segment", "Coord"]));
        assert_eq!(
            keys(&row["Coord"]),
            BTreeSet::from(["Vec", "Error", "Adjustment", "Height"])
        );
        assert_eq!(row["Coord"]["Vec"].as_array().unwrap().len(), 8);
    }

    let (one, _) = api.get("/v1/coordinate/node/n2").await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["Coord"]["Vec"][0], json!(0.3));
    let missing = api.get_raw("/v1/coordinate/node/n3").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let stranger = api.get_raw("/v1/coordinate/node/stranger").await;
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);

    // No WAN pool on this agent: its own datacenter, no coordinates.
    let (dcs, _) = api.get("/v1/coordinate/datacenters").await;
    assert_eq!(
        dcs,
        json!([{"Datacenter": "dc1", "AreaID": "wan", "Coordinates": []}])
    );
}

#[tokio::test]
async fn updates_are_kept_for_pool_members_and_bad_ones_refused_unchanged() {
    let api = TestApi::start().await;
    with_web_on(&api, &["n1"]).await;
    let mut moved = at(0.25);
    moved.height = 0.001;
    let body = json!({"Node": "n1", "Segment": "", "Coord": moved});
    let (status, text) = api.put("/v1/coordinate/update", body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (one, _) = api.get("/v1/coordinate/node/n1").await;
    assert_eq!(one[0]["Coord"], serde_json::to_value(&moved).unwrap());

    let mut short = serde_json::to_value(&moved).unwrap();
    short["Vec"] = json!([0.0, 0.0, 0.0]);
    let cases = [
        (json!({"Coord": moved}), "Missing node name"),
        (json!({"Node": "n1"}), "Missing coordinate"),
        (
            json!({"Node": "n1", "Coord": "near"}),
            "Request decode failed",
        ),
        (
            json!({"Node": "n1", "Coord": short}),
            "incompatible coordinate",
        ),
        (json!(["n1"]), "expected object"),
    ];
    for (body, error) in cases {
        let (status, text) = api.put("/v1/coordinate/update", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(error), "{body}: {text}");
    }
    let (after, _) = api.get("/v1/coordinate/node/n1").await;
    assert_eq!(after, one, "a refused update changed nothing");

    // Not in the pool: accepted, and dropped as Consul's batch drops
    // unknown nodes.
    with_web_on(&api, &["n9"]).await;
    let body = json!({"Node": "n9", "Coord": at(0.5)});
    assert_eq!(
        api.put("/v1/coordinate/update", body).await.0,
        StatusCode::OK
    );
    let n9 = api.get_raw("/v1/coordinate/node/n9").await;
    assert_eq!(n9.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn near_sorts_catalog_and_health_answers_with_unknown_nodes_last() {
    let api = TestApi::start().await;
    // Registered out of distance order; n3 has no coordinate.
    with_web_on(&api, &["n3", "n2", "n4", "n1"]).await;
    let gossip = &api.ctx.api.gossip;
    gossip.set_coordinate("n2", at(0.3)).unwrap();
    gossip.set_coordinate("n4", at(0.1)).unwrap();
    // n1 is this agent's gossip member, at the origin.

    let (rows, _) = api.get("/v1/catalog/service/web?near=_agent").await;
    assert_eq!(nodes_of(&rows, "/Node"), ["n1", "n4", "n2", "n3"]);
    let (rows, _) = api.get("/v1/health/service/web?near=_agent").await;
    assert_eq!(nodes_of(&rows, "/Node/Node"), ["n1", "n4", "n2", "n3"]);
    let (rows, _) = api.get("/v1/catalog/service/web?near=n2").await;
    assert_eq!(nodes_of(&rows, "/Node"), ["n2", "n4", "n1", "n3"]);
    // node1 (this agent's catalog node) has no coordinate under that name.
    let (rows, _) = api.get("/v1/catalog/nodes?near=n2").await;
    assert_eq!(nodes_of(&rows, "/Node"), ["n2", "n4", "n1", "n3", "node1"]);

    // Without ?near, or near a node with no coordinate, the order is the
    // catalog's.
    let (plain, _) = api.get("/v1/catalog/service/web").await;
    let (unknown, _) = api.get("/v1/catalog/service/web?near=n3").await;
    assert_eq!(nodes_of(&plain, "/Node"), nodes_of(&unknown, "/Node"));
}
