//! `trellis operator raft list-peers|remove-peer`.

use std::io::Write;

use anyhow::bail;
use clap::Subcommand;
use serde::Deserialize;

use super::client::HttpAddr;

#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCmd {
    /// The Raft configuration of the servers.
    #[command(subcommand)]
    Raft(RaftCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RaftCmd {
    /// List the servers in the Raft configuration, and which one leads.
    ListPeers {
        #[command(flatten)]
        addr: HttpAddr,
        /// Answer from the agent's own state even without a leader.
        #[arg(long)]
        stale: bool,
    },
    /// Remove a server from the Raft configuration (a dead server that will
    /// not come back), by its ID or its server RPC address.
    RemovePeer {
        #[command(flatten)]
        addr: HttpAddr,
        /// The server's ID, as list-peers shows it.
        #[arg(long, conflicts_with = "address", required_unless_present = "address")]
        id: Option<String>,
        /// The server's RPC address (IP:port).
        #[arg(long)]
        address: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Configuration {
    servers: Vec<Server>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Server {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    leader: bool,
    voter: bool,
    protocol_version: String,
}

impl OperatorCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let Self::Raft(cmd) = self;
        let mut out = std::io::stdout().lock();
        match cmd {
            RaftCmd::ListPeers { addr, stale } => {
                let path = if stale {
                    "/v1/operator/raft/configuration?stale"
                } else {
                    "/v1/operator/raft/configuration"
                };
                let config: Configuration = serde_json::from_str(&addr.get(path)?)?;
                writeln!(out, "Node\tID\tAddress\tState\tVoter\tRaftProtocol")?;
                for s in config.servers {
                    let state = if s.leader { "leader" } else { "follower" };
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s.node, s.id, s.address, state, s.voter, s.protocol_version
                    )?;
                }
            }
            RaftCmd::RemovePeer { addr, id, address } => {
                let query = match (&id, &address) {
                    (Some(id), _) => format!("id={id}"),
                    (None, Some(a)) => format!("address={a}"),
                    (None, None) => bail!("give --id or --address"),
                };
                addr.delete(&format!("/v1/operator/raft/peer?{query}"))?;
                let which = id.or(address).unwrap_or_default();
                writeln!(out, "Removed peer with {which}")?;
            }
        }
        Ok(())
    }
}
