//! The attacks of "one client can starve everyone", run as the attacker
//! would against real agents: connection floods on HTTP, server RPC and
//! DNS over TCP, parked blocking queries, half-sent requests and silent
//! connections. Each time the one client is refused or cut off and every
//! other client is served.
//!
//! The attacker and its neighbour are two loopback addresses of their own
//! (127.0.77.2 and 127.0.77.3, apart from the 127.0.0.x the kit gives
//! agents), so the agent sees two clients. The caps are set small in each
//! test's `limits` block, so the floods are a few dozen connections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use trellis_testkit::{Agent, FORM_DEADLINE, wait_until_async};

use crate::harness::{temp_dir, trellis};

/// The client that floods.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 77, 2));
/// Another client of the same agent, which must be served all along.
const NEIGHBOUR: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 77, 3));

/// Longest any one wait in these tests may take: far above every limit
/// they configure, so it only ends a test that is broken.
const DEADLINE: Duration = Duration::from_secs(30);

/// A dev agent started with `limits` as its `[limits]` table.
fn dev_with_limits(limits: &str) -> (Agent, tempfile::TempDir) {
    let dir = temp_dir();
    let file = dir.path().join("limits.toml");
    std::fs::write(&file, format!("[limits]\n{limits}")).expect("write config");
    (trellis().dev().config_file(&file).start(), dir)
}

/// A server that bootstraps alone, started with `limits` as its `[limits]`
/// table, that client agents can join.
fn server_with_limits(limits: &str) -> (Agent, tempfile::TempDir) {
    let dir = temp_dir();
    let file = dir.path().join("limits.toml");
    std::fs::write(&file, format!("[limits]\n{limits}")).expect("write config");
    let server = trellis()
        .server()
        .node("s1")
        .bootstrap_expect(1)
        .config_file(&file)
        // Refusals of silent peers are logged at debug.
        .log_filter(Some("info,openraft=warn,trellis::rpc::server=debug"))
        .start();
    (server, dir)
}

/// A TCP connection to `to` from `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the client address");
    tokio::time::timeout(DEADLINE, socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Everything the peer sends until it closes the connection (a reset
/// counts as closed); panics if it stays open past the deadline.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("the agent closes the connection");
        match read {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A reqwest client whose connections come from `from`.
fn http_client(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client")
}

/// One plain GET on an open keep-alive connection, answered in full.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed before answering: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn http_connections_past_a_clients_cap_get_429_and_others_are_served() {
    // A long header timeout: the held connections stay open however slow
    // the machine, so only the cap can refuse.
    let (agent, _dir) =
        dev_with_limits("http_max_conns_per_client = 8\nhttp_read_header_timeout = \"10m\"\n");
    let http = agent.addrs().http;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = connect_from(ATTACKER, http).await;
        let answer = get_on(&mut c, "/v1/status/leader").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(c);
    }
    // Every connection past the cap is answered 429 and closed.
    for _ in 0..20 {
        let mut c = connect_from(ATTACKER, http).await;
        let _ = c
            .write_all(b"PUT /v1/kv/attacker HTTP/1.1\r\nHost: agent\r\nContent-Length: 1\r\n\r\nx")
            .await;
        let answer = String::from_utf8_lossy(&read_until_closed(&mut c).await).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{answer:?}"
        );
        assert!(answer.contains("http_max_conns_per_client"), "{answer}");
    }
    // The attacker's open connections still work, and so does everyone else,
    // writes included.
    let answer = get_on(&mut held[0], "/v1/status/leader").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let neighbour = http_client(NEIGHBOUR);
    let put = neighbour
        .put(agent.url("/v1/kv/neighbour"))
        .body("served")
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 200);
    let get = neighbour
        .get(agent.url("/v1/kv/neighbour?raw"))
        .send()
        .await
        .expect("GET");
    assert_eq!(get.text().await.unwrap(), "served");
    let attacker_key = agent.get("/v1/kv/attacker").await.expect("GET");
    assert_eq!(attacker_key.status, 404, "a refused request never ran");

    // Once the attacker lets go, it is a client like any other again.
    drop(held);
    let attacker = http_client(ATTACKER);
    wait_until_async("the attacker's connections to be freed", DEADLINE, || {
        let (attacker, url) = (attacker.clone(), agent.url("/v1/status/leader"));
        async move {
            let r = attacker.get(url).send().await.map_err(|e| e.to_string())?;
            if r.status() == 200 {
                Ok(())
            } else {
                Err(format!("status {}", r.status()))
            }
        }
    })
    .await;
}

