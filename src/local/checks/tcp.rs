//! TCP checks: a connection to `host:port` that succeeds within the timeout
//! is passing, anything else critical. Nothing is sent.

use std::time::Duration;

use super::runner::{CheckResult, Probe};
use crate::catalog::HealthStatus;
use crate::definition::cap_output;

/// One TCP check's target.
#[derive(Debug, Clone)]
pub(crate) struct TcpProbe {
    /// `host:port` as given; resolved on every run so a moved name is followed.
    target: String,
    /// How long connecting (with resolution) may take.
    timeout: Duration,
}

impl TcpProbe {
    /// A probe for `host:port`.
    pub(crate) fn new(target: &str, timeout: Duration) -> Self {
        Self {
            target: target.into(),
            timeout,
        }
    }

    async fn connect(&self) -> CheckResult {
        let attempt =
            tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(&self.target));
        let (status, output) = match attempt.await {
            Ok(Ok(_stream)) => (
                HealthStatus::Passing,
                format!("TCP connect {}: Success", self.target),
            ),
            Ok(Err(e)) => (
                HealthStatus::Critical,
                format!("dial tcp {}: {e}", self.target),
            ),
            Err(_) => (
                HealthStatus::Critical,
                format!(
                    "dial tcp {}: timed out after {:?}",
                    self.target, self.timeout
                ),
            ),
        };
        CheckResult {
            status,
            output: cap_output(output),
        }
    }
}

impl Probe for TcpProbe {
    fn run(&self) -> impl Future<Output = CheckResult> + Send {
        self.connect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_port_passes_and_a_closed_one_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let p = TcpProbe::new(&addr, Duration::from_secs(5));
        let r = p.run().await;
        assert_eq!(r.status, HealthStatus::Passing, "{r:?}");
        assert_eq!(r.output, format!("TCP connect {addr}: Success"));

        drop(listener);
        let r = p.run().await;
        assert_eq!(r.status, HealthStatus::Critical, "{r:?}");
        assert!(
            r.output.starts_with(&format!("dial tcp {addr}: ")),
            "{}",
            r.output
        );
    }

    #[tokio::test]
    async fn an_unresolvable_host_is_critical() {
        let p = TcpProbe::new("no-such-host.invalid:80", Duration::from_secs(5));
        assert_eq!(p.run().await.status, HealthStatus::Critical);
    }
}
