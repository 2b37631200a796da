//! The routing seam: [`Route`], the one extractor through which every
//! handler reaches data.
//!
//! A route knows which datacenter the request is for (`?dc=`, ours when
//! absent) and its query string; from those it hands out the catalog for
//! reads (after the consistency mode and the blocking wait, see [`query`])
//! and a [`Writer`] for writes. Whether the request is ours or another
//! datacenter's is decided in one place, [`Route::reach`]: forwarding to
//! another datacenter is a change to that one arm, not to every handler.
//! The agent, gossip and Raft endpoints answer for this agent whatever
//! `?dc=` says, as Consul's do; they reach their parts through the route too.
//!
//! A route also knows who is asking: the request's ACL token (`?token=`,
//! `X-Consul-Token` or `Authorization: Bearer`, in Consul's order of
//! precedence; else `acl.tokens.default`; else the anonymous token),
//! resolved once per request from the replica's resolved tokens, a hash
//! and a map lookup. With ACLs off every request may do everything.
//! Handlers refuse with [`Route::require`] (Consul's 403) and filter lists
//! with [`Route::read_filtered`], which marks a shortened answer with
//! `X-Consul-Results-Filtered-By-ACLs` only for a caller that gave a token
//! (its own or the agent's default), as Consul's servers do.
//!
//! [`query`]: super::query

use std::sync::Arc;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::query::{self, Consistency, Params, ReadOptions};
use super::writer::{Writer, meta_headers};
use super::{ApiError, ApiState, Ctx};
use crate::acl::Authorizer;
use crate::catalog::{Check, Index, Resolved, State};
use crate::delegate::Delegate;
use crate::gossip::Gossip;
use crate::local::LocalAgent;

/// How long a read waits for this agent's replica to apply the writes it
/// answered, and a write that renders its result waits to apply it: the
/// leader applied them already, so a follower is a heartbeat or a follow
/// poll behind (more while it encodes a snapshot).
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Which datacenter a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Datacenter {
    /// Ours: no `?dc`, an empty one, or our own name.
    Local,
    /// Another one, by the name the request gave.
    Other(String),
}

/// A request's datacenter and query string, and the only way its handler
/// reaches the catalog, the writes, this agent and its pools.
#[derive(Debug, Clone)]
pub(super) struct Route {
    /// The server's parts.
    ctx: Ctx,
    /// The query string.
    params: Params,
    /// What `?dc=` named.
    datacenter: Datacenter,
    /// Who is asking: the request's token, resolved.
    caller: Arc<Resolved>,
    /// Whether the request named a token (or the agent has a default one):
    /// Consul tells only such callers that ACLs shortened an answer.
    token_given: bool,
    /// Whether another datacenter's server relayed the request here.
    relayed: bool,
}

/// Marks a request that another datacenter's server relayed to this one
/// (`agent/datacenter.rs`), in its extensions, where no client can set
/// it. Its default-mode reads, the checks before its writes and prepared
/// queries' runs confirm the leader's commit first: the asking datacenter
/// picks any of this one's servers for each request, so a write it relayed
/// may have gone through another server, and this one's replica may not
/// have applied it yet (a per-agent wait for the writes it answered covers
/// only its own).
#[derive(Debug, Clone, Copy)]
pub struct Relayed;

/// Consul's header on an answer that ACLs left items out of.
const FILTERED_BY_ACLS: &str = "x-consul-results-filtered-by-acls";

/// The caller of every request while ACLs are off: it may do everything.
static UNRESTRICTED: std::sync::LazyLock<Arc<Resolved>> = std::sync::LazyLock::new(|| {
    Arc::new(Resolved {
        accessor_id: String::new(),
        authorizer: Arc::new(Authorizer::management()),
    })
});

/// Reads the query string (a malformed one is a 400) and `?dc=`.
impl FromRequestParts<Ctx> for Route {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, ApiError> {
        let params = Params::from_request_parts(parts, ctx).await?;
        let datacenter = datacenter(ctx, params.get("dc").unwrap_or_default());
        let (caller, token_given) = caller(ctx, &params, &parts.headers)?;
        Ok(Self {
            ctx: ctx.clone(),
            params,
            datacenter,
            caller,
            token_given,
            relayed: parts.extensions.get::<Relayed>().is_some(),
        })
    }
}

