//! Three servers in one process, talking real server RPC over loopback TCP:
//! discovery and bootstrap, writes through a follower, `?consistent` reads
//! on followers, and a new leader after the old one stops; and a server
//! refusing a peer of another protocol version or one without the cluster's
//! key. The three-server cluster and its client links hold a cluster key,
//! so every test here also runs the membership proof. (Real processes,
//! SIGKILL and partitions are the integration tests' part.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::tests::{instances, register};
use super::*;
use crate::catalog::Outcome;
use crate::rpc::WriteError;

/// What every server and client link of these tests proves: the cluster
/// key (no TLS: that is the integration tests' part).
fn credentials() -> crate::rpc::Credentials {
    crate::rpc::Credentials {
        cluster_key: Some(crate::rpc::ClusterKey::derive(&[42; 32])),
        tls: None,
    }
}

struct Server {
    /// Where it serves RPC.
    addr: SocketAddr,
    consensus: Arc<Consensus>,
    replica: Arc<Replica>,
    rpc_stop: CancellationToken,
}

impl Server {
    async fn stop(&self) {
        self.consensus.shutdown().await;
        self.rpc_stop.cancel();
    }
}

/// Binds three RPC listeners on 127.0.2.`base`+i, then starts a server on
/// each, every one told about the others.
async fn three(base: u8) -> Vec<Server> {
    three_tuned(base, Tuning::default()).await
}

/// [`three`] with `tuning`.
async fn three_tuned(base: u8, tuning: Tuning) -> Vec<Server> {
    three_with(base, tuning, CLIENT_HISTORY).await
}

/// [`three`] with `tuning`, each server keeping `history` commands for
/// following clients.
async fn three_with(base: u8, tuning: Tuning, history: usize) -> Vec<Server> {
    let mut listeners = Vec::new();
    for i in 0..3u8 {
        listeners.push(listen(base + i).await);
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let mut servers = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let others = addrs.iter().filter(|a| **a != addrs[i]).copied().collect();
        servers.push(start_server(i, listener, others, tuning.clone(), history).await);
    }
    servers
}

/// An RPC listener on 127.0.2.`last`, port picked by the kernel.
async fn listen(last: u8) -> TcpListener {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 2, last));
    TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .expect("bind")
}

/// Starts server `s{i}` serving RPC on `listener`, in memory, expecting
/// three servers and joining through `others`, keeping `history` commands
/// for following clients.
async fn start_server(
    i: usize,
    listener: TcpListener,
    others: Vec<SocketAddr>,
    tuning: Tuning,
    history: usize,
) -> Server {
    let replica = Arc::new(Replica::with_history(history));
    let addr = listener.local_addr().expect("addr");
    let cfg = ConsensusConfig {
        node_name: format!("s{i}"),
        datacenter: "dc1".into(),
        rpc_addr: addr,
        storage: Storage::Memory,
        raft: RaftSettings {
            server: true,
            bootstrap_expect: 3,
            ..RaftSettings::default()
        },
        retry_join: others.iter().map(ToString::to_string).collect(),
        credentials: credentials(),
    };
    let consensus = Consensus::start_tuned(cfg, tuning, replica.clone())
        .await
        .expect("start");
    let rpc_stop = CancellationToken::new();
    tokio::spawn(crate::rpc::server::serve(
        listener,
        consensus.clone(),
        credentials(),
        Default::default(),
        rpc_stop.clone(),
    ));
    Server {
        addr,
        consensus,
        replica,
        rpc_stop,
    }
}

/// Commands each server keeps for following clients: a short history, so
/// a client that falls behind is sent the whole catalog (see the client
/// link test).
const CLIENT_HISTORY: usize = 64;

async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn leader_index(servers: &[Server]) -> Option<usize> {
    servers.iter().position(|s| s.consensus.is_leader())
}

/// Waits until one of `servers` leads; its position.
async fn wait_leader(servers: &[Server]) -> usize {
    until(Duration::from_secs(20), "a leader", || {
        leader_index(servers).is_some()
    })
    .await;
    leader_index(servers).expect("a leader")
}

/// Registers instances `ns` through `server`, each applied.
async fn write_registrations(server: &Server, ns: std::ops::Range<usize>) {
    for n in ns {
        let written = server.consensus.write(register(n)).await;
        assert!(matches!(written, Ok(Outcome::Applied(_))), "{written:?}");
    }
}

