//! DNS answers of a dev agent, through a real DNS client (hickory-proto
//! messages over UDP/TCP sockets) and `dig`.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

use trellis_testkit::dns::{a_records, query_message, udp_exchange};

use crate::harness::trellis;
use crate::http_api::register;

#[tokio::test]
async fn the_server_answers_for_itself() {
    let agent = trellis().dev().start();
    let srv = agent.query_udp("consul.service.consul.", RecordType::SRV);
    assert_eq!(srv.metadata.response_code, ResponseCode::NoError);
    assert!(srv.metadata.authoritative);
    assert_eq!(srv.answers.len(), 1, "{srv:?}");
    assert!(
        srv.additionals
            .iter()
            .any(|r| r.record_type() == RecordType::A),
        "SRV carries the node's A in additional: {srv:?}"
    );
    // The same through dig, as the README promises.
    let out = agent.dig(&["consul.service.consul", "SRV"]);
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("IN\tSRV"), "{out}");
}

#[tokio::test]
async fn service_forms_answer_and_critical_instances_leave() {
    let agent = trellis().dev().start();
    register(&agent, "db-1", "mysql", "10.2.0.1", 3306, &["primary"]).await;
    register(&agent, "db-2", "mysql", "10.2.0.2", 3306, &["replica"]).await;

    let all = agent.query_udp("mysql.service.consul.", RecordType::A);
    assert_eq!(
        a_records(&all),
        vec![
            "10.2.0.1".parse::<IpAddr>().unwrap(),
            "10.2.0.2".parse().unwrap()
        ]
    );

    let tagged = agent.query_udp("primary.mysql.service.dc1.consul.", RecordType::A);
    assert_eq!(
        a_records(&tagged),
        vec!["10.2.0.1".parse::<IpAddr>().unwrap()]
    );

    let rfc = agent.query_udp("_mysql._replica.service.consul.", RecordType::SRV);
    assert_eq!(rfc.answers.len(), 1, "{rfc:?}");
    match &rfc.answers[0].data {
        RData::SRV(s) => assert_eq!(s.port, 3306),
        other => panic!("expected SRV, got {other:?}"),
    }
    let tcp = agent.query_udp("_mysql._tcp.service.consul.", RecordType::SRV);
    assert_eq!(tcp.answers.len(), 2);

    // A critical check removes db-1 from every answer.
    let r = agent
        .put(
            "/v1/agent/service/maintenance/db-1?enable=true&reason=test",
            &serde_json::Value::Null,
        )
        .await
        .expect("PUT");
    assert_eq!(r.status, 200, "{}", r.text);
    let after = agent.query_udp("mysql.service.consul.", RecordType::A);
    assert_eq!(
        a_records(&after),
        vec!["10.2.0.2".parse::<IpAddr>().unwrap()]
    );
    let gone = agent.query_udp("primary.mysql.service.consul.", RecordType::A);
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        gone.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    );
}

#[tokio::test]
async fn nxdomain_nodata_and_other_names() {
    let agent = trellis().dev().start();
    register(&agent, "web-1", "web", "10.3.0.1", 80, &[]).await;

    let nx = agent.query_udp("nope.service.consul.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        nx.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    );

    let nodata = agent.query_udp("web.service.consul.", RecordType::AAAA);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(
        nodata
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    );

    let outside = agent.query_udp("example.com.", RecordType::A);
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

    let soa = agent.query_udp("consul.", RecordType::SOA);
    assert_eq!(soa.metadata.response_code, ResponseCode::NoError);
    assert_eq!(soa.answers.len(), 1);
}

#[tokio::test]
async fn node_txt_hex_and_ptr() {
    let agent = trellis().dev().start();
    let r = agent
        .put(
            "/v1/catalog/register",
            &json!({"Node": "web1", "Address": "10.4.0.9", "NodeMeta": {"rack": "r1"},
                    "Service": {"Service": "web", "Port": 80}}),
        )
        .await
        .expect("PUT");
    assert_eq!(r.status, 200, "{}", r.text);

    let a = agent.query_udp("web1.node.consul.", RecordType::A);
    assert_eq!(a_records(&a), vec!["10.4.0.9".parse::<IpAddr>().unwrap()]);
    let a_dc = agent.query_udp("web1.node.dc1.consul.", RecordType::A);
    assert_eq!(
        a_records(&a_dc),
        vec!["10.4.0.9".parse::<IpAddr>().unwrap()]
    );

    let txt = agent.query_udp("web1.node.consul.", RecordType::TXT);
    let strings: Vec<String> = txt
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(strings, vec!["rack=r1".to_string()]);

    let hex = agent.query_udp("0a040009.addr.consul.", RecordType::A);
    assert_eq!(a_records(&hex), vec!["10.4.0.9".parse::<IpAddr>().unwrap()]);

    let ptr = agent.query_udp("9.0.4.10.in-addr.arpa.", RecordType::PTR);
    let text = format!("{:?}", ptr.answers);
    assert!(text.contains("web1"), "{text}");
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_fit_over_tcp() {
    let agent = trellis().dev().start();
    for i in 0..50u16 {
        let r = agent
            .put(
                "/v1/catalog/register",
                &json!({"Node": format!("n{i}"), "Address": format!("10.5.{}.{}", i / 250, i % 250 + 1),
                        "Service": {"ID": format!("big-{i}"), "Service": "big", "Port": 9000 + i}}),
            )
            .await
            .expect("PUT");
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let udp = agent.query_udp("big.service.consul.", RecordType::SRV);
    assert!(
        udp.metadata.truncation,
        "SRV for 50 instances does not fit 512 bytes"
    );
    let bytes = udp.to_vec().unwrap();
    assert!(
        bytes.len() <= 512,
        "UDP answer without EDNS is {} bytes",
        bytes.len()
    );

    let edns = udp_exchange(
        agent.addrs().dns,
        &query_message("big.service.consul.", RecordType::SRV, Some(4096))
            .to_vec()
            .unwrap(),
    );
    assert!(edns.to_vec().unwrap().len() <= 4096);
    assert!(
        edns.answers.len() > udp.answers.len(),
        "EDNS buffer lets more through"
    );

    let tcp = agent.query_tcp("big.service.consul.", RecordType::SRV);
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 50);

    // dig retries over TCP on TC and shows all 50.
    let out = agent.dig(&["big.service.consul", "SRV", "+noall", "+answer"]);
    assert_eq!(
        out.lines().filter(|l| l.contains("SRV")).count(),
        50,
        "{out}"
    );
}

#[tokio::test]
async fn garbage_datagrams_do_not_stop_the_server() {
    let agent = trellis().dev().start();
    let sock = std::net::UdpSocket::bind((agent.ip(), 0)).unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        &[0u8; 600],
    ] {
        sock.send_to(junk, agent.addrs().dns).unwrap();
    }
    let ok = agent.query_udp("consul.service.consul.", RecordType::SRV);
    assert_eq!(ok.metadata.response_code, ResponseCode::NoError);
}
