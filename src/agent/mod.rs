//! One node's process: binds the listeners, starts consensus, DNS and HTTP,
//! registers the node, and owns the shutdown order.
//!
//! Shutdown order (on SIGINT/SIGTERM, or when a part fails):
//! 1. stop accepting: cancel the DNS and HTTP servers and wait for them to
//!    finish the requests in flight;
//! 2. stop the health checks and anti-entropy (no more writes from them);
//! 3. leave the gossip pool (or just stop gossiping; `leave_on_terminate`);
//! 4. shut Raft down, which flushes and closes the redb log store;
//! 5. log `shutdown complete`.

pub mod checks;
mod delegate;
pub use delegate::Delegate;
pub mod local;
mod persist;
pub(crate) mod pool;
mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::settings::{check_from_config, dns_config, local_identity, node_id, service_from_config};
use crate::catalog::Replica;
use crate::config::Config;
use crate::consensus::{Consensus, ConsensusConfig, Storage, Tuning};

/// Commands a server keeps in its replica's history for following clients;
/// a client further behind is sent the whole catalog.
const FOLLOW_HISTORY: usize = 8192;
use crate::gossip::{Gossip, GossipConfig, Profile, Role};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A listener could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Raft or its storage failed to start or to elect this server.
    #[error("consensus: {0}")]
    Consensus(#[from] crate::consensus::StartError),
    /// A service definition from the configuration was refused.
    #[error("registering {what}: {message}")]
    Register {
        /// What was being registered.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// A server task failed.
    #[error("{0}")]
    Task(String),
}

/// The sockets the agent serves on, bound before anything starts so that
/// port 0 is resolved and a port conflict fails fast.
struct Listeners {
    dns_udp: UdpSocket,
    dns_tcp: TcpListener,
    http: TcpListener,
    /// Server RPC, on the cluster (bind) address; servers only.
    rpc: Option<TcpListener>,
    /// LAN gossip.
    serf_lan: UdpSocket,
}

impl Listeners {
    async fn bind(cfg: &Config) -> Result<Self, AgentError> {
        let dns_addr = SocketAddr::new(cfg.client_addr, cfg.ports.dns);
        let (dns_udp, dns_tcp) = bind_dns(dns_addr).await?;
        let http_addr = SocketAddr::new(cfg.client_addr, cfg.ports.http);
        let http = TcpListener::bind(http_addr)
            .await
            .map_err(|source| AgentError::Bind {
                what: "HTTP",
                addr: http_addr,
                source,
            })?;
        let rpc = match cfg.server {
            true => {
                let rpc_addr = SocketAddr::new(cfg.bind_addr, cfg.ports.server);
                let rpc = TcpListener::bind(rpc_addr)
                    .await
                    .map_err(|source| AgentError::Bind {
                        what: "server RPC",
                        addr: rpc_addr,
                        source,
                    })?;
                Some(rpc)
            }
            false => None,
        };
        // Gossip tells every member where this one is from the socket's own
        // address, so it must be a concrete one: with a wildcard bind, bind
        // the advertised address instead.
        let gossip_ip = if cfg.bind_addr.is_unspecified() {
            cfg.advertise_addr
        } else {
            cfg.bind_addr
        };
        let serf_addr = SocketAddr::new(gossip_ip, cfg.ports.serf_lan);
        let serf_lan = UdpSocket::bind(serf_addr)
            .await
            .map_err(|source| AgentError::Bind {
                what: "gossip (LAN)",
                addr: serf_addr,
                source,
            })?;
        Ok(Self {
            dns_udp,
            dns_tcp,
            http,
            rpc,
            serf_lan,
        })
    }
}

/// Binds DNS on UDP and TCP at the same port. With port 0 the UDP socket picks
/// the port and TCP follows it; if TCP finds that port taken, try again.
async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), AgentError> {
    let err = |what, source| AgentError::Bind { what, addr, source };
    let mut last = None;
    for _ in 0..16 {
        let udp = bind_udp(addr).map_err(|e| err("DNS/UDP", e))?;
        let port = udp.local_addr().map_err(|e| err("DNS/UDP", e))?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(err("DNS/TCP", e)),
        }
    }
    Err(err(
        "DNS/TCP",
        last.unwrap_or_else(|| std::io::Error::other("no free port")),
    ))
}

/// A UDP socket with a large receive buffer, so bursts of queries queue in
/// the kernel rather than being dropped while a worker is busy.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Resolves a gossip join address: `host[:port]`, port 8301 when absent.
pub async fn resolve_join_address(addr: &str) -> Vec<SocketAddr> {
    pool::resolve(addr).await
}

