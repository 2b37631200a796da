//! The small HTTP client the CLI subcommands use to reach an agent: a
//! one-request helper for the simple subcommands ([`HttpAddr::get`] and
//! friends), and [`Api`], an async client that keeps the status, the
//! `X-Consul-Index` and the raw body of every answer, for the commands that
//! speak Consul's API in depth (`kv`, `lock`, `acl`). Every request carries
//! the ACL token of `-token`/`CONSUL_HTTP_TOKEN` when one is given.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::goflags::parse_go_bool;

/// Where an agent listens when neither the flag nor an environment variable
/// says otherwise: Consul's default HTTP address.
const DEFAULT_ADDR: &str = "127.0.0.1:8500";

/// Consul's own variable for the agent's address, read when trellis's is
/// unset, so scripts written for `consul kv` and `consul lock` run as they are.
const CONSUL_HTTP_ADDR: &str = "CONSUL_HTTP_ADDR";

/// How long the client waits to connect; an agent that does not accept in
/// this long is down. Requests themselves have no overall timeout, as a
/// blocking query may rightly take minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Consul's variable that turns an address without a scheme into HTTPS.
const CONSUL_HTTP_SSL: &str = "CONSUL_HTTP_SSL";

/// Consul's variable that, set to false, checks no certificate at all.
const CONSUL_HTTP_SSL_VERIFY: &str = "CONSUL_HTTP_SSL_VERIFY";

/// Where the agent's HTTP API is, and how to speak HTTPS to it: Consul's
/// flags and environment variables.
#[derive(Debug, Clone, Args)]
pub(crate) struct HttpAddr {
    /// The agent's HTTP API address; `https://` for HTTPS [default:
    /// $CONSUL_HTTP_ADDR, else 127.0.0.1:8500].
    #[arg(long, env = "TRELLIS_HTTP_ADDR", value_name = "ADDR")]
    http_addr: Option<String>,
    /// CA certificate (PEM) to check the agent's HTTPS certificate against.
    #[arg(long, env = "CONSUL_CACERT", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A directory of CA certificates (PEM).
    #[arg(long, env = "CONSUL_CAPATH", value_name = "DIR")]
    ca_path: Option<PathBuf>,
    /// Client certificate (PEM) to present, for agents with
    /// `verify_incoming`.
    #[arg(long, env = "CONSUL_CLIENT_CERT", value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "CONSUL_CLIENT_KEY", value_name = "FILE")]
    client_key: Option<PathBuf>,
    /// The name the agent's certificate must carry, when it differs from
    /// the address's host (e.g. server.dc1.consul).
    #[arg(long, env = "CONSUL_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,
    /// The ACL token every request carries (as `X-Consul-Token`).
    #[arg(
        long,
        env = "CONSUL_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// A file holding the ACL token, read when -token is not given.
    #[arg(long, env = "CONSUL_HTTP_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl HttpAddr {
    /// The address: the flag, `TRELLIS_HTTP_ADDR`, `CONSUL_HTTP_ADDR`, or
    /// Consul's default, in that order.
    fn addr(&self) -> String {
        self.http_addr
            .clone()
            .or_else(|| std::env::var(CONSUL_HTTP_ADDR).ok())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_ADDR.to_string())
    }

    /// The URL of the API root, without a trailing slash: the address's own
    /// scheme, else https when `CONSUL_HTTP_SSL` is true, else http.
    fn base(&self) -> String {
        let ssl = std::env::var(CONSUL_HTTP_SSL).ok();
        base_url(&self.addr(), ssl.as_deref())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// The ACL token: `-token` (or `CONSUL_HTTP_TOKEN`), else the contents
    /// of `-token-file` (or `CONSUL_HTTP_TOKEN_FILE`) trimmed, as Consul's
    /// CLI reads them; `None` sends no token.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = self.token.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(token.clone()));
        }
        let Some(file) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the token file {}", file.display()))?;
        Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
    }

    /// A client that speaks HTTPS as the flags say and sends the token
    /// with every request.
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        if let Some(token) = self.token()? {
            let mut value = reqwest::header::HeaderValue::from_str(&token)
                .context("the ACL token is not a valid header value")?;
            value.set_sensitive(true);
            let headers = [(
                reqwest::header::HeaderName::from_static("x-consul-token"),
                value,
            )];
            builder = builder.default_headers(headers.into_iter().collect());
        }
        let tls = crate::tls::CliTls {
            ca_file: self.ca_file.clone(),
            ca_path: self.ca_path.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            server_name: self.tls_server_name.clone(),
            skip_verify: std::env::var(CONSUL_HTTP_SSL_VERIFY)
                .is_ok_and(|v| parse_go_bool(&v) == Some(false)),
        };
        let builder = if tls.is_set() {
            let config = crate::tls::cli_client_config(&tls).map_err(anyhow::Error::msg)?;
            builder.use_preconfigured_tls(config)
        } else {
            builder
        };
        builder.build().context("building the HTTP client")
    }

    /// An async client for this agent.
    pub(crate) fn api(&self) -> anyhow::Result<Api> {
        let http = self.client()?;
        Ok(Api {
            base: self.base(),
            http,
        })
    }

    /// Runs one request on a fresh single-threaded runtime; the CLI does one
    /// thing and exits.
    fn send(
        &self,
        req: impl FnOnce(&reqwest::Client, String) -> reqwest::RequestBuilder,
        path: &str,
    ) -> anyhow::Result<String> {
        let url = self.url(path);
        let client = self.client()?;
        block_on(async {
            let resp = req(&client, url.clone())
                .send()
                .await
                .with_context(|| format!("cannot reach the agent at {url}"))?;
            let status = resp.status();
            let body = resp.text().await?;
            if !status.is_success() {
                bail!("{url}: {status}: {}", body.trim());
            }
            Ok(body)
        })
    }

    /// GET a path, returning the body.
    pub(crate) fn get(&self, path: &str) -> anyhow::Result<String> {
        self.send(|c, u| c.get(u), path)
    }

    /// DELETE a path, returning the response body.
    pub(crate) fn delete(&self, path: &str) -> anyhow::Result<String> {
        self.send(|c, u| c.delete(u), path)
    }

    /// PUT a path with a body, returning the response body.
    pub(crate) fn put(&self, path: &str, body: String) -> anyhow::Result<String> {
        self.send(|c, u| c.put(u).body(body), path)
    }
}

