//! `trellis force-leave NODE`: mark a failed node as left.

use clap::Args;

use super::client::HttpAddr;

#[derive(Debug, Args)]
pub(crate) struct ForceLeaveCmd {
    /// The failed node's name.
    node: String,
    #[command(flatten)]
    addr: HttpAddr,
}

impl ForceLeaveCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        self.addr.put(
            &format!("/v1/agent/force-leave/{}", self.node),
            String::new(),
        )?;
        Ok(())
    }
}
