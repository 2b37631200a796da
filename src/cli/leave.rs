//! `trellis leave`: ask the agent to leave gracefully and shut down. A
//! server first takes itself out of the Raft configuration.

use std::io::Write;

use clap::Args;

use super::client::HttpAddr;

#[derive(Debug, Args)]
pub(crate) struct LeaveCmd {
    #[command(flatten)]
    addr: HttpAddr,
}

impl LeaveCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        self.addr.put("/v1/agent/leave", String::new())?;
        writeln!(std::io::stdout().lock(), "Graceful leave complete")?;
        Ok(())
    }
}