/// Stops `servers[leader]` and waits until one of the others leads; returns
/// the others.
async fn fail_over(servers: &[Server], leader: usize) -> Vec<&Server> {
    servers[leader].stop().await;
    let rest: Vec<&Server> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| s)
        .collect();
    until(Duration::from_secs(20), "a new leader", || {
        rest.iter().any(|s| s.consensus.is_leader())
    })
    .await;
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_bootstrap_replicate_and_fail_over() {
    let servers = three(10).await;
    until(Duration::from_secs(20), "one leader known to all", || {
        let leaders: Vec<_> = servers.iter().map(|s| s.consensus.leader()).collect();
        leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0])
    })
    .await;
    let first = leader_index(&servers).expect("a leader");
    let config = servers[first].consensus.configuration();
    assert_eq!(config.servers.len(), 3, "{config:?}");
    assert!(config.servers.iter().all(|s| s.voter));
    assert_eq!(config.servers.iter().filter(|s| s.leader).count(), 1);

    // Garbage on the RPC port: the server drops that connection (an
    // oversized length prefix, then an undecodable frame) and carries on.
    for garbage in [
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..],
        &[0, 0, 0, 3, 0xff, 0xff, 0xff],
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(servers[0].consensus.me.addr)
            .await
            .expect("connect");
        conn.write_all(garbage).await.expect("send");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("the server closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    // Writes through a follower are forwarded and acknowledged after commit.
    let follower = (first + 1) % 3;
    for i in 0..20 {
        match servers[follower].consensus.write(register(i)).await {
            Ok(Outcome::Applied(_)) => {}
            other => panic!("write {i} through a follower: {other:?}"),
        }
    }
    // A linearizable read on each server sees every acknowledged write.
    for s in &servers {
        s.consensus
            .linearizable_read()
            .await
            .expect("consistent read");
        assert_eq!(instances(&s.replica), 20);
    }

    // The leader stops; the other two elect one of themselves and accept
    // writes again, including through the server that is not leading.
    let rest = fail_over(&servers, first).await;
    for s in &rest {
        match s.consensus.write(register(100)).await {
            Ok(Outcome::Applied(_)) => {}
            other => panic!("write after failover: {other:?}"),
        }
    }
    for s in &rest {
        s.consensus
            .linearizable_read()
            .await
            .expect("consistent read");
        assert_eq!(instances(&s.replica), 21);
    }

    // One of three left: no quorum, so writes fail with NoLeader instead of
    // hanging, and the survivor keeps its state for stale reads.
    let second = rest
        .iter()
        .position(|s| s.consensus.is_leader())
        .expect("leader");
    rest[second].stop().await;
    let last = rest[1 - second];
    // NoLeader, not Timeout: it gave up looking for a leader rather than
    // waiting out the request timeout.
    let refused = last.consensus.write(register(200)).await;
    assert!(matches!(refused, Err(WriteError::NoLeader)), "{refused:?}");
    assert_eq!(instances(&last.replica), 21);
    last.stop().await;
}

