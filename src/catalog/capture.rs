//! A snapshot that does not hold writes up while it is encoded.
//!
//! [`State::capture`] marks the state as it is at one index: a moment under
//! the write lock, copying nothing but the scalar fields and each table's
//! length. [`StateCapture::encode`] then writes the snapshot body a slice of
//! rows at a time, taking the read lock for each slice (on a server through
//! `Replica::read_after_writers`, which lets a waiting write in first), so
//! a write waits at most for one slice (a millisecond or two) where it used
//! to wait for the whole encoding (140 ms at 100,000 rich instances in
//! `benches/scale`'s stall part). Writes applied
//! between slices do not show: each table saves the former value of every
//! key written since the capture (`tables::CapturedMap`), and the slices
//! read those.
//!
//! The bytes are [`StateSnapshotRef`]'s at the capture's index, field for
//! field in its order, so every reader of the snapshot format reads them
//! (a test holds the two equal with writes between every slice).

use std::ops::Deref;
use std::sync::Arc;

use serde::Serialize;

use super::acl_types::AclToken;
use super::prepared_query::PreparedQuery;
use super::snapshot::StateSnapshotRef;
use super::state::State;
use super::tables::{Capture, CapturedMap};
use super::types::Index;

/// The most rows one slice reads under the read lock: a rich instance's
/// rows take a few microseconds to encode (1,024 of them 6.1 ms in
/// `benches/scale`'s breakdown), so a write waits no more than about 1.5 ms.
const SLICE: usize = 256;

/// The state marked at one index, to be encoded while writes go on.
#[derive(Debug)]
pub struct StateCapture {
    /// The capture the tables save former values for while it lives.
    capture: Arc<Capture>,
    /// The scalar fields at the capture, and each table's length then.
    at: Heads,
}

/// What a capture copies when it is taken: the scalar fields, and each
/// table's length (its entry count is written before its rows).
#[derive(Debug, Clone, Copy)]
struct Heads {
    nodes: usize,
    services: usize,
    checks: usize,
    nodes_index: Index,
    services_index: Index,
    checks_index: Index,
    service_indexes: usize,
    last_index: Index,
    kv: usize,
    kv_tombstones: usize,
    kv_delays: usize,
    kv_index: Index,
    kv_reaped: Index,
    sessions: usize,
    sessions_index: Index,
    acl_tokens: usize,
    acl_policies: usize,
    acl_index: Index,
    acl_bootstrapped: Index,
    prepared_queries: usize,
    prepared_queries_index: Index,
}

/// Whether a capture's encoding keeps the secrets it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// As stored: Raft's snapshots, which servers restore from.
    Keep,
    /// Every ACL token's secret and every prepared query's token blanked:
    /// what client agents are sent (they resolve tokens by the secret's hash).
    Blank,
}

/// Why a capture could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The state was replaced (a snapshot installed) before this capture
    /// was read to the end.
    #[error("the state was replaced while a snapshot of it was encoded")]
    Lost,
    /// A table read back another number of rows than it held at the
    /// capture: a change that bypassed the capture.
    #[error("table {table} held {expected} rows at the capture but {found} were read")]
    Count {
        /// The table.
        table: &'static str,
        /// Its rows at the capture.
        expected: usize,
        /// The rows read.
        found: usize,
    },
    /// A row did not encode.
    #[error("encoding: {0}")]
    Encode(#[from] postcard::Error),
}

impl State {
    /// Marks the state as it is now for [`StateCapture::encode`]. Captures
    /// may overlap; each reads the state as it was when it was taken.
    pub fn capture(&mut self) -> StateCapture {
        let capture = Capture::new();
        self.tables.nodes.open_capture(&capture);
        self.tables.services.open_capture(&capture);
        self.tables.checks.open_capture(&capture);
        self.tables.kv.open_capture(&capture);
        self.tables.sessions.open_capture(&capture);
        self.tables.acl.open_capture(&capture);
        self.tables.prepared_queries.open_capture(&capture);
        let r = self.snapshot_ref();
        let at = Heads {
            nodes: r.nodes.len(),
            services: r.services.len(),
            checks: r.checks.len(),
            nodes_index: r.nodes_index,
            services_index: r.services_index,
            checks_index: r.checks_index,
            service_indexes: r.service_indexes.len(),
            last_index: r.last_index,
            kv: r.kv.len(),
            kv_tombstones: r.kv_tombstones.len(),
            kv_delays: r.kv_delays.len(),
            kv_index: r.kv_index,
            kv_reaped: r.kv_reaped,
            sessions: r.sessions.len(),
            sessions_index: r.sessions_index,
            acl_tokens: r.acl_tokens.len(),
            acl_policies: r.acl_policies.len(),
            acl_index: r.acl_index,
            acl_bootstrapped: r.acl_bootstrapped,
            prepared_queries: r.prepared_queries.len(),
            prepared_queries_index: r.prepared_queries_index,
        };
        StateCapture { capture, at }
    }
}

impl StateCapture {
    /// The index of the last entry applied when the capture was taken.
    pub fn last_index(&self) -> Index {
        self.at.last_index
    }

