//! The Vivaldi client: one node's coordinate and the state its updates
//! keep (the latency filter per peer, the adjustment window), as serf's
//! `coordinate.Client` does it, step for step, so our coordinates mean what
//! Consul's mean.

use std::collections::HashMap;
use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::SmallRng;

use super::point::{Coordinate, ZERO_THRESHOLD};
use super::{Config, CoordinateError};

/// The longest round trip an update accepts; anything longer is a stall,
/// not the network (serf's bound).
pub const MAX_RTT: Duration = Duration::from_secs(10);

/// One node's Vivaldi state. Not shared: the gossip driver owns it.
#[derive(Debug)]
pub struct Client {
    /// Where this node thinks it is.
    coord: Coordinate,
    /// The origin gravity pulls towards, so the whole system does not drift
    /// away over time.
    origin: Coordinate,
    /// The algorithm's parameters.
    config: Config,
    /// The next slot of `adjustment_samples` to overwrite.
    adjustment_index: usize,
    /// The last `adjustment_window` residuals (measured minus raw estimate).
    adjustment_samples: Vec<f64>,
    /// The last `latency_filter_size` round trips to each peer, by name:
    /// the median of them is what Vivaldi sees, so one slow reply does not
    /// move us.
    latency_samples: HashMap<String, Vec<f64>>,
    /// How often the coordinate turned invalid and was reset to the origin.
    resets: u64,
    /// Picks a direction when two points coincide.
    rng: SmallRng,
}

impl Default for Client {
    /// A client with serf's parameters, at the origin.
    fn default() -> Self {
        Self::at_origin(Config::default())
    }
}

impl Client {
    /// A client at the origin.
    pub fn new(config: Config) -> Result<Self, CoordinateError> {
        if config.dimensionality == 0 {
            return Err(CoordinateError::Dimensionality);
        }
        Ok(Self::at_origin(config))
    }

    /// A client at the origin of a space the caller made sure has
    /// dimensions.
    fn at_origin(config: Config) -> Self {
        let seed = config.seed.unwrap_or_else(rand::random);
        Self {
            coord: Coordinate::new(&config),
            origin: Coordinate::new(&config),
            adjustment_index: 0,
            adjustment_samples: vec![0.0; config.adjustment_window],
            latency_samples: HashMap::new(),
            resets: 0,
            rng: SmallRng::seed_from_u64(seed),
            config,
        }
    }

    /// This node's current coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// The parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces this node's coordinate (a restart restoring the last one).
    pub fn set_coordinate(&mut self, coord: Coordinate) -> Result<(), CoordinateError> {
        self.check(&coord)?;
        self.coord = coord;
        Ok(())
    }

    /// Drops the latency samples of a peer that left, so they neither leak
    /// nor colour its successor under the same name.
    pub fn forget(&mut self, node: &str) {
        self.latency_samples.remove(node);
    }

    /// How many times the coordinate was reset after turning invalid.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// The estimated round trip from this node to `other`.
    pub fn distance_to(&self, other: &Coordinate) -> Option<Duration> {
        self.coord.distance_to(other)
    }

    fn check(&self, coord: &Coordinate) -> Result<(), CoordinateError> {
        if !self.coord.is_compatible_with(coord) {
            return Err(CoordinateError::Incompatible {
                ours: self.coord.vec.len(),
                theirs: coord.vec.len(),
            });
        }
        if !coord.is_valid() {
            return Err(CoordinateError::Invalid);
        }
        Ok(())
    }

    /// Learns from one measured round trip to `node`, whose coordinate is
    /// `other`, and returns our new coordinate. Refused, changing nothing:
    /// a coordinate of another dimensionality or with a non-finite part, a
    /// round trip over [`MAX_RTT`].
    pub fn update(
        &mut self,
        node: &str,
        other: &Coordinate,
        rtt: Duration,
    ) -> Result<&Coordinate, CoordinateError> {
        self.check(other)?;
        if rtt > MAX_RTT {
            return Err(CoordinateError::Rtt(rtt));
        }
        let rtt = self.latency_filter(node, rtt.as_secs_f64());
        self.update_vivaldi(other, rtt);
        self.update_adjustment(other, rtt);
        self.update_gravity();
        if !self.coord.is_valid() {
            self.resets += 1;
            self.coord = Coordinate::new(&self.config);
        }
        Ok(&self.coord)
    }

    /// Appends a sample to the peer's window and returns the window's
    /// median (the upper middle of an even window, as serf).
    pub(super) fn latency_filter(&mut self, node: &str, rtt: f64) -> f64 {
        let size = self.config.latency_filter_size.max(1);
        let samples = self.latency_samples.entry(node.to_owned()).or_default();
        samples.push(rtt);
        if samples.len() > size {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    fn update_vivaldi(&mut self, other: &Coordinate, rtt: f64) {
        // check() made the spaces equal, so the distance exists.
        let Some(dist) = self.coord.distance_secs(other) else {
            return;
        };
        let rtt = rtt.max(ZERO_THRESHOLD);
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        let weight = self.coord.error / total_error;
        let ce = self.config.vivaldi_ce;
        self.coord.error = (ce * weight * wrongness + self.coord.error * (1.0 - ce * weight))
            .min(self.config.error_max);
        let force = self.config.vivaldi_cc * weight * (rtt - dist);
        if let Some(moved) = self
            .coord
            .apply_force(&self.config, force, other, &mut self.rng)
        {
            self.coord = moved;
        }
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        let window = self.config.adjustment_window;
        if window == 0 {
            return;
        }
        let Some(raw) = self.coord.raw_distance(other) else {
            return;
        };
        self.adjustment_samples[self.adjustment_index] = rtt - raw;
        self.adjustment_index = (self.adjustment_index + 1) % window;
        let sum: f64 = self.adjustment_samples.iter().sum();
        // Half the mean residual: each end of a link carries half of it.
        self.coord.adjustment = sum / (2.0 * window as f64);
    }

    fn update_gravity(&mut self) {
        let Some(dist) = self.origin.distance_secs(&self.coord) else {
            return;
        };
        let force = -(dist / self.config.gravity_rho).powi(2);
        if let Some(moved) =
            self.coord
                .apply_force(&self.config, force, &self.origin, &mut self.rng)
        {
            self.coord = moved;
        }
    }

    /// Poisons the coordinate, for the test of the reset.
    #[cfg(test)]
    pub(super) fn poison(&mut self) {
        self.coord.vec[0] = f64::NAN;
    }

    /// Moves the point, for tests that start from a layout.
    #[cfg(test)]
    pub(super) fn place(&mut self, vec: Vec<f64>) {
        self.coord.vec = vec;
    }
}