/// The leader's entries go to the followers as it appends them (see
/// `early`): the followers accept them, and every write is acknowledged
/// and applied alike on all three, through a change of leader too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_entries_reach_the_followers_early_and_every_log_agrees() {
    let servers = three(140).await;
    let first = wait_leader(&servers).await;
    write_registrations(&servers[first], 0..30).await;
    let early = servers[first].consensus.early.accepted();
    assert!(early > 0, "no follower accepted an early AppendEntries");
    let index = servers[first].replica.applied_index();
    until(Duration::from_secs(10), "every replica applied", || {
        servers.iter().all(|s| s.replica.applied_index() >= index)
    })
    .await;
    for s in &servers {
        assert_eq!(instances(&s.replica), 30);
    }

    // A new leader sends its own entries early as well; the old one,
    // stopped, takes none.
    let rest = fail_over(&servers, first).await;
    let second = rest
        .iter()
        .find(|s| s.consensus.is_leader())
        .expect("new leader");
    write_registrations(second, 30..40).await;
    assert!(second.consensus.early.accepted() > 0);
    let index = second.replica.applied_index();
    until(Duration::from_secs(10), "both replicas applied", || {
        rest.iter().all(|s| s.replica.applied_index() >= index)
    })
    .await;
    assert_eq!(*rest[0].replica.read(), *rest[1].replica.read());
    assert_eq!(instances(&rest[0].replica), 40);
    for s in &rest {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_joining_late_catches_up_from_entries_only_the_database_holds() {
    // No server keeps in memory what its database holds of the log, so
    // the newcomer is sent entries the leader reads back through its
    // storage writer (`Writer::read_log`), over the network.
    let tuning = Tuning {
        log_in_memory: LogInMemory::NOTHING,
        ..Tuning::default()
    };
    let servers = three_tuned(150, tuning.clone()).await;
    let leader = &servers[wait_leader(&servers).await];
    write_registrations(leader, 0..200).await;
    let read_before = leader.consensus.storage_stats().read_back();
    let others = servers.iter().map(|s| s.addr).collect();
    let late = start_server(3, listen(153).await, others, tuning, CLIENT_HISTORY).await;
    // Once it is a voter, no entry is coming (its promotion was the last):
    // then both have applied the same log.
    until(
        Duration::from_secs(20),
        "the late server made a voter",
        || {
            let config = leader.consensus.configuration();
            config.servers.iter().filter(|s| s.voter).count() == 4
        },
    )
    .await;
    until(Duration::from_secs(20), "the late server applied", || {
        late.replica.applied_index() == leader.replica.applied_index()
    })
    .await;
    assert_eq!(*late.replica.read(), *leader.replica.read());
    assert_eq!(instances(&late.replica), 200);
    let read = leader.consensus.storage_stats().read_back() - read_before;
    assert!(
        read >= 200,
        "the leader read {read} entries back for the late server, not its log"
    );
    for s in servers.iter().chain([&late]) {
        s.stop().await;
    }
}

/// A client that starts after 200 writes, within a server's history (as a
/// server's is, 8,192 commands): it follows on by entries, most of them
/// held by the server as their bytes (all but the newest 64), and ends with
/// the servers' state, never having been sent the whole of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_client_follows_on_from_entries_the_servers_hold_as_bytes() {
    use crate::rpc::ServerLink;
    let servers = three_with(160, Tuning::default(), 10_000).await;
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.consensus.me.addr).collect();
    let leader = &servers[wait_leader(&servers).await];
    write_registrations(leader, 0..200).await;
    assert!(servers.iter().all(|s| s.replica.in_history(0)));
    let client = Arc::new(Replica::new());
    let link = Arc::new(ServerLink::new(client.clone(), credentials()));
    link.set_servers(addrs);
    let stop = CancellationToken::new();
    tokio::spawn(link.clone().follow(stop.clone()));
    link.linearizable_read().await.expect("caught up");
    assert_eq!(instances(&client), 200);
    assert_eq!(*client.read(), *leader.replica.read());
    assert!(
        servers.iter().all(|s| !s.consensus.snapshot_cache.holds()),
        "no server encoded its whole state for the client"
    );
    stop.cancel();
    for s in &servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_link_writes_follows_and_moves_when_its_server_goes() {
    use crate::rpc::ServerLink;
    let servers = three(40).await;
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.consensus.me.addr).collect();
    wait_leader(&servers).await;
    let stop = CancellationToken::new();
    let follow = |link: &Arc<ServerLink>| tokio::spawn(link.clone().follow(stop.clone()));
    let client = Arc::new(Replica::new());
    let link = Arc::new(ServerLink::new(client.clone(), credentials()));
    link.set_servers(addrs.clone());
    follow(&link);

    // Writes go through whichever server the link picked, and come back
    // to the client's replica through the change stream.
    for n in 0..40 {
        match link.write(register(n)).await {
            Ok(Outcome::Applied(_)) => {}
            other => panic!("write through the link: {other:?}"),
        }
    }
    link.linearizable_read().await.expect("consistent read");
    let first = leader_index(&servers).expect("a leader");
    assert_eq!(*client.read(), *servers[first].replica.read());
    assert!(link.leader_live());
    assert_eq!(link.leader(), Some(addrs[first]));

    // A client that starts later is past the servers' short history: it
    // fetches the whole state, in chunks (small ones here, so it takes
    // many), then follows entries again.
    for n in 40..(40 + CLIENT_HISTORY) {
        link.write(register(n)).await.expect("write");
    }
    let late = Arc::new(Replica::new());
    let late_link = Arc::new(ServerLink::new(late.clone(), credentials()).with_chunk_len(1024));
    late_link.set_servers(addrs.clone());
    follow(&late_link);
    late_link.write(register(500)).await.expect("write");
    late_link
        .linearizable_read()
        .await
        .expect("consistent read");
    assert_eq!(instances(&late), 40 + CLIENT_HISTORY + 1);

    // The leader goes, and the pool stops listing it: the links move on,
    // keep writing, and stay current.
    servers[first].stop().await;
    let rest: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| *a != addrs[first])
        .collect();
    link.set_servers(rest.clone());
    late_link.set_servers(rest);
    link.write(register(600))
        .await
        .expect("write after the leader died");
    for l in [&link, &late_link] {
        l.linearizable_read()
            .await
            .expect("consistent read after failover");
    }
    let survivor = servers
        .iter()
        .position(|s| s.consensus.is_leader())
        .expect("new leader");
    assert_eq!(*client.read(), *servers[survivor].replica.read());
    assert_eq!(*late.read(), *servers[survivor].replica.read());

    // No server at all: a clear error, not a hang.
    link.set_servers(Vec::new());
    assert!(matches!(
        link.write(register(700)).await,
        Err(WriteError::NoServers)
    ));
    stop.cancel();
    for s in &servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_agents_hold_tokens_without_secrets_and_still_resolve_them() {
    use crate::acl::DefaultPolicy;
    use crate::catalog::{AclContext, AclOp, AclPolicy, AclToken, Command, secret_hash};
    use crate::rpc::ServerLink;
    let servers = three(120).await;
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.consensus.me.addr).collect();
    let leader = &servers[wait_leader(&servers).await];
    let token = |accessor: &str, secret: &str, policies: Vec<String>| AclToken {
        accessor_id: accessor.into(),
        secret_id: secret.into(),
        secret_hash: secret_hash(secret),
        description: String::new(),
        policies,
        local: false,
        create_time: 0,
        create_index: 0,
        modify_index: 0,
    };
    let policy = AclPolicy {
        id: "9a0b7c55-0000-4000-8000-000000000001".into(),
        name: "read-web".into(),
        description: String::new(),
        rules: r#"service "web" { policy = "read" }"#.into(),
        datacenters: Vec::new(),
        create_index: 0,
        modify_index: 0,
    };
    let writes = [
        AclOp::SetPolicy(policy.clone()),
        AclOp::Bootstrap(token(
            "9a0b7c55-0000-4000-8000-00000000000a",
            "boot-secret",
            Vec::new(),
        )),
        AclOp::SetToken(token(
            "9a0b7c55-0000-4000-8000-00000000000b",
            "web-secret",
            vec![policy.id.clone()],
        )),
    ];
    for op in writes {
        match leader.consensus.write(Command::Acl(op)).await {
            Ok(Outcome::Applied(_)) => {}
            other => panic!("an ACL write: {other:?}"),
        }
    }

    let stop = CancellationToken::new();
    // One client follows the entries from the start; the other starts
    // after the servers' history moved on and installs the whole state.
    let client = |chunk: u32| {
        let replica = Arc::new(Replica::new());
        replica.enable_acl(AclContext {
            default: DefaultPolicy::Deny,
            datacenter: "dc1".into(),
        });
        let link = Arc::new(ServerLink::new(replica.clone(), credentials()).with_chunk_len(chunk));
        link.set_servers(addrs.clone());
        tokio::spawn(link.clone().follow(stop.clone()));
        (replica, link)
    };
    let (early, early_link) = client(1 << 20);
    early_link.linearizable_read().await.expect("caught up");
    for n in 0..CLIENT_HISTORY {
        leader.consensus.write(register(n)).await.expect("write");
    }
    let (late, late_link) = client(1024);
    for link in [&early_link, &late_link] {
        link.linearizable_read().await.expect("caught up");
    }

    let server_state = leader.replica.snapshot();
    assert!(
        leader
            .replica
            .read()
            .acl_tokens()
            .all(|t| !t.secret_id.is_empty()),
        "the servers keep the secrets"
    );
    for (name, replica) in [("following", &early), ("caught up", &late)] {
        // Everything the server has, but no secret.
        assert_eq!(replica.snapshot(), server_state.redacted(), "{name}");
        assert_eq!(replica.read().acl_tokens().count(), 2, "{name}");
        assert!(
            replica.read().acl_tokens().all(|t| t.secret_id.is_empty()),
            "{name}"
        );
        // And yet a request's secret resolves, by its hash.
        let tokens = replica.tokens().expect("ACLs are on");
        let web = tokens.by_secret("web-secret").expect("the web token");
        assert!(web.authorizer.service_read("web"), "{name}");
        assert!(!web.authorizer.service_read("db"), "{name}");
        let boot = tokens
            .by_secret("boot-secret")
            .expect("the bootstrap token");
        assert!(boot.authorizer.acl_write(), "{name}");
        assert!(tokens.by_secret("not-a-secret").is_none(), "{name}");
    }
    stop.cancel();
    for s in &servers {
        s.stop().await;
    }
}

