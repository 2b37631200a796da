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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

    #[test]
    fn keygen_takes_no_arguments() {
        assert!(Cli::try_parse_from(["trellis", "keygen"]).is_ok());
        assert!(Cli::try_parse_from(["trellis", "keygen", "extra"]).is_err());
    }
}
