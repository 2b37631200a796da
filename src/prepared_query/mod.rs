//! Prepared queries: what one means and running it. The records live in
//! the catalog (`catalog::PreparedQuery`, written through Raft like every
//! other table); the HTTP endpoints are `http/prepared_query.rs`, the DNS
//! names `<name>.query.<domain>` run here through the DNS server.
//!
//! - [`check`]: Consul's checks of a query before it is written (the
//!   endpoint's `parseQuery`, and a template compiled and rendered once
//!   with its own name), so a bad query is refused and nothing is stored.
//! - `template.rs`: rendering a template for the name asked.
//! - `execute.rs`: the pure part of executing: the filters, the order, the
//!   failover candidates.
//! - [`Executor`]: resolving a name (ID, exact name, longest template
//!   prefix, the catch-all), executing in this datacenter, and failing over
//!   only when nothing is left here.
//!
//! Failing over asks the candidate datacenters IN PARALLEL and keeps their
//! priority: the first non-empty answer in candidate order wins once every
//! candidate before it has answered empty or failed, so a dead datacenter
//! in the list costs no wait beyond its own call's deadline (Consul asks
//! them one after the other). The call to another datacenter is the
//! [`Failover`] trait: the cross-datacenter RPC family implements it; an
//! agent without a WAN path uses [`NoFederation`] (no other datacenters).

mod execute;
mod template;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use execute::{Entry, NearSort, QueryResult, candidates, keep_order, matching, order};
pub use template::{Template, TemplateError};

use crate::acl::Authorizer;
use crate::catalog::{PreparedQuery, Replica, State};

/// The most a failover waits for the candidate datacenters together; one
/// still silent then counts as failed. The calls bound themselves more
/// tightly (a dead datacenter fails within ~2 s); this guards the DNS and
/// HTTP request against an implementation that does not.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(5);

/// Consul's `redactedToken`: what a query's token reads as to a caller who
/// may not see it, and what may not be written back as a token.
pub const REDACTED_TOKEN: &str = "<hidden>";

/// A boxed future, for the object-safe [`Failover`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Running a rendered query in another datacenter: what a failover needs
/// from the WAN. The cross-datacenter call family implements it.
pub trait Failover: Send + Sync + std::fmt::Debug {
    /// The other datacenters, nearest first (`Datacenters::names()` without
    /// ours; a client agent asks a server).
    fn other_datacenters(&self) -> BoxFuture<'static, Vec<String>>;

    /// Executes the rendered `query` in datacenter `dc` (which filters it
    /// with `token`, or the query's own token, and does not fail over
    /// again), keeping at most `limit` instances (0: all): that
    /// datacenter's answer, or why it could not be had.
    fn execute_in(
        &self,
        dc: String,
        query: PreparedQuery,
        limit: usize,
        token: Option<String>,
    ) -> BoxFuture<'static, Result<QueryResult, String>>;
}

/// The [`Failover`] of an agent with no WAN path: there is no other
/// datacenter to ask.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFederation;

impl Failover for NoFederation {
    fn other_datacenters(&self) -> BoxFuture<'static, Vec<String>> {
        Box::pin(async { Vec::new() })
    }

    fn execute_in(
        &self,
        dc: String,
        _query: PreparedQuery,
        _limit: usize,
        _token: Option<String>,
    ) -> BoxFuture<'static, Result<QueryResult, String>> {
        Box::pin(async move { Err(format!("No path to datacenter {dc}")) })
    }
}

/// Why a query cannot be written, in Consul's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Unnamed, not a template and not bound to a session.
    #[error("Must be bound to a session")]
    NoSession,
    /// The redacted token written back.
    #[error(
        "Bad Token '{REDACTED_TOKEN}', it looks like a query definition with a redacted token was submitted"
    )]
    RedactedToken,
    /// No service name.
    #[error("Must provide a Service name to query")]
    NoService,
    /// `DNS.TTL` that is not a duration.
    #[error("Bad DNS TTL '{0}': {1}")]
    BadTtl(String, String),
    /// A template that does not compile or render.
    #[error("Failed to compile template: {0}")]
    Template(#[from] TemplateError),
}

/// Checks `query` as Consul does before writing it: its own fields, and a
/// template compiled and rendered with its own name.
pub fn check(query: &PreparedQuery) -> Result<(), CheckError> {
    if query.name.is_empty() && !query.is_template() && query.session.is_empty() {
        return Err(CheckError::NoSession);
    }
    if query.token == REDACTED_TOKEN {
        return Err(CheckError::RedactedToken);
    }
    if query.service.service.is_empty() {
        return Err(CheckError::NoService);
    }
    if !query.dns.ttl.is_empty() {
        crate::definition::parse_duration(&query.dns.ttl)
            .map_err(|e| CheckError::BadTtl(query.dns.ttl.clone(), e))?;
    }
    // Rendered once with its own name so a bad expression is refused now;
    // what it renders to depends on the name asked (a regular expression
    // may match only longer names), so the result is not checked.
    if let Some(t) = Template::compile(query)? {
        t.render(&query.name)?;
    }
    Ok(())
}