#[tokio::test]
async fn many_clients_fill_http_to_its_cap_and_dns_over_tcp_still_answers() {
    // An open-file limit of 6,500 leaves HTTP 356 connections in all (the
    // rest is kept for DNS over TCP, server RPC and the agent's files).
    let dir = temp_dir();
    let file = dir.path().join("limits.toml");
    std::fs::write(&file, "[limits]\nhttp_idle_timeout = \"10m\"\n").expect("write config");
    let agent = trellis()
        .dev()
        .config_file(&file)
        .run_via(&["prlimit", "--nofile=6500:6500"])
        .start();
    let (http, dns) = (agent.addrs().http, agent.addrs().dns);
    // Four attackers, each under its own cap, hold every connection there is.
    let mut held = Vec::new();
    let mut refused = 0;
    for n in 0..400u16 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 77, 10 + (n % 4) as u8));
        let mut c = connect_from(from, http).await;
        if held.len() < 356 {
            let answer = get_on(&mut c, "/v1/status/leader").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            held.push(c);
        } else {
            let answer = String::from_utf8_lossy(&read_until_closed(&mut c).await).into_owned();
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
            refused += 1;
        }
    }
    assert_eq!(refused, 44);
    // DNS over TCP is not starved of descriptors.
    let mut neighbour = connect_from(NEIGHBOUR, dns).await;
    assert!(dns_tcp_exchange(&mut neighbour).await.is_some());
    // The held connections are served, and once they go, everyone is.
    let answer = get_on(&mut held[0], "/v1/status/leader").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    let neighbour = http_client(NEIGHBOUR);
    wait_until_async("HTTP connections to be free again", DEADLINE, || {
        let (neighbour, url) = (neighbour.clone(), agent.url("/v1/status/leader"));
        async move {
            let r = neighbour.get(url).send().await.map_err(|e| e.to_string())?;
            if r.status() == 200 {
                Ok(())
            } else {
                Err(format!("status {}", r.status()))
            }
        }
    })
    .await;
}

#[tokio::test]
async fn one_clients_parked_blocking_queries_never_starve_anyones_writes() {
    let (agent, _dir) = dev_with_limits("http_max_blocking_per_client = 4\n");
    let put = agent
        .put("/v1/kv/watched", &json!("v1"))
        .await
        .expect("PUT");
    assert_eq!(put.status, 200, "{}", put.text);
    let index = agent
        .get("/v1/kv/watched")
        .await
        .expect("GET")
        .index
        .expect("X-Consul-Index");
    let attacker = http_client(ATTACKER);
    let parked_url = agent.url(&format!("/v1/kv/watched?index={index}&wait=10m"));
    // Five blocking queries for a cap of four: none can answer before the
    // key changes, so the one that does answer first is the one refused,
    // and then the other four are parked.
    let mut parked: Vec<_> = (0..5)
        .map(|_| tokio::spawn(attacker.get(parked_url.clone()).send()))
        .collect();
    let refused = wait_until_async("one of five blocking queries to answer", DEADLINE, || {
        let done = parked.iter().position(|p| p.is_finished());
        async move { done.ok_or_else(|| "all five still waiting".to_string()) }
    })
    .await;
    let refusal = parked
        .remove(refused)
        .await
        .expect("task")
        .expect("an answer");
    assert_eq!(refusal.status(), 429);
    let text = refusal.text().await.unwrap();
    assert!(
        text.contains("limits.http_max_blocking_per_client"),
        "{text}"
    );
    // Every further one is refused at once, while the four stay parked.
    for _ in 0..10 {
        let r = tokio::time::timeout(DEADLINE, attacker.get(parked_url.clone()).send())
            .await
            .expect("refused at once, not parked")
            .expect("GET");
        assert_eq!(r.status(), 429);
    }
    assert!(parked.iter().all(|p| !p.is_finished()));
    let short = agent.url(&format!("/v1/kv/watched?index={index}&wait=50ms"));
    // Its writes and plain reads still run, and every other client's
    // blocking queries and writes too.
    let own_write = attacker
        .put(agent.url("/v1/kv/attacker-own"))
        .body("ok")
        .send()
        .await
        .expect("PUT");
    assert_eq!(own_write.status(), 200);
    let neighbour = http_client(NEIGHBOUR);
    let blocking = neighbour.get(short.clone()).send().await.expect("GET");
    assert_eq!(blocking.status(), 200, "the neighbour may block");
    for i in 0..20 {
        let r = neighbour
            .put(agent.url(&format!("/v1/kv/neighbour/{i}")))
            .body("x")
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 200);
    }
    // The parked queries were parked all along: they wake on the change
    // they wait for.
    let put = agent
        .put("/v1/kv/watched", &json!("v2"))
        .await
        .expect("PUT");
    assert_eq!(put.status, 200);
    for p in parked {
        let r = tokio::time::timeout(DEADLINE, p)
            .await
            .expect("a parked query wakes on its key's change")
            .expect("task")
            .expect("GET");
        assert_eq!(r.status(), 200);
        let woke_at: u64 = r.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(woke_at > index);
    }
}

