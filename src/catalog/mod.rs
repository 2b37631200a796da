//! The replicated data model: a pure state machine of tables.
//!
//! Every server applies the same Raft log to its own [`State`] and ends in
//! the same state, because applying is deterministic: no clock, no
//! randomness, no I/O (whatever depends on time is decided by the proposer
//! and carried in the command). The layout, in the order a write goes:
//!
//! - `command.rs`: what the log carries. A [`Command`] has one variant per
//!   domain, each with its own ops ([`CatalogOp`] for nodes, services and
//!   checks), and [`Outcome`] is what applying one produced.
//! - `state.rs`: the state store [`State`], every table plus the last
//!   applied index, and [`State::apply`], the one place a command is
//!   dispatched to its domain.
//! - `rules.rs`: the rules that span tables (register and deregister over
//!   nodes, services and checks; a node's removal takes its services and
//!   checks; a check names an instance on its node) and [`Touched`], what a
//!   change touched for the DNS view.
//! - `tables/`: one file per table (`nodes.rs`, `services.rs`, `checks.rs`),
//!   each owning its rows, its derived lookups and the index of its last
//!   change, with the write rules that concern it alone.
//! - `query.rs`: the reads, joined across tables, and the index each answer
//!   last changed at (what a blocking query waits on).
//! - `snapshot.rs`: [`StateSnapshot`], the persisted form of the state that
//!   Raft stores and servers send to peers and clients that are behind.
//! - `capture.rs`: [`StateCapture`], the state marked at one index and
//!   encoded as a snapshot a slice at a time while writes go on (each table
//!   saving what a write replaced: `tables/captured.rs`).
//! - `replica.rs`: [`Replica`], one process's applied copy: the state behind
//!   a lock for the HTTP API, the health-filtered [`view::View`] (`view.rs`,
//!   over the copy-on-write maps of `shards.rs`) behind an `ArcSwap` for DNS,
//!   a watch channel of the applied index for blocking queries, and on
//!   servers the recent history that client agents follow (`history.rs`:
//!   the newest entries as applied, older ones as their encoded bytes).
//! - `types.rs`: the records (node, service instance, check) and what a
//!   registration and a deregistration carry.
//!
//! Where the coming domains go: KV, sessions, tombstones (the KV deletions a
//! blocking query must still see), prepared queries and ACLs are each a file
//! in `tables/` and a field in `tables::Tables` and in [`StateSnapshot`];
//! each writing domain is a [`Command`] variant with its own ops and one arm
//! in [`State::apply`] (a transaction is a variant holding a list of the
//! others' ops); their reads join `query.rs` (or a `query/` folder once it
//! grows); and their cross-table rules (a session invalidated when its node
//! is deregistered or a check of it turns critical, its KV locks released)
//! go to `rules.rs`.

mod acl_types;
mod bulk_map;
mod capture;
mod command;
mod history;
mod kv_types;
mod meta;
mod prepared_query;
mod query;
mod replica;
mod rules;
mod shards;
mod snapshot;
mod state;
mod tables;
mod tags;
mod thin_str;
mod tokens;
mod types;
pub mod view;

#[cfg(test)]
mod tests;

pub use acl_types::*;
pub use capture::{CaptureError, Secrets, StateCapture};
pub use command::{CatalogError, CatalogOp, Command, KvError, Outcome, SessionError};
pub use history::{Applied, Pending, Since, encoded_size};
pub use kv_types::*;
pub use prepared_query::*;
pub use query::{HealthEntry, Instance, NodeHealth};
pub use replica::{Captured, Installed, Replica};
pub use rules::Touched;
pub use snapshot::{
    StateSnapshot, StateSnapshotRef, StateSnapshotV2, StateSnapshotV3, StateSnapshotV4,
};
pub use state::State;
pub use tokens::{AclContext, Resolved, Tokens};
pub use types::*;