/// The API root for `addr`: its own scheme when it has one, else https
/// when `ssl` (`CONSUL_HTTP_SSL`) reads as true, as Go's `strconv.ParseBool`.
fn base_url(addr: &str, ssl: Option<&str>) -> String {
    let base = addr.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        return base.to_string();
    }
    let https = ssl.and_then(parse_go_bool) == Some(true);
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{base}")
}

/// Runs `fut` to completion on a fresh single-threaded runtime: each
/// subcommand is one short conversation with one agent.
pub(crate) fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// An HTTP method the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Put,
    Delete,
}

/// One request: a path under the API root (unescaped; [`Api`] escapes
/// it), its query parameters and its body.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    method: Method,
    path: String,
    /// In order; a flag that Consul reads by presence (`recurse`) has an
    /// empty value, as the Go client sends it.
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
        }
    }

    /// Adds `name=value`.
    pub(crate) fn param(mut self, name: &'static str, value: impl fmt::Display) -> Self {
        self.query.push((name, value.to_string()));
        self
    }

    /// Adds a flag Consul reads by its presence (`?recurse`).
    pub(crate) fn flag(mut self, name: &'static str) -> Self {
        self.query.push((name, String::new()));
        self
    }

    /// The raw body.
    pub(crate) fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    /// A JSON body.
    pub(crate) fn json(self, value: &serde_json::Value) -> Self {
        self.body(value.to_string().into_bytes())
    }
}

