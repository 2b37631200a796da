//! Query parameters, consistency modes and blocking queries for reads.
//!
//! A read first computes, under the catalog's read lock, the index its result
//! depends on. With `?index=N` it waits, without holding the lock, until an
//! applied write moves that index past N, or until `wait` (default 5m, at most
//! 10m, plus up to 1/16 random jitter as Consul adds) runs out or the server
//! stops; only then does it build the body. As in Consul, an `index` ahead of
//! ours just waits out `wait`: clients are expected to reset to 0 when the
//! index goes backwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::catalog::{Index, Replica, State};
use crate::definition::parse_duration;

/// Default blocking wait, as Consul's.
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// Longest blocking wait, as Consul's.
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);
/// Jitter is up to `wait / JITTER_FRACTION`, as Consul's.
const JITTER_FRACTION: u32 = 16;

/// The raw query string as ordered pairs; a bare `?flag` has an empty value.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether the parameter is present at all (`?stale`).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// A boolean flag: absent is false, bare or empty is true, otherwise Go's
    /// boolean spellings.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(v) => parse_bool(v)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid value for ?{name}"))),
        }
    }

    /// `?node-meta=key:value` filters (repeatable).
    pub fn node_meta(&self) -> Vec<(String, String)> {
        self.all("node-meta")
            .into_iter()
            .map(|kv| match kv.split_once(':') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect()
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Read this replica, but only while a leader is known.
    Default,
    /// Read this replica whatever its state.
    Stale,
    /// Confirm leadership and catch up first.
    Consistent,
}

/// The read options every catalog and health read accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Consistency mode.
    pub consistency: Consistency,
    /// Block until the result's index passes this; 0 does not block.
    pub min_index: Index,
    /// How long to block, jitter not included.
    pub wait: Duration,
}

impl ReadOptions {
    /// Parses `stale`, `consistent`, `index` and `wait` with Consul's messages.
    pub fn parse(p: &Params) -> Result<Self, ApiError> {
        let consistency = match (p.has("stale"), p.has("consistent")) {
            (true, true) => {
                return Err(ApiError::BadRequest(
                    "Cannot specify ?stale with ?consistent, conflicting semantics.".into(),
                ));
            }
            (true, false) => Consistency::Stale,
            (false, true) => Consistency::Consistent,
            (false, false) => Consistency::Default,
        };
        let min_index = match p.get("index") {
            None | Some("") => 0,
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::BadRequest("Invalid index".into()))?,
        };
        let wait = match p.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(v) => {
                parse_duration(v).map_err(|_| ApiError::BadRequest("Invalid wait time".into()))?
            }
        };
        Ok(Self {
            consistency,
            min_index,
            wait: wait.min(MAX_WAIT),
        })
    }

    /// The wait plus Consul's random jitter.
    fn wait_with_jitter(&self) -> Duration {
        let max_jitter = self.wait / JITTER_FRACTION;
        let nanos = u64::try_from(max_jitter.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return self.wait;
        }
        self.wait + Duration::from_nanos(rand::random_range(0..nanos))
    }
}

/// Waits, as a blocking query does, until the index `index` computes passes
/// `opts.min_index`, `opts.wait` runs out or `closing` fires, then builds the
/// body under the same read lock. Answers with the index (never 0: clients
/// treat 0 as "no blocking") and the body. `parked` counts the time spent
/// waiting. `changes` wakes it to look again: the replica's applied index,
/// or a narrower signal that moves whenever `index` may have (one KV key's
/// writes); it is subscribed before the first look, so no change between
/// the two is missed.
pub(super) async fn block<T, I, B>(
    replica: &Replica,
    mut changes: watch::Receiver<Index>,
    opts: &ReadOptions,
    closing: &CancellationToken,
    parked: &AtomicUsize,
    index: I,
    body: B,
) -> (Index, T)
where
    I: Fn(&State) -> Index,
    B: Fn(&State) -> T,
{
    let deadline = Instant::now() + opts.wait_with_jitter();
    let mut give_up = false;
    loop {
        {
            let catalog = replica.read();
            let index = index(&catalog).max(1);
            if opts.min_index == 0 || index > opts.min_index || give_up {
                return (index, body(&catalog));
            }
        }
        let _parked = Parked::new(parked);
        let woke = tokio::select! {
            changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                matches!(changed, Ok(Ok(())))
            }
            () = closing.cancelled() => false,
        };
        // Timed out, shutting down, or the replica is gone: answer with what
        // there is, as a timed-out blocking query does.
        give_up = !woke;
    }
}

/// Counts a parked blocking query for as long as it lives, including when
/// the client goes away and the handler future is dropped.
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
