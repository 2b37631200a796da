//! Server RPC keeps outsiders out. Issue 13 found that one `Write` frame
//! from a process outside the cluster registered a service that every
//! server then answered in DNS. With gossip encryption on, a server now
//! opens no connection to a peer that cannot prove it holds the cluster's
//! key: here a real server, attacked over loopback the way such a process
//! would, with the crate's own RPC client.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use base64::Engine as _;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use trellis::catalog::{Command, Registration, ServiceRegistration};
use trellis::rpc::client::{ClientRequest, ClientResponse};
use trellis::rpc::{ClusterKey, Credentials, Pool, Request, Response};
use trellis_testkit::dns::a_records;
use trellis_testkit::wait_until_async;

use crate::harness::{temp_dir, trellis};

const DEADLINE: Duration = Duration::from_secs(30);
const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const OTHER_KEY: &str = "Ym9ndXMga2V5IGJvZ3VzIGtleSBib2d1cyBrZXkgISE=";

fn cluster_key(b64: &str) -> ClusterKey {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("a base64 key");
    ClusterKey::derive(&bytes)
}

/// A node `node` with one service `service` at `address`.
fn register(node: &str, service: &str, address: &str) -> Request {
    Request::Client(ClientRequest::Write(Box::new(Command::register(
        Registration {
            node: node.into(),
            id: String::new(),
            address: address.into(),
            datacenter: "dc1".into(),
            tagged_addresses: Default::default(),
            node_meta: Default::default(),
            skip_node_update: false,
            service: Some(ServiceRegistration {
                id: service.into(),
                service: service.into(),
                tags: Vec::new(),
                address: String::new(),
                tagged_addresses: Default::default(),
                meta: Default::default(),
                port: 3306,
                weights: None,
                enable_tag_override: false,
            }),
            checks: Vec::new(),
        },
    ))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_cannot_write_or_follow_over_server_rpc() {
    let dir = temp_dir();
    let s = trellis()
        .server()
        .node("s1")
        .bootstrap_expect(1)
        .data_dir(dir.path())
        .encrypt(KEY)
        .start();
    wait_until_async("a leader taking writes", DEADLINE, || async {
        let r = s.register_service("web", 80).await?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;

    let pwned = register("pwned", "pwned", "6.6.6.6");
    let follow = Request::Client(ClientRequest::Follow {
        after: 0,
        wait_ms: 0,
    });
    for (who, key, why) in [
        (
            "no key",
            None,
            "the peer requires the cluster's gossip key (encrypt), which this agent does not have",
        ),
        (
            "another key",
            Some(cluster_key(OTHER_KEY)),
            "the peer failed the cluster membership proof: it holds another gossip key",
        ),
    ] {
        let pool = Pool::new(
            Duration::from_secs(5),
            Credentials {
                cluster_key: key,
                tls: None,
            },
        );
        for req in [&pwned, &follow] {
            let refused = pool
                .call(s.rpc(), req, Duration::from_secs(5))
                .await
                .expect_err(who);
            assert!(refused.to_string().contains(why), "{who}: {refused}");
        }
    }

    // A frame sent straight after a correct preface, without the proof, is
    // never read as one: the connection closes.
    let mut raw = tokio::net::TcpStream::connect(s.rpc())
        .await
        .expect("connect");
    raw.write_all(&trellis::rpc::preface::encode(
        trellis::rpc::preface::PROTOCOL_VERSION,
    ))
    .await
    .expect("preface");
    raw.write_all(&[0, 0, 0, 40])
        .await
        .expect("a frame's length");
    raw.write_all(&[0xAA; 40]).await.expect("a frame");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, raw.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection");
    assert!(
        read.is_err() || rest.len() < 6 + 1 + 32 + 32 + 4,
        "the server answered a frame: {rest:?}"
    );

    // The server says why it refused.
    wait_until_async("the refusal in the server's log", DEADLINE, || async {
        let log = s.log();
        if log.contains("refused a server RPC connection: the peer proved no cluster membership") {
            Ok(())
        } else {
            Err("not logged yet".to_string())
        }
    })
    .await;

    // The same call with the cluster's key goes through, so the refusals
    // above are the proof's doing and not a malformed request.
    let insider = Pool::new(
        Duration::from_secs(5),
        Credentials {
            cluster_key: Some(cluster_key(KEY)),
            tls: None,
        },
    );
    let answer = insider
        .call(
            s.rpc(),
            &register("insider", "inside", "10.9.9.9"),
            Duration::from_secs(5),
        )
        .await
        .expect("the key holder is served");
    assert!(
        matches!(answer, Response::Client(ClientResponse::Write(Ok(_)))),
        "{answer:?}"
    );
    wait_until_async("inside.service.consul answered", DEADLINE, || async {
        let got = a_records(&s.query_udp("inside.service.consul.", RecordType::A));
        if got == [IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    let pwned = s.query_udp("pwned.service.consul.", RecordType::A);
    assert_eq!(
        pwned.metadata.response_code,
        ResponseCode::NXDomain,
        "{pwned:?}"
    );
    let nodes = s.get("/v1/catalog/nodes").await.expect("nodes");
    assert!(!nodes.text.contains("pwned"), "{}", nodes.text);
}
