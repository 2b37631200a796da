//! The coordinates a member knows: its own (measured by its coordinate
//! pings, `wire`) and the latest heard from each peer, by node name,
//! published whole like the membership.
//!
//! Peers' coordinates come in two ways: a ping carries its sender's, a
//! pong its responder's. A member pings one random live member per probe
//! period (at least a second apart) and is pinged by about as many, so it
//! hears from roughly two peers a round and knows every peer of a pool of
//! N after some N/2 rounds. A member that leaves the membership leaves the
//! map.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::coordinate::{Coordinate, CoordinateError};

/// A snapshot of what this member knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordinates {
    /// This member's own coordinate.
    pub own: Coordinate,
    /// Every known coordinate by node name, this member's own included.
    pub by_name: BTreeMap<String, Coordinate>,
}

/// The published map and its writer, shared by the driver (which measures)
/// and the handle (which takes coordinates from `PUT /v1/coordinate/update`).
#[derive(Debug, Clone)]
pub(crate) struct Published(Arc<watch::Sender<Arc<Coordinates>>>);

impl Published {
    /// A map holding only `own` under `name`.
    pub(crate) fn new(name: &str, own: Coordinate) -> Self {
        let by_name = BTreeMap::from([(name.to_owned(), own.clone())]);
        let (tx, _) = watch::channel(Arc::new(Coordinates { own, by_name }));
        Self(Arc::new(tx))
    }

    /// The latest snapshot.
    pub(crate) fn get(&self) -> Arc<Coordinates> {
        Arc::clone(&self.0.borrow())
    }

    /// Changes the map in place; readers keep the snapshot they hold (the
    /// map is copied only while one is held).
    pub(crate) fn modify(&self, f: impl FnOnce(&mut Coordinates)) {
        self.0.send_modify(|current| f(Arc::make_mut(current)));
    }

    /// Keeps `coordinate` as `name`'s, if it is of our space and finite.
    pub(crate) fn insert(&self, name: &str, coordinate: Coordinate) -> Result<(), CoordinateError> {
        let ours = self.0.borrow().own.vec.len();
        if coordinate.vec.len() != ours {
            return Err(CoordinateError::Incompatible {
                ours,
                theirs: coordinate.vec.len(),
            });
        }
        if !coordinate.is_valid() {
            return Err(CoordinateError::Invalid);
        }
        self.modify(|c| {
            c.by_name.insert(name.to_owned(), coordinate);
        });
        Ok(())
    }
}