/// Runs the agent until `shutdown` is cancelled or a part fails.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    let started = std::time::Instant::now();
    let listeners = Listeners::bind(&cfg).await?;
    let dns_addr = listeners.dns_udp.local_addr().ok();
    let http_addr = listeners.http.local_addr().ok();
    // Other servers reach this one at the advertised address and the port
    // actually bound (port 0 picks one).
    let rpc_port = listeners
        .rpc
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(cfg.ports.server, |a| a.port());
    let rpc_addr = SocketAddr::new(cfg.advertise_addr, rpc_port);

    let (replica, delegate, server) = match listeners.rpc {
        Some(rpc) => {
            let server = ServerParts::start(&cfg, rpc_addr, rpc).await?;
            (
                server.consensus.replica().clone(),
                Delegate::Server(server.consensus.clone()),
                Some(server),
            )
        }
        None => {
            let replica = Arc::new(Replica::new());
            let link = Arc::new(crate::rpc::ServerLink::new(replica.clone()));
            (replica, Delegate::Client(link), None)
        }
    };

    let serf_addr = listeners.serf_lan.local_addr().ok();
    let generation_file = cfg.data_dir.as_ref().map(|d| d.join("gossip_generation"));
    let gossip = Arc::new(
        Gossip::start(GossipConfig {
            socket: listeners.serf_lan,
            name: cfg.node_name.clone(),
            role: if cfg.server {
                Role::Server
            } else {
                Role::Client
            },
            dc: cfg.datacenter.clone(),
            rpc_addr: cfg.server.then_some(rpc_addr),
            generation_floor: generation_file
                .as_deref()
                .map_or(0, pool::stored_generation),
            key: cfg.encrypt.clone(),
            profile: Profile::lan(),
        })
        .map_err(|e| AgentError::Task(format!("gossip: {e}")))?,
    );
    let background = CancellationToken::new();
    let mut helpers = JoinSet::new();
    helpers.spawn(pool::retry_join(
        gossip.clone(),
        cfg.retry_join.clone(),
        background.clone(),
    ));
    if let Some(path) = generation_file {
        helpers.spawn(pool::remember_generation(
            gossip.clone(),
            path,
            background.clone(),
        ));
    }
    helpers.spawn(pool::feed_servers(
        gossip.clone(),
        delegate.clone(),
        cfg.datacenter.clone(),
        background.clone(),
    ));
    match &delegate {
        Delegate::Server(consensus) => {
            helpers.spawn(crate::reconcile::run(
                gossip.subscribe(),
                consensus.clone(),
                replica.clone(),
                cfg.datacenter.clone(),
                cfg.reconnect_timeout,
                background.clone(),
            ));
        }
        Delegate::Client(link) => {
            helpers.spawn(link.clone().follow(background.clone()));
        }
    }

    let node_id = node_id(&cfg).map_err(|e| AgentError::Register {
        what: "the node ID file".into(),
        message: e.to_string(),
    })?;
    let mut local =
        local::LocalAgent::new(local_identity(&cfg, rpc_addr, node_id), delegate.clone())
            .with_check_settings(checks::CheckSettings {
                update_interval: cfg.check_update_interval,
                enable_script_checks: cfg.enable_script_checks,
                enable_local_script_checks: cfg.enable_local_script_checks,
                state_dir: cfg.data_dir.as_ref().map(|d| d.join("checks")),
            });
    if cfg.bootstrap_expect != 1 {
        // In a cluster the leader, which may be another server, owns this
        // node's serfHealth. A lone server leads and sees itself alive, so
        // it writes the same check itself, before it first answers.
        local = local.with_serf_health_from_gossip();
    }
    let saved = cfg
        .data_dir
        .as_ref()
        .map(|d| d.join("local").join("definitions.json"));
    if let Some(path) = &saved {
        local = local.with_definitions_file(path.clone());
    }
    let local = Arc::new(local);
    let definitions = Definitions::load(&cfg, saved.as_deref())?;
    let serving = shutdown.child_token();
    let mut tasks = JoinSet::new();
    let lone = server.is_some() && cfg.bootstrap_expect == 1;
    if let Some(server) = server.as_ref().filter(|_| lone) {
        // A lone server leads at once: register before serving, so the
        // first answer already includes this node and its services.
        server
            .consensus
            .wait_for_leader(Duration::from_secs(10))
            .await?;
        definitions.register(&local).await?;
        local.restored().await;
    }
    // Registering (a cluster member or a client serves its local state at
    // once and registers once the cluster has a leader, retrying until it
    // does), then anti-entropy. Not one of `tasks`: its ending is not a
    // server stopping.
    let upkeep = {
        let (local, replica, token) = (local.clone(), replica.clone(), serving.clone());
        let every = cfg.ae_interval;
        tokio::spawn(async move {
            if !lone {
                let mut logged = false;
                loop {
                    let registered = tokio::select! {
                        () = token.cancelled() => return,
                        r = definitions.register(&local) => r,
                    };
                    match registered {
                        Ok(()) => break,
                        Err(e) if !logged => {
                            tracing::info!(
                                "registering this node once the cluster has a leader ({e})"
                            );
                            logged = true;
                        }
                        Err(_) => {}
                    }
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
                local.restored().await;
            }
            local::run_anti_entropy(local, replica, every, token).await;
        })
    };
    let checks = checks::CheckRunner::start(local.clone());
    if let Some(server) = &server {
        // A server whose Raft stopped (storage failure, a bug) must not go
        // on answering from a state that no longer moves: exit, so that a
        // supervisor restarts it.
        let (consensus, token) = (server.consensus.clone(), serving.clone());
        tasks.spawn(async move {
            tokio::select! {
                () = token.cancelled() => Ok(()),
                reason = consensus.failed() => Err(format!("raft stopped: {reason}")),
            }
        });
    }

    let dns_cfg = dns_config(&cfg);
    {
        let Listeners {
            dns_udp,
            dns_tcp,
            http,
            ..
        } = listeners;
        let (dns_replica, token) = (replica.clone(), serving.clone());
        tasks.spawn(async move {
            crate::dns::serve(dns_udp, dns_tcp, dns_cfg, dns_replica, token)
                .await
                .map_err(|e| format!("DNS: {e}"))
        });
        let state = crate::http::ApiState {
            replica: replica.clone(),
            delegate: delegate.clone(),
            local: local.clone(),
            gossip: gossip.clone(),
            shutdown: shutdown.clone(),
        };
        let token = serving.clone();
        tasks.spawn(async move {
            crate::http::serve(http, state, token)
                .await
                .map_err(|e| format!("HTTP: {e}"))
        });
    }
    tracing::info!(
        "listening dns={} http={} server={} serf_lan={} node={} dc={} ready_in_ms={}",
        fmt_addr(dns_addr),
        fmt_addr(http_addr),
        fmt_addr(server.as_ref().map(|_| rpc_addr)),
        fmt_addr(serf_addr),
        cfg.node_name,
        cfg.datacenter,
        started.elapsed().as_millis()
    );

    // Run until asked to stop or until a server fails.
    let mut failure = None;
    tokio::select! {
        // The servers stop on their own when `shutdown` (their parent token)
        // fires; checking it first keeps that from reading as a failure.
        biased;
        () = shutdown.cancelled() => {}
        Some(res) = tasks.join_next() => {
            failure = Some(match res {
                Ok(Ok(())) => "a server stopped unexpectedly".to_string(),
                Ok(Err(e)) => e,
                Err(e) => format!("a server task panicked: {e}"),
            });
        }
    }

    // 1. Stop accepting and drain in-flight requests.
    serving.cancel();
    while let Some(res) = tasks.join_next().await {
        if let Ok(Err(e)) = res {
            tracing::warn!("while stopping: {e}");
        }
    }
    // 2. Health checks: their writes need Raft, so they stop before it.
    checks.stop().await;
    let _ = upkeep.await;
    // 3. The gossip pool: leave gracefully (others see Left and deregister
    //    this node) or just stop (others declare it failed), as configured.
    background.cancel();
    while helpers.join_next().await.is_some() {}
    if cfg.leave_on_terminate {
        match tokio::time::timeout(Duration::from_secs(5), gossip.leave()).await {
            Ok(Ok(())) => tracing::info!("left the LAN pool"),
            Ok(Err(e)) => tracing::debug!(error = %e, "leaving the LAN pool"),
            Err(_) => tracing::warn!("leaving the LAN pool timed out"),
        }
    }
    match Arc::try_unwrap(gossip) {
        Ok(gossip) => gossip.shutdown().await,
        Err(_) => tracing::warn!("gossip still in use at shutdown; dropping it"),
    }
    // 4. Raft and its storage, then the server RPC it talked through.
    drop((local, delegate));
    if let Some(server) = server {
        server.shutdown().await;
    }
    tracing::info!("shutdown complete");
    match failure {
        Some(e) => Err(AgentError::Task(e)),
        None => Ok(()),
    }
}

