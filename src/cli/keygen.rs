//! `trellis keygen`: print a fresh gossip encryption key for `--encrypt`.

use std::io::Write;

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct KeygenCmd {}

impl KeygenCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        writeln!(std::io::stdout(), "{}", crate::gossip::keygen())?;
        Ok(())
    }
}
