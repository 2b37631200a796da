//! Write load on a cluster: writers that register unique instances of one
//! service through a set of agents as fast as they are answered, and
//! remember every acknowledged one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent::Agent;
use crate::api::register_body;
use crate::wait::wait_until_async;

/// Running writers.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    /// Failed attempts by kind, to explain a failing test.
    failures: Arc<Mutex<BTreeMap<String, usize>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Load {
    /// Starts `writers` writers; writer `w` sends its `k`th write to
    /// `targets[(w + k) % len]`. IDs are `<service>-<w>-<k>`.
    pub fn start(targets: &[&Agent], writers: usize, service: &str) -> Self {
        let urls: Vec<String> = targets
            .iter()
            .map(|a| a.url("/v1/catalog/register"))
            .collect();
        // A longer timeout than the checks use: a writer must see the
        // server's own answer to know whether a write was acknowledged.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let failures = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = (0..writers)
            .map(|w| {
                let (urls, client, service) = (urls.clone(), client.clone(), service.to_string());
                let (stop, acked, failures) = (stop.clone(), acked.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut k = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("{service}-{w}-{k}");
                        let url = &urls[(w + k) % urls.len()];
                        k += 1;
                        let body = register_body(&service, &id, "10.200.0.1", 1);
                        let kind = match client.put(url).json(&body).send().await {
                            Ok(r) if r.status().is_success() => {
                                lock(&acked).insert(id);
                                continue;
                            }
                            Ok(r) => {
                                let s = r.status().as_u16();
                                format!("{s} {}", r.text().await.unwrap_or_default().trim())
                            }
                            Err(e) if e.is_connect() => "connect".to_string(),
                            Err(e) if e.is_timeout() => "client timeout".to_string(),
                            Err(e) => format!("{e}"),
                        };
                        *lock(&failures).entry(kind).or_default() += 1;
                        // Pace retries against a dead or leaderless member
                        // instead of spinning on it.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            acked,
            failures,
            tasks,
        }
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        lock(&self.acked).len()
    }

    /// Failed attempts so far, by kind.
    pub fn failures(&self) -> BTreeMap<String, usize> {
        lock(&self.failures).clone()
    }

    /// Waits until at least `n` writes were acknowledged.
    pub async fn wait_acked(&self, n: usize, deadline: Duration) {
        let what = format!("{n} acknowledged writes");
        wait_until_async(&what, deadline, || async {
            let got = self.acked();
            if got >= n {
                Ok(())
            } else {
                Err(format!(
                    "{got} acknowledged; failures {:?}",
                    self.failures()
                ))
            }
        })
        .await;
    }

    /// Stops the writers, waits for their last requests, and returns every
    /// acknowledged ID.
    pub async fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = lock(&self.acked).clone();
        // Shown with --nocapture or when the test fails: how the cluster
        // answered the writes it did not acknowledge.
        eprintln!(
            "load: {} acknowledged; failed attempts by kind: {:?}",
            acked.len(),
            lock(&self.failures)
        );
        acked
    }
}
