//! Network coordinates: serf's Vivaldi, which gives every node a point so
//! that the distance between two points estimates the round trip between
//! the two nodes, without measuring every pair.
//!
//! This module is pure (no sockets, no clock): [`point`] is a coordinate
//! and its arithmetic, in Consul's JSON; [`client`] is one node's update
//! rule (the latency filter, the Vivaldi step, the adjustment window,
//! gravity); [`near`] orders nodes and datacenters by estimated round trip
//! as Consul's `?near=` and `/v1/catalog/datacenters` do.
//!
//! The parameters and every step follow serf's `coordinate` package
//! (hashicorp/serf `coordinate/{config,client,coordinate}.go`), and its
//! tests' expectations are ours (`tests.rs`): a Consul tool that reads our
//! `/v1/coordinate/*` answers computes the same estimates from them.
//!
//! The measuring is gossip's (a coordinate ping/pong beside foca's
//! probes, `gossip::wire`); the cache of every peer's latest coordinate
//! lives there too.

pub mod client;
pub mod near;
pub mod point;

#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::Client;
pub use point::Coordinate;

/// The Vivaldi parameters; [`Config::default`] is serf's.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Dimensions of the Euclidean part (serf: 8).
    pub dimensionality: usize,
    /// The error a fresh coordinate starts with, and the cap (1.5).
    pub error_max: f64,
    /// How fast the error estimate follows new samples (0.25).
    pub vivaldi_ce: f64,
    /// How far one sample moves the point (0.25).
    pub vivaldi_cc: f64,
    /// How many residuals the adjustment averages (20); 0 turns it off.
    pub adjustment_window: usize,
    /// The least height, in seconds (10 µs).
    pub height_min: f64,
    /// How many round trips per peer the median is taken over (3).
    pub latency_filter_size: usize,
    /// Gravity's scale, in seconds (150): the pull to the origin grows
    /// with the square of the distance over this.
    pub gravity_rho: f64,
    /// A fixed seed for the random direction two coincident points part
    /// in, for reproducible simulations; `None` draws one.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dimensionality: 8,
            error_max: 1.5,
            vivaldi_ce: 0.25,
            vivaldi_cc: 0.25,
            adjustment_window: 20,
            height_min: 10.0e-6,
            latency_filter_size: 3,
            gravity_rho: 150.0,
            seed: None,
        }
    }
}

/// One datacenter's servers and their WAN coordinates, as Consul's
/// `DatacenterMap` lists them: what a server tells a client agent over
/// server RPC for `/v1/coordinate/datacenters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatacenterCoordinates {
    /// The datacenter.
    pub datacenter: String,
    /// Each server's node name (without the WAN pool's `.dc` suffix) and
    /// coordinate, by name.
    pub nodes: Vec<(String, Coordinate)>,
}

/// Why a coordinate or a measurement was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoordinateError {
    /// A configuration with no dimensions.
    #[error("dimensionality must be > 0")]
    Dimensionality,
    /// A coordinate of another space.
    #[error("dimensions aren't compatible: ours {ours}, theirs {theirs}")]
    Incompatible {
        /// Our dimensionality.
        ours: usize,
        /// The other's.
        theirs: usize,
    },
    /// A coordinate with a NaN or infinite part.
    #[error("coordinate is invalid")]
    Invalid,
    /// A round trip longer than [`client::MAX_RTT`].
    #[error("round trip time {0:?} not in valid range [0, 10s]")]
    Rtt(Duration),
}
