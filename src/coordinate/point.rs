//! A point in the Vivaldi space: the Euclidean part, the height, the error
//! estimate and the adjustment, in Consul's JSON (`Vec`, `Error`,
//! `Adjustment`, `Height`), with the vector arithmetic the update step and
//! the distance estimate need.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Config;

/// Below this a length counts as zero: two points closer than a
/// microsecond are on top of each other (serf's threshold).
pub(super) const ZERO_THRESHOLD: f64 = 1.0e-6;

/// A network coordinate. All quantities are seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Coordinate {
    /// The Euclidean part, one entry per dimension.
    pub vec: Vec<f64>,
    /// How sure the owner is of this coordinate: the relative error of its
    /// recent estimates, capped at `Config::error_max` (where it starts).
    pub error: f64,
    /// A per-node offset learnt from the recent estimates' residuals; it
    /// absorbs what the Euclidean model gets wrong at this node.
    pub adjustment: f64,
    /// The distance from the node to the Euclidean core (its access link);
    /// it adds to every estimate and never drops below `Config::height_min`.
    pub height: f64,
}

impl Coordinate {
    /// A node that knows nothing yet: at the origin, maximal error, minimal
    /// height.
    pub fn new(config: &Config) -> Self {
        Self {
            vec: vec![0.0; config.dimensionality],
            error: config.error_max,
            adjustment: 0.0,
            height: config.height_min,
        }
    }

    /// Whether every component is a finite number; anything else would
    /// poison whoever measures against it.
    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|v| v.is_finite())
            && self.error.is_finite()
            && self.adjustment.is_finite()
            && self.height.is_finite()
    }

    /// Whether both live in the same space (same dimensionality).
    pub fn is_compatible_with(&self, other: &Self) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// The estimated round trip to `other`, in seconds: the Euclidean
    /// distance plus both heights, plus both adjustments unless that would
    /// make the estimate zero or negative. `None` when the spaces differ.
    pub fn distance_secs(&self, other: &Self) -> Option<f64> {
        let raw = self.raw_distance(other)?;
        let adjusted = raw + self.adjustment + other.adjustment;
        Some(if adjusted > 0.0 { adjusted } else { raw })
    }

    /// [`Coordinate::distance_secs`] as a duration (saturating; a negative
    /// or invalid estimate is zero).
    pub fn distance_to(&self, other: &Self) -> Option<Duration> {
        self.distance_secs(other).map(secs_to_duration)
    }

    /// The estimate without adjustments, which the adjustment itself is
    /// learnt from. `None` when the spaces differ.
    pub(super) fn raw_distance(&self, other: &Self) -> Option<f64> {
        if !self.is_compatible_with(other) {
            return None;
        }
        Some(magnitude(&diff(&self.vec, &other.vec)) + self.height + other.height)
    }

    /// Moves this point by `force` seconds along the line from `other` to
    /// it (away from `other` when positive), and its height by the same
    /// share, floored at the minimum. Coincident points part in a random
    /// direction. `None` when the spaces differ.
    pub(super) fn apply_force(
        &self,
        config: &Config,
        force: f64,
        other: &Self,
        rng: &mut impl Rng,
    ) -> Option<Self> {
        if !self.is_compatible_with(other) {
            return None;
        }
        let mut moved = self.clone();
        let (unit, mag) = unit_vector_at(&self.vec, &other.vec, rng);
        for (v, u) in moved.vec.iter_mut().zip(&unit) {
            *v += u * force;
        }
        if mag > ZERO_THRESHOLD {
            moved.height = (moved.height + other.height) * force / mag + moved.height;
            moved.height = moved.height.max(config.height_min);
        }
        Some(moved)
    }
}

/// Seconds as a duration: negative, NaN and infinite become zero or the
/// largest duration rather than a panic.
pub(super) fn secs_to_duration(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

pub(super) fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

pub(super) fn magnitude(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The unit vector pointing from `b` to `a`, and the distance between
/// them; when they coincide, a random unit vector and a distance of 0 (the
/// last resort, a unit along the first axis, when even the random vector
/// is too short).
pub(super) fn unit_vector_at(a: &[f64], b: &[f64], rng: &mut impl Rng) -> (Vec<f64>, f64) {
    let d = diff(a, b);
    let mag = magnitude(&d);
    if mag > ZERO_THRESHOLD {
        return (d.iter().map(|x| x / mag).collect(), mag);
    }
    let random: Vec<f64> = d.iter().map(|_| rng.random::<f64>() - 0.5).collect();
    let rmag = magnitude(&random);
    if rmag > ZERO_THRESHOLD {
        return (random.iter().map(|x| x / rmag).collect(), 0.0);
    }
    let mut axis = vec![0.0; a.len()];
    if let Some(first) = axis.first_mut() {
        *first = 1.0;
    }
    (axis, 0.0)
}
