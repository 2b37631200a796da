//! What the benchmark does to either store, the same for both: load the
//! keys in batches from concurrent clients, read random keys one at a time,
//! stop, restart and time until a known key is served again.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// Any step not done in this time is a failure.
pub(crate) const DEADLINE: Duration = Duration::from_secs(1800);
/// How often a restarted store is asked for the known key.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// Which API a store speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Consul's: `PUT /v1/txn`, `GET /v1/kv/<key>`.
    Trellis,
    /// etcd v3's JSON gateway: `POST /v3/kv/txn`, `POST /v3/kv/range`.
    Etcd,
}

/// How to write and read one store. Cheap to clone into every client.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    pub(crate) kind: Kind,
    /// HTTP API (trellis) or client URL (etcd) address.
    pub(crate) addr: SocketAddr,
    /// The size of every value.
    pub(crate) value_bytes: usize,
}

impl Api {
    /// A request writing `keys` (with their values) in one transaction: 128
    /// `set` ops of Consul's txn, or 128 puts of etcd's (its default
    /// `--max-txn-ops` is 128 too).
    pub(crate) fn write_batch(
        &self,
        http: &reqwest::Client,
        keys: &[usize],
    ) -> reqwest::RequestBuilder {
        let body = match self.kind {
            Kind::Trellis => Value::Array(
                keys.iter()
                    .map(|&i| {
                        json!({"KV": {"Verb": "set", "Key": key(i),
                                      "Value": B64.encode(value(i, self.value_bytes))}})
                    })
                    .collect(),
            ),
            Kind::Etcd => json!({"success": keys.iter().map(|&i| json!({"request_put": {
                "key": B64.encode(key(i)), "value": B64.encode(value(i, self.value_bytes))}}))
                .collect::<Vec<_>>()}),
        };
        let req = match self.kind {
            Kind::Trellis => http.put(format!("http://{}/v1/txn", self.addr)),
            Kind::Etcd => http.post(format!("http://{}/v3/kv/txn", self.addr)),
        };
        req.header("content-type", "application/json")
            .body(body.to_string())
    }

    /// A request reading key `i`, in the store's default consistency
    /// (trellis: through the leader, as Consul's default; etcd:
    /// linearizable).
    pub(crate) fn read(&self, http: &reqwest::Client, i: usize) -> reqwest::RequestBuilder {
        match self.kind {
            Kind::Trellis => http.get(format!("http://{}/v1/kv/{}", self.addr, key(i))),
            Kind::Etcd => http
                .post(format!("http://{}/v3/kv/range", self.addr))
                .header("content-type", "application/json")
                .body(json!({"key": B64.encode(key(i))}).to_string()),
        }
    }

    /// Whether the answer to `read(i)` holds key `i` with its value.
    pub(crate) fn holds(&self, i: usize, status: reqwest::StatusCode, body: &[u8]) -> bool {
        if !status.is_success() {
            return false;
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return false;
        };
        let found = match self.kind {
            Kind::Trellis => &v[0]["Value"],
            Kind::Etcd => &v["kvs"][0]["value"],
        };
        found
            .as_str()
            .and_then(|b| B64.decode(b).ok())
            .is_some_and(|b| b == value(i, self.value_bytes).as_bytes())
    }
}

/// One store under test, single member, with its data on disk.
pub(crate) trait Store {
    /// "trellis" or "etcd".
    fn name(&self) -> &'static str;

    /// The running process.
    fn pid(&self) -> u32;

    /// Its data directory.
    fn data_dir(&self) -> &Path;

    /// How to write and read it.
    fn api(&self) -> Api;

    /// The size of its snapshot once stopped: trellis's stored Raft
    /// snapshot; etcd's db file, the whole state, as `etcdctl snapshot
    /// save` writes it. With a note on what was measured.
    fn snapshot_size(&self) -> anyhow::Result<(u64, String)>;

    /// SIGTERM, and wait for it to exit.
    fn stop(&mut self);

    /// Starts it again with its data; returns once the process is spawned
    /// (`restart_to_serving` does the waiting).
    async fn start_again(&mut self) -> anyhow::Result<()>;

    /// Fails if it has exited.
    fn check_running(&mut self) -> anyhow::Result<()>;

    /// The end of its log, for errors.
    fn log_tail(&self) -> String;
}

/// The key of index `i`: fixed width, so keys sort as numbers.
pub(crate) fn key(i: usize) -> String {
    format!("bench/million/{i:07}")
}

