//! Server RPC over TLS with real processes: `trellis tls` writes a CA, a
//! server and a client certificate; three servers and a client agent with
//! `verify_incoming`, `verify_outgoing` and `verify_server_hostname` form a
//! cluster and serve a write made through the client. Then the attacks of
//! issue 13 against a server's RPC port: plain RPC is refused, a TLS peer
//! without a certificate is refused, and a peer with a client certificate
//! may make a client agent's calls but not act as a server (no Raft
//! membership change). An operator at the client agent may still remove a
//! dead server: the client asks in its own RPC family.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::json;
use trellis::config::{TlsProtocol, TlsSettings};
use trellis::rpc::client::ClientRequest;
use trellis::rpc::cluster::ClusterRequest;
use trellis::rpc::types::RaftMember;
use trellis::rpc::{Credentials, Pool, RaftServer, Request, Response, RpcError};
use trellis::tls::Tls;
use trellis_testkit::dns::a_records;
use trellis_testkit::{Agent, wait_until_async};

use crate::harness::{temp_dir, trellis};

const DEADLINE: Duration = Duration::from_secs(60);

/// `trellis tls …` in `dir`; panics with its output on failure.
fn tls_cli(dir: &Path, args: &[&str]) {
    let out = trellis()
        .command()
        .current_dir(dir)
        .arg("tls")
        .args(args)
        .output()
        .expect("run trellis tls");
    assert!(
        out.status.success(),
        "trellis tls {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config file in `dir` with Consul's three lines of RPC TLS for
/// `cert` (`<dir>/<cert>.pem` and its key).
fn tls_config(dir: &Path, name: &str, cert: &str) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    let config = json!({
        "tls": {
            "defaults": {
                "ca_file": dir.join("consul-agent-ca.pem"),
                "cert_file": dir.join(format!("{cert}.pem")),
                "key_file": dir.join(format!("{cert}-key.pem")),
                "verify_outgoing": true,
            },
            "internal_rpc": {
                "verify_incoming": true,
                "verify_server_hostname": true,
            },
        }
    });
    std::fs::write(&path, config.to_string()).expect("write the config");
    path
}

/// An RPC client holding `cert` (or no certificate), checking servers
/// against the CA in `dir`.
fn pool(dir: &Path, cert: Option<&str>) -> Pool {
    let settings = TlsSettings {
        internal_rpc: TlsProtocol {
            ca_file: Some(dir.join("consul-agent-ca.pem")),
            cert_file: cert.map(|c| dir.join(format!("{c}.pem"))),
            key_file: cert.map(|c| dir.join(format!("{c}-key.pem"))),
            verify_outgoing: true,
            verify_server_hostname: true,
            ..TlsProtocol::default()
        },
        https: TlsProtocol::default(),
        source: "the test".into(),
    };
    let tls = Tls::load(settings, "dc1", "consul").expect("the test's TLS material");
    Pool::new(
        Duration::from_secs(5),
        Credentials {
            cluster_key: None,
            tls: Some(std::sync::Arc::new(tls)),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_config_lines_secure_server_rpc_for_servers_and_clients() {
    let dir = temp_dir();
    let d = dir.path();
    tls_cli(d, &["ca", "create"]);
    tls_cli(d, &["cert", "create", "-server"]);
    tls_cli(d, &["cert", "create", "-client"]);
    let servers_config = tls_config(d, "server", "dc1-server-consul-0");
    let client_config = tls_config(d, "client", "dc1-client-consul-0");

    let mut c = trellis()
        .cluster()
        .servers(3)
        .each(move |b| b.config_file(servers_config.clone()))
        .start()
        .await;
    let leader = c.leader().await.rpc();
    c.add_client("c1", |b| b.config_file(client_config));
    let client = c.node("c1");
    wait_until_async("a write through the client agent", DEADLINE, || async {
        let r = client.register_service("web", 8080).await?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    let everyone: Vec<&Agent> = c.members().collect();
    for agent in &everyone {
        wait_until_async("web in every agent's DNS", DEADLINE, || async {
            let got = a_records(&agent.query_tcp("web.service.consul.", RecordType::A));
            if got == [client.ip()] {
                Ok(())
            } else {
                Err(format!("{}: {got:?}", agent.name()))
            }
        })
        .await;
    }

    // Plain RPC to a server that requires TLS: refused before the preface.
    let plain = Pool::new(Duration::from_secs(5), Credentials::default());
    let configuration = Request::Client(ClientRequest::Configuration);
    let refused = plain
        .call(leader, &configuration, Duration::from_secs(5))
        .await
        .expect_err("plain RPC");
    assert!(matches!(refused, RpcError::Preface { .. }), "{refused}");

    // TLS, but no certificate to show.
    let anonymous = pool(d, None);
    let refused = anonymous
        .call(leader, &configuration, Duration::from_secs(5))
        .await
        .expect_err("TLS without a certificate");
    assert!(
        refused.not_sent() || matches!(refused, RpcError::Lost(_)),
        "{refused}"
    );

    // A client certificate: a client agent's calls are served...
    let impostor = pool(d, Some("dc1-client-consul-0"));
    let answer = impostor
        .call(leader, &configuration, Duration::from_secs(5))
        .await
        .expect("a client agent's call");
    assert!(matches!(answer, Response::Client(_)), "{answer:?}");
    // ...but it cannot act as a server: no join of a server of its own.
    let join = Request::Cluster(ClusterRequest::Join(RaftServer {
        id: 0xbad,
        member: RaftMember::new("rogue", "127.0.0.1:9".parse().expect("an address")),
    }));
    let refused = impostor
        .call(leader, &join, Duration::from_secs(5))
        .await
        .expect_err("a client certificate acting as a server");
    assert!(
        refused.to_string().contains("need a server certificate"),
        "{refused}"
    );

    let voters = c.wait_voters(c.leader().await, DEADLINE).await;
    assert_eq!(voters.len(), 3, "{voters:?}");
    assert!(!format!("{voters:?}").contains("rogue"), "{voters:?}");

    // An operator at the client agent removes a dead server: the client
    // asks in its own family, which its certificate may use.
    let lead = c.leader().await;
    let gone = c.followers(lead)[0];
    let gone_rpc = gone.rpc();
    gone.kill();
    let resp = reqwest::Client::new()
        .delete(client.url(&format!("/v1/operator/raft/peer?address={gone_rpc}")))
        .send()
        .await
        .expect("remove-peer through the client agent");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "{status}: {body}");
    wait_until_async("two voters left", DEADLINE, || async {
        let servers = lead.raft_servers().await?;
        if servers.len() == 2 && !format!("{servers:?}").contains(&gone_rpc.to_string()) {
            Ok(())
        } else {
            Err(format!("{servers:?}"))
        }
    })
    .await;
    c.assert_no_panics();
}

/// Two datacenters with RPC TLS everywhere (`verify_incoming`,
/// `verify_outgoing`, `verify_server_hostname`), each server holding its
/// own datacenter's certificate: a client agent of dc1 reads dc2 through
/// its server, which dials dc2's server expecting `server.dc2.consul`, and
/// dc2's server accepts dc1's certificate for the datacenter family only.
/// A client certificate of either datacenter may not make those calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_datacenters_tls_admits_servers_of_any_datacenter_for_their_requests_only() {
    use trellis::rpc::datacenter::{DatacenterRequest, DatacenterResponse, HttpRequest};

    let dir = temp_dir();
    let d = dir.path();
    tls_cli(d, &["ca", "create"]);
    tls_cli(d, &["cert", "create", "-server", "-dc", "dc1"]);
    tls_cli(d, &["cert", "create", "-server", "-dc", "dc2"]);
    tls_cli(d, &["cert", "create", "-client", "-dc", "dc1"]);
    tls_cli(d, &["cert", "create", "-client", "-dc", "dc2"]);
    let dc1_config = tls_config(d, "dc1", "dc1-server-consul-0");
    let dc2_config = tls_config(d, "dc2", "dc2-server-consul-0");
    let client_config = tls_config(d, "client", "dc1-client-consul-0");

    let mut dc1 = trellis()
        .cluster()
        .servers(1)
        .each(move |b| b.datacenter("dc1").config_file(dc1_config.clone()))
        .start()
        .await;
    let dc2 = trellis()
        .cluster()
        .servers(1)
        .each(move |b| b.datacenter("dc2").config_file(dc2_config.clone()))
        .start()
        .await;
    dc1.add_client("c1", |b| b.config_file(client_config));
    let (s1, remote) = (dc1.node("s1"), dc2.node("s1"));
    let join = format!("/v1/agent/join/{}?wan=1", s1.serf_wan());
    let r = remote.request("PUT", &join, None).await.expect("WAN join");
    assert_eq!(r.status, 200, "WAN join: {r:?}");

    let client = dc1.node("c1");
    wait_until_async("dc2 through dc1's client agent", DEADLINE, || async {
        let r = client.get("/v1/catalog/nodes?dc=dc2").await?;
        match r.json()[0]["Datacenter"].as_str() {
            Some("dc2") if r.status == 200 => Ok(()),
            _ => Err(format!("{r:?}")),
        }
    })
    .await;
    let m = client.query_tcp("s1.node.dc2.consul.", RecordType::A);
    assert_eq!(a_records(&m), vec![remote.ip()], "{m:?}");

    let read = Request::Datacenter(DatacenterRequest::Http(HttpRequest {
        method: "GET".into(),
        path_and_query: "/v1/catalog/nodes".into(),
        headers: Vec::new(),
        body: Vec::new().into(),
    }));
    // dc2's server certificate, at dc1's server: its requests are run...
    let dc2_server = pool(d, Some("dc2-server-consul-0"));
    let answer = dc2_server
        .call(s1.rpc(), &read, Duration::from_secs(5))
        .await
        .expect("a request from another datacenter's server");
    match answer {
        Response::Datacenter(DatacenterResponse::Http(a)) => assert_eq!(a.status, 200),
        other => panic!("{other:?}"),
    }
    // ...but it is no server of dc1: no join.
    let join = Request::Cluster(ClusterRequest::Join(RaftServer {
        id: 0xbad,
        member: RaftMember::new("rogue", "127.0.0.1:9".parse().expect("an address")),
    }));
    let refused = dc2_server
        .call(s1.rpc(), &join, Duration::from_secs(5))
        .await
        .expect_err("another datacenter's server acting as ours");
    assert!(
        refused.to_string().contains("need a server certificate"),
        "{refused}"
    );
    // A client certificate, of either datacenter, may not ask at all.
    for cert in ["dc1-client-consul-0", "dc2-client-consul-0"] {
        let refused = pool(d, Some(cert))
            .call(s1.rpc(), &read, Duration::from_secs(5))
            .await
            .expect_err("a client certificate asking for the datacenter family");
        assert!(
            refused
                .to_string()
                .contains("server certificate of some datacenter"),
            "{cert}: {refused}"
        );
    }
}
