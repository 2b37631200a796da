//! `trellis catalog services|nodes`.

use std::io::Write;

use clap::Subcommand;

use super::client::HttpAddr;

#[derive(Debug, Subcommand)]
pub(crate) enum CatalogCmd {
    /// List the services in the catalog, with their tags.
    Services {
        #[command(flatten)]
        addr: HttpAddr,
        /// Show each service's tags.
        #[arg(long)]
        tags: bool,
    },
    /// List the nodes in the catalog, with their addresses.
    Nodes {
        #[command(flatten)]
        addr: HttpAddr,
    },
}

impl CatalogCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            Self::Services { addr, tags } => {
                let body = addr.get("/v1/catalog/services")?;
                let services: std::collections::BTreeMap<String, Vec<String>> =
                    serde_json::from_str(&body)?;
                for (name, t) in services {
                    if tags && !t.is_empty() {
                        writeln!(out, "{name}\t{}", t.join(","))?;
                    } else {
                        writeln!(out, "{name}")?;
                    }
                }
            }
            Self::Nodes { addr } => {
                let body = addr.get("/v1/catalog/nodes")?;
                let nodes: Vec<serde_json::Value> = serde_json::from_str(&body)?;
                writeln!(out, "Node\tAddress\tDC")?;
                for n in nodes {
                    let s = |k: &str| n.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    writeln!(out, "{}\t{}\t{}", s("Node"), s("Address"), s("Datacenter"))?;
                }
            }
        }
        Ok(())
    }
}