/// Log lines, collected for a test to read.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// The server closes `conn`: reading it ends (or fails) instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_catches_up_is_never_made_a_voter() {
    let servers = three(70).await;
    let leader = &servers[wait_leader(&servers).await].consensus;
    // Nothing listens there: the join can only time out, however often it
    // is asked for (an earlier join's learner used to be promoted by the
    // next join without having caught up, and then counted in the quorum).
    let ghost = crate::rpc::RaftServer {
        id: 0xdead,
        member: RaftMember::new("ghost", SocketAddr::from(([127, 0, 2, 79], 9))),
    };
    for _ in 0..2 {
        let joined = tokio::time::timeout(Duration::from_secs(2), leader.join(ghost.clone())).await;
        assert!(!matches!(joined, Ok(Ok(()))), "{joined:?}");
    }
    let config = leader.configuration();
    assert_eq!(
        config.servers.iter().filter(|s| s.voter).count(),
        3,
        "{config:?}"
    );
    assert!(
        config.servers.iter().all(|s| s.id != ghost.id || !s.voter),
        "{config:?}"
    );
    // The cluster still commits with its three voters.
    leader.write(register(1)).await.expect("a write");
    for s in &servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_that_would_leave_no_quorum_is_refused() {
    let servers = three(90).await;
    let first = wait_leader(&servers).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    let (down, up) = (followers[0], followers[1]);
    servers[down].stop().await;
    let leader = &servers[first].consensus;
    let id_of = |i: usize| servers[i].consensus.raft_id;

    // Removing the live follower would leave the leader and a dead server:
    // two voters, one answering. Refused, and nothing changes.
    let refused = leader.remove_server(id_of(up)).await.expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("would leave 2 voters of which 1 answer, fewer than the 2 a quorum needs"),
        "{refused}"
    );
    assert_eq!(
        leader
            .configuration()
            .servers
            .iter()
            .filter(|s| s.voter)
            .count(),
        3
    );
    // Removing the dead one leaves two voters that both answer.
    leader
        .remove_server(id_of(down))
        .await
        .expect("the dead server removed");
    let config = leader.configuration();
    assert_eq!(config.servers.len(), 2, "{config:?}");
    leader.write(register(2)).await.expect("a write");
    for i in [first, up] {
        servers[i].stop().await;
    }
}