/// What only a server runs: its Raft member and the server RPC it talks
/// through.
struct ServerParts {
    consensus: Arc<Consensus>,
    /// Stops server RPC; cancelled after Raft has shut down.
    rpc_stop: CancellationToken,
    rpc_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerParts {
    /// Opens the Raft storage, starts Raft, and serves RPC on `listener`.
    async fn start(
        cfg: &Config,
        rpc_addr: SocketAddr,
        listener: TcpListener,
    ) -> Result<Self, AgentError> {
        let replica = Arc::new(Replica::with_history(FOLLOW_HISTORY));
        let storage = match &cfg.data_dir {
            Some(dir) => Storage::Dir(dir.join("raft")),
            None => Storage::Memory,
        };
        let mut tuning = Tuning::default();
        if let Some(n) = cfg.raft_snapshot_threshold {
            tuning.snapshot_every = n;
        }
        if let Some(n) = cfg.raft_trailing_logs {
            tuning.keep_after_snapshot = n;
        }
        let consensus = Consensus::start_tuned(
            ConsensusConfig {
                node_name: cfg.node_name.clone(),
                datacenter: cfg.datacenter.clone(),
                rpc_addr,
                storage,
                bootstrap_expect: cfg.bootstrap_expect,
                // Join addresses are gossip addresses; the servers among the
                // pool's members are handed to consensus as they appear.
                retry_join: Vec::new(),
            },
            tuning,
            replica,
        )
        .await?;
        // Raft needs server RPC from the start (votes, the bootstrap), and
        // until it has shut down: it gets its own token, cancelled last.
        let rpc_stop = CancellationToken::new();
        let rpc_task = tokio::spawn(crate::rpc::server::serve(
            listener,
            consensus.clone(),
            rpc_stop.clone(),
        ));
        Ok(Self {
            consensus,
            rpc_stop,
            rpc_task,
        })
    }

    /// Shuts Raft down, then the server RPC it talked through.
    async fn shutdown(self) {
        self.consensus.shutdown().await;
        self.rpc_stop.cancel();
        if let Ok(Err(e)) = self.rpc_task.await {
            tracing::warn!("while stopping server RPC: {e}");
        }
    }
}

/// The services and checks to register at start: those of the configuration
/// files, validated before anything is registered, then those registered
/// over the API in an earlier run. Each with what it is called in errors.
struct Definitions {
    services: Vec<(String, local::ServiceDefinition, checks::Origin)>,
    checks: Vec<(String, local::CheckDefinition, checks::Origin)>,
}

impl Definitions {
    fn load(cfg: &Config, saved: Option<&std::path::Path>) -> Result<Self, AgentError> {
        let mut services = Vec::new();
        for s in &cfg.services {
            let what = format!("service {:?} from the configuration", s.name);
            let def = service_from_config(s).map_err(|message| AgentError::Register {
                what: what.clone(),
                message,
            })?;
            services.push((what, def, checks::Origin::Config));
        }
        let mut checks = Vec::new();
        for c in &cfg.checks {
            let what = format!(
                "check {:?} from the configuration",
                c.id.as_deref().or(c.name.as_deref()).unwrap_or_default()
            );
            let def = check_from_config(c).map_err(|message| AgentError::Register {
                what: what.clone(),
                message,
            })?;
            checks.push((what, def, checks::Origin::Config));
        }
        if let Some(path) = saved {
            let saved = local::saved_definitions(path).map_err(|message| AgentError::Register {
                what: "the saved registrations".into(),
                message,
            })?;
            for def in saved.services {
                let what = format!("saved service {:?}", def.id);
                services.push((what, def, checks::Origin::Api));
            }
            for def in saved.checks {
                let what = format!("saved check {:?}", def.id);
                checks.push((what, def, checks::Origin::Api));
            }
        }
        Ok(Self { services, checks })
    }

