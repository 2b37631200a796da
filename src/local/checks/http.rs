//! HTTP checks: a request to a URL; 2xx is passing, 429 (Too Many Requests)
//! warning, anything else or no answer within the timeout critical. The
//! output is the status line and the start of the body, as Consul words it.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::runner::{CheckResult, Probe};
use crate::catalog::HealthStatus;
use crate::definition::{CheckDefinition, MAX_OUTPUT, cap_output};

/// One HTTP check's request, built once when the check starts.
#[derive(Debug, Clone)]
pub(crate) struct HttpProbe {
    /// Shared by every HTTP check of the agent: one connection pool, one
    /// resolver, so a thousand checks cost a thousand requests, not a
    /// thousand clients.
    client: reqwest::Client,
    /// The method (GET unless given).
    method: reqwest::Method,
    /// The URL as given, for the output.
    url: String,
    /// Extra headers.
    headers: HeaderMap,
    /// Request body; empty sends none.
    body: String,
    /// How long the whole exchange may take.
    timeout: Duration,
}

/// The clients every HTTP check of the agent shares: one that verifies TLS
/// certificates against the system's roots, and one for checks that set
/// `TLSSkipVerify`.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    /// For checks that verify certificates (the default).
    verifying: reqwest::Client,
    /// For checks with `TLSSkipVerify`.
    insecure: reqwest::Client,
}

impl Clients {
    /// Builds both clients.
    pub(crate) fn new() -> Self {
        Self {
            verifying: build(false),
            insecure: build(true),
        }
    }

    /// The client for a check's `TLSSkipVerify`.
    pub(crate) fn for_check(&self, def: &CheckDefinition) -> reqwest::Client {
        if def.tls_skip_verify {
            self.insecure.clone()
        } else {
            self.verifying.clone()
        }
    }
}

fn build(skip_verify: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("trellis-health-check/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30))
        .danger_accept_invalid_certs(skip_verify);
    match builder.build() {
        Ok(c) => c,
        Err(e) => {
            // Only a TLS backend that cannot initialize (no usable system
            // roots, say) fails here; plain-HTTP checks still work with the
            // default client, and HTTPS checks then report the TLS error.
            tracing::warn!(error = %e, "HTTP check client without TLS settings");
            reqwest::Client::default()
        }
    }
}

impl HttpProbe {
    /// A probe for a validated HTTP check definition.
    pub(crate) fn new(
        client: reqwest::Client,
        def: &CheckDefinition,
        timeout: Duration,
    ) -> Result<Self, String> {
        let method = if def.method.is_empty() {
            reqwest::Method::GET
        } else {
            reqwest::Method::from_bytes(def.method.to_ascii_uppercase().as_bytes())
                .map_err(|e| format!("Method: {e}"))?
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("text/plain, text/*, */*"),
        );
        for (name, values) in &def.header {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("Header: {name:?}: {e}"))?;
            // A header given with values replaces the default of that name.
            headers.remove(&name);
            for v in values {
                let v = HeaderValue::from_str(v).map_err(|e| format!("Header: {name}: {e}"))?;
                headers.append(name.clone(), v);
            }
        }
        Ok(Self {
            client,
            method,
            url: def.http.clone(),
            headers,
            body: def.body.clone(),
            timeout,
        })
    }

    async fn exchange(&self) -> CheckResult {
        let mut req = self
            .client
            .request(self.method.clone(), &self.url)
            .headers(self.headers.clone())
            .timeout(self.timeout);
        if !self.body.is_empty() {
            req = req.body(self.body.clone());
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return CheckResult {
                    status: HealthStatus::Critical,
                    output: cap_output(format!(
                        "HTTP {} {}: {}",
                        self.method,
                        self.url,
                        error_chain(&e)
                    )),
                };
            }
        };
        let code = resp.status();
        // Only the start of the body is kept, so only that much is read.
        let mut body = Vec::new();
        while body.len() < MAX_OUTPUT {
            match resp.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c),
                Ok(None) => break,
                // A body cut off mid-way still has a status: keep what came.
                Err(_) => break,
            }
        }
        body.truncate(MAX_OUTPUT);
        let status = if code.is_success() {
            HealthStatus::Passing
        } else if code == reqwest::StatusCode::TOO_MANY_REQUESTS {
            HealthStatus::Warning
        } else {
            HealthStatus::Critical
        };
        CheckResult {
            status,
            output: cap_output(format!(
                "HTTP {} {}: {} Output: {}",
                self.method,
                self.url,
                code,
                String::from_utf8_lossy(&body)
            )),
        }
    }
}

/// reqwest's errors hide the cause (refused, timed out) in their sources.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

