//! The replicated data model as a pure state machine.
//!
//! [`Catalog`] holds nodes, service instances and checks, and changes only
//! through [`Catalog::apply`], which is deterministic: no clock, no randomness,
//! no I/O. Every server applies the same Raft log to its own `Catalog` and ends
//! in the same state. Read queries return borrowed data plus the index a
//! blocking query should wait on.
//!
//! [`Replica`] is one process's applied copy: the catalog behind a lock for the
//! HTTP API, the health-filtered [`view::View`] behind an `ArcSwap` for DNS, and
//! a watch channel of the applied index for blocking queries.

mod command;
mod replica;
mod shards;
mod state;
mod types;
pub mod view;

#[cfg(test)]
mod tests;

pub use command::{CatalogError, CatalogOp, Command, Outcome};
pub use replica::{Replica, Since};
pub use state::{Catalog, Changes, HealthEntry, Instance};
pub use types::*;
