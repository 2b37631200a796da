//! The test kit of trellis: one way to run real `trellis` agents for the
//! integration tests (`tests/integration`) and the benchmark programs
//! (`benches/`).
//!
//! The caller names the binary ([`Trellis`]; only trellis's own tests and
//! benches can see `CARGO_BIN_EXE_trellis`) and launches agents from a typed
//! builder ([`AgentBuilder`]): role, node, data dir, address, ports, join
//! addresses, gossip key. An [`Agent`] is its process ([`Process`], the one
//! guard that kills on drop and can kill, pause, resume, terminate), its
//! log ([`Log`]) and the addresses it reported in its `listening` line,
//! parsed in one place ([`Listening`]); it restarts as the same machine.
//! A [`Cluster`] names its members (`s1`, `c2`), finds the leader and waits
//! for it to form or converge. A [`Federation`] is several datacenters'
//! clusters joined in the WAN pool. Every wait has a deadline and says what it
//! waited for and what it saw last ([`wait_until`]); every agent answers
//! HTTP ([`Resp`]) and DNS ([`dns`]) questions.

pub mod agent;
pub mod api;
pub mod cluster;
pub mod dns;
pub mod federation;
pub mod http;
pub mod listening;
pub mod load;
pub mod log;
pub mod net;
pub mod netns;
pub mod process;
pub mod wait;

pub use agent::{Agent, AgentBuilder, Role, Trellis};
pub use api::{Consistency, ServiceView, register_body};
pub use cluster::{Cluster, ClusterBuilder};
pub use federation::{Federation, FederationBuilder};
pub use http::Resp;
pub use listening::Listening;
pub use load::Load;
pub use log::Log;
pub use net::{Placement, next_loopback, next_loopback_in};
pub use process::{Life, OnDrop, Process};
pub use wait::{
    CLIENT_TIMEOUT, FORM_DEADLINE, SETTLE_DEADLINE, Timeout, try_wait_until, try_wait_until_async,
    wait_until, wait_until_async,
};