/// The secret a request presents: `?token=`, else `X-Consul-Token`, else
/// `Authorization: Bearer …` (Consul's `parseTokenInternal` order); empty
/// values count as absent.
pub(super) fn presented<'a>(params: &'a Params, headers: &'a HeaderMap) -> Option<&'a str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = || {
        let value = header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token)
    };
    [params.get("token"), header("x-consul-token"), bearer()]
        .into_iter()
        .flatten()
        .find(|t| !t.is_empty())
}

/// The secret a request acts with: the one it presented, else the agent's
/// `acl.tokens.default` (never empty: the configuration refuses an empty
/// token).
fn secret<'a>(ctx: &'a Ctx, params: &'a Params, headers: &'a HeaderMap) -> Option<&'a str> {
    presented(params, headers).or(ctx.api.acl.default_token.as_deref())
}

/// The request's token resolved, and whether there was one (the
/// request's or the agent's default): unknown secrets are refused with
/// Consul's "ACL not found".
fn caller(
    ctx: &Ctx,
    params: &Params,
    headers: &HeaderMap,
) -> Result<(Arc<Resolved>, bool), ApiError> {
    if !ctx.api.acl.enabled {
        return Ok((UNRESTRICTED.clone(), false));
    }
    // With ACLs on the replica resolves tokens from the agent's start; were
    // it ever without them, refuse rather than let everything through.
    let Some(tokens) = ctx.api.replica.tokens() else {
        return Err(ApiError::Internal("ACL tokens are not resolved yet".into()));
    };
    match secret(ctx, params, headers) {
        None => Ok((tokens.anonymous().clone(), false)),
        Some(secret) => tokens
            .by_secret(secret)
            .map(|r| (r.clone(), true))
            .ok_or(ApiError::AclNotFound),
    }
}

/// `name` as a datacenter: empty or ours is [`Datacenter::Local`].
fn datacenter(ctx: &Ctx, name: &str) -> Datacenter {
    if name.is_empty() || name == ctx.api.local.identity().datacenter {
        Datacenter::Local
    } else {
        Datacenter::Other(name.to_string())
    }
}

impl Route {
    /// What the request's token may do.
    pub(super) fn authz(&self) -> &Authorizer {
        &self.caller.authorizer
    }

    /// What the request's token may do, shared: what a prepared query
    /// without a token of its own executes with.
    pub(super) fn authorizer(&self) -> Arc<Authorizer> {
        self.caller.authorizer.clone()
    }

    /// The prepared query executor of the request's datacenter.
    pub(super) fn prepared_queries(&self) -> Result<&crate::prepared_query::Executor, ApiError> {
        Ok(&self.reach(&self.datacenter)?.prepared_queries)
    }

    /// `X-Consul-Index` (`index`), `X-Consul-KnownLeader` and
    /// `X-Consul-LastContact` on an answer made outside [`Self::read`].
    pub(super) fn index_headers(&self, headers: &mut HeaderMap, index: Index) {
        headers.insert(
            HeaderName::from_static("x-consul-index"),
            HeaderValue::from(index.max(1)),
        );
        meta_headers(&self.ctx.api.delegate, headers);
    }

    /// The request's token's AccessorID (empty with ACLs off).
    pub(super) fn accessor_id(&self) -> &str {
        &self.caller.accessor_id
    }

    /// The secret the request presented, else `acl.tokens.default`: what a
    /// call this agent makes for the request carries on to a server.
    pub(super) fn secret(&self, headers: &HeaderMap) -> Option<String> {
        secret(&self.ctx, &self.params, headers).map(str::to_owned)
    }

    /// Whether ACLs are on.
    pub(super) fn acl_enabled(&self) -> bool {
        self.ctx.api.acl.enabled
    }

    /// `Ok` when `allowed`, else Consul's 403 naming the token, the
    /// permission (`service:write`) and the name it was asked on.
    pub(super) fn require(
        &self,
        allowed: bool,
        permission: &'static str,
        name: Option<&str>,
    ) -> Result<(), ApiError> {
        if allowed {
            return Ok(());
        }
        Err(self.denied(permission, name))
    }

