//! trellis: DNS-first service discovery, a Consul-compatible agent.
//!
//! A write takes this road through the modules. A service registers with its
//! local agent over the HTTP API ([`http`]); the agent's own record of its
//! services ([`local`]) is the source of truth for them, checks the
//! definition by Consul's rules ([`definition`], the same rules configuration
//! files pass) and turns the registration into a catalog [`catalog::Command`]. On a server,
//! [`consensus`] proposes the command to openraft (forwarding it over server
//! RPC, [`rpc`], when another server leads); a client agent sends it to a
//! server first ([`rpc::ServerLink`]), and [`delegate::Delegate`] hides which
//! road a given agent takes. The log lives in redb ([`store`]) and is
//! acknowledged only once durably committed on a quorum; when the entry
//! commits, every server's state-machine adapter applies it to that server's
//! [`catalog::Replica`], and every client's link applies it to the client's
//! replica from the change stream its server sends. The catalog itself is a
//! pure, deterministic state machine ([`catalog::State`]) that also
//! republishes the health-filtered [`catalog::view::View`] for every service
//! the write touched. Anti-entropy (in [`local`]) repairs whatever of
//! the agent's own entries drifted since.
//!
//! A read takes the shortest road. DNS ([`dns`]) loads the current view through
//! an `ArcSwap`, shuffles and encodes: it never waits for Raft, storage, a
//! writer or the network. The HTTP API reads the catalog under a brief read
//! lock and, for blocking queries, waits on the replica's applied-index watch.
//!
//! Membership comes from gossip ([`gossip`]): every agent joins a LAN pool
//! run by foca over UDP, which finds dead members within about a second and
//! tells servers from clients. Servers find each other through it, clients
//! find servers, and the leader turns it into catalog state ([`reconcile`]):
//! a failed machine's `serfHealth` check goes critical and its services leave
//! every answer.
//!
//! Around them: [`config`] merges defaults, files and flags into one settings
//! struct per subsystem, a leaf that imports none of the parts; [`agent`]
//! sets the parts up from their settings (binds the listeners, opens
//! storage), runs them, and owns the shutdown order;
//! [`cli`] is the command line, whose subcommands other than `agent` talk to a
//! running agent over HTTP.

pub mod agent;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod definition;
pub mod delegate;
pub mod dns;
pub mod gossip;
pub mod http;
pub mod local;
pub mod reconcile;
pub mod rpc;
pub mod store;
