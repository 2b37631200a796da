//! `trellis join [-wan] ADDR`: ask the agent to join the gossip pool of
//! another, or with `-wan` (servers) the WAN pool of a server of another
//! datacenter.

use std::io::Write;

use clap::Args;

use super::client::HttpAddr;

#[derive(Debug, Args)]
pub(crate) struct JoinCmd {
    /// Join the WAN pool: ADDR is a server's WAN gossip address (port 8302
    /// by default).
    #[arg(long)]
    wan: bool,
    /// Another agent's gossip address (`host[:port]`, port 8301 by default).
    address: String,
    #[command(flatten)]
    addr: HttpAddr,
}

impl JoinCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let query = if self.wan { "?wan=1" } else { "" };
        self.addr.put(
            &format!("/v1/agent/join/{}{query}", self.address),
            String::new(),
        )?;
        writeln!(
            std::io::stdout().lock(),
            "Successfully joined cluster by contacting 1 nodes."
        )?;
        Ok(())
    }
}
