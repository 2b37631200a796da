//! One node's process, in two steps: `Agent::setup` binds the listeners,
//! opens storage and builds each part from its own settings; `Agent::run`
//! registers the node, serves DNS and HTTP until shutdown, then stops the
//! parts in the order below (`Running::stop` is that order in code).
//!
//! Shutdown order (on SIGINT/SIGTERM, or when a part fails):
//! 1. stop accepting: cancel the DNS and HTTP servers and wait for them to
//!    finish the requests in flight;
//! 2. stop the health checks and anti-entropy (no more writes from them);
//! 3. stop the tasks beside serving (the reconciler, the leader's expiry
//!    timers, a client's follow, the WAN pool's joins), then leave the WAN
//!    pool and the LAN pool, in that order (or just stop gossiping;
//!    `leave_on_terminate`);
//! 4. shut Raft down, which flushes and closes the redb log store;
//! 5. log `shutdown complete`.

mod datacenter;
mod distances;
mod fd_limit;
mod listeners;
pub(crate) mod pool;
mod prepared_query;
mod register;
mod server;
mod settings;
mod stop;
mod wan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::listeners::{Addrs, Listeners};
use self::register::{Definitions, upkeep};
use self::server::ServerParts;
use self::settings::{
    check_state_dir, cluster_key, definitions_file, generation_file, gossip_key, local_identity,
    node_id,
};
use self::stop::Running;
use crate::catalog::Replica;
use crate::config::{Config, DnsSettings, KvSettings, LimitsSettings, NodeSettings};
use crate::delegate::Delegate;
use crate::gossip::{Gossip, GossipConfig, Profile, Role};
use crate::local::{self, checks};

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
    /// The TLS files cannot be used.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
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

/// Runs the agent until `shutdown` is cancelled or a part fails.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    Agent::setup(cfg).await?.run(shutdown).await
}

/// An agent set up and not yet serving: every part built, the listeners
/// bound, the gossip pool joined in the background.
struct Agent {
    /// When setup began, for the `ready_in_ms` of the listening line.
    started: Instant,
    /// Name and datacenter, for the listening line.
    node: NodeSettings,
    /// How often anti-entropy runs.
    ae_interval: Duration,
    /// Leave the gossip pool gracefully at shutdown.
    leave_on_terminate: bool,
    /// A server that bootstraps alone: it leads at once, so it registers
    /// before it serves.
    lone: bool,
    /// The DNS server's settings (it answers for `node.datacenter`).
    dns: DnsSettings,
    /// The KV store's and sessions' settings, for the HTTP API.
    kv: KvSettings,
    acl: crate::config::AclSettings,
    /// Per-client caps and timeouts, for the DNS and HTTP listeners.
    limits: LimitsSettings,
    /// DNS over UDP, not yet served.
    dns_udp: UdpSocket,
    /// DNS over TCP, not yet served.
    dns_tcp: TcpListener,
    /// The HTTP API, not yet served.
    http: TcpListener,
    /// The HTTPS API, not yet served; with `ports.https` on.
    https: Option<TcpListener>,
    /// The TLS material, reloaded on SIGHUP; HTTPS serves from it.
    tls: Arc<crate::tls::Tls>,
    /// The bound addresses, for the listening line.
    addrs: Addrs,
    /// The catalog as this node sees it.
    replica: Arc<Replica>,
    /// Where writes and consistent reads go: this server's Raft, or the
    /// servers through the client link.
    delegate: Delegate,
    /// The LAN pool.
    gossip: Arc<Gossip>,
    /// The WAN pool (servers) and the datacenters it makes known.
    wan: wan::Wan,
    /// The tasks that follow the pool (join, generation, servers, the
    /// reconciler and the leader's expiry timers, or the client's follow),
    /// stopped after serving.
    background: Background,
    /// This node's services and checks.
    local: Arc<local::LocalAgent>,
    /// What to register at start.
    definitions: Definitions,
    /// Raft and server RPC; servers only.
    server: Option<ServerParts>,
    /// The way to other datacenters, and what answers them here.
    far: datacenter::Far,
}

