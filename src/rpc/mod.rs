//! Server RPC (port 8300, TCP) by audience: Raft traffic between servers,
//! running the cluster (discovery, joins and removals, and the writes and
//! read-index calls a follower forwards to its leader), and client agents'
//! calls (their writes, consistent reads and the change stream their
//! replicas follow). Persistent connections open with a versioned preface,
//! then carry length-prefixed postcard frames. Not HTTP per message: a
//! heartbeat is a few dozen bytes on a connection that is already open.
//!
//! - `preface`: the magic and protocol version each side sends first; a
//!   peer of another version is refused;
//! - `secure`: before the preface, plain TCP or TLS (`tls.internal_rpc`),
//!   and whether the peer's certificate is a server's;
//! - `proof`: then, with gossip encryption on, each side proves it holds
//!   the cluster's key, so no outsider gets to send a frame;
//! - `frame`: the wire format and its size limits;
//! - `message`: what travels, by family, tagged with call ids so calls
//!   pipeline;
//! - `raft`, `cluster`, `client`: each family's requests, answers and the
//!   handler trait a server answers them with (consensus implements them);
//! - `datacenter`: the fourth family, requests from servers of other
//!   datacenters (and a client agent's requests for them), answered by the
//!   agent's own HTTP router and DNS responder;
//! - `catchup`: a client behind its server's history fetching the server's
//!   state in chunks, and the one encoding of it the server keeps for that;
//! - `fanout`: the entries a follow poll gets, encoded once for every
//!   client that asks for the same range, and spliced into each answer;
//! - `types`: openraft's type configuration, which Raft's messages carry;
//! - `errors`: why a write, a consistent read or a membership change failed,
//!   as answers carry it;
//! - `pool`: the [`Pool`] of connections to servers;
//! - `server`: the accept loop and the dispatch to the handlers;
//! - `link`: a client agent's side: its server, its writes and reads, and
//!   the change stream that keeps its replica current.
//!
//! Nothing here depends on consensus: consensus builds on these types and
//! implements the handlers.

pub mod catchup;
pub mod client;
pub mod cluster;
pub mod datacenter;
pub mod errors;
pub mod fanout;
pub mod frame;
pub mod link;
pub mod message;
pub mod pool;
pub mod preface;
pub mod proof;
pub mod raft;
pub mod secure;
pub mod server;
pub mod types;

pub use cluster::{Configuration, Hello, RaftServer, ServerEntry};
pub use errors::{MembershipError, ReadError, WriteError};
pub use link::ServerLink;
pub use message::{Request, Response};
pub use pool::{Pool, RpcError};
pub use proof::ClusterKey;
pub use secure::Credentials;