/// The `bytes`-byte printable value of key `i`, unique to it.
pub(crate) fn value(i: usize, bytes: usize) -> String {
    let mut v = format!("{i:07}:");
    let fill = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut n = i;
    while v.len() < bytes {
        v.push(char::from(fill[n % fill.len()]));
        n = n / 3 + 7;
    }
    v.truncate(bytes);
    v
}

/// What loading measured.
pub(crate) struct Loaded {
    pub(crate) keys: usize,
    pub(crate) took: Duration,
}

/// Writes keys `0..n` in batches of `batch` from `clients` concurrent
/// clients, each on its own connection; fails on any refused batch.
pub(crate) async fn load<S: Store>(
    store: &S,
    n: usize,
    batch: usize,
    clients: usize,
) -> anyhow::Result<Loaded> {
    let api = store.api();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (api, next) = (api.clone(), next.clone());
        let http = client()?;
        tasks.spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::SeqCst);
                if from >= n {
                    return anyhow::Ok(());
                }
                let keys: Vec<usize> = (from..(from + batch).min(n)).collect();
                let resp = api.write_batch(&http, &keys).send().await?;
                let status = resp.status();
                let body = resp.text().await?;
                if !status.is_success() {
                    bail!("batch from key {from}: {status} {}", shorten(&body));
                }
            }
        });
    }
    let mut progress = Instant::now();
    while let Some(r) = tokio::time::timeout(DEADLINE, tasks.join_next())
        .await
        .map_err(|_| anyhow!("loading took over {} s", DEADLINE.as_secs()))?
    {
        r.context("a loading task")??;
        if progress.elapsed() > Duration::from_secs(10) {
            progress = Instant::now();
            eprintln!(
                "  {}: loading, {} keys sent",
                store.name(),
                next.load(Ordering::SeqCst).min(n)
            );
        }
    }
    Ok(Loaded {
        keys: n,
        took: start.elapsed(),
    })
}

/// Reads `gets` random keys of `0..n` one at a time on one connection;
/// returns the latencies, sorted, and fails if any read did not hold its
/// key.
pub(crate) async fn read_random<S: Store>(
    store: &S,
    n: usize,
    gets: usize,
) -> anyhow::Result<Vec<Duration>> {
    let http = client()?;
    let api = store.api();
    // The same keys, in the same order, for both stores.
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut lat = Vec::with_capacity(gets);
    for _ in 0..gets {
        let i = rng.random_range(0..n);
        let sent = Instant::now();
        let resp = api.read(&http, i).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        lat.push(sent.elapsed());
        if !api.holds(i, status, &body) {
            bail!(
                "{}: reading {} gave {status} {}",
                store.name(),
                key(i),
                shorten(&String::from_utf8_lossy(&body))
            );
        }
    }
    lat.sort_unstable();
    Ok(lat)
}

/// Stops the store and starts it again: the time from the start until a
/// read of key `known` holds it.
pub(crate) async fn restart_to_serving<S: Store>(
    store: &mut S,
    known: usize,
) -> anyhow::Result<Duration> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let start = Instant::now();
    store.start_again().await?;
    let api = store.api();
    loop {
        store.check_running()?;
        if let Ok(resp) = api.read(&http, known).send().await {
            let status = resp.status();
            if let Ok(body) = resp.bytes().await
                && api.holds(known, status, &body)
            {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > DEADLINE {
            bail!(
                "{} did not serve {} within {} s",
                store.name(),
                key(known),
                DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits until the process uses under 5 ms of CPU in each of three
/// consecutive 200 ms polls (background work after a load, such as
/// snapshots and compaction, is done), up to `DEADLINE`.
pub(crate) async fn quiet<S: Store>(store: &mut S) -> anyhow::Result<()> {
    let pid = [store.pid()];
    let start = Instant::now();
    let (mut cpu, mut calm) = (crate::procs::cpu_seconds(&pid), 0);
    while calm < 3 {
        if start.elapsed() > DEADLINE {
            bail!(
                "{} did not settle within {} s",
                store.name(),
                DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        store.check_running()?;
        let c = crate::procs::cpu_seconds(&pid);
        calm = if c - cpu < 0.005 { calm + 1 } else { 0 };
        cpu = c;
    }
    Ok(())
}

/// One keep-alive HTTP/1.1 connection's client.
fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building an HTTP client")
}

/// The first 300 characters of `s`.
pub(crate) fn shorten(s: &str) -> String {
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Checks the key and value generators; run without `--bench`.
pub(crate) fn self_check() {
    assert_eq!(key(42), "bench/million/0000042");
    assert_eq!(value(42, 100).len(), 100);
    assert!(value(42, 100).starts_with("0000042:"));
    assert_ne!(value(1, 100), value(2, 100));
    assert_eq!(value(999_999, 5), "09999");
}
