//! `trellis acl token create|list|read|delete`, as Consul's
//! `command/acl/token`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Common, Format, Outcome, call, json as indented, show_token};
use crate::cli::client::{Method, Request};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCmd {
    /// Create a token linking policies by -policy-name or -policy-id.
    Create(CreateCmd),
    /// List every token.
    List(ListCmd),
    /// Print one token: -id, or -self for the one this command uses.
    Read(ReadCmd),
    /// Delete one token by -id.
    Delete(DeleteCmd),
}

impl TokenCmd {
    pub(super) async fn run(self) -> Outcome {
        match self {
            Self::Create(cmd) => cmd.run().await,
            Self::List(cmd) => cmd.run().await,
            Self::Read(cmd) => cmd.run().await,
            Self::Delete(cmd) => cmd.run().await,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CreateCmd {
    #[command(flatten)]
    common: Common,
    /// Free text.
    #[arg(long, default_value = "")]
    description: String,
    /// A policy to link, by name (repeatable).
    #[arg(long = "policy-name", value_name = "NAME")]
    policy_names: Vec<String>,
    /// A policy to link, by ID (repeatable).
    #[arg(long = "policy-id", value_name = "ID")]
    policy_ids: Vec<String>,
    /// The token's SecretID (a UUID); a random one when absent.
    #[arg(long, default_value = "")]
    secret: String,
    /// The token's AccessorID (a UUID); a random one when absent.
    #[arg(long, default_value = "")]
    accessor: String,
    /// A token of this datacenter only.
    #[arg(long)]
    local: bool,
}

impl CreateCmd {
    async fn run(self) -> Outcome {
        let api = self.common.api()?;
        let links: Vec<Value> = self
            .policy_ids
            .iter()
            .map(|id| json!({"ID": id}))
            .chain(self.policy_names.iter().map(|name| json!({"Name": name})))
            .collect();
        let body = json!({
            "AccessorID": self.accessor,
            "SecretID": self.secret,
            "Description": self.description,
            "Policies": links,
            "Local": self.local,
        });
        let token = call(&api, Request::new(Method::Put, "/v1/acl/token").json(&body))
            .await
            .map_err(|e| format!("Failed to create new token: {e}"))?;
        Ok(show_token(&token, self.common.format))
    }
}

#[derive(Debug, Args)]
pub(crate) struct ListCmd {
    #[command(flatten)]
    common: Common,
}

impl ListCmd {
    async fn run(self) -> Outcome {
        let api = self.common.api()?;
        let list = call(&api, Request::new(Method::Get, "/v1/acl/tokens"))
            .await
            .map_err(|e| format!("Failed to retrieve the token list: {e}"))?;
        if self.common.format == Format::Json {
            return Ok(indented(&list));
        }
        let shown: Vec<String> = list
            .as_array()
            .map(|ts| ts.iter().map(|t| show_token(t, Format::Pretty)).collect())
            .unwrap_or_default();
        // Consul separates the tokens with a blank line.
        Ok(shown.join("\n"))
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReadCmd {
    #[command(flatten)]
    common: Common,
    /// The token's AccessorID.
    #[arg(long, default_value = "")]
    id: String,
    /// Read the token this command sends instead (-token or
    /// CONSUL_HTTP_TOKEN).
    #[arg(long = "self")]
    own: bool,
}

impl ReadCmd {
    async fn run(self) -> Outcome {
        let path = match (self.own, self.id.is_empty()) {
            (true, _) => "/v1/acl/token/self".to_string(),
            (false, false) => format!("/v1/acl/token/{}", self.id),
            (false, true) => {
                return Err("Must specify the -id parameter".into());
            }
        };
        let api = self.common.api()?;
        let token = call(&api, Request::new(Method::Get, path))
            .await
            .map_err(|e| format!("Error reading token {:?}: {e}", self.id))?;
        Ok(show_token(&token, self.common.format))
    }
}

#[derive(Debug, Args)]
pub(crate) struct DeleteCmd {
    #[command(flatten)]
    common: Common,
    /// The token's AccessorID.
    #[arg(long, default_value = "")]
    id: String,
}

impl DeleteCmd {
    async fn run(self) -> Outcome {
        if self.id.is_empty() {
            return Err("Must specify the -id parameter".into());
        }
        let api = self.common.api()?;
        call(
            &api,
            Request::new(Method::Delete, format!("/v1/acl/token/{}", self.id)),
        )
        .await
        .map_err(|e| format!("Error deleting token {:?}: {e}", self.id))?;
        Ok(format!("Token {:?} deleted successfully\n", self.id))
    }
}
