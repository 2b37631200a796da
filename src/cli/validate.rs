//! `trellis validate FILE...`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::config::Config;

#[derive(Debug, Args)]
pub(crate) struct ValidateCmd {
    /// Configuration files or directories, merged in order as the agent would.
    #[arg(required = true, value_name = "FILE")]
    paths: Vec<PathBuf>,
}

impl ValidateCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let cfg = Config::validate_files(&self.paths)?;
        writeln!(
            std::io::stdout(),
            "Configuration is valid! node={} datacenter={} services={}",
            cfg.node.name,
            cfg.node.datacenter,
            cfg.services.services.len()
        )?;
        Ok(())
    }
}
