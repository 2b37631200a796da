//! Waiting for a condition with a deadline, instead of sleeping and hoping.
//! A condition answers `Ok(value)` when met and `Err(what it saw)` when not;
//! a wait that runs out names what it waited for and the last thing seen.
//! The deadlines the cluster tests wait by live here too.

use std::fmt;
use std::time::{Duration, Instant};

/// How long a member's HTTP answer may take. Servers answer writes that
/// cannot commit within their own 5 s request timeout, and "No cluster
/// leader" at once; a request that takes longer than this is a hang.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// Bootstrap of a fresh cluster, and a restarted cluster's first election.
pub const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// An election after a failure, or a member catching up.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(20);

/// How often a condition is asked again.
const POLL: Duration = Duration::from_millis(25);

/// A wait that ran out.
#[derive(Debug, Clone)]
pub struct Timeout {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub deadline: Duration,
    /// What the condition said the last time it was asked.
    pub last: String,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}; last: {}",
            self.deadline, self.what, self.last
        )
    }
}

impl std::error::Error for Timeout {}

/// Asks `f` until it answers `Ok` or `deadline` passes; then panics with
/// `what` and its last answer.
pub fn wait_until<T>(what: &str, deadline: Duration, f: impl FnMut() -> Result<T, String>) -> T {
    try_wait_until(what, deadline, f).unwrap_or_else(|e| panic!("{e}"))
}

/// [`wait_until`] that returns the [`Timeout`] instead of panicking.
pub fn try_wait_until<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, Timeout> {
    let end = Instant::now() + deadline;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= end => {
                return Err(Timeout {
                    what: what.to_string(),
                    deadline,
                    last,
                });
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// The async form of [`wait_until`]: `f` returns a future.
pub async fn wait_until_async<T, F, Fut>(what: &str, deadline: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    try_wait_until_async(what, deadline, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The async form of [`try_wait_until`].
pub async fn try_wait_until_async<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut f: F,
) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let end = Instant::now() + deadline;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= end => {
                return Err(Timeout {
                    what: what.to_string(),
                    deadline,
                    last,
                });
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_met_condition_returns_its_value() {
        let mut n = 0;
        let v = wait_until("three asks", Duration::from_secs(5), || {
            n += 1;
            if n == 3 {
                Ok(n)
            } else {
                Err(format!("asked {n}"))
            }
        });
        assert_eq!(v, 3);
    }

    #[test]
    fn a_timeout_names_what_and_the_last_state() {
        let e = try_wait_until("never", Duration::from_millis(30), || {
            Err::<(), _>("still no".to_string())
        })
        .expect_err("times out");
        let s = e.to_string();
        assert!(s.contains("waiting for never; last: still no"), "{s}");
    }

    #[tokio::test]
    async fn the_async_form_waits_too() {
        let mut n = 0;
        let v = wait_until_async("two asks", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move { if n == 2 { Ok(n) } else { Err(String::new()) } }
        })
        .await;
        assert_eq!(v, 2);
    }
}
