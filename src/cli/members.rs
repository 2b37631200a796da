//! `trellis members`: the LAN gossip pool as the agent sees it, or with
//! `-wan` a server's WAN pool (members `node.dc`).

use std::io::Write;

use clap::Args;
use serde::Deserialize;

use super::client::HttpAddr;

#[derive(Debug, Args)]
pub(crate) struct MembersCmd {
    /// List the WAN pool's members (servers of every datacenter) instead
    /// of the LAN pool's.
    #[arg(long)]
    wan: bool,
    #[command(flatten)]
    addr: HttpAddr,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Member {
    name: String,
    addr: String,
    port: u16,
    status: u8,
    tags: std::collections::BTreeMap<String, String>,
}

impl MembersCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let path = if self.wan {
            "/v1/agent/members?wan=1"
        } else {
            "/v1/agent/members"
        };
        // A client agent answers `?wan` with `null` (none), as Consul's.
        let members: Vec<Member> =
            serde_json::from_str::<Option<Vec<Member>>>(&self.addr.get(path)?)?.unwrap_or_default();
        let mut out = std::io::stdout().lock();
        writeln!(out, "Node\tAddress\tStatus\tType\tDC")?;
        for m in members {
            let status = match m.status {
                1 => "alive",
                2 => "leaving",
                3 => "left",
                4 => "failed",
                _ => "unknown",
            };
            let kind = match m.tags.get("role").map(String::as_str) {
                Some("consul") => "server",
                _ => "client",
            };
            let dc = m.tags.get("dc").map_or("", String::as_str);
            writeln!(
                out,
                "{}\t{}:{}\t{status}\t{kind}\t{dc}",
                m.name, m.addr, m.port
            )?;
        }
        Ok(())
    }
}
