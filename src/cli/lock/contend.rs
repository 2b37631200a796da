//! What the lock and the semaphore share: when to give up waiting
//! ([`Stop`]: a signal or the `-timeout` deadline), and how a holder
//! watches that it still holds ([`monitor`], Go's `monitorLock` with its
//! retries).

use std::io::Write as _;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::client::StatusError;

/// How long one blocking read waits at most while contending (Go's
/// `DefaultLockWaitTime`, `DefaultSemaphoreWaitTime`).
pub(super) const WAIT: Duration = Duration::from_secs(15);

/// Progress notes for `-verbose`, on stdout as Consul's are.
#[derive(Debug, Clone, Copy)]
pub(super) struct Say {
    pub(super) verbose: bool,
}

impl Say {
    pub(super) fn say(self, message: &str) {
        if self.verbose {
            let mut out = std::io::stdout().lock();
            // Progress notes: nothing to do if stdout is gone.
            let _ = writeln!(out, "{message}");
        }
    }
}

/// When to stop contending: on `token` (SIGINT, SIGTERM) or at the
/// deadline (`-timeout`).
#[derive(Debug, Clone)]
pub(super) struct Stop {
    pub(super) token: CancellationToken,
    pub(super) deadline: Option<Instant>,
}

impl Stop {
    /// Whether to give up now.
    pub(super) fn stopped(&self) -> bool {
        self.token.is_cancelled() || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// How long the next blocking read may wait: [`WAIT`], or less if the
    /// deadline is nearer (as Go's one-shot mode shortens it).
    pub(super) fn wait(&self) -> Duration {
        match self.deadline {
            Some(d) => WAIT.min(d.saturating_duration_since(Instant::now())),
            None => WAIT,
        }
    }

    /// Runs `fut` unless told to stop first; `None` when stopped.
    pub(super) async fn run<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            v = fut => Some(v),
            () = self.token.cancelled() => None,
            () = deadline => None,
        }
    }
}

/// Whether a failed read is worth retrying (Go's `IsRetryableError`): no
/// answer at all, or a 500 (no leader for a moment, a server restarting).
pub(super) fn retryable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<reqwest::Error>().is_some()
        || e.downcast_ref::<StatusError>()
            .is_some_and(|s| s.code == 500)
}

/// Watches a held lock until it is lost, then cancels `lost`. `check(index)`
/// makes one blocking read at `index` and answers `Some(next index)` while
/// the lock is still held, `None` once it is not. A failed read is retried
/// `retries` times, `retry_wait` apart, with the count reset by any read
/// that succeeds; after that, the lock counts as lost.
pub(super) async fn monitor<F, Fut>(
    mut check: F,
    retries: u32,
    retry_wait: Duration,
    lost: CancellationToken,
) where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<Option<u64>>>,
{
    let mut index = 0;
    'held: loop {
        let mut left = retries;
        loop {
            match check(index).await {
                Ok(Some(next)) => {
                    index = next;
                    continue 'held;
                }
                Ok(None) => break 'held,
                Err(e) if left > 0 && retryable(&e) => {
                    tokio::time::sleep(retry_wait).await;
                    left -= 1;
                    index = 0;
                }
                Err(_) => break 'held,
            }
        }
    }
    lost.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_monitor_rides_out_retryable_errors_then_gives_up() {
        let lost = CancellationToken::new();
        let mut calls = Vec::new();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        // Held at 5, then three 500s: two retried, the third fatal.
        let mut answers = vec![
            Err(anyhow::Error::new(StatusError {
                code: 500,
                body: String::new(),
            })),
            Err(anyhow::Error::new(StatusError {
                code: 500,
                body: String::new(),
            })),
            Err(anyhow::Error::new(StatusError {
                code: 500,
                body: String::new(),
            })),
            Ok(Some(5)),
        ];
        monitor(
            move |index| {
                log.lock().unwrap().push(index);
                let a = answers.pop().unwrap();
                async move { a }
            },
            2,
            Duration::from_secs(1),
            lost.clone(),
        )
        .await;
        assert!(lost.is_cancelled());
        calls.extend(seen.lock().unwrap().iter().copied());
        assert_eq!(calls, [0, 5, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lock_or_a_404_ends_the_monitor_at_once() {
        let lost = CancellationToken::new();
        monitor(
            |_| async {
                Err(anyhow::Error::new(StatusError {
                    code: 403,
                    body: String::new(),
                }))
            },
            3,
            Duration::from_secs(1),
            lost.clone(),
        )
        .await;
        assert!(lost.is_cancelled());
        let lost = CancellationToken::new();
        monitor(
            |_| async { Ok(None) },
            3,
            Duration::from_secs(1),
            lost.clone(),
        )
        .await;
        assert!(lost.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn stop_gives_up_at_the_deadline() {
        let stop = Stop {
            token: CancellationToken::new(),
            deadline: Some(Instant::now() + Duration::from_secs(3)),
        };
        assert_eq!(stop.wait(), Duration::from_secs(3));
        assert_eq!(stop.run(std::future::pending::<()>()).await, None);
        assert!(stop.stopped());
        let forever = Stop {
            token: CancellationToken::new(),
            deadline: None,
        };
        assert_eq!(forever.wait(), WAIT);
        assert_eq!(forever.run(async { 7 }).await, Some(7));
        forever.token.cancel();
        assert!(forever.stopped());
    }
}
