//! What the load driver and the failover trials need from a cluster, the
//! same for trellis and etcd: how to send one write of either workload
//! (catalog registration or KV put) to one member, which member leads, and
//! killing and restarting members.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::etcd;

/// What a write is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workload {
    /// trellis: a catalog registration (a new node and service); etcd: the
    /// same JSON as the value of a new key.
    Catalog,
    /// Both: a new key with a [`KV_VALUE_BYTES`]-byte value (trellis `PUT
    /// /v1/kv/<key>`, etcd `put`), the same key and value on both.
    Kv,
}

impl Workload {
    /// How the tables name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Catalog => "catalog writes",
            Self::Kv => "KV puts",
        }
    }
}

/// The size of every KV put's value, as the issue asks.
pub(crate) const KV_VALUE_BYTES: usize = 100;

/// How to send a write to each member. Cheap to clone into every client
/// task; holds no connection (each client has its own).
#[derive(Clone, Debug)]
pub(crate) enum Api {
    /// `PUT /v1/catalog/register` on each server's HTTP address.
    Trellis(Vec<SocketAddr>),
    /// `POST /v3/kv/put` on each member's client (gRPC gateway) address.
    Etcd(Vec<SocketAddr>),
}

impl Api {
    /// How many members writes can go to.
    pub(crate) fn members(&self) -> usize {
        match self {
            Self::Trellis(a) | Self::Etcd(a) => a.len(),
        }
    }

    /// The HTTP address of `member`.
    pub(crate) fn addr(&self, member: usize) -> SocketAddr {
        match self {
            Self::Trellis(a) | Self::Etcd(a) => a[member],
        }
    }

    /// One catalog write, unique to `tag`, to `member`, on `http`.
    pub(crate) fn write(
        &self,
        http: &reqwest::Client,
        member: usize,
        tag: &str,
    ) -> reqwest::RequestBuilder {
        self.request(Workload::Catalog, http, member, tag)
    }

    /// One write of `workload`, unique to `tag`, to `member`, on `http`.
    pub(crate) fn request(
        &self,
        workload: Workload,
        http: &reqwest::Client,
        member: usize,
        tag: &str,
    ) -> reqwest::RequestBuilder {
        match workload {
            Workload::Catalog => self.register(http, member, tag),
            Workload::Kv => self.put_kv(http, member, tag),
        }
    }

    /// A catalog registration. Both bodies are JSON of similar size: etcd's
    /// value is the registration trellis gets, base64-encoded as its gateway
    /// wants.
    fn register(
        &self,
        http: &reqwest::Client,
        member: usize,
        tag: &str,
    ) -> reqwest::RequestBuilder {
        let registration = registration(tag);
        match self {
            Self::Trellis(a) => http
                .put(format!(
                    "http://{}/v1/catalog/register",
                    a[member % a.len()]
                ))
                .header("content-type", "application/json")
                .body(registration),
            Self::Etcd(a) => {
                let body = format!(
                    r#"{{"key":"{}","value":"{}"}}"#,
                    etcd::base64(format!("bench/{tag}").as_bytes()),
                    etcd::base64(registration.as_bytes())
                );
                http.post(format!("http://{}/v3/kv/put", a[member % a.len()]))
                    .header("content-type", "application/json")
                    .body(body)
            }
        }
    }
}

impl Api {
    /// A KV put of the new key `bench/kv/<tag>` with [`kv_value`]: the raw
    /// value as the body for trellis (Consul's API), the key and value
    /// base64 in JSON for etcd's gateway (its API; about 190 bytes).
    fn put_kv(&self, http: &reqwest::Client, member: usize, tag: &str) -> reqwest::RequestBuilder {
        let key = format!("bench/kv/{tag}");
        let value = kv_value(tag);
        match self {
            Self::Trellis(a) => http
                .put(format!("http://{}/v1/kv/{key}", a[member % a.len()]))
                .body(value),
            Self::Etcd(a) => {
                let body = format!(
                    r#"{{"key":"{}","value":"{}"}}"#,
                    etcd::base64(key.as_bytes()),
                    etcd::base64(value.as_bytes())
                );
                http.post(format!("http://{}/v3/kv/put", a[member % a.len()]))
                    .header("content-type", "application/json")
                    .body(body)
            }
        }
    }
}

