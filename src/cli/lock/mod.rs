//! `trellis lock [-n N] [-timeout DUR] [-name NAME] [-monitor-retry N]
//! [-verbose] PREFIX CMD...`: Consul's `consul lock`. It takes the lock at
//! `PREFIX` (or, with `-n` above 1, one of N semaphore slots), runs CMD
//! while it holds it, stops CMD if the hold is lost or `trellis lock` is
//! told to stop, then lets go. As Consul's, it exits 0 once it held the
//! lock and let go cleanly, whatever CMD did; with `-child-exit-code` a CMD
//! that failed (non-zero, or ended by a signal) makes it exit 2.
//!
//! The protocol is the Go client's, so `trellis lock`, `consul lock` and
//! Go programs using `api.Lock`/`api.Semaphore` contend on one prefix as
//! equals: `mutex.rs` (the lock), `semaphore.rs` (the slots),
//! `session.rs` (the session both hold their keys with), `contend.rs`
//! (waiting and watching), `child.rs` (the command).

mod child;
mod contend;
mod mutex;
mod semaphore;
mod session;

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::child::{KILL_GRACE, Spec, exit_code};
use self::contend::{Say, Stop};
use self::mutex::{LockError, Mutex};
use self::semaphore::{COORDINATION_KEY, Semaphore, SemaphoreError};
use super::client::{Api, HttpAddr, Method, Request};
use super::gopath;
use crate::definition::parse_duration;

/// Failed reads tolerated while watching a held lock before it counts as
/// lost (Consul's `defaultMonitorRetry`).
const MONITOR_RETRIES: &str = "3";

/// The pause between those retries (Consul's `defaultMonitorRetryTime`).
const MONITOR_RETRY_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub(crate) struct LockCmd {
    #[command(flatten)]
    addr: HttpAddr,
    /// How many may hold it at once; above 1 it is a semaphore.
    #[arg(
        long = "n",
        default_value = "1",
        value_name = "N",
        allow_negative_numbers = true
    )]
    limit: i64,
    /// Give up acquiring after this long (a Go duration: 500ms, 10s, 1m);
    /// 0 waits for ever.
    #[arg(
        long,
        alias = "try",
        default_value = "0",
        value_name = "DUR",
        allow_hyphen_values = true
    )]
    timeout: String,
    /// The session's name [default: Consul lock for '<CMD>' at '<PREFIX>'].
    #[arg(long, allow_hyphen_values = true)]
    name: Option<String>,
    /// Failed reads (no answer, or 500) tolerated while watching the held
    /// lock, one second apart, before it counts as lost.
    #[arg(long, default_value = MONITOR_RETRIES, value_name = "N", allow_negative_numbers = true)]
    monitor_retry: i64,
    /// Say each step on stdout.
    #[arg(long)]
    verbose: bool,
    /// Give the command this process's stdin (otherwise it has none).
    #[arg(long)]
    pass_stdin: bool,
    /// Run the command through $SHELL -c (default) or, with
    /// -shell=false, as a program and its arguments.
    #[arg(
        long,
        action = ArgAction::Set,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true,
        value_name = "BOOL"
    )]
    shell: bool,
    /// Exit 2 when the command ended with an error (a non-zero status or
    /// a signal); without it, as Consul's, the lock's own outcome decides
    /// and a failed command still exits 0.
    #[arg(long)]
    child_exit_code: bool,
    /// The KV prefix; the lock is `<PREFIX>/.lock`.
    prefix: Option<String>,
    /// The command, with its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The checked command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    prefix: String,
    limit: u64,
    timeout: Option<Duration>,
    session_name: String,
    monitor_retries: u32,
}

