//! `trellis acl policy create|list|read|delete`, as Consul's
//! `command/acl/policy`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Common, Outcome, call, show_policy, show_policy_stub};
use crate::cli::client::{Api, Method, Request};
use crate::cli::kv::data_from_arg;

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCmd {
    /// Create a policy from rules (`-rules @file`, `-` for stdin, or the
    /// rules themselves).
    Create(CreateCmd),
    /// List every policy.
    List(ListCmd),
    /// Print one policy, by -id or -name.
    Read(ReadCmd),
    /// Delete one policy, by -id or -name.
    Delete(DeleteCmd),
}

impl PolicyCmd {
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
    /// The new policy's name.
    #[arg(long, default_value = "")]
    name: String,
    /// Free text.
    #[arg(long, default_value = "")]
    description: String,
    /// The rules: HCL or JSON, `@file`, or `-` for stdin.
    #[arg(long, default_value = "")]
    rules: String,
    /// A datacenter the policy applies in (repeatable; none is all).
    #[arg(long = "valid-datacenter", value_name = "DC")]
    datacenters: Vec<String>,
}

impl CreateCmd {
    async fn run(self) -> Outcome {
        if self.name.is_empty() {
            return Err("Missing required '-name' flag".into());
        }
        let rules = if self.rules.is_empty() {
            Vec::new()
        } else {
            data_from_arg(&self.rules).map_err(|e| format!("Error loading rules: {e}"))?
        };
        let rules = String::from_utf8(rules)
            .map_err(|_| "Error loading rules: the rules are not UTF-8".to_string())?;
        let api = self.common.api()?;
        let body = json!({
            "Name": self.name,
            "Description": self.description,
            "Rules": rules,
            "Datacenters": self.datacenters,
        });
        let policy = call(
            &api,
            Request::new(Method::Put, "/v1/acl/policy").json(&body),
        )
        .await
        .map_err(|e| format!("Failed to create new policy: {e}"))?;
        Ok(show_policy(&policy, self.common.format))
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
        let list = call(&api, Request::new(Method::Get, "/v1/acl/policies"))
            .await
            .map_err(|e| format!("Failed to retrieve the policy list: {e}"))?;
        if self.common.format == super::Format::Json {
            return Ok(super::json(&list));
        }
        Ok(list
            .as_array()
            .map(|ps| ps.iter().map(show_policy_stub).collect())
            .unwrap_or_default())
    }
}

/// `-id` or `-name`: which policy.
#[derive(Debug, Args)]
struct Which {
    /// The policy's ID.
    #[arg(long, default_value = "")]
    id: String,
    /// The policy's name.
    #[arg(long, default_value = "")]
    name: String,
}

impl Which {
    /// The policy, read by ID or by name.
    async fn read(&self, api: &Api) -> Result<Value, String> {
        let path = match (self.id.is_empty(), self.name.is_empty()) {
            (false, _) => format!("/v1/acl/policy/{}", self.id),
            (true, false) => format!("/v1/acl/policy/name/{}", self.name),
            (true, true) => return Err("Must specify either the -id or -name parameters".into()),
        };
        let which = if self.id.is_empty() {
            &self.name
        } else {
            &self.id
        };
        call(api, Request::new(Method::Get, path))
            .await
            .map_err(|e| format!("Error reading policy {which:?}: {e}"))
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReadCmd {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    which: Which,
}

impl ReadCmd {
    async fn run(self) -> Outcome {
        let api = self.common.api()?;
        let policy = self.which.read(&api).await?;
        Ok(show_policy(&policy, self.common.format))
    }
}

#[derive(Debug, Args)]
pub(crate) struct DeleteCmd {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    which: Which,
}

impl DeleteCmd {
    async fn run(self) -> Outcome {
        let api = self.common.api()?;
        let id = if self.which.id.is_empty() {
            let policy = self.which.read(&api).await?;
            policy["ID"].as_str().unwrap_or_default().to_string()
        } else {
            self.which.id.clone()
        };
        call(
            &api,
            Request::new(Method::Delete, format!("/v1/acl/policy/{id}")),
        )
        .await
        .map_err(|e| format!("Error deleting policy {id:?}: {e}"))?;
        Ok(format!("Policy {id:?} deleted successfully\n"))
    }
}
