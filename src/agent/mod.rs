//! One node's process: its identity, its own services and checks, and (later)
//! the wiring that starts every subsystem and owns the shutdown order.

pub mod local;
