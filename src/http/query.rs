//! Query parameters, consistency modes and blocking queries for reads.
//!
//! A read runs a pure query against the catalog under its read lock and gets
//! back the index that query depends on. With `?index=N` it waits, without
//! holding the lock, until the applied index moves and the query's own index
//! passes N, or until `wait` (default 5m, at most 10m, plus up to 1/16 random
//! jitter as Consul adds) runs out; then it answers with whatever is current.
//! As in Consul, an `index` ahead of ours just waits out the timeout: clients
//! are expected to reset to 0 when the index goes backwards.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::time::Instant;

use super::ApiState;
use super::decode::parse_go_duration;
use super::error::ApiError;
use crate::catalog::{Catalog, Index};

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
            Some(v) => parse_bool(v)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid value for ?{name}: {v:?}"))),
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

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
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
            Some(v) => parse_go_duration(v)
                .map_err(|_| ApiError::BadRequest("Invalid wait time".into()))?,
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

/// Refuses `?dc=` naming another datacenter: there is no WAN path yet, and
/// answering from ours would be wrong. Consul's status and wording.
pub fn check_datacenter(state: &ApiState, params: &Params) -> Result<(), ApiError> {
    match params.get("dc") {
        Some(dc) if !dc.is_empty() && dc != state.local.identity().datacenter => {
            Err(ApiError::Internal("No path to datacenter".into()))
        }
        _ => Ok(()),
    }
}

/// Runs a catalog read with the request's consistency and blocking options
/// and answers with its JSON and Consul's headers.
pub async fn read<T, F>(state: &ApiState, params: &Params, query: F) -> Result<Response, ApiError>
where
    T: Serialize,
    F: Fn(&Catalog) -> (Index, T),
{
    let opts = ReadOptions::parse(params)?;
    check_datacenter(state, params)?;
    match opts.consistency {
        Consistency::Stale => {}
        Consistency::Default => {
            if !state.known_leader() {
                return Err(ApiError::NoLeader);
            }
        }
        Consistency::Consistent => state.consensus.linearizable_read().await?,
    }

    // Subscribe before the first query so no change between the two is missed.
    let mut applied = state.replica.subscribe();
    let deadline = Instant::now() + opts.wait_with_jitter();
    let (index, body) = loop {
        let (index, body) = {
            let catalog = state.replica.read();
            query(&catalog)
        };
        // Consul never reports index 0: clients treat it as "no blocking".
        let index = index.max(1);
        if opts.min_index == 0 || index > opts.min_index {
            break (index, body);
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out, or the replica is gone: answer with what we have.
            Ok(Err(_)) | Err(_) => break (index, body),
        }
    };
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-consul-index"),
        HeaderValue::from(index),
    );
    state.meta_headers(headers);
    Ok(response)
}
