//! trellis: DNS-first service discovery, a Consul-compatible agent.
//!
//! The modules, in the order data flows through them.
//!
//! The data: [`catalog`] is the replicated data model, a pure and
//! deterministic state machine of tables ([`catalog::State`]) that applies
//! one [`catalog::Command`] at a time and says what it touched
//! ([`catalog::Touched`]). Each process keeps its applied copy in a
//! [`catalog::Replica`], which republishes the health-filtered
//! [`catalog::view::View`] of every service a write touched.
//!
//! How a write reaches it: [`consensus`] is openraft's glue on a server. It
//! batches commands into log entries, has a quorum commit them, and applies
//! each committed entry to the server's replica; a server that does not lead
//! forwards the write to the one that does. The log and snapshots live in
//! redb through [`store`], in versioned formats, and an entry is acknowledged
//! only once redb committed it durably. [`rpc`] is server RPC by audience, on
//! a versioned connection preface: Raft between servers, running the cluster
//! (discovery, joins, a follower's calls to its leader), and client agents,
//! whose [`rpc::ServerLink`] sends their writes to a server and follows its
//! change stream ([`rpc::client::FollowAnswer`]) to keep their own replica
//! current. openraft's type configuration ([`rpc::types`]) and the errors
//! answers carry live there too, so consensus builds on rpc and never the
//! other way.
//!
//! Where writes come from: [`local`] is this agent's own services and checks,
//! the source of truth for them. It runs their health checks
//! ([`local::checks`]), validates every definition by Consul's rules in
//! [`definition`] (the same rules configuration files pass, with one
//! duration grammar), writes each change through as a catalog command, and
//! repairs drift by anti-entropy. [`delegate::Delegate`] is the one way to
//! the cluster that the local state and the HTTP API take: a server's own
//! consensus, or a client agent's link to a server.
//!
//! The process: [`agent`] sets the parts up from their settings (binds the
//! listeners, opens storage), runs them, and owns the shutdown order;
//! [`config`] merges defaults, files and flags into one settings struct per
//! subsystem, a leaf that imports none of the parts it configures; [`heap`]
//! hands the memory a start or an install freed back to the kernel.
//!
//! The reads: the HTTP API ([`http`]) reaches data through one extractor
//! that knows the request's datacenter and consistency mode; it reads the
//! catalog under a brief read lock and, for blocking queries, waits on the
//! replica's applied-index watch. DNS ([`dns`]) takes the shortest road: it
//! loads the current view through an `ArcSwap`, shuffles and encodes, and
//! never waits for Raft, storage, a writer or the network.
//!
//! Membership: every agent joins a LAN pool run by foca over UDP
//! ([`gossip`]), which finds dead members within about a second and tells
//! servers from clients. Servers find each other through it, clients find
//! servers, and the leader turns it into catalog state ([`reconcile`]): a
//! failed machine's `serfHealth` check goes critical and its services leave
//! every answer. The leader is also the clock over the replicated state
//! ([`expiry`]): it proposes the expiry of sessions whose TTL ran out and
//! the reaping of old KV tombstones, both dated in the catalog itself, so a
//! new leader carries on where the last one stopped.
//!
//! Several datacenters: servers also join a WAN pool, a second [`gossip`]
//! pool of every datacenter's servers with WAN timing; [`datacenters`]
//! turns its membership into the datacenters this agent knows and the
//! route to each, which `/v1/catalog/datacenters` lists.
//!
//! Gossip also measures: beside foca's probes each member pings one
//! random member with its network coordinate ([`coordinate`], serf's
//! Vivaldi), learns from the round trip and keeps its peers' coordinates,
//! which order `?near=` answers and, from the WAN pool, datacenters.
//!
//! Requests for another datacenter: [`remote`] is the one way one goes
//! there (HTTP `?dc=`, DNS names of another datacenter): over server RPC's
//! datacenter family to a server of that datacenter, which runs it through
//! its own HTTP router or DNS responder. A client agent's request goes
//! through its own server.
//!
//! TLS ([`tls`]) turns the PEM files the configuration names into rustls
//! configurations, held so SIGHUP swaps new certificates in without a
//! restart: the HTTPS listener serves the same router as HTTP from them,
//! and server RPC takes its accepting and dialling sides from them too.
//!
//! What keeps one client from starving the rest: [`per_client`] counts what
//! each client IP holds (connections, parked blocking queries) under the
//! caps of the `limits` settings, for the HTTP, server RPC and DNS TCP
//! listeners alike; the HTTP and DNS TCP listeners take each connection
//! through [`accept`], which pauses on a failed accept instead of spinning.
//!
//! Who may do what: [`acl`] parses Consul's ACL rules (HCL or JSON) into
//! policies and merges a token's policies into an [`acl::Authorizer`] that
//! answers "may read service `web`?" with a walk down a prefix tree. DNS
//! asks it as the agent's default token, and leaves out what that token
//! may not read; client agents hold tokens without their secrets and
//! resolve them by the secret's hash.
//!
//! Last, [`cli`] is the command line: `agent` runs one, `validate` and
//! `keygen` and `tls` work alone, and the other subcommands talk to a
//! running agent over HTTP or HTTPS.

pub mod accept;
pub mod acl;
pub mod agent;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod coordinate;
pub mod datacenters;
pub mod definition;
pub mod delegate;
pub mod dns;
pub mod expiry;
pub mod gossip;
pub mod heap;
pub mod http;
pub mod initial_management;
pub mod local;
pub mod per_client;
pub mod prepared_query;
pub mod reconcile;
pub mod remote;
pub mod rpc;
pub mod store;
pub mod tls;
