//! `trellis kv delete [-recurse] [-cas -modify-index N] KEY`, as Consul's
//! `command/kv/del`.

use clap::Args;

use super::api::{Delete, Kv};
use super::{Outcome, info, strip_slash};
use crate::cli::client::HttpAddr;

#[derive(Debug, Args)]
pub(crate) struct DeleteCmd {
    #[command(flatten)]
    addr: HttpAddr,
    /// Check-and-set: delete only if the key's ModifyIndex is -modify-index.
    #[arg(long)]
    cas: bool,
    /// The ModifyIndex the key must have, with -cas.
    #[arg(long, default_value_t = 0, value_name = "N")]
    modify_index: u64,
    /// Delete every key under the prefix.
    #[arg(long)]
    recurse: bool,
    /// The key, or the prefix with -recurse.
    key: Option<String>,
}

impl DeleteCmd {
    /// Consul's checks of the flags, before any request.
    fn how(&self, key: &str) -> Result<Delete, String> {
        if key.is_empty() && !self.recurse {
            return Err("Error! Missing KEY argument".into());
        }
        if self.cas && self.modify_index == 0 {
            return Err("Cannot delete a key that does not exist. Provide a -modify-index greater than than 0.".into());
        }
        if self.modify_index != 0 && !self.cas {
            return Err("Cannot specify -modify-index without -cas!".into());
        }
        if self.recurse && self.cas {
            return Err("Cannot specify both -cas and -recurse!".into());
        }
        Ok(if self.recurse {
            Delete::Tree
        } else if self.cas {
            Delete::Cas(self.modify_index)
        } else {
            Delete::Key
        })
    }

    pub(super) async fn run(self) -> Outcome {
        let key = strip_slash(self.key.as_deref().unwrap_or_default()).to_string();
        let how = self.how(&key)?;
        let api = self
            .addr
            .api()
            .map_err(|e| format!("Error connecting to Consul agent: {e:#}"))?;
        let done = Kv::new(api).delete(&key, how).await;
        match (how, done) {
            (Delete::Tree, Ok(_)) => {
                info(format!("Success! Deleted keys with prefix: {key}").as_bytes())
            }
            (Delete::Tree, Err(e)) => Err(format!("Error! Did not delete prefix {key}: {e:#}")),
            (Delete::Cas(_), Ok(false)) => {
                Err(format!("Error! Did not delete key {key}: CAS failed"))
            }
            (Delete::Cas(_), Err(e)) => Err(format!("Error! Did not delete key {key}: {e:#}")),
            (Delete::Key, Err(e)) => Err(format!("Error deleting key {key}: {e:#}")),
            (Delete::Cas(_) | Delete::Key, Ok(_)) => {
                info(format!("Success! Deleted key: {key}").as_bytes())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        del: DeleteCmd,
    }

    fn how(args: &[&str]) -> Result<Delete, String> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
        let key = strip_slash(t.del.key.as_deref().unwrap_or_default()).to_string();
        t.del.how(&key)
    }

    #[test]
    fn the_flags_are_checked_as_consul_checks_them() {
        assert_eq!(how(&["/a"]), Ok(Delete::Key));
        assert_eq!(how(&["--recurse"]), Ok(Delete::Tree));
        assert_eq!(
            how(&["--cas", "--modify-index", "4", "a"]),
            Ok(Delete::Cas(4))
        );
        assert_eq!(how(&[]).unwrap_err(), "Error! Missing KEY argument");
        assert_eq!(
            how(&["--modify-index", "4", "a"]).unwrap_err(),
            "Cannot specify -modify-index without -cas!"
        );
        assert_eq!(
            how(&["--cas", "a"]).unwrap_err(),
            "Cannot delete a key that does not exist. Provide a -modify-index greater than than 0."
        );
        assert_eq!(
            how(&["--cas", "--modify-index", "4", "--recurse", "a"]).unwrap_err(),
            "Cannot specify both -cas and -recurse!"
        );
    }
}
