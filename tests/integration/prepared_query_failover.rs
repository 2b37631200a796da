//! Prepared queries failing over between two real datacenters federated
//! through the WAN pool: when dc1's last instance turns critical,
//! `web.query.consul` (and `/execute`) answers with dc2's, `Datacenter:
//! "dc2"` and `Failovers: 1`, and comes back to dc1 as soon as dc1's
//! instance passes again; a client agent of dc1 fails over the same way;
//! `NearestN` takes the nearest other datacenter; an unknown datacenter in
//! the list is skipped; dc2's own query answers dc1's DNS by its dc2 name
//! and `?dc=dc2`. The times are printed, not asserted.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use trellis_testkit::dns::a_records;
use trellis_testkit::{Agent, wait_until_async};

use crate::harness::trellis;

const DEADLINE: Duration = Duration::from_secs(30);

async fn call(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = agent
        .request(method, path, body.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = serde_json::from_str(&r.text).unwrap_or(Value::String(r.text.clone()));
    (r.status, json)
}

/// Registers (or updates) `node` at `address` with a `web` instance whose
/// check is `status`.
async fn web(agent: &Agent, node: &str, address: &str, status: &str) {
    let body = json!({
        "Node": node, "Address": address,
        "Service": {"ID": "web", "Service": "web", "Port": 80},
        "Check": {"CheckID": "web-up", "Name": "up", "Status": status, "ServiceID": "web"},
    });
    let (status, body) = call(agent, "PUT", "/v1/catalog/register", Some(body)).await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until `name` answers exactly `ip` over DNS on `agent`; how long
/// it took from `since`.
async fn until_dns(agent: &Agent, name: &str, ip: IpAddr, since: Instant) -> Duration {
    wait_until_async(&format!("{name} answers {ip}"), DEADLINE, || async {
        let got = a_records(&agent.query_udp(name, RecordType::A));
        if got == [ip] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    since.elapsed()
}

#[tokio::test]
async fn a_query_fails_over_to_dc2_when_dc1_has_no_healthy_instance_and_back() {
    let mut fed = trellis().federation(&["dc1", "dc2"], 1).start().await;
    let (s1, s2) = (fed.dc("dc1").node("s1"), fed.dc("dc2").node("s1"));
    let (ip1, ip2): (IpAddr, IpAddr) =
        ("127.0.1.50".parse().unwrap(), "127.0.2.50".parse().unwrap());
    web(s1, "w1", "127.0.1.50", "passing").await;
    web(s2, "w2", "127.0.2.50", "passing").await;
    let query = json!({"Name": "web",
                       "Service": {"Service": "web", "OnlyPassing": true,
                                   "Failover": {"Datacenters": ["nowhere", "dc2"]}}});
    let (status, body) = call(s1, "POST", "/v1/query", Some(query)).await;
    assert_eq!(status, 200, "{body}");
    until_dns(s1, "web.query.consul.", ip1, Instant::now()).await;

    // dc1's last instance critical: dc2 answers.
    let start = Instant::now();
    web(s1, "w1", "127.0.1.50", "critical").await;
    let away = until_dns(s1, "web.query.consul.", ip2, start).await;
    let (status, body) = call(s1, "GET", "/v1/query/web/execute", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Datacenter"], "dc2", "{body}");
    assert_eq!(body["Failovers"], 1, "{body}");
    assert_eq!(body["Nodes"][0]["Node"]["Node"], "w2", "{body}");
    // SRV targets name the node in the datacenter that answered.
    let srv = s1.query_udp("_web._tcp.query.consul.", RecordType::SRV);
    let target = srv.answers.first().map(|r| r.data.clone());
    assert!(
        format!("{target:?}").contains("w2.node.dc2.consul."),
        "{srv:?}"
    );

    // A client agent of dc1 fails over too.
    let client = fed.add_client("dc1", "c1", |b| b);
    wait_until_async("c1 answers dc2's", DEADLINE, || async {
        let (status, body) = call(client, "GET", "/v1/query/web/execute", None).await;
        if status == 200 && body["Datacenter"] == "dc2" {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;

    // Healthy again: back to dc1.
    let start = Instant::now();
    let s1 = fed.dc("dc1").node("s1");
    web(s1, "w1", "127.0.1.50", "passing").await;
    let back = until_dns(s1, "web.query.consul.", ip1, start).await;
    let (_, body) = call(s1, "GET", "/v1/query/web/execute", None).await;
    assert_eq!(
        (body["Datacenter"].clone(), body["Failovers"].clone()),
        (json!("dc1"), json!(0))
    );
    eprintln!("failover to dc2 in {away:?}, back to dc1 in {back:?} (from the check write)");

    // A query of dc2's, asked of dc1's DNS by its dc2 name, runs in dc2.
    let s2 = fed.dc("dc2").node("s1");
    let q2 = json!({"Name": "web2", "Service": {"Service": "web"}});
    let (status, body) = call(s2, "POST", "/v1/query", Some(q2)).await;
    assert_eq!(status, 200, "{body}");
    until_dns(s1, "web2.query.dc2.consul.", ip2, Instant::now()).await;
    let (status, body) = call(s1, "GET", "/v1/query/web2/execute?dc=dc2", None).await;
    assert_eq!(
        (status, body["Datacenter"].clone()),
        (200, json!("dc2")),
        "{body}"
    );

    // NearestN: the catch-all template fails over to the nearest other
    // datacenter (the only one here).
    let all = json!({"Name": "", "Template": {"Type": "name_prefix_match"},
                     "Service": {"Service": "${name.full}", "Failover": {"NearestN": 1}}});
    let (status, body) = call(s1, "POST", "/v1/query", Some(all)).await;
    assert_eq!(status, 200, "{body}");
    let db = json!({"Node": "d2", "Address": "127.0.2.51",
                    "Service": {"ID": "db", "Service": "db", "Port": 5432}});
    let (status, _) = call(s2, "PUT", "/v1/catalog/register", Some(db)).await;
    assert_eq!(status, 200);
    let (status, body) = call(s1, "GET", "/v1/query/db/execute", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["Datacenter"].clone(), body["Failovers"].clone()),
        (json!("dc2"), json!(1)),
        "{body}"
    );
}

#[tokio::test]
async fn a_dead_datacenter_first_in_the_list_is_counted_and_the_next_one_answers() {
    let fed = trellis()
        .federation(&["dc1", "dc2", "dc3"], 1)
        .start()
        .await;
    let s1 = fed.dc("dc1").node("s1");
    web(s1, "w1", "127.0.1.50", "critical").await;
    web(fed.dc("dc3").node("s1"), "w3", "127.0.3.50", "passing").await;
    // dc2 comes first in the list, and dies.
    let query = json!({"Name": "web",
                       "Service": {"Service": "web", "OnlyPassing": true,
                                   "Failover": {"Datacenters": ["dc2", "dc3"]}}});
    let (status, body) = call(s1, "POST", "/v1/query", Some(query)).await;
    assert_eq!(status, 200, "{body}");
    fed.dc("dc2").node("s1").kill();
    let start = Instant::now();
    let (status, body) = call(s1, "GET", "/v1/query/web/execute", None).await;
    let took = start.elapsed();
    assert_eq!(status, 200, "{body}");
    // dc2 failed (asked first, counted), dc3 answered.
    assert_eq!(body["Datacenter"], "dc3", "{body}");
    assert_eq!(body["Failovers"], 2, "{body}");
    assert_eq!(body["Nodes"][0]["Node"]["Node"], "w3", "{body}");
    // dc1's own answers do not wait on any of it.
    let local = Instant::now();
    let (status, _) = call(s1, "GET", "/v1/health/service/web", None).await;
    assert_eq!(status, 200);
    eprintln!(
        "with dc2 dead: failover to dc3 in {took:?}; a local read in {:?}",
        local.elapsed()
    );
}
