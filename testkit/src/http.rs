//! HTTP requests to an agent's API: with reqwest over loopback, or, for an
//! agent inside a network namespace (which the caller's sockets cannot
//! reach), by running `curl` in that namespace. Either way the answer is a
//! [`Resp`], and `Err` means no answer came (refused, reset, timed out).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// One HTTP answer.
#[derive(Clone)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// `X-Consul-Index`, when present.
    pub index: Option<u64>,
    /// `X-Consul-KnownLeader`, when present.
    pub known_leader: Option<bool>,
    /// Every header, by lower-case name.
    pub headers: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced).
    pub text: String,
    /// The body as it came, for binary values.
    pub bytes: Vec<u8>,
}

/// The body once, as text: a failure message is read, not a byte list.
impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resp")
            .field("status", &self.status)
            .field("index", &self.index)
            .field("known_leader", &self.known_leader)
            .field("headers", &self.headers)
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

impl Resp {
    fn new(status: u16, headers: BTreeMap<String, String>, bytes: Vec<u8>) -> Self {
        Self {
            status,
            index: headers.get("x-consul-index").and_then(|v| v.parse().ok()),
            known_leader: headers.get("x-consul-knownleader").map(|v| v == "true"),
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
        }
    }

    /// Reads a reqwest answer whole, for a request the caller built itself
    /// (a raw body, its own headers or timeout).
    pub async fn read(r: reqwest::Response) -> Result<Self, String> {
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let bytes = r.bytes().await.map_err(|e| format!("{e:?}"))?;
        Ok(Self::new(status, headers, bytes.to_vec()))
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// How requests reach one agent.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    /// The namespace to run curl in, for an agent inside one.
    netns: Option<String>,
    timeout: Duration,
}

impl Http {
    /// Requests that give up after `timeout`.
    pub(crate) fn new(timeout: Duration, netns: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("an HTTP client");
        Self {
            client,
            netns,
            timeout,
        }
    }

    /// One request to `http` (the agent's API address).
    pub(crate) async fn request(
        &self,
        http: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        match &self.netns {
            Some(ns) => self.curl_in(ns, http, method, path, body).await,
            None => self.reqwest(http, method, path, body).await,
        }
    }

    async fn reqwest(
        &self,
        http: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self.client.request(method, format!("http://{http}{path}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.map_err(|e| format!("{e:?}"))?;
        Resp::read(r).await
    }

    async fn curl_in(
        &self,
        ns: &str,
        http: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", ns, "curl", "-sS", "-i", "--max-time"])
            .arg(self.timeout.as_secs().max(1).to_string())
            // No `Expect: 100-continue` round trip: one request, one answer.
            .args(["-H", "Expect:", "-X", method]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        let out = cmd
            .arg(format!("http://{http}{path}"))
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("run curl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "curl {method} {path} in {ns}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        parse_http(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Splits `curl -i` output into status, headers and body.
fn parse_http(raw: &str) -> Result<Resp, String> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {raw:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {raw:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Resp::new(status, headers, body.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_output_parses() {
        let r = parse_http(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\nX-Consul-Index: 42\r\n\
             X-Consul-KnownLeader: false\r\n\r\nNo cluster leader",
        )
        .unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(r.index, Some(42));
        assert_eq!(r.known_leader, Some(false));
        assert_eq!(r.headers["content-type"], "text/plain");
        assert_eq!(r.text, "No cluster leader");
        assert!(parse_http("garbage").is_err());
    }
}