/// The query `id_or_name` resolves to in `state`, rendered for that name
/// when it is a template; `None` when nothing matches.
pub fn resolve(state: &State, id_or_name: &str) -> Result<Option<PreparedQuery>, TemplateError> {
    let Some(q) = state.resolve_prepared_query(id_or_name) else {
        return Ok(None);
    };
    match Template::compile(q)? {
        Some(t) => t.render(id_or_name).map(Some),
        None => Ok(Some(q.clone())),
    }
}

/// Executes the query `id_or_name` names in `state` of datacenter `dc`,
/// filtered by `authz` (the answering DNS token's: the resolved tokens are
/// not at hand here, so a query's own token is not used), shuffled,
/// without failing over: what another datacenter's DNS lookup of one of
/// our queries gets.
pub fn execute_in_state(
    state: &State,
    dc: &str,
    id_or_name: &str,
    authz: &Authorizer,
) -> Result<QueryResult, ExecuteError> {
    let query = resolve(state, id_or_name)?.ok_or(ExecuteError::NotFound)?;
    let mut nodes = matching(state, &query, authz);
    order(&mut nodes, None, &keep_order, 0);
    Ok(QueryResult {
        service: query.service.service.clone(),
        nodes,
        dns_ttl: query.dns.ttl.clone(),
        datacenter: dc.to_string(),
        failovers: 0,
        index: state.prepared_queries_index(),
    })
}

/// One execution asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// What the query is named by: its ID or a name.
    pub id_or_name: String,
    /// `?limit`: at most this many instances (0: all).
    pub limit: usize,
    /// `?near`: sort by distance from this node (`_agent`: this agent's);
    /// else the query's `Near`.
    pub near: Option<String>,
    /// What the caller's token may read, for a query without a token.
    pub authz: Arc<Authorizer>,
    /// The caller's secret, carried to another datacenter.
    pub secret: Option<String>,
}

/// Why an execution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// Nothing resolves from the name: Consul's 404.
    #[error("Query not found")]
    NotFound,
    /// The stored template no longer renders.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The token the lookup acts as is unknown.
    #[error("ACL not found")]
    Unauthorized,
}

/// Executes prepared queries for the HTTP API and DNS of one agent.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor(Arc<Inner>);

struct Inner {
    /// The state queries and instances are read from.
    replica: Arc<Replica>,
    /// This agent's datacenter, what a local answer is stamped with.
    datacenter: String,
    /// This agent's node name, for `near=_agent`.
    node: String,
    /// Other datacenters, for failover.
    failover: Arc<dyn Failover>,
    /// Orders instances by distance.
    near_sort: NearSort,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("datacenter", &self.datacenter)
            .field("node", &self.node)
            .field("failover", &self.failover)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor reading `replica`, for the agent `node` in `datacenter`.
    pub fn new(
        replica: Arc<Replica>,
        datacenter: String,
        node: String,
        failover: Arc<dyn Failover>,
    ) -> Self {
        Self(Arc::new(Inner {
            replica,
            datacenter,
            node,
            failover,
            near_sort: Arc::new(keep_order),
        }))
    }

    /// The executor sorting `?near` / `Near` answers with `sort` (the
    /// agent's network coordinates).
    pub fn with_near_sort(self, sort: NearSort) -> Self {
        let i = &self.0;
        Self(Arc::new(Inner {
            replica: i.replica.clone(),
            datacenter: i.datacenter.clone(),
            node: i.node.clone(),
            failover: i.failover.clone(),
            near_sort: sort,
        }))
    }

    /// This agent's datacenter.
    pub fn datacenter(&self) -> &str {
        &self.0.datacenter
    }