/// Tasks that run beside serving under one token.
struct Background {
    token: CancellationToken,
    tasks: JoinSet<()>,
}

impl Agent {
    /// Binds the listeners, opens storage and starts Raft (servers), starts
    /// gossip and its followers, and builds the local state.
    async fn setup(cfg: Config) -> Result<Self, AgentError> {
        let started = Instant::now();
        let Config {
            node,
            network,
            dns,
            raft,
            gossip,
            checks,
            services,
            kv,
            limits,
            log: _,
            tls,
            acl,
            wan: wan_settings,
        } = cfg;
        // DNS answers as the default token, as Consul's.
        let dns = DnsSettings {
            acl_token: acl
                .enabled
                .then(|| acl.default_token.clone().unwrap_or_default()),
            translate_wan_addrs: wan_settings.translate_wan_addrs,
            ..dns
        };
        let acl_context = crate::catalog::AclContext {
            default: acl.default_policy,
            datacenter: node.datacenter.clone(),
        };
        let tls = Arc::new(crate::tls::Tls::load(tls, &node.datacenter, &dns.domain)?);
        let open_files = fd_limit::raise();
        tracing::debug!(open_files, "open-file limit");
        let listeners = Listeners::bind(&network, raft.server).await?;
        // Other servers reach this one at the advertised address and the
        // port actually bound (port 0 picks one).
        let rpc_port = listeners
            .rpc
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(network.ports.server, |a| a.port());
        let rpc_addr = SocketAddr::new(network.advertise_addr, rpc_port);
        let addrs = Addrs {
            dns: listeners.dns_udp.local_addr().ok(),
            http: listeners.http.local_addr().ok(),
            https: listeners.https.as_ref().and_then(|l| l.local_addr().ok()),
            rpc: listeners.rpc.as_ref().map(|_| rpc_addr),
            serf_lan: listeners.serf_lan.local_addr().ok(),
            serf_wan: listeners
                .serf_wan
                .as_ref()
                .and_then(|s| s.local_addr().ok()),
        };

        // How this agent talks server RPC: TLS per `tls.internal_rpc`, and
        // the membership proof keyed on the gossip key.
        let credentials = crate::rpc::Credentials {
            cluster_key: cluster_key(&gossip),
            tls: Some(tls.clone()),
        };
        let (replica, delegate, server) = match listeners.rpc {
            Some(rpc) => {
                let rpc_limits = crate::rpc::server::ConnLimits {
                    max_conns_per_client: limits.rpc_max_conns_per_client,
                    handshake_timeout: limits.rpc_handshake_timeout,
                };
                let server = ServerParts::start(
                    &node,
                    &raft,
                    rpc_addr,
                    rpc,
                    credentials.clone(),
                    rpc_limits,
                )
                .await?;
                (
                    server.consensus.replica().clone(),
                    Delegate::Server(server.consensus.clone()),
                    Some(server),
                )
            }
            None => {
                let replica = Arc::new(Replica::new());
                let link = Arc::new(crate::rpc::ServerLink::new(
                    replica.clone(),
                    credentials.clone(),
                ));
                (replica, Delegate::Client(link), None)
            }
        };

        // The node ID is the node's identity in the pool, so it is known
        // before gossip starts.
        let node_id = node_id(&node).map_err(|e| AgentError::Register {
            what: "the node ID file".into(),
            message: e.to_string(),
        })?;
        let generation_file = generation_file(&node);
        let pool = Arc::new(
            Gossip::start(GossipConfig {
                socket: listeners.serf_lan,
                name: node.name.clone(),
                node_id,
                role: if raft.server {
                    Role::Server
                } else {
                    Role::Client
                },
                dc: node.datacenter.clone(),
                rpc_addr: raft.server.then_some(rpc_addr),
                generation_floor: generation_file
                    .as_deref()
                    .map_or(0, pool::stored_generation),
                key: gossip_key(&gossip),
                profile: Profile::lan(),
            })
            .map_err(|e| AgentError::Task(format!("gossip: {e}")))?,
        );
        // The WAN pool: servers only, the same node ID and key, RPC as the
        // other datacenters reach it.
        let wan_rpc = SocketAddr::new(network.advertise_addr_wan, rpc_port);
        let wan = wan::Wan::start(
            &node.datacenter,
            listeners.serf_wan.map(|socket| wan::WanMember {
                socket,
                node: &node,
                node_id,
                rpc_addr: wan_rpc,
                key: gossip_key(&gossip),
                reconnect_timeout: wan_settings.reconnect_timeout,
            }),
        )?;
        let slot = server.as_ref().map(|s| s.datacenters.clone());
        let far = datacenter::Far::new(
            wan.datacenters.clone(),
            &delegate,
            &credentials,
            wan_rpc,
            &dns,
            slot,
        );
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let consensus = server.as_ref().map(|s| s.consensus.clone());
        wan.follow(
            &mut tasks,
            wan_settings,
            &node,
            pool.clone(),
            consensus,
            &token,
        );
        tasks.spawn(pool::retry_join(
            pool.clone(),
            gossip.retry_join.clone(),
            token.clone(),
        ));
        if let Some(path) = generation_file {
            tasks.spawn(pool::remember_generation(pool.clone(), path, token.clone()));
        }
        tasks.spawn(pool::feed_servers(
            pool.clone(),
            delegate.clone(),
            node.datacenter.clone(),
            token.clone(),
        ));
        if acl.enabled {
            replica.enable_acl(acl_context);
        }
        match &delegate {
            Delegate::Server(consensus) => {
                if let Some(secret) = acl.initial_management.clone().filter(|_| acl.enabled) {
                    tasks.spawn(crate::initial_management::run(
                        consensus.clone(),
                        replica.clone(),
                        secret,
                        token.clone(),
                    ));
                }
                tasks.spawn(crate::reconcile::run(
                    pool.subscribe(),
                    consensus.clone(),
                    replica.clone(),
                    node.datacenter.clone(),
                    gossip.reconnect_timeout,
                    token.clone(),
                ));
                tasks.spawn(crate::expiry::run(
                    consensus.clone(),
                    replica.clone(),
                    kv,
                    token.clone(),
                ));
            }
            Delegate::Client(link) => {
                tasks.spawn(link.clone().follow(token.clone()));
            }
        }
        // Registered now, before the agent says it listens: from then on a
        // SIGHUP reloads the TLS files instead of ending the process.
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| AgentError::Task(format!("installing the SIGHUP handler: {e}")))?;
        tasks.spawn(tls.clone().reload_on_sighup(hup, token.clone()));
        let background = Background { token, tasks };

