//! `trellis join ADDR`: ask the agent to join the gossip pool of another.

use std::io::Write;

use clap::Args;

use super::client::HttpAddr;

#[derive(Debug, Args)]
pub(crate) struct JoinCmd {
    /// Another agent's gossip address (`host[:port]`, port 8301 by default).
    address: String,
    #[command(flatten)]
    addr: HttpAddr,
}

impl JoinCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        self.addr
            .put(&format!("/v1/agent/join/{}", self.address), String::new())?;
        writeln!(
            std::io::stdout().lock(),
            "Successfully joined cluster by contacting 1 nodes."
        )?;
        Ok(())
    }
}