impl Probe for HttpProbe {
    fn run(&self) -> impl Future<Output = CheckResult> + Send {
        self.exchange()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::any;

    use super::*;

    /// An HTTP server answering every request with the status in `code`
    /// and a body naming it; stopped by dropping the returned handle.
    async fn target(code: Arc<AtomicU16>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/{*path}",
            any(move |headers: HeaderMap, body: String| {
                let code = code.clone();
                async move {
                    let c = code.load(Ordering::SeqCst);
                    if c == 0 {
                        // Hang: the check's timeout must end it.
                        std::future::pending::<()>().await;
                    }
                    let echo = headers
                        .get("x-probe")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    (
                        StatusCode::from_u16(c).unwrap(),
                        format!(
                            "status {c} {echo} {body}{}",
                            "x".repeat(if c == 201 { 10_000 } else { 0 })
                        ),
                    )
                }
            }),
        );
        let h = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}/health"), h)
    }

    fn probe(url: &str, timeout: Duration) -> HttpProbe {
        let def = CheckDefinition {
            http: url.into(),
            method: "post".into(),
            header: [("X-Probe".to_string(), vec!["hello".to_string()])].into(),
            body: "ping".into(),
            ..CheckDefinition::default()
        };
        HttpProbe::new(Clients::new().for_check(&def), &def, timeout).unwrap()
    }

    #[tokio::test]
    async fn status_codes_map_to_health_and_output_names_them() {
        let code = Arc::new(AtomicU16::new(200));
        let (url, server) = target(code.clone()).await;
        let p = probe(&url, Duration::from_secs(5));

        let r = p.run().await;
        assert_eq!(r.status, HealthStatus::Passing, "{r:?}");
        assert_eq!(
            r.output,
            format!("HTTP POST {url}: 200 OK Output: status 200 hello ping")
        );

        code.store(429, Ordering::SeqCst);
        assert_eq!(p.run().await.status, HealthStatus::Warning);
        code.store(503, Ordering::SeqCst);
        let r = p.run().await;
        assert_eq!(r.status, HealthStatus::Critical);
        assert!(r.output.contains("503 Service Unavailable"), "{}", r.output);
        code.store(404, Ordering::SeqCst);
        assert_eq!(p.run().await.status, HealthStatus::Critical);

        // A long body is cut to the output cap.
        code.store(201, Ordering::SeqCst);
        let r = p.run().await;
        assert_eq!(r.status, HealthStatus::Passing);
        assert!(r.output.len() <= MAX_OUTPUT, "{}", r.output.len());

        // A stopped target is critical.
        server.abort();
        let _ = server.await;
        let r = p.run().await;
        assert_eq!(r.status, HealthStatus::Critical, "{r:?}");
        assert!(
            r.output.starts_with(&format!("HTTP POST {url}: ")),
            "{}",
            r.output
        );
    }

    #[tokio::test]
    async fn a_hung_target_costs_only_the_timeout() {
        let code = Arc::new(AtomicU16::new(0));
        let (url, _server) = target(code).await;
        let p = probe(&url, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let r = p.run().await;
        let took = started.elapsed();
        assert_eq!(r.status, HealthStatus::Critical);
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    /// A real HTTPS server: `openssl s_server -www` with a self-signed
    /// certificate made for the test. Killed on drop.
    struct TlsServer {
        child: std::process::Child,
        url: String,
        _dir: tempfile::TempDir,
    }

    impl TlsServer {
        fn start() -> Self {
            use std::io::BufRead;
            use std::process::{Command, Stdio};
            let dir = tempfile::tempdir().unwrap();
            let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
            let made = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=localhost", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null())
                .status()
                .expect("openssl (apt-get install openssl)");
            assert!(made.success(), "openssl req failed");
            let mut child = Command::new("openssl")
                .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("openssl s_server");
            let stdout = child.stdout.take().expect("piped stdout");
            // s_server prints `ACCEPT 127.0.0.1:PORT` once it listens.
            let addr = std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| l.strip_prefix("ACCEPT ").map(str::to_owned))
                .expect("s_server reports its address");
            Self {
                child,
                url: format!("https://{addr}/"),
                _dir: dir,
            }
        }
    }

    impl Drop for TlsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn https_checks_verify_certificates_unless_told_to_skip() {
        let server = TlsServer::start();
        let clients = Clients::new();
        let check = |skip: bool| CheckDefinition {
            http: server.url.clone(),
            tls_skip_verify: skip,
            ..CheckDefinition::default()
        };
        let timeout = Duration::from_secs(5);

        let trusting = check(true);
        let probe = HttpProbe::new(clients.for_check(&trusting), &trusting, timeout).unwrap();
        let r = probe.run().await;
        assert_eq!(r.status, HealthStatus::Passing, "{}", r.output);
        assert!(r.output.contains("200"), "{}", r.output);

        // The self-signed certificate is not trusted by the system's roots.
        let verifying = check(false);
        let probe = HttpProbe::new(clients.for_check(&verifying), &verifying, timeout).unwrap();
        let r = probe.run().await;
        assert_eq!(r.status, HealthStatus::Critical, "{}", r.output);
        assert!(
            r.output.to_lowercase().contains("certificate"),
            "{}",
            r.output
        );
    }
}