/// One answer, whatever its status.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// `X-Consul-Index`, when the agent sent it.
    pub(crate) index: Option<u64>,
    /// Why a KV write answered `false`, when trellis says so
    /// (`X-Trellis-Refused`: held by another session, lock-delay, stale
    /// index); Consul does not say.
    pub(crate) refused: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// The answer as a success, or the error the Go client gives for any
    /// other status (`Unexpected response code: 500 (missing session)`), so
    /// messages built on it read as Consul's.
    pub(crate) fn ok(self) -> Result<Self, StatusError> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(StatusError {
                code: self.status,
                body: String::from_utf8_lossy(&self.body).trim().to_string(),
            })
        }
    }

    /// The body as JSON of type `T`.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the agent answered with unexpected JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body of a write that answers `true` or `false`.
    pub(crate) fn bool(&self) -> anyhow::Result<bool> {
        self.json()
    }
}

/// A non-2xx answer, worded as the Go client words it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Unexpected response code: {code} ({body})")]
pub(crate) struct StatusError {
    pub(crate) code: u16,
    pub(crate) body: String,
}

/// An async client for one agent's HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    /// `http://host:port`, no trailing slash.
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// Sends `req` and returns the answer whatever its status; `Err` only
    /// when no answer came.
    pub(crate) async fn send(&self, req: Request) -> anyhow::Result<Reply> {
        let url = format!("{}{}", self.base, escape_path(&req.path));
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.http.request(method, &url);
        if !req.query.is_empty() {
            builder = builder.query(&req.query);
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let resp = builder
            .send()
            .await
            .with_context(|| format!("cannot reach the agent at {url}"))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let index = header("x-consul-index").and_then(|v| v.parse().ok());
        let refused = header("x-trellis-refused");
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer from {url}"))?
            .to_vec();
        Ok(Reply {
            status,
            index,
            refused,
            body,
        })
    }
}

/// Percent-encodes a URL path as Go's `url.URL.EscapedPath` does: a KV key
/// may hold `?`, `#`, `%` or spaces, which must reach the agent as part of
/// the key. `/` stays, as it separates the key's segments.
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'/'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_keeps_its_slashes_and_escapes_what_a_url_would_misread() {
        assert_eq!(escape_path("/v1/kv/a/b.c"), "/v1/kv/a/b.c");
        assert_eq!(
            escape_path("/v1/kv/what?now #1 100%"),
            "/v1/kv/what%3Fnow%20%231%20100%25"
        );
        assert_eq!(escape_path("/v1/kv/é"), "/v1/kv/%C3%A9");
    }

    #[test]
    fn the_token_is_the_flags_else_the_token_files_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  from-file\n").unwrap();
        let addr = |token: Option<&str>, token_file: Option<&std::path::Path>| HttpAddr {
            http_addr: None,
            ca_file: None,
            ca_path: None,
            client_cert: None,
            client_key: None,
            tls_server_name: None,
            token: token.map(str::to_string),
            token_file: token_file.map(std::path::Path::to_path_buf),
        };
        assert_eq!(addr(None, None).token().unwrap(), None);
        assert_eq!(
            addr(None, Some(&file)).token().unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(
            addr(Some("flag"), Some(&file)).token().unwrap().as_deref(),
            Some("flag")
        );
        assert!(
            addr(None, Some(&dir.path().join("missing")))
                .token()
                .is_err()
        );
    }

    #[test]
    fn a_failed_status_reads_as_the_go_clients_error() {
        let reply = Reply {
            status: 500,
            index: None,
            refused: None,
            body: b"missing session\n".to_vec(),
        };
        let e = reply.ok().expect_err("500 is an error");
        assert_eq!(
            e.to_string(),
            "Unexpected response code: 500 (missing session)"
        );
    }

    #[test]
    fn the_scheme_is_the_addresss_own_else_https_when_consul_http_ssl_says_so() {
        assert_eq!(base_url("10.0.0.1:8500/", None), "http://10.0.0.1:8500");
        assert_eq!(
            base_url("https://consul.example:8501", None),
            "https://consul.example:8501"
        );
        assert_eq!(
            base_url("127.0.0.1:8501", Some("true")),
            "https://127.0.0.1:8501"
        );
        assert_eq!(
            base_url("127.0.0.1:8500", Some("0")),
            "http://127.0.0.1:8500"
        );
        assert_eq!(
            base_url("http://127.0.0.1:8500", Some("true")),
            "http://127.0.0.1:8500"
        );
    }
}
