//! trellis: DNS-first service discovery.
#![allow(missing_docs)]
pub mod agent;
pub mod catalog;
pub mod consensus;
pub mod http;
