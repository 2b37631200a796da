//! `trellis services register FILE` and `trellis services deregister ID`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::client::HttpAddr;

#[derive(Debug, Subcommand)]
pub(crate) enum ServicesCmd {
    /// Register the service(s) defined in a JSON file with the agent. The file
    /// holds one definition in Consul's agent API form
    /// (`{"Name": "web", "Port": 80, ...}`), or `{"Service": {...}}`, or
    /// `{"Services": [...]}`.
    Register {
        #[command(flatten)]
        addr: HttpAddr,
        /// The definition file.
        file: PathBuf,
    },
    /// Deregister a service instance from the agent by its ID.
    Deregister {
        #[command(flatten)]
        addr: HttpAddr,
        /// The service instance ID.
        id: String,
    },
}

impl ServicesCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Register { addr, file } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", file.display()))?;
                let defs = match &v {
                    serde_json::Value::Object(m) => {
                        let get = |k: &str| {
                            m.iter()
                                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                                .map(|(_, v)| v)
                        };
                        match (get("services"), get("service")) {
                            (Some(serde_json::Value::Array(list)), _) => list.clone(),
                            (_, Some(one @ serde_json::Value::Object(_))) => vec![one.clone()],
                            _ => vec![v.clone()],
                        }
                    }
                    _ => anyhow::bail!("{}: expected a JSON object", file.display()),
                };
                for d in defs {
                    addr.put("/v1/agent/service/register", d.to_string())?;
                }
            }
            Self::Deregister { addr, id } => {
                addr.put(&format!("/v1/agent/service/deregister/{id}"), String::new())?;
            }
        }
        Ok(())
    }
}
