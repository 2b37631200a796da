//! The snapshot body: `[format version][postcard of the state]`, the bytes
//! that are stored, shipped to a server in InstallSnapshot and fetched by a
//! client agent that fell behind its server's history. One encoder and one
//! decoder for all three, so every copy of the state is read by the version
//! it says it was written in. Where the stored one is kept: `snapshot_file`.

use super::format::{self, FormatError};
use super::{StoreError, decode};
use crate::catalog::{
    Replica, Secrets, State, StateCapture, StateSnapshot, StateSnapshotV2, StateSnapshotV3,
    StateSnapshotV4,
};

/// A snapshot body: the format version, then postcard of the state.
pub fn encode_catalog(catalog: &StateSnapshot) -> Result<Vec<u8>, StoreError> {
    format::prefixed(catalog)
}

/// The snapshot body of `state` as it stands, encoded from the tables
/// themselves rather than from a copy: the same bytes as
/// `encode_catalog(&state.to_snapshot())`.
pub fn encode_state(state: &State) -> Result<Vec<u8>, StoreError> {
    format::prefixed(&state.snapshot_ref())
}

/// The snapshot body of the state `capture` marked in `replica`, encoded a
/// slice of rows at a time while writes go on (`catalog/capture.rs`): the
/// bytes [`encode_state`] gave at the capture's index, or with `Blank`
/// those of the state's `redacted` copy. Blocks for as long as encoding
/// takes: call it off the async threads.
pub fn encode_captured(
    replica: &Replica,
    capture: &StateCapture,
    secrets: Secrets,
) -> Result<Vec<u8>, StoreError> {
    let mut out = postcard::to_stdvec(&format::CURRENT)?;
    capture.encode(&mut out, || replica.read_after_writers(), secrets)?;
    Ok(out)
}

/// Reads a snapshot body by the version it carries; one of another version
/// than this build reads is refused, never misread.
pub fn decode_catalog(body: &[u8]) -> Result<StateSnapshot, StoreError> {
    match format::split(body)? {
        (format::CURRENT, catalog) => decode(catalog),
        (4, catalog) => Ok(decode::<StateSnapshotV4>(catalog)?.into()),
        (3, catalog) => Ok(decode::<StateSnapshotV3>(catalog)?.into()),
        (2, catalog) => Ok(decode::<StateSnapshotV2>(catalog)?.into()),
        (found, _) => Err(FormatError::unreadable("a snapshot", found).into()),
    }
}
