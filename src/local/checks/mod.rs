//! The health checks this agent runs for its own services and node: HTTP,
//! TCP, script and TTL, one task per check.
//!
//! [`CheckRunner`] follows a [`CheckSource`] (the agent's
//! [`LocalAgent`](super::LocalAgent), which implements it in its registry):
//! it wakes on every change and keeps one task per check running with the
//! check's current definition: a new check gets a task, a changed one a
//! fresh task, a removed one loses its task. Tasks report through the
//! [`Sink`] half of the source, which writes status changes through Raft at
//! once and batches output-only changes. The runners know the source only
//! by these two traits, defined here, never the map behind them. The
//! decisions themselves are pure ([`state`]) and the loops ([`runner`],
//! [`ttl`]) are tested on tokio's paused clock.

mod http;
pub mod runner;
mod script;
pub mod state;
mod tcp;
#[cfg(test)]
mod tests;
pub mod ttl;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::catalog::HealthStatus;
use crate::config::CheckSettings;
use crate::definition::{CheckDefinition, CheckKind, MAX_OUTPUT, Origin};
use runner::{Plan, Sink};
use state::Thresholds;
use ttl::TtlTouch;

/// Default timeout of HTTP and TCP checks.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of script checks.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a script check from `origin` may be registered under
/// `settings`: from anywhere with `enable_script_checks`, from
/// configuration files also with `enable_local_script_checks`.
pub fn scripts_allowed(settings: &CheckSettings, origin: Origin) -> bool {
    settings.enable_script_checks
        || (origin == Origin::Config && settings.enable_local_script_checks)
}

/// What recording a check result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written to the catalog.
    Written,
    /// Output kept locally, to be flushed at the given time.
    Deferred(tokio::time::Instant),
    /// Nothing changed.
    Unchanged,
    /// The check no longer exists.
    Gone,
}

/// Cuts output to [`MAX_OUTPUT`] bytes (plus a short header the caller
/// added), keeping the end: a script's last lines say why it failed.
pub fn cap_output_tail(s: String) -> String {
    let limit = MAX_OUTPUT + 64;
    if s.len() <= limit {
        return s;
    }
    let mut start = s.len() - limit;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// A check the runners should be running, as its source has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedCheck {
    /// Its definition (with ID, name and service filled in).
    pub definition: CheckDefinition,
    /// Its status now, where its loop starts from.
    pub status: HealthStatus,
}

/// What the runners follow: which checks there are and, for TTL checks,
/// their applications' updates. Results go back through the [`Sink`] half.
pub trait CheckSource: Sink {
    /// A receiver that changes whenever a check may have been added,
    /// changed or removed.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Every check to run, by check ID.
    fn wanted(&self) -> BTreeMap<String, WantedCheck>;

    /// The channel a TTL check's runner watches for updates.
    fn ttl_watch(&self, check_id: &str) -> watch::Receiver<TtlTouch>;
}

/// The running checks of one agent; stops them all on [`Self::stop`].
#[derive(Debug)]
pub struct CheckRunner {
    /// Ends the reconcile loop (and so every check task).
    stop: CancellationToken,
    /// The reconcile loop.
    task: tokio::task::JoinHandle<()>,
}

impl CheckRunner {
    /// Starts running `source`'s checks, now and as they change.
    pub fn start<S: CheckSource>(source: Arc<S>) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(reconcile(source, stop.clone()));
        Self { stop, task }
    }

    /// Stops every check and waits for their tasks to end. A write in
    /// flight is abandoned (its result is lost, not half-applied).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// One running check.
struct Running {
    /// The definition it runs, to notice changes.
    definition: CheckDefinition,
    /// Its task.
    abort: AbortHandle,
}

async fn reconcile<S: CheckSource>(local: Arc<S>, stop: CancellationToken) {
    let mut changes = local.subscribe();
    let clients = http::Clients::new();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut ids: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        changes.borrow_and_update();
        let wanted = local.wanted();
        running.retain(|id, r| {
            let keep = wanted.get(id).is_some_and(|c| c.definition == r.definition);
            if !keep {
                r.abort.abort();
            }
            keep
        });
        for (id, check) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let abort = spawn(&mut tasks, &local, &clients, &check);
            ids.insert(abort.id(), id.clone());
            running.insert(
                id,
                Running {
                    definition: check.definition,
                    abort,
                },
            );
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
            Some(done) = tasks.join_next_with_id() => {
                // A check that ended by itself (its service was deregistered)
                // is forgotten, so registering it again starts it again.
                let id = match &done {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                };
                if let Err(e) = &done && e.is_panic() {
                    tracing::error!("a check task panicked: {e}");
                }
                if let Some(check_id) = ids.remove(&id)
                    && running.get(&check_id).is_some_and(|r| r.abort.id() == id)
                {
                    running.remove(&check_id);
                }
            }
        }
    }
    tasks.shutdown().await;
}

/// Starts the task for one check.
fn spawn<S: CheckSource>(
    tasks: &mut JoinSet<()>,
    local: &Arc<S>,
    clients: &http::Clients,
    check: &WantedCheck,
) -> AbortHandle {
    let def = &check.definition;
    let interval = def.interval.unwrap_or(Duration::ZERO);
    // Spread the first runs over the interval, as Consul does, so a
    // thousand checks registered at once do not fire together forever.
    let first_run = if interval.is_zero() {
        Duration::ZERO
    } else {
        interval.mul_f64(rand::random::<f64>())
    };
    let plan = Plan {
        service_id: def.service_id.clone(),
        check_id: def.id.clone(),
        interval,
        first_run,
        thresholds: Thresholds::new(
            def.success_before_passing,
            def.failures_before_warning,
            def.failures_before_critical,
        ),
        deregister_after: def.deregister_critical_service_after,
        status: check.status,
    };
    let sink = local.clone();
    let timeout = def.timeout;
    match def.kind() {
        CheckKind::Http => {
            match http::HttpProbe::new(
                clients.for_check(def),
                def,
                timeout.unwrap_or(DEFAULT_TIMEOUT),
            ) {
                Ok(probe) => tasks.spawn(runner::run_interval(sink, probe, plan)),
                Err(e) => {
                    // Validation accepted it, so this is a header the client
                    // refuses; the check stays as it is and says why in the log.
                    tracing::warn!(check = %def.id, "cannot run HTTP check: {e}");
                    tasks.spawn(std::future::pending())
                }
            }
        }
        CheckKind::Tcp => tasks.spawn(runner::run_interval(
            sink,
            tcp::TcpProbe::new(&def.tcp, timeout.unwrap_or(DEFAULT_TIMEOUT)),
            plan,
        )),
        CheckKind::Script => tasks.spawn(runner::run_interval(
            sink,
            script::ScriptProbe::new(def.args.clone(), timeout.unwrap_or(DEFAULT_SCRIPT_TIMEOUT)),
            plan,
        )),
        CheckKind::Ttl => {
            let ttl = def.ttl.unwrap_or(Duration::ZERO);
            let touches = local.ttl_watch(&def.id);
            tasks.spawn(ttl::run_ttl(sink, plan, ttl, touches))
        }
    }
}