impl LockCmd {
    /// Consul's checks, in Consul's order and words.
    fn plan(&self) -> Result<Plan, String> {
        let limit = u64::try_from(self.limit)
            .ok()
            .filter(|l| *l > 0)
            .ok_or("Lock holder limit must be positive")?;
        let Some(prefix) = self.prefix.as_deref().filter(|_| !self.command.is_empty()) else {
            return Err("Key prefix and child command must be specified".into());
        };
        let prefix = prefix.strip_prefix('/').unwrap_or(prefix).to_string();
        let timeout = parse_duration(&self.timeout).map_err(|_| {
            if self.timeout.starts_with('-') {
                "Timeout must be positive".to_string()
            } else {
                format!(
                    "invalid value {:?} for flag -timeout: parse error",
                    self.timeout
                )
            }
        })?;
        let session_name = self.name.clone().unwrap_or_else(|| {
            format!("Consul lock for '{}' at '{prefix}'", self.command.join(" "))
        });
        let monitor_retries = u32::try_from(self.monitor_retry)
            .map_err(|_| "Number for 'monitor-retry' must be >= 0")?;
        Ok(Plan {
            prefix,
            limit,
            timeout: (!timeout.is_zero()).then_some(timeout),
            session_name,
            monitor_retries,
        })
    }

    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        // One thread: the lock's tasks are all waiting on the network, and
        // the child's parent-death signal follows this very thread.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(async {
            match self.hold().await {
                Ok(code) => code,
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::FAILURE
                }
            }
        }))
    }

    /// Prints a step with `-verbose`.
    fn say(&self, message: &str) {
        Say {
            verbose: self.verbose,
        }
        .say(message);
    }

    async fn hold(&self) -> Result<ExitCode, String> {
        let plan = self.plan()?;
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone())
            .map_err(|e| format!("Error installing signal handlers: {e}"))?;
        let api = self
            .addr
            .api()
            .map_err(|e| format!("Error connecting to Consul agent: {e:#}"))?;
        agent_answers(&api)
            .await
            .map_err(|e| format!("Error querying Consul agent: {e:#}"))?;

        let mut holder = self.holder(&plan, api)?;
        self.say("Attempting lock acquisition");
        let stop = Stop {
            token: shutdown.clone(),
            deadline: plan.timeout.map(|t| Instant::now() + t),
        };
        let lost = match holder.acquire(&stop).await {
            Ok(Some(lost)) => lost,
            Ok(None) => return Err("Shutdown triggered or timeout during lock acquisition".into()),
            Err(e) => return Err(format!("Lock acquisition failed: {e:#}")),
        };

        let code = if shutdown.is_cancelled() {
            eprintln!("Shutdown triggered during lock acquisition");
            0
        } else {
            self.supervise(&shutdown, &lost).await
        };

        holder
            .release()
            .await
            .map_err(|e| format!("Lock release failed: {e:#}"))?;
        match holder.destroy().await {
            Ok(()) => self.say("Cleanup succeeded"),
            Err(e) if in_use(&e) => self.say("Cleanup aborted, lock in use"),
            Err(e) => return Err(format!("Lock cleanup failed: {e:#}")),
        }
        // Consul's: the command's failure is passed on only when asked.
        Ok(if self.child_exit_code && code != 0 {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    }

    fn holder(&self, plan: &Plan, api: Api) -> Result<Holder, String> {
        if plan.limit == 1 {
            let key = gopath::join(&[&plan.prefix, COORDINATION_KEY]);
            self.say(&format!("Setting up lock at path: {key}"));
            Ok(Holder::Mutex(Mutex::new(
                api,
                key,
                plan.session_name.clone(),
                plan.monitor_retries,
                MONITOR_RETRY_WAIT,
                Say {
                    verbose: self.verbose,
                },
            )))
        } else {
            if plan.prefix.is_empty() {
                return Err("Lock setup failed: missing prefix".into());
            }
            self.say(&format!(
                "Setting up semaphore (limit {}) at prefix: {}",
                plan.limit, plan.prefix
            ));
            Ok(Holder::Semaphore(Semaphore::new(
                api,
                plan.prefix.clone(),
                plan.limit,
                plan.session_name.clone(),
                plan.monitor_retries,
                MONITOR_RETRY_WAIT,
            )))
        }
    }

    /// Runs the command until it exits, the hold is lost or we are told to
    /// stop; stops it in the last two cases. Returns CMD's status (128 +
    /// the signal when one ended it), 0 when it succeeded.
    async fn supervise(&self, shutdown: &CancellationToken, lost: &CancellationToken) -> u8 {
        self.say("Starting handler");
        let spec = Spec {
            args: self.command.clone(),
            shell: self.shell,
            pass_stdin: self.pass_stdin,
        };
        let mut running = match spec.spawn() {
            Ok(running) => running,
            Err(e) => {
                eprintln!("Error starting handler: {e}");
                return 1;
            }
        };
        enum End {
            Exited(std::io::Result<std::process::ExitStatus>),
            Stop,
        }
        let end = tokio::select! {
            status = running.wait() => End::Exited(status),
            () = shutdown.cancelled() => {
                self.say("Shutdown triggered, killing child");
                End::Stop
            }
            () = lost.cancelled() => {
                self.say("Lock lost, killing child");
                End::Stop
            }
        };
        let status = match end {
            End::Exited(status) => {
                self.say("Child terminated, releasing lock");
                status
            }
            End::Stop => running
                .stop(KILL_GRACE, |m| self.say(m))
                .await
                .map(|(status, _)| status),
        };
        match status {
            Ok(status) => exit_code(status),
            Err(e) => {
                eprintln!("Error running handler (pid {}): {e}", running.pid());
                1
            }
        }
    }
}