/// A [`KV_VALUE_BYTES`]-byte printable value that starts with `tag`, so
/// that no two writes store the same bytes.
pub(crate) fn kv_value(tag: &str) -> String {
    let mut v: String = format!("{tag}:").chars().take(KV_VALUE_BYTES).collect();
    let fill = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut i = 0;
    while v.len() < KV_VALUE_BYTES {
        v.push(char::from(fill[i % fill.len()]));
        i += 1;
    }
    v
}

/// A catalog registration like an agent sends for a new node with one
/// service: a node and a service named after `tag`, an address derived from
/// it. About 150 bytes.
pub(crate) fn registration(tag: &str) -> String {
    let h = tag
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!(
        r#"{{"Node":"n-{tag}","Address":"10.{}.{}.{}","Service":{{"ID":"svc-{tag}","Service":"svc-{tag}","Port":8080,"Tags":["bench"]}}}}"#,
        (h >> 16) & 0xff,
        (h >> 8) & 0xff,
        h & 0xff
    )
}

/// A three-member cluster the benchmark controls.
pub(crate) trait Cluster {
    /// "trellis" or "etcd".
    fn name(&self) -> &'static str;

    /// How to write to it.
    fn api(&self) -> Api;

    /// The process IDs of the running members.
    fn pids(&self) -> Vec<u32>;

    /// How many members it has.
    fn members(&self) -> usize {
        self.api().members()
    }

    /// Whether every member runs, agrees on one leader, counts every member
    /// as a voter, and accepts a write; `Ok(leader)` when so, else why not.
    async fn healthy(&mut self, http: &reqwest::Client) -> anyhow::Result<usize>;

    /// SIGKILLs `member`.
    fn kill(&mut self, member: usize);

    /// Starts `member` again, with its data, address and ports, and waits
    /// until it serves its client port.
    async fn restart(&mut self, member: usize) -> anyhow::Result<()>;

    /// Fails if a member that should run has exited.
    fn check_running(&mut self) -> anyhow::Result<()>;

    /// Waits until `healthy`, up to `within`; the error says what was wrong
    /// at the deadline.
    async fn wait_healthy(
        &mut self,
        http: &reqwest::Client,
        within: Duration,
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            self.check_running()?;
            match self.healthy(http).await {
                Ok(leader) => return Ok(leader),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!(
                        "{} not healthy within {} s",
                        self.name(),
                        within.as_secs()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// Sends one write and tells whether it was accepted (2xx); the error
/// says what came back otherwise. The body is read so the connection can
/// be reused.
pub(crate) async fn send(req: reqwest::RequestBuilder) -> Result<(), String> {
    let resp = req.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| error_chain(&e))?;
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body);
        Err(format!("HTTP {status}: {}", text.trim()))
    }
}

/// An error with its causes, on one line (reqwest hides the interesting
/// part, e.g. "connection refused", in the source chain).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Checks the body generators; run without `--bench`.
pub(crate) fn self_check() {
    let r = registration("t-1-2");
    let v: serde_json::Value = serde_json::from_str(&r).expect("the registration is JSON");
    assert_eq!(v["Node"], "n-t-1-2");
    assert_eq!(v["Service"]["ID"], "svc-t-1-2");
    assert!((100..200).contains(&r.len()), "{} bytes", r.len());
    assert_ne!(registration("a"), registration("b"));
    assert_eq!(kv_value("r0-16c-3-42").len(), KV_VALUE_BYTES);
    assert!(kv_value("r0-16c-3-42").starts_with("r0-16c-3-42:"));
    assert_eq!(kv_value(&"t".repeat(300)).len(), KV_VALUE_BYTES);
    assert_ne!(kv_value("a"), kv_value("b"));
}
