//! Catalog churn during a dnsperf run: one write every `1/rate` s, each
//! re-registering a randomly chosen instance with a new port and tag
//! (`workload::churn_body`), so the view trellis answers from changes 50
//! times a second as a datacenter's does. Writes go out on schedule even
//! when earlier ones are slow, up to `MAX_IN_FLIGHT` at once; a tick that
//! finds that many still waiting is counted as skipped, so the report says
//! how many writes were really done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::workload::{self, Instance};

/// Writes waiting for their answer at once, at most.
const MAX_IN_FLIGHT: usize = 16;

/// What a churn run did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Done {
    /// Writes answered `true`.
    pub(crate) writes: u64,
    /// Writes answered otherwise, or not at all.
    pub(crate) failed: u64,
    /// Ticks skipped because `MAX_IN_FLIGHT` writes were still waiting.
    pub(crate) skipped: u64,
    /// How long it ran.
    pub(crate) seconds: f64,
}

impl Done {
    /// Writes done per second.
    pub(crate) fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.writes as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// A churn task running against one agent.
pub(crate) struct Churn {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Done>,
}

impl Churn {
    /// Starts writing to the agent whose HTTP API is at `http`, `rate`
    /// times a second, over the instances of `catalog`.
    pub(crate) fn start(http: SocketAddr, catalog: Arc<Vec<Instance>>, rate: u32) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(http, catalog, rate.max(1), stopped));
        Self { stop, task }
    }

    /// Stops issuing writes, waits for those in flight, and says what was done.
    pub(crate) async fn finish(self) -> anyhow::Result<Done> {
        let _ = self.stop.send(());
        Ok(self.task.await?)
    }
}

async fn run(
    http: SocketAddr,
    catalog: Arc<Vec<Instance>>,
    rate: u32,
    mut stopped: oneshot::Receiver<()>,
) -> Done {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    else {
        return Done::default();
    };
    let url = Arc::new(format!("http://{http}/v1/catalog/register"));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pick = workload::churn_rng();
    let mut inflight: JoinSet<bool> = JoinSet::new();
    let mut done = Done::default();
    let started = Instant::now();
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(r) = inflight.join_next(), if !inflight.is_empty() => {
                match r {
                    Ok(true) => done.writes += 1,
                    _ => done.failed += 1,
                }
            }
            _ = tick.tick() => {
                if inflight.len() >= MAX_IN_FLIGHT {
                    done.skipped += 1;
                    continue;
                }
                let body = workload::churn_body(&catalog, pick(), n);
                n += 1;
                let (client, url) = (client.clone(), url.clone());
                inflight.spawn(async move {
                    match client.put(url.as_str()).json(&body).send().await {
                        Ok(resp) => {
                            resp.status().is_success()
                                && resp.text().await.is_ok_and(|b| b.trim() == "true")
                        }
                        Err(_) => false,
                    }
                });
            }
        }
    }
    while let Some(r) = inflight.join_next().await {
        match r {
            Ok(true) => done.writes += 1,
            _ => done.failed += 1,
        }
    }
    done.seconds = started.elapsed().as_secs_f64();
    done
}