    /// Registers this node, then the configured services and checks.
    async fn register(&self, local: &local::LocalAgent) -> Result<(), AgentError> {
        let err = |what: &str, e: local::LocalError| AgentError::Register {
            what: what.to_string(),
            message: e.to_string(),
        };
        local
            .register_self()
            .await
            .map_err(|e| err("this node", e))?;
        // A saved registration this run no longer accepts (script checks
        // now disabled) is dropped with a warning; a configured one stops
        // the agent, as at first start. Failed writes are retried.
        let judge = |what: &str, origin: checks::Origin, r: Result<(), local::LocalError>| match r {
            Err(e @ local::LocalError::Write(_)) => Err(err(what, e)),
            Err(e) if origin == checks::Origin::Api => {
                tracing::warn!("{what} is not registered again: {e}");
                Ok(())
            }
            other => other.map_err(|e| err(what, e)),
        };
        for (what, def, origin) in &self.services {
            let r = local
                .register_service_from(def.clone(), false, *origin)
                .await;
            judge(what, *origin, r)?;
        }
        for (what, def, origin) in &self.checks {
            let r = local.register_check(def.clone(), *origin).await;
            judge(what, *origin, r)?;
        }
        Ok(())
    }
}

fn fmt_addr(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "?".into(), |a| a.to_string())
}
