//! `trellis kv put [-cas -modify-index N] [-acquire|-release -session S]
//! [-flags N] [-base64] KEY [DATA|@file|-]`, as Consul's `command/kv/put`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Args;

use super::api::{Kv, Write};
use super::{Outcome, data_from_arg, info};
use crate::cli::client::HttpAddr;

#[derive(Debug, Args)]
pub(crate) struct PutCmd {
    #[command(flatten)]
    addr: HttpAddr,
    /// Check-and-set: write only if the key's ModifyIndex is -modify-index.
    #[arg(long)]
    cas: bool,
    /// An unsigned integer stored with the entry, for clients' own use.
    #[arg(long, default_value_t = 0, value_name = "N")]
    flags: u64,
    /// The data is base64; store its decoded bytes.
    #[arg(long)]
    base64: bool,
    /// The ModifyIndex the key must have, with -cas.
    #[arg(long, default_value_t = 0, value_name = "N")]
    modify_index: u64,
    /// The session for -acquire and -release.
    #[arg(
        long,
        default_value = "",
        value_name = "ID",
        allow_hyphen_values = true
    )]
    session: String,
    /// Take the key's lock for -session (creating the key if need be).
    #[arg(long)]
    acquire: bool,
    /// Give up the key's lock held by -session.
    #[arg(long)]
    release: bool,
    /// The key.
    key: Option<String>,
    /// The data: the value itself, `@path` for a file's contents, `-` for
    /// stdin; empty when left out.
    #[arg(allow_hyphen_values = true)]
    data: Option<String>,
}

impl PutCmd {
    pub(super) async fn run(self) -> Outcome {
        let Some(key) = self.key.clone() else {
            return Err("Error! Missing KEY argument".to_string());
        };
        let data = match self.data.as_deref() {
            None | Some("") => Vec::new(),
            Some(arg) => data_from_arg(arg).map_err(|e| format!("Error! {e}"))?,
        };
        let value = if self.base64 {
            STANDARD
                .decode(&data)
                .map_err(|e| format!("Error! Cannot base 64 decode data: {e}"))?
        } else {
            data
        };
        if (self.release || self.acquire) && self.session.is_empty() {
            return Err("Error! Missing -session (required with -acquire and -release)".into());
        }
        if self.cas && self.modify_index == 0 {
            return Err("Must specify -modify-index with -cas!".into());
        }
        let how = self.write();
        let api = self
            .addr
            .api()
            .map_err(|e| format!("Error connecting to Consul agent: {e:#}"))?;
        let done = Kv::new(api).put(&key, &value, self.flags, &how).await;
        // Consul's wording for each kind of write, success and failure.
        let (ok_text, refused, failed) = match how {
            Write::Cas(_) => (
                format!("Success! Data written to: {key}"),
                format!("Error! Did not write to {key}: CAS failed"),
                format!("Error! Did not write to {key}: "),
            ),
            Write::Acquire(_) => (
                format!("Success! Lock acquired on: {key}"),
                "Error! Did not acquire lock".to_string(),
                "Error! Failed writing data: ".to_string(),
            ),
            Write::Release(_) => (
                format!("Success! Lock released on: {key}"),
                "Error! Did not release lock".to_string(),
                "Error! Failed writing data: ".to_string(),
            ),
            Write::Set => (
                format!("Success! Data written to: {key}"),
                // A plain set answers true unless it errs.
                format!("Error! Failed writing data: the agent did not write {key}"),
                "Error! Failed writing data: ".to_string(),
            ),
        };
        match done {
            Ok(true) => info(ok_text.as_bytes()),
            Ok(false) => Err(refused),
            Err(e) => Err(format!("{failed}{e:#}")),
        }
    }

    /// The kind of write, in Consul's order of precedence.
    fn write(&self) -> Write {
        if self.cas {
            Write::Cas(self.modify_index)
        } else if self.acquire {
            Write::Acquire(self.session.clone())
        } else if self.release {
            Write::Release(self.session.clone())
        } else {
            Write::Set
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
        put: PutCmd,
    }

    fn parse(args: &[&str]) -> PutCmd {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .put
    }

    #[test]
    fn the_flags_choose_the_kind_of_write() {
        let p = parse(&["--cas", "--modify-index", "7", "k", "v"]);
        assert_eq!(p.write(), Write::Cas(7));
        let p = parse(&["--acquire", "--session", "s1", "--flags", "3", "k"]);
        assert_eq!(p.write(), Write::Acquire("s1".into()));
        assert_eq!(p.flags, 3);
        assert_eq!(p.data, None);
        let p = parse(&["--release", "--session=s1", "k", "-"]);
        assert_eq!(p.write(), Write::Release("s1".into()));
        assert_eq!(p.data.as_deref(), Some("-"));
        let p = parse(&["k", "-5"]);
        assert_eq!(p.write(), Write::Set);
        assert_eq!(p.data.as_deref(), Some("-5"));
    }

    #[tokio::test]
    async fn bad_combinations_are_refused_before_any_request() {
        // Port 1 refuses connections: reaching it would fail differently.
        let base = ["--http-addr", "127.0.0.1:1"];
        let run = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            parse(&args).run()
        };
        assert_eq!(
            run(&["--acquire", "k"]).await.unwrap_err(),
            "Error! Missing -session (required with -acquire and -release)"
        );
        assert_eq!(
            run(&["--cas", "k", "v"]).await.unwrap_err(),
            "Must specify -modify-index with -cas!"
        );
        assert_eq!(
            run(&["--base64", "k", "***"]).await.unwrap_err(),
            "Error! Cannot base 64 decode data: Invalid symbol 42, offset 0."
        );
        let e = run(&["k", "v"]).await.unwrap_err();
        assert!(
            e.starts_with("Error! Failed writing data: cannot reach"),
            "{e}"
        );
    }
}