    /// Consul's 403 for this request's token lacking `permission` on `name`.
    pub(super) fn denied(&self, permission: &'static str, name: Option<&str>) -> ApiError {
        ApiError::PermissionDenied {
            accessor: self.accessor_id().to_string(),
            permission,
            // Consul quotes the name as it is, without escaping.
            on: name.map(|n| format!(" on \"{n}\"")).unwrap_or_default(),
        }
    }

    /// Whether the token may see a service instance: `service:read` on
    /// its name and `node:read` on its node, as Consul's catalog and
    /// health filters ask.
    pub(super) fn may_see_instance(&self, node: &str, service: &str) -> bool {
        let authz = self.authz();
        authz.service_read(service) && authz.node_read(node)
    }

    /// Whether the token may see a check: `node:read` on its node and, for
    /// a service's check, `service:read` on that service.
    pub(super) fn may_see_check(&self, check: &Check) -> bool {
        self.authz().node_read(&check.node)
            && (check.service_id.is_empty() || self.authz().service_read(&check.service_name))
    }

    /// Marks an answer that ACLs shortened with Consul's
    /// `X-Consul-Results-Filtered-By-ACLs: true`, for callers that gave a
    /// token only: as Consul, an anonymous caller is not told.
    pub(super) fn mark_filtered(&self, headers: &mut HeaderMap, filtered: bool) {
        if filtered && self.token_given && self.acl_enabled() {
            headers.insert(
                HeaderName::from_static(FILTERED_BY_ACLS),
                HeaderValue::from_static("true"),
            );
        }
    }

    /// As [`Self::read`], for a list the token's permissions filter:
    /// `body` answers the items and whether it left any out.
    pub(super) async fn read_filtered<T, I, B>(
        &self,
        index: I,
        body: B,
    ) -> Result<Response, ApiError>
    where
        T: Serialize,
        I: Fn(&State) -> Index,
        B: Fn(&State) -> (T, bool),
    {
        let pretty = self.params.has("pretty");
        self.read_with(index, body, |(body, filtered)| {
            let mut response = json_response(&body, pretty)?;
            self.mark_filtered(response.headers_mut(), filtered);
            Ok(response)
        })
        .await
    }

    /// The request's datacenter's state as this agent holds it now, with
    /// the writes it answered ([`Self::settled`]), for the checks a write
    /// needs before it is sent (which services a node has, whose a session
    /// is); the write itself is decided by the leader.
    pub(super) async fn state_now<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, ApiError> {
        let api = self.reach(&self.datacenter)?;
        self.settled(api).await?;
        Ok(f(&api.replica.read()))
    }

    /// Waits until this agent's replica holds every write it has answered,
    /// as every read through [`Route::read_with`] and its kind does: for
    /// handlers that read through another part (prepared queries'
    /// executor), so that a query created through this agent runs here at
    /// once.
    pub(super) async fn read_your_writes(&self) -> Result<(), ApiError> {
        self.settled(self.reach(&self.datacenter)?).await
    }

    /// `acl.enable_key_list_policy`: KV listings first need `key:list`.
    pub(super) fn key_list_policy(&self) -> bool {
        self.ctx.api.acl.enabled && self.ctx.api.acl.enable_key_list_policy
    }

    /// The query string.
    pub(super) fn params(&self) -> &Params {
        &self.params
    }

    /// This agent's datacenter.
    pub(super) fn local_datacenter(&self) -> &str {
        &self.ctx.api.local.identity().datacenter
    }

    /// The one place a handler tells our datacenter from another; every
    /// catalog read and write passes here. A request whose `?dc=` names
    /// another datacenter was sent there whole before any handler ran
    /// (`forward.rs`), so what arrives here naming another one is a write
    /// whose body names it (`Datacenter` in a catalog registration):
    /// answering from ours would be wrong, so Consul's status and wording.
    fn reach(&self, datacenter: &Datacenter) -> Result<&ApiState, ApiError> {
        match datacenter {
            Datacenter::Local => Ok(&self.ctx.api),
            Datacenter::Other(_) => Err(ApiError::Internal("No path to datacenter".into())),
        }
    }

