//! `trellis force-leave [-wan] NODE`: mark a failed node as left, or with
//! `-wan` a failed server of the WAN pool (`node.dc`).

use clap::Args;

use super::client::HttpAddr;

#[derive(Debug, Args)]
pub(crate) struct ForceLeaveCmd {
    /// Force the WAN pool's member NODE (`node.dc`) out instead.
    #[arg(long)]
    wan: bool,
    /// The failed node's name.
    node: String,
    #[command(flatten)]
    addr: HttpAddr,
}

impl ForceLeaveCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        self.addr.put(
            &format!(
                "/v1/agent/force-leave/{}{}",
                self.node,
                if self.wan { "?wan=1" } else { "" }
            ),
            String::new(),
        )?;
        Ok(())
    }
}