/// The lock or the semaphore, behind one set of verbs.
#[derive(Debug)]
enum Holder {
    Mutex(Mutex),
    Semaphore(Semaphore),
}

impl Holder {
    async fn acquire(&mut self, stop: &Stop) -> anyhow::Result<Option<CancellationToken>> {
        match self {
            Self::Mutex(m) => m.lock(stop).await,
            Self::Semaphore(s) => s.acquire(stop).await,
        }
    }

    async fn release(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Mutex(m) => m.unlock().await,
            Self::Semaphore(s) => s.release().await,
        }
    }

    async fn destroy(&self) -> anyhow::Result<()> {
        match self {
            Self::Mutex(m) => m.destroy().await,
            Self::Semaphore(s) => s.destroy().await,
        }
    }
}

/// Whether a cleanup failed only because another holder has the lock.
fn in_use(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref(), Some(LockError::InUse))
        || matches!(e.downcast_ref(), Some(SemaphoreError::InUse))
}

/// Whether the agent answers at all (as Consul's `Agent().NodeName()`).
async fn agent_answers(api: &Api) -> anyhow::Result<()> {
    api.send(Request::new(Method::Get, "/v1/agent/self"))
        .await?
        .ok()?;
    Ok(())
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM. Installed before
/// contending, so a signal while waiting for the lock gives up cleanly.
fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        shutdown.cancel();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        lock: LockCmd,
    }

    fn parse(args: &[&str]) -> LockCmd {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .lock
    }

    #[test]
    fn the_command_line_is_read_as_consuls() {
        let cmd = parse(&[
            "--n",
            "2",
            "--timeout",
            "1m30s",
            "/app/leader",
            "ls",
            "-la",
            "/tmp",
        ]);
        assert_eq!(cmd.command, ["ls", "-la", "/tmp"]);
        assert!(cmd.shell);
        assert_eq!(
            cmd.plan().unwrap(),
            Plan {
                prefix: "app/leader".into(),
                limit: 2,
                timeout: Some(Duration::from_secs(90)),
                session_name: "Consul lock for 'ls -la /tmp' at 'app/leader'".into(),
                monitor_retries: 3,
            }
        );
        let cmd = parse(&[
            "--shell=false",
            "--name",
            "db",
            "--monitor-retry",
            "0",
            "p",
            "run",
        ]);
        assert!(!cmd.shell);
        let plan = cmd.plan().unwrap();
        assert_eq!(plan.session_name, "db");
        assert_eq!(plan.monitor_retries, 0);
        assert_eq!(plan.timeout, None);
        assert!(parse(&["--shell", "p", "run"]).shell);
    }

    #[test]
    fn bad_command_lines_get_consuls_messages() {
        let err = |args: &[&str]| parse(args).plan().unwrap_err();
        assert_eq!(
            err(&["--n", "0", "p", "c"]),
            "Lock holder limit must be positive"
        );
        assert_eq!(
            err(&["p"]),
            "Key prefix and child command must be specified"
        );
        assert_eq!(err(&[]), "Key prefix and child command must be specified");
        assert_eq!(
            err(&["--timeout", "-1s", "p", "c"]),
            "Timeout must be positive"
        );
        assert_eq!(
            err(&["--monitor-retry", "-1", "p", "c"]),
            "Number for 'monitor-retry' must be >= 0"
        );
    }
}
