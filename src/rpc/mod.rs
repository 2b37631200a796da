//! Server RPC (port 8300, TCP): Raft traffic between servers, requests
//! forwarded to the leader (writes, read-index for `?consistent`, joins and
//! removals), and client agents' calls (their writes, consistent reads and
//! the change stream their replicas follow), over persistent connections carrying length-prefixed postcard
//! frames. Not HTTP per message: a heartbeat is a few dozen bytes on a
//! connection that is already open.
//!
//! - `frame`: the wire format and its size limits;
//! - `message`: what travels, tagged with call ids so calls pipeline;
//! - `client`: the [`Pool`] of connections to other servers;
//! - `server`: the accept loop and the dispatch to consensus;
//! - `link`: a client agent's side: its server, its writes and reads, and
//!   the change stream that keeps its replica current.

pub mod client;
pub mod frame;
pub mod link;
pub mod message;
pub mod server;
pub mod types;

pub use client::{Pool, RpcError};
pub use link::ServerLink;
pub use message::{Hello, Member, Request, Response};
