//! `trellis acl bootstrap|policy …|token …`: Consul's `consul acl` for the
//! subset trellis serves, with its flags (`-name`, `-rules @file`,
//! `-policy-name`, `-format=json`, …), its text output and its messages.
//! Requests carry the token of `-token`/`CONSUL_HTTP_TOKEN` (see
//! `client.rs`). Policies are in `policy.rs`, tokens in `token.rs`; the
//! output of both is formatted here.

mod policy;
mod token;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::client::{Api, HttpAddr, Method, Request, block_on};

#[derive(Debug, Subcommand)]
pub(crate) enum AclCmd {
    /// Create the first management token (once per cluster) and print it.
    Bootstrap(BootstrapCmd),
    /// Create, list, read and delete policies.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Create, list, read and delete tokens.
    #[command(subcommand)]
    Token(token::TokenCmd),
}

impl AclCmd {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let outcome = block_on(async {
            Ok(match self {
                Self::Bootstrap(cmd) => cmd.run().await,
                Self::Policy(cmd) => cmd.run().await,
                Self::Token(cmd) => cmd.run().await,
            })
        })?;
        Ok(match outcome {
            Ok(text) => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()?;
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
        })
    }
}

/// What a command prints on success, or Consul's message for its failure.
type Outcome = Result<String, String>;

/// The agent to ask and how to print, which every `acl` command takes.
#[derive(Debug, Args)]
struct Common {
    #[command(flatten)]
    addr: HttpAddr,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Pretty)]
    format: Format,
}

/// `-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Consul's text layout.
    Pretty,
    /// The API's JSON, indented.
    Json,
}

impl Common {
    fn api(&self) -> Result<Api, String> {
        self.addr
            .api()
            .map_err(|e| format!("Error connecting to Consul agent: {e:#}"))
    }
}

/// Sends `req` and returns its JSON, or the Go client's error text.
async fn call(api: &Api, req: Request) -> Result<Value, String> {
    let reply = api.send(req).await.map_err(|e| format!("{e:#}"))?;
    let reply = reply.ok().map_err(|e| e.to_string())?;
    reply.json().map_err(|e| format!("{e:#}"))
}

/// `PUT /v1/acl/bootstrap`.
#[derive(Debug, Args)]
pub(crate) struct BootstrapCmd {
    #[command(flatten)]
    common: Common,
}

impl BootstrapCmd {
    async fn run(self) -> Outcome {
        let api = self.common.api()?;
        let token = call(&api, Request::new(Method::Put, "/v1/acl/bootstrap"))
            .await
            .map_err(|e| format!("Failed ACL bootstrapping: {e}"))?;
        Ok(show_token(&token, self.common.format))
    }
}

/// A token as `consul acl token read` prints it.
fn show_token(t: &Value, format: Format) -> String {
    if format == Format::Json {
        return json(t);
    }
    let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "AccessorID:       {}", s("AccessorID"));
    let _ = writeln!(out, "SecretID:         {}", s("SecretID"));
    let _ = writeln!(out, "Description:      {}", s("Description"));
    let _ = writeln!(
        out,
        "Local:            {}",
        t["Local"].as_bool().unwrap_or(false)
    );
    let _ = writeln!(out, "Create Time:      {}", s("CreateTime"));
    let policies = t["Policies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !policies.is_empty() {
        out.push_str("Policies:\n");
        for p in policies {
            let _ = writeln!(
                out,
                "   {} - {}",
                p["ID"].as_str().unwrap_or_default(),
                p["Name"].as_str().unwrap_or_default()
            );
        }
    }
    out
}

/// A policy as `consul acl policy read` prints it.
fn show_policy(p: &Value, format: Format) -> String {
    if format == Format::Json {
        return json(p);
    }
    let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
    let mut out = String::new();
    let _ = writeln!(out, "ID:           {}", s("ID"));
    let _ = writeln!(out, "Name:         {}", s("Name"));
    let _ = writeln!(out, "Description:  {}", s("Description"));
    let _ = writeln!(out, "Datacenters:  {}", datacenters(p));
    let _ = writeln!(out, "Rules:\n{}", s("Rules"));
    out
}

/// A policy list entry as `consul acl policy list` prints it.
fn show_policy_stub(p: &Value) -> String {
    let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
    let mut out = String::new();
    let _ = writeln!(out, "{}:", s("Name"));
    let _ = writeln!(out, "   ID:           {}", s("ID"));
    let _ = writeln!(out, "   Description:  {}", s("Description"));
    let _ = writeln!(out, "   Datacenters:  {}", datacenters(p));
    out
}

/// `Datacenters` joined by `, `, as Consul prints them.
fn datacenters(p: &Value) -> String {
    p["Datacenters"]
        .as_array()
        .map(|dcs| {
            dcs.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// JSON indented by four spaces, as Go's `json.MarshalIndent` in Consul's
/// formatters, and a newline.
fn json(v: &Value) -> String {
    use serde::Serialize as _;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    // Serializing a `Value` into memory cannot fail.
    let _ = v.serialize(&mut ser);
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_prints_as_consuls_pretty_layout() {
        let t = json!({
            "AccessorID": "a-1", "SecretID": "s-1", "Description": "d",
            "Policies": [{"ID": "p-1", "Name": "web"}], "Local": false,
            "CreateTime": "2026-01-02T03:04:05.000Z"
        });
        assert_eq!(
            show_token(&t, Format::Pretty),
            "AccessorID:       a-1\nSecretID:         s-1\nDescription:      d\n\
             Local:            false\nCreate Time:      2026-01-02T03:04:05.000Z\n\
             Policies:\n   p-1 - web\n"
        );
        let back: Value = serde_json::from_str(&show_token(&t, Format::Json)).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn a_policy_prints_its_rules_and_datacenters() {
        let p = json!({"ID": "p", "Name": "n", "Description": "", "Rules": "acl = \"read\"",
                       "Datacenters": ["dc1", "dc2"]});
        assert_eq!(
            show_policy(&p, Format::Pretty),
            "ID:           p\nName:         n\nDescription:  \nDatacenters:  dc1, dc2\n\
             Rules:\nacl = \"read\"\n"
        );
        assert_eq!(
            show_policy_stub(
                &json!({"ID": "p", "Name": "n", "Description": "x", "Datacenters": null})
            ),
            "n:\n   ID:           p\n   Description:  x\n   Datacenters:  \n"
        );
    }
}