        let mut local = local::LocalAgent::new(
            local_identity(&node, &network, &raft, rpc_addr, node_id.to_string()),
            delegate.clone(),
        )
        .with_check_settings(checks);
        if let Some(dir) = check_state_dir(&node) {
            local = local.with_check_state_dir(dir);
        }
        if raft.bootstrap_expect != 1 {
            // In a cluster the leader, which may be another server, owns this
            // node's serfHealth. A lone server leads and sees itself alive, so
            // it writes the same check itself, before it first answers.
            local = local.with_serf_health_from_gossip();
        }
        let saved = definitions_file(&node);
        if let Some(path) = &saved {
            local = local.with_definitions_file(path.clone());
        }
        let definitions = Definitions::load(&services, saved.as_deref())?;
        Ok(Self {
            started,
            dns,
            kv,
            acl,
            limits,
            node,
            ae_interval: services.ae_interval,
            leave_on_terminate: gossip.leave_on_terminate,
            lone: server.is_some() && raft.bootstrap_expect == 1,
            dns_udp: listeners.dns_udp,
            dns_tcp: listeners.dns_tcp,
            http: listeners.http,
            https: listeners.https,
            tls,
            addrs,
            replica,
            delegate,
            gossip: pool,
            wan,
            background,
            local: Arc::new(local),
            definitions,
            server,
            far,
        })
    }

    /// Registers this node and its definitions, serves DNS and HTTP until
    /// `shutdown` is cancelled or a server fails, then stops in order.
    async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let Self {
            started,
            node,
            ae_interval,
            leave_on_terminate,
            lone,
            dns,
            kv,
            acl,
            limits,
            dns_udp,
            dns_tcp,
            http,
            https,
            tls,
            addrs,
            replica,
            delegate,
            gossip,
            wan,
            background,
            local,
            definitions,
            server,
            far,
        } = self;
        let serving = shutdown.child_token();
        let mut tasks = JoinSet::new();
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
        let upkeep = upkeep(
            definitions,
            local.clone(),
            replica.clone(),
            lone,
            ae_interval,
            serving.clone(),
        );
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

        // An agent whose name another live node holds is left out of the
        // pool's view and refused by the catalog: running on would serve a
        // node that does not exist. Stop, so the operator sees why.
        let (mut refusal, token) = (gossip.refusal(), serving.clone());
        tasks.spawn(async move {
            let refused = tokio::select! {
                () = token.cancelled() => return Ok(()),
                refused = async {
                    // `None` if gossip stopped: whatever stopped it is
                    // reported elsewhere.
                    refusal.wait_for(Option::is_some).await.ok().and_then(|r| r.clone())
                } => refused,
            };
            match refused {
                Some(refused) => Err(format!(
                    "{refused}: start this agent under another node name (node_name, --node), \
                     or stop the other node first"
                )),
                None => {
                    token.cancelled().await;
                    Ok(())
                }
            }
        });

        // Prepared queries fail over to other datacenters through the same
        // cross-datacenter calls as `?dc=` (`prepared_query.rs`).
        let prepared_queries = crate::prepared_query::Executor::new(
            replica.clone(),
            node.datacenter.clone(),
            local.identity().node_name.clone(),
            Arc::new(prepared_query::Wan::new(
                far.remote.clone(),
                delegate.clone(),
                node.datacenter.clone(),
            )),
        )
        .with_near_sort(prepared_query::near_sort(gossip.clone()));
        // Other datacenters' DNS queries are answered as ours are.
        let answerer = far.answerer(&dns, &replica)?;
        let (dns_queries, token) = (prepared_queries.clone(), serving.clone());
        let remote_dns = far.remote.clone();
        tasks.spawn(async move {
            crate::dns::serve(
                dns_udp,
                dns_tcp,
                dns,
                &limits,
                dns_queries,
                remote_dns,
                token,
            )
            .await
            .map_err(|e| format!("DNS: {e}"))
        });
        let state = crate::http::ApiState {
            prepared_queries: prepared_queries.clone(),
            replica: replica.clone(),
            delegate: delegate.clone(),
            local: local.clone(),
            gossip: gossip.clone(),
            wan: wan.pool.clone(),
            datacenters: wan.datacenters.clone(),
            shutdown: shutdown.clone(),
            kv,
            acl,
            remote: far.remote.clone(),
        };
        let token = serving.clone();
        let api = crate::http::api(state, &limits, token.clone());
        far.install(api.clone(), answerer);
        let https = https.map(|l| (l, tls));
        tasks.spawn(async move {
            crate::http::serve_api(http, https, api, &limits, token)
                .await
                .map_err(|e| format!("HTTP: {e}"))
        });
        addrs.announce(&node, started);
        crate::heap::release_after_start();

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
        Running {
            serving,
            tasks,
            checks,
            upkeep,
            background,
            gossip,
            wan: wan.pool,
            leave_on_terminate,
            local,
            delegate,
            server,
        }
        .stop()
        .await;
        match failure {
            Some(e) => Err(AgentError::Task(e)),
            None => Ok(()),
        }
    }
}