    /// Appends the snapshot's postcard body (without the format version)
    /// to `out`, taking the state from `read` once per slice of rows and
    /// dropping it before the next. A `read` that takes a lock should let
    /// waiting writers in first (`Replica::read_after_writers`): a reader
    /// in a loop otherwise takes the lock again before they wake.
    pub fn encode<G: Deref<Target = State>>(
        &self,
        out: &mut Vec<u8>,
        read: impl FnMut() -> G,
        secrets: Secrets,
    ) -> Result<(), CaptureError> {
        self.encode_sliced(out, read, secrets, SLICE)
    }

    /// [`Self::encode`], reading at most `slice` rows per turn of `read`.
    pub(super) fn encode_sliced<G: Deref<Target = State>>(
        &self,
        out: &mut Vec<u8>,
        read: impl FnMut() -> G,
        secrets: Secrets,
        slice: usize,
    ) -> Result<(), CaptureError> {
        let at = &self.at;
        let mut w = Slices {
            capture: &self.capture,
            out,
            read,
            slice,
        };
        w.table("nodes", at.nodes, |r| r.nodes, plain)?;
        w.table("services", at.services, |r| r.services, plain)?;
        w.table("checks", at.checks, |r| r.checks, plain)?;
        put(w.out, &at.nodes_index)?;
        put(w.out, &at.services_index)?;
        put(w.out, &at.checks_index)?;
        let count = at.service_indexes;
        w.table("service indexes", count, |r| r.service_indexes, plain)?;
        put(w.out, &at.last_index)?;
        w.table("kv", at.kv, |r| r.kv, plain)?;
        w.table(
            "kv tombstones",
            at.kv_tombstones,
            |r| r.kv_tombstones,
            plain,
        )?;
        w.table("kv lock-delays", at.kv_delays, |r| r.kv_delays, plain)?;
        put(w.out, &at.kv_index)?;
        put(w.out, &at.kv_reaped)?;
        w.table("sessions", at.sessions, |r| r.sessions, plain)?;
        put(w.out, &at.sessions_index)?;
        let blank = |t: &mut AclToken| t.secret_id.clear();
        w.table(
            "acl tokens",
            at.acl_tokens,
            |r| r.acl_tokens,
            with(secrets, blank),
        )?;
        w.table("acl policies", at.acl_policies, |r| r.acl_policies, plain)?;
        put(w.out, &at.acl_index)?;
        put(w.out, &at.acl_bootstrapped)?;
        let count = at.prepared_queries;
        let blank = |q: &mut PreparedQuery| q.token.clear();
        w.table(
            "prepared queries",
            count,
            |r| r.prepared_queries,
            with(secrets, blank),
        )?;
        put(w.out, &at.prepared_queries_index)?;
        Ok(())
    }
}

/// One encoding of a capture under way: where the bytes go, and how the
/// state is read.
struct Slices<'a, R> {
    /// The capture being encoded.
    capture: &'a Arc<Capture>,
    /// The body so far.
    out: &'a mut Vec<u8>,
    /// Takes the state (its read lock) for one slice.
    read: R,
    /// The most rows read per turn of `read`.
    slice: usize,
}

impl<R, G> Slices<'_, R>
where
    R: FnMut() -> G,
    G: Deref<Target = State>,
{
    /// Writes one table as postcard writes a map: its length at the
    /// capture, then each row as it stood then, key and value, in key
    /// order. A slice of rows per turn of the read lock.
    fn table<K: Ord + Clone, V: Clone>(
        &mut self,
        table: &'static str,
        expected: usize,
        pick: impl for<'s> Fn(StateSnapshotRef<'s>) -> &'s CapturedMap<K, V>,
        mut row: impl FnMut(&K, &V, &mut Vec<u8>) -> Result<(), postcard::Error>,
    ) -> Result<(), CaptureError> {
        put(self.out, &expected)?;
        let mut found = 0;
        let mut after: Option<K> = None;
        loop {
            let state = (self.read)();
            let rows = pick(state.snapshot_ref());
            if !rows.holds(self.capture) {
                return Err(CaptureError::Lost);
            }
            let out = &mut *self.out;
            let next = rows.captured_after(self.capture, after.as_ref(), self.slice, |k, v| {
                found += 1;
                row(k, v, out)
            })?;
            drop(state);
            match next {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        if found != expected {
            return Err(CaptureError::Count {
                table,
                expected,
                found,
            });
        }
        Ok(())
    }
}

/// Appends one row as postcard writes a map's entry: its key, then its value.
fn plain<K: Serialize, V: Serialize>(
    key: &K,
    value: &V,
    out: &mut Vec<u8>,
) -> Result<(), postcard::Error> {
    put(out, &(key, value))
}

/// Appends rows as [`plain`] does, but with `blank` applied to a copy of
/// each value first unless `secrets` says to keep them.
fn with<K: Serialize, V: Clone + Serialize>(
    secrets: Secrets,
    blank: impl Fn(&mut V),
) -> impl FnMut(&K, &V, &mut Vec<u8>) -> Result<(), postcard::Error> {
    move |key, value, out| match secrets {
        Secrets::Keep => plain(key, value, out),
        Secrets::Blank => {
            let mut value = value.clone();
            blank(&mut value);
            plain(key, &value, out)
        }
    }
}

/// Appends `value`'s postcard encoding to `out`.
fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), postcard::Error> {
    postcard::to_io(value, out).map(|_| ())
}