    /// The writer for the request's datacenter.
    pub(super) fn writer(&self) -> Result<Writer<'_>, ApiError> {
        Ok(Writer::new(self.reach(&self.datacenter)?))
    }

    /// The writer for the datacenter a request body names.
    pub(super) fn writer_in(&self, name: &str) -> Result<Writer<'_>, ApiError> {
        Ok(Writer::new(self.reach(&datacenter(&self.ctx, name))?))
    }

    /// Runs a catalog read with the request's consistency and blocking
    /// options and answers with its JSON and Consul's headers. `index` is
    /// the index the result depends on and must be cheap: a parked query
    /// re-checks it on every applied write and builds the `body` only once
    /// it has moved. The body is built under the read lock and encoded
    /// after it is released.
    pub(super) async fn read<T, I, B>(&self, index: I, body: B) -> Result<Response, ApiError>
    where
        T: Serialize,
        I: Fn(&State) -> Index,
        B: Fn(&State) -> T,
    {
        let pretty = self.params.has("pretty");
        self.read_with(index, body, |body| json_response(&body, pretty))
            .await
    }

    /// As [`Self::read`], for a read that makes its own response (a 404 for
    /// a missing key, raw bytes): `extract` copies what it needs under the
    /// read lock, `render` makes the response from that copy once the lock
    /// is released (so a large answer never holds up the state machine),
    /// and Consul's headers are added whatever its status.
    pub(super) async fn read_with<T, I, E, R>(
        &self,
        index: I,
        extract: E,
        render: R,
    ) -> Result<Response, ApiError>
    where
        I: Fn(&State) -> Index,
        E: Fn(&State) -> T,
        R: FnOnce(T) -> Result<Response, ApiError>,
    {
        self.read_on(None, index, extract, render).await
    }

    /// As [`Self::read_with`], for a read of one KV key: it wakes only when
    /// that key (or one hashed beside it) is written, not on every write.
    pub(super) async fn read_key_with<T, I, E, R>(
        &self,
        key: &str,
        index: I,
        extract: E,
        render: R,
    ) -> Result<Response, ApiError>
    where
        I: Fn(&State) -> Index,
        E: Fn(&State) -> T,
        R: FnOnce(T) -> Result<Response, ApiError>,
    {
        self.read_on(Some(key), index, extract, render).await
    }

    async fn read_on<T, I, E, R>(
        &self,
        key: Option<&str>,
        index: I,
        extract: E,
        render: R,
    ) -> Result<Response, ApiError>
    where
        I: Fn(&State) -> Index,
        E: Fn(&State) -> T,
        R: FnOnce(T) -> Result<Response, ApiError>,
    {
        let opts = ReadOptions::parse(&self.params)?;
        let api = self.consistent(opts.consistency).await?;
        let changes = match key {
            Some(key) => api.replica.subscribe_key(key),
            None => api.replica.subscribe(),
        };
        let (index, extracted) = query::block(
            &api.replica,
            changes,
            &opts,
            &self.ctx.closing,
            &self.ctx.parked,
            index,
            extract,
        )
        .await;
        let mut response = render(extracted)?;
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static("x-consul-effective-consistency"),
            HeaderValue::from_static(match opts.consistency {
                Consistency::Default => "leader",
                Consistency::Stale => "stale",
                Consistency::Consistent => "consistent",
            }),
        );
        headers.insert(
            HeaderName::from_static("x-consul-index"),
            HeaderValue::from(index),
        );
        meta_headers(&api.delegate, headers);
        Ok(response)
    }

    /// A read that does not block and reports no index (a read-only
    /// transaction): the consistency mode, then `extract` under the read
    /// lock and `render` after it, with `X-Consul-KnownLeader` and
    /// `X-Consul-LastContact`.
    pub(super) async fn read_once<T, E, R>(
        &self,
        extract: E,
        render: R,
    ) -> Result<Response, ApiError>
    where
        E: FnOnce(&State) -> T,
        R: FnOnce(T) -> Result<Response, ApiError>,
    {
        let opts = ReadOptions::parse(&self.params)?;
        let api = self.consistent(opts.consistency).await?;
        let extracted = extract(&api.replica.read());
        let mut response = render(extracted)?;
        meta_headers(&api.delegate, response.headers_mut());
        Ok(response)
    }

    /// The request's datacenter once its consistency mode is met: a known
    /// leader for the default mode (a confirmed read index when another
    /// datacenter relayed the request, see [`Relayed`]), a confirmed read
    /// index for `?consistent`, nothing for `?stale`; in every mode, the
    /// writes this agent answered applied here.
    async fn consistent(&self, consistency: Consistency) -> Result<&ApiState, ApiError> {
        let api = self.reach(&self.datacenter)?;
        match consistency {
            Consistency::Stale => {}
            Consistency::Default if !self.relayed => {
                if !api.delegate.leader_live() {
                    return Err(ApiError::NoLeader);
                }
            }
            Consistency::Default | Consistency::Consistent => {
                api.delegate.linearizable_read().await?;
            }
        }
        caught_up(api).await;
        Ok(api)
    }

    /// Waits until `api`'s replica holds what this request may already
    /// have seen answered: the writes this agent answered, and, for a
    /// request another datacenter relayed ([`Relayed`]), every write the
    /// leader committed, as that datacenter may have written through
    /// another of this one's servers.
    async fn settled(&self, api: &ApiState) -> Result<(), ApiError> {
        if self.relayed {
            api.delegate.linearizable_read().await?;
        }
        caught_up(api).await;
        Ok(())
    }

    /// Waits until this agent's replica has applied `index` (a write's), so
    /// that a write's answer shows what the write did even where the
    /// replica follows the leader, then reads it under the read lock.
    pub(super) async fn read_applied<T>(
        &self,
        index: Index,
        read: impl FnOnce(&State) -> T,
    ) -> Result<T, ApiError> {
        let api = self.reach(&self.datacenter)?;
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        if !api.replica.wait_applied(index, deadline).await {
            return Err(ApiError::Internal(format!(
                "this agent has not applied index {index} yet"
            )));
        }
        Ok(read(&api.replica.read()))
    }

    /// The KV store's and sessions' settings.
    pub(super) fn kv_settings(&self) -> &crate::config::KvSettings {
        &self.ctx.api.kv
    }

    /// This agent's own services, checks and identity: the agent endpoints
    /// answer for this agent whatever `?dc=` says, as Consul's do.
    pub(super) fn agent(&self) -> &LocalAgent {
        &self.ctx.api.local
    }

    /// This agent's LAN gossip pool.
    pub(super) fn gossip(&self) -> &Gossip {
        &self.ctx.api.gossip
    }

    /// This server's WAN gossip pool; `None` on a client agent (and with
    /// `ports.serf_wan = -1`).
    pub(super) fn wan_gossip(&self) -> Option<&Gossip> {
        self.ctx.api.wan.as_deref()
    }

    /// The datacenters this agent knows and the route to each.
    pub(super) fn datacenters(&self) -> &crate::datacenters::Datacenters {
        &self.ctx.api.datacenters
    }

    /// This agent's view of its datacenter's Raft servers, for the status
    /// and operator endpoints (not for catalog reads and writes: those go
    /// through [`Self::read`] and [`Self::writer`]).
    pub(super) fn servers(&self) -> &Delegate {
        &self.ctx.api.delegate
    }

    /// Stops this agent (`PUT /v1/agent/leave`).
    pub(super) fn shut_down(&self) {
        self.ctx.api.shutdown.cancel();
    }
}

/// Waits until `api`'s replica holds every write the agent answered
/// ([`Writer::write`]); past [`APPLY_WAIT`] it reads what it has, as a
/// read whose replica lost its leader would.
async fn caught_up(api: &ApiState) {
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    if !api.replica.wait_acknowledged(deadline).await {
        tracing::debug!("reading before this agent applied a write it answered");
    }
}

/// A JSON answer; indented with `?pretty`, as Consul answers it.
pub(super) fn json_response<T: Serialize>(body: &T, pretty: bool) -> Result<Response, ApiError> {
    if !pretty {
        return Ok(Json(body).into_response());
    }
    let text = serde_json::to_string_pretty(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response())
}