async fn closed(conn: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("the server closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

// A current-thread runtime, so the server's tasks log on this thread, into
// the subscriber set for the test.
#[tokio::test]
async fn a_peer_of_another_protocol_version_is_refused_naming_both_versions() {
    use crate::rpc::client::{ClientRequest, ClientResponse};
    use crate::rpc::preface::{self, PROTOCOL_VERSION};
    use crate::rpc::{Pool, Request, Response};
    use tokio::io::AsyncWriteExt;

    let logs = Logs::default();
    let writer = logs.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let consensus = Consensus::single_in_memory("s1", Arc::new(Replica::new())).await;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(crate::rpc::server::serve(
        listener,
        consensus.clone(),
        Default::default(),
        Default::default(),
        stop.clone(),
    ));

    // A peer of the next version: refused, and it learns ours.
    let theirs = PROTOCOL_VERSION + 1;
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let refused = preface::offer(&mut conn, theirs, None)
        .await
        .expect_err("the connecting side refuses");
    assert_eq!(
        refused.to_string(),
        format!(
            "server RPC protocol mismatch: this agent speaks {theirs}, the peer speaks {PROTOCOL_VERSION}"
        )
    );
    closed(&mut conn).await;
    let logged = format!(
        "refused a server RPC connection: server RPC protocol mismatch: this agent speaks {PROTOCOL_VERSION}, the peer speaks {theirs}"
    );
    until(
        Duration::from_secs(10),
        "the server to log the refusal",
        || logs.text().contains(&logged),
    )
    .await;

    // A trellis from before protocol versions sends a frame at once.
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(&[0, 0, 0, 3, 0, 1, 2]).await.expect("send");
    closed(&mut conn).await;

    // A peer of this version is served.
    let pool = Pool::new(Duration::from_secs(1), Default::default());
    let answer = pool
        .call(
            addr,
            &Request::Client(ClientRequest::Configuration),
            Duration::from_secs(5),
        )
        .await
        .expect("served");
    assert!(
        matches!(
            answer,
            Response::Client(ClientResponse::Configuration(ref c)) if c.servers.len() == 1
        ),
        "{answer:?}"
    );
    stop.cancel();
    consensus.shutdown().await;
}
