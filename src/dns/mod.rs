//! DNS: Consul's name forms answered from the catalog's lock-free view,
//! static zones answered from files, everything else forwarded.
//!
//! The pieces, in the order a query meets them:
//! - `server/` ([`serve`]): the sockets. UDP goes through the worker
//!   threads of `server/udp.rs`, TCP through the connection-capped accept
//!   loop of `server/tcp.rs`; both hand raw bytes first to
//! - `wire/` ([`Responder::respond_wire`]): the fast path, which answers
//!   the bulk of traffic (A, AAAA and SRV for service and node names of our
//!   datacenter) by writing the response's bytes straight from the request
//!   and the view, with no allocation and no memo; what it does not answer
//!   goes to
//! - [`Responder`] (`respond.rs`): the pure decision for one request. It
//!   validates the message (FORMERR, NOTIMP, BADVERS), then asks, in turn,
//! - `answer.rs` for names under our domain and reverse names of catalog
//!   addresses, using `name.rs` to classify the name and `shuffle.rs` to
//!   reorder instances, and with ACLs on `access.rs` to leave out what the
//!   agent's default token may not read (a name left with nothing is
//!   NXDOMAIN),
//! - `zones.rs` for names in the static zone files,
//! - and otherwise returns [`Reply::Forward`], which the server resolves with
//!   `forward.rs` (UDP, TCP on truncation, each recursor in turn).
//!
//! A name of another datacenter (`web.service.dc2.consul`) is
//! [`Reply::OtherDatacenter`]: the server asks that datacenter's servers
//! (`server/remote.rs`, off the worker threads), whose own responder
//! answers it ([`Answerer`]); NXDOMAIN (with our SOA) for a datacenter
//! nobody knows, SERVFAIL for one whose servers do not answer.
//!
//! Every response is fitted to the client's packet size by `fit.rs`; a
//! plain UDP response also to ten times the request's size, so we are no
//! amplifier. With `rrl_rate` set, UDP answers to each source prefix are
//! rate-limited by `rrl.rs` before anything is looked up.
//! Nothing on the path for our own names awaits anything: the view is an
//! `Arc` loaded from an `ArcSwap`.

mod access;
mod answer;
mod config;
mod fit;
mod forward;
mod name;
mod respond;
mod rrl;
mod server;
mod shuffle;
mod wire;
mod zones;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use access::Caller;
pub use fit::Transport;
pub use respond::{Reply, Responder};
pub use server::{Answerer, serve, set_reuse_port};
pub use wire::Scratch;

/// Why the DNS server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The configured domain is not a valid DNS name.
    #[error("invalid DNS domain {0:?}")]
    Domain(String),
    /// The configured datacenter is not a single DNS label.
    #[error("invalid datacenter name {0:?} for DNS")]
    Datacenter(String),
    /// A zone directory or file could not be read.
    #[error("reading zones from {}: {source}", path.display())]
    ZoneDir {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A zone file is invalid; `line` is 0 when the problem is the whole file.
    #[error("zone file {}:{line}: {message}", path.display())]
    Zone {
        /// The file.
        path: PathBuf,
        /// The first line of the offending entry (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A socket task failed.
    #[error("DNS server: {0}")]
    Server(String),
}