    /// The replica queries are read from.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.0.replica
    }

    /// What a query with `token` filters by: the token's permissions when
    /// it has one (while ACLs are on), else `caller`'s.
    fn authz_for(&self, query: &PreparedQuery, caller: &Arc<Authorizer>) -> Arc<Authorizer> {
        let tokens = self.0.replica.tokens();
        match (tokens, &query.token_hash) {
            (Some(tokens), Some(hash)) => tokens
                .by_hash(hash)
                .map(|r| r.authorizer.clone())
                // A query whose token was deleted answers as its anonymous
                // caller would.
                .unwrap_or_else(|| tokens.anonymous().authorizer.clone()),
            _ => caller.clone(),
        }
    }

    /// Executes the rendered `query` in this datacenter only: filtered,
    /// shuffled, sorted from `near`, limited. What another datacenter's
    /// failover asks of this one (with no `near`).
    pub fn execute_here(
        &self,
        query: &PreparedQuery,
        caller: &Arc<Authorizer>,
        near: Option<&str>,
        limit: usize,
    ) -> QueryResult {
        let authz = self.authz_for(query, caller);
        let state = self.0.replica.read();
        let mut nodes = matching(&state, query, &authz);
        let index = state.prepared_queries_index();
        drop(state);
        let near = near.map(|n| if n == "_agent" { &self.0.node } else { n });
        order(&mut nodes, near, self.0.near_sort.as_ref(), limit);
        QueryResult {
            service: query.service.service.clone(),
            nodes,
            dns_ttl: query.dns.ttl.clone(),
            datacenter: self.0.datacenter.clone(),
            failovers: 0,
            index,
        }
    }

    /// The query a name resolves to, rendered.
    pub fn resolve(&self, id_or_name: &str) -> Result<Option<PreparedQuery>, TemplateError> {
        resolve(&self.0.replica.read(), id_or_name)
    }

    /// Resolves and executes `req`: here, and when nothing is left here,
    /// in the failover candidates (in parallel, first non-empty by
    /// priority wins).
    pub async fn execute(&self, req: &Request) -> Result<QueryResult, ExecuteError> {
        let query = self
            .resolve(&req.id_or_name)?
            .ok_or(ExecuteError::NotFound)?;
        let near = req
            .near
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&query.service.near);
        let mut result = self.execute_here(&query, &req.authz, Some(near), req.limit);
        if !result.nodes.is_empty() {
            return Ok(result);
        }
        let failover = &query.service.failover;
        if failover.nearest_n == 0 && failover.datacenters.is_empty() {
            return Ok(result);
        }
        let dcs = candidates(&self.0.failover.other_datacenters().await, failover);
        if dcs.is_empty() {
            return Ok(result);
        }
        let (winner, failovers) = self.fail_over(&dcs, &query, req).await;
        if let Some(mut remote) = winner {
            remote.failovers = failovers;
            return Ok(remote);
        }
        result.failovers = failovers;
        Ok(result)
    }

    /// Asks every datacenter of `dcs` at once; the first non-empty answer
    /// in `dcs`' order once all before it are in, and how many were
    /// counted as tried (Consul's `Failovers`: up to the winner, else all).
    async fn fail_over(
        &self,
        dcs: &[String],
        query: &PreparedQuery,
        req: &Request,
    ) -> (Option<QueryResult>, u32) {
        let mut set = tokio::task::JoinSet::new();
        for (i, dc) in dcs.iter().enumerate() {
            let call = self.0.failover.execute_in(
                dc.clone(),
                query.clone(),
                req.limit,
                req.secret.clone(),
            );
            set.spawn(async move { (i, call.await) });
        }
        // `None`: not in yet; `Some(None)`: failed or empty.
        let mut answers: Vec<Option<Option<QueryResult>>> = vec![None; dcs.len()];
        let deadline = tokio::time::Instant::now() + FAILOVER_DEADLINE;
        loop {
            // The winner is decided once every answer before it is in.
            for (i, answer) in answers.iter_mut().enumerate() {
                match answer {
                    None => break,
                    Some(Some(_)) => {
                        let won = answer.take().flatten();
                        return (won, u32::try_from(i + 1).unwrap_or(u32::MAX));
                    }
                    Some(None) => {}
                }
            }
            if answers.iter().all(Option::is_some) {
                break;
            }
            let joined = tokio::time::timeout_at(deadline, set.join_next()).await;
            match joined {
                Ok(Some(Ok((i, outcome)))) => {
                    let answer = match outcome {
                        Ok(r) if !r.nodes.is_empty() => Some(r),
                        Ok(_) => None,
                        Err(why) => {
                            tracing::warn!(dc = %dcs[i], %why, "prepared query failover: the datacenter did not answer");
                            None
                        }
                    };
                    answers[i] = Some(answer);
                }
                // A call that panicked is a bug; its datacenter stays
                // unanswered until the deadline.
                Ok(Some(Err(e))) => {
                    tracing::error!(error = %e, "prepared query failover call panicked")
                }
                // Every call is in, or the deadline passed: whatever has
                // not answered has failed.
                Ok(None) | Err(_) => {
                    for a in answers.iter_mut().filter(|a| a.is_none()) {
                        *a = Some(None);
                    }
                }
            }
        }
        set.abort_all();
        (None, u32::try_from(dcs.len()).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests;
