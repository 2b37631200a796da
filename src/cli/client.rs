//! The small HTTP client the CLI subcommands use to reach an agent.

use anyhow::{Context, bail};
use clap::Args;

/// Where the agent's HTTP API is.
#[derive(Debug, Clone, Args)]
pub(crate) struct HttpAddr {
    /// The agent's HTTP API address.
    #[arg(
        long,
        env = "TRELLIS_HTTP_ADDR",
        default_value = "127.0.0.1:8500",
        value_name = "ADDR"
    )]
    http_addr: String,
}

impl HttpAddr {
    fn url(&self, path: &str) -> String {
        let base = self.http_addr.trim_end_matches('/');
        if base.starts_with("http://") || base.starts_with("https://") {
            format!("{base}{path}")
        } else {
            format!("http://{base}{path}")
        }
    }

    /// Runs one request on a fresh single-threaded runtime; the CLI does one
    /// thing and exits.
    fn send(
        &self,
        req: impl FnOnce(&reqwest::Client, String) -> reqwest::RequestBuilder,
        path: &str,
    ) -> anyhow::Result<String> {
        let url = self.url(path);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let client = reqwest::Client::new();
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