#[tokio::test]
async fn half_sent_requests_silent_and_idle_connections_are_closed() {
    let (agent, _dir) = dev_with_limits(
        "http_read_header_timeout = \"1s\"\nhttp_read_body_timeout = \"1s\"\n\
         http_idle_timeout = \"2s\"\n",
    );
    let http = agent.addrs().http;
    // Requests whose headers never end, and connections that say nothing.
    let mut half_sent = Vec::new();
    for _ in 0..30 {
        let mut c = connect_from(ATTACKER, http).await;
        c.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: agent\r\nX-Slow: ")
            .await
            .expect("send");
        half_sent.push(c);
    }
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(connect_from(ATTACKER, http).await);
    }
    // Writes whose bodies stop short of their length.
    let mut half_bodies = Vec::new();
    for i in 0..10 {
        let mut c = connect_from(ATTACKER, http).await;
        let head = format!(
            "PUT /v1/kv/slow/{i} HTTP/1.1\r\nHost: agent\r\nContent-Length: 100\r\n\r\nabc"
        );
        c.write_all(head.as_bytes()).await.expect("send");
        half_bodies.push(c);
    }
    // A keep-alive connection that was served, then left idle.
    let mut idle = connect_from(NEIGHBOUR, http).await;
    let answer = get_on(&mut idle, "/v1/status/leader").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    for mut c in half_sent.into_iter().chain(silent) {
        let got = read_until_closed(&mut c).await;
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
    let got = read_until_closed(&mut idle).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // A body too slow fails the write with a 400 that names the setting,
    // and the connection closes.
    for mut c in half_bodies {
        let answer = String::from_utf8_lossy(&read_until_closed(&mut c).await).into_owned();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        assert!(answer.contains("limits.http_read_body_timeout"), "{answer}");
    }
    let slow = agent.get("/v1/kv/slow/?recurse").await.expect("GET");
    assert_eq!(slow.status, 404, "no slow write ran: {}", slow.text);
    // A client that sends its requests is served all along.
    let r = http_client(NEIGHBOUR)
        .get(agent.url("/v1/status/leader"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
}

/// The preface a trellis server RPC peer opens with.
fn rpc_preface() -> Vec<u8> {
    trellis::rpc::preface::encode(trellis::rpc::preface::PROTOCOL_VERSION).to_vec()
}

/// Whether a server RPC connection from `from` is accepted: it sends the
/// preface and gets the server's back, or is closed unanswered.
async fn rpc_accepted(from: IpAddr, rpc: SocketAddr) -> bool {
    let mut c = connect_from(from, rpc).await;
    let _ = c.write_all(&rpc_preface()).await;
    let mut answer = vec![0u8; rpc_preface().len()];
    let read = tokio::time::timeout(DEADLINE, c.read_exact(&mut answer))
        .await
        .expect("an answer or a close in time");
    read.is_ok() && answer == rpc_preface()
}

/// A client agent joins `server` and writes through it.
async fn a_client_agent_joins_and_writes(server: &Agent) {
    let client = trellis().client().retry_join(server.serf()).start();
    wait_until_async(
        "a client agent's write through the server",
        FORM_DEADLINE,
        || async {
            let r = client.put("/v1/kv/from-client", &json!("hello")).await?;
            if r.status == 200 {
                Ok(())
            } else {
                Err(format!("{}: {}", r.status, r.text))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn rpc_connections_past_a_clients_cap_are_closed_and_agents_still_join() {
    // A long handshake timeout: the held connections stay open however
    // slow the machine, so only the cap can refuse.
    let (server, _dir) =
        server_with_limits("rpc_max_conns_per_client = 8\nrpc_handshake_timeout = \"10m\"\n");
    let rpc = server.rpc();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from(ATTACKER, rpc).await);
    }
    // The held connections are accepted before the next ones are refused:
    // wait until the attacker's ninth is closed unanswered, then every
    // further one is.
    wait_until_async(
        "the attacker's ninth RPC connection to be refused",
        DEADLINE,
        || async {
            if rpc_accepted(ATTACKER, rpc).await {
                Err("accepted".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    for _ in 0..20 {
        assert!(!rpc_accepted(ATTACKER, rpc).await, "past the cap");
    }
    assert!(
        rpc_accepted(NEIGHBOUR, rpc).await,
        "another client is served"
    );
    a_client_agent_joins_and_writes(&server).await;
    assert!(
        server.log().contains("limits.rpc_max_conns_per_client"),
        "the refusal is logged naming the setting"
    );
    drop(held);
}

#[tokio::test]
async fn silent_rpc_connections_are_closed_after_the_handshake_timeout() {
    let (server, _dir) =
        server_with_limits("rpc_max_conns_per_client = 20\nrpc_handshake_timeout = \"1s\"\n");
    let rpc = server.rpc();
    // More than the cap: the ones past it are closed at once, the others
    // when their handshake time runs out. Every one is closed.
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(connect_from(ATTACKER, rpc).await);
    }
    for mut c in silent {
        let got = read_until_closed(&mut c).await;
        assert!(got.is_empty(), "a silent peer is sent nothing");
    }
    // It was the configured timeout that closed them (logged just after
    // the close, so it may land a moment after the peer saw it).
    wait_until_async("the timeout in the server's log", DEADLINE, || async {
        if server
            .log()
            .contains("no server RPC preface from the peer within 1s")
        {
            Ok(())
        } else {
            Err(server.log())
        }
    })
    .await;
    // The attacker's slots are free again (each a moment after its close):
    // its own well-formed connection is served, and a new agent joins.
    wait_until_async("the attacker's RPC slots to be freed", DEADLINE, || async {
        if rpc_accepted(ATTACKER, rpc).await {
            Ok(())
        } else {
            Err("refused".to_string())
        }
    })
    .await;
    a_client_agent_joins_and_writes(&server).await;
}

/// A DNS question over TCP on `c`; the answer's bytes, or `None` when the
/// agent closed the connection instead.
async fn dns_tcp_exchange(c: &mut TcpStream) -> Option<Vec<u8>> {
    let question = trellis_testkit::dns::query_message("consul.service.consul.", hickory_a(), None)
        .to_vec()
        .expect("encode");
    let mut framed = u16::try_from(question.len())
        .unwrap()
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&question);
    c.write_all(&framed).await.ok()?;
    let len = tokio::time::timeout(DEADLINE, c.read_u16())
        .await
        .expect("an answer or a close in time")
        .ok()?;
    let mut answer = vec![0u8; usize::from(len)];
    tokio::time::timeout(DEADLINE, c.read_exact(&mut answer))
        .await
        .expect("the whole answer in time")
        .ok()?;
    Some(answer)
}

fn hickory_a() -> hickory_proto::rr::RecordType {
    hickory_proto::rr::RecordType::A
}

#[tokio::test]
async fn dns_tcp_connections_past_a_clients_cap_are_closed_and_others_answered() {
    let (agent, _dir) =
        dev_with_limits("dns_tcp_max_conns_per_client = 8\ndns_tcp_idle_timeout = \"10m\"\n");
    let dns = agent.addrs().dns;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = connect_from(ATTACKER, dns).await;
        assert!(dns_tcp_exchange(&mut c).await.is_some(), "within the cap");
        held.push(c);
    }
    for _ in 0..20 {
        let mut c = connect_from(ATTACKER, dns).await;
        assert!(dns_tcp_exchange(&mut c).await.is_none(), "past the cap");
    }
    let mut neighbour = connect_from(NEIGHBOUR, dns).await;
    assert!(dns_tcp_exchange(&mut neighbour).await.is_some());
    // The attacker's held connections are still served.
    assert!(dns_tcp_exchange(&mut held[0]).await.is_some());
    drop(held);
    wait_until_async(
        "the attacker's DNS connections to be freed",
        DEADLINE,
        || async {
            let mut c = connect_from(ATTACKER, dns).await;
            dns_tcp_exchange(&mut c)
                .await
                .map(|_| ())
                .ok_or_else(|| "closed".to_string())
        },
    )
    .await;
}

#[tokio::test]
async fn idle_dns_tcp_connections_are_closed() {
    let dir = temp_dir();
    let file = dir.path().join("limits.toml");
    std::fs::write(&file, "[limits]\ndns_tcp_idle_timeout = \"1s\"\n").expect("write config");
    let agent = trellis()
        .dev()
        .config_file(&file)
        // Idle closes are logged at debug.
        .log_filter(Some("info,openraft=warn,trellis::dns::server=debug"))
        .start();
    let dns = agent.addrs().dns;
    let mut idle = Vec::new();
    for i in 0..40 {
        let mut c = connect_from(ATTACKER, dns).await;
        if i % 2 == 0 {
            // Half of them asked once first.
            assert!(dns_tcp_exchange(&mut c).await.is_some());
        }
        idle.push(c);
    }
    for mut c in idle {
        assert!(read_until_closed(&mut c).await.is_empty());
    }
    // The configured timeout closed them (the line may land just after).
    wait_until_async("the idle timeout in the agent's log", DEADLINE, || async {
        if agent.log().contains("limits.dns_tcp_idle_timeout") {
            Ok(())
        } else {
            Err(agent.log())
        }
    })
    .await;
    let mut neighbour = connect_from(NEIGHBOUR, dns).await;
    assert!(dns_tcp_exchange(&mut neighbour).await.is_some());
}
