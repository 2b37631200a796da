//! `trellis kv get [-recurse|-keys] [-detailed] [-base64] [KEY]`, as
//! Consul's `command/kv/get`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Args;

use super::api::{Kv, KvPair, Read};
use super::{Outcome, info, strip_slash};
use crate::cli::client::HttpAddr;

#[derive(Debug, Args)]
pub(crate) struct GetCmd {
    #[command(flatten)]
    addr: HttpAddr,
    /// Print the value base64-encoded.
    #[arg(long)]
    base64: bool,
    /// Print the entry's metadata (indexes, flags, session) with its value.
    #[arg(long)]
    detailed: bool,
    /// List the keys under the prefix, not their values.
    #[arg(long)]
    keys: bool,
    /// Print every key under the prefix as `key:value`.
    #[arg(long)]
    recurse: bool,
    /// With -keys: list keys only up to the next separator.
    #[arg(long, default_value = "/", allow_hyphen_values = true)]
    separator: String,
    /// Let any server answer from its own replica.
    #[arg(long)]
    stale: bool,
    /// The key, or the prefix with -recurse or -keys (default: the root).
    key: Option<String>,
}

impl GetCmd {
    pub(super) async fn run(self) -> Outcome {
        let key = strip_slash(self.key.as_deref().unwrap_or_default()).to_string();
        if key.is_empty() && !(self.recurse || self.keys) {
            return Err("Error! Missing KEY argument".to_string());
        }
        let api = self
            .addr
            .api()
            .map_err(|e| format!("Error connecting to Consul agent: {e:#}"))?;
        let kv = Kv::new(api);
        let read = Read {
            stale: self.stale,
            ..Read::default()
        };
        let querying = |e: anyhow::Error| format!("Error querying Consul agent: {e:#}");
        if self.keys {
            let keys = kv
                .keys(&key, &self.separator, read)
                .await
                .map_err(querying)?;
            for k in keys {
                info(k.as_bytes())?;
            }
            return Ok(());
        }
        if self.recurse {
            let (pairs, _) = kv.list(&key, read).await.map_err(querying)?;
            for (i, pair) in pairs.iter().enumerate() {
                if self.detailed {
                    info(&detailed(pair, self.base64))?;
                    if i + 1 < pairs.len() {
                        info(b"")?;
                    }
                } else {
                    let mut line = pair.key.as_bytes().to_vec();
                    line.push(b':');
                    line.extend(value(pair, self.base64));
                    info(&line)?;
                }
            }
            return Ok(());
        }
        let (pair, _) = kv.get(&key, read).await.map_err(querying)?;
        let Some(pair) = pair else {
            return Err(format!("Error! No key exists at: {key}"));
        };
        if self.detailed {
            info(&detailed(&pair, self.base64))
        } else {
            info(&value(&pair, self.base64))
        }
    }
}

/// The value as printed: raw bytes, or their base64.
fn value(pair: &KvPair, base64: bool) -> Vec<u8> {
    if base64 {
        STANDARD.encode(pair.bytes()).into_bytes()
    } else {
        pair.bytes().to_vec()
    }
}

/// The `-detailed` block, laid out as Consul's tabwriter lays it out
/// (padding 6 after the widest name), without the final newline.
fn detailed(pair: &KvPair, base64: bool) -> Vec<u8> {
    let session = if pair.session.is_empty() {
        "-"
    } else {
        pair.session.as_str()
    };
    let rows: [(&str, Vec<u8>); 7] = [
        ("CreateIndex", pair.create_index.to_string().into_bytes()),
        ("Flags", pair.flags.to_string().into_bytes()),
        ("Key", pair.key.as_bytes().to_vec()),
        ("LockIndex", pair.lock_index.to_string().into_bytes()),
        ("ModifyIndex", pair.modify_index.to_string().into_bytes()),
        ("Session", session.as_bytes().to_vec()),
        ("Value", value(pair, base64)),
    ];
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 6;
    let mut out = Vec::new();
    for (i, (name, v)) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend(format!("{name:width$}").into_bytes());
        out.extend(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> KvPair {
        KvPair {
            key: "app/config".into(),
            create_index: 12,
            modify_index: 15,
            lock_index: 0,
            flags: 42,
            value: Some(b"hello".to_vec()),
            session: String::new(),
        }
    }

    #[test]
    fn detailed_output_lines_up_as_consuls() {
        let text = String::from_utf8(detailed(&pair(), false)).unwrap();
        assert_eq!(
            text,
            "CreateIndex      12\n\
             Flags            42\n\
             Key              app/config\n\
             LockIndex        0\n\
             ModifyIndex      15\n\
             Session          -\n\
             Value            hello"
        );
        let text = String::from_utf8(detailed(&pair(), true)).unwrap();
        assert!(text.ends_with("Value            aGVsbG8="), "{text}");
    }

    #[test]
    fn the_flags_parse_as_consuls() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            get: GetCmd,
        }
        let t = T::try_parse_from(["t", "--recurse", "--separator", ":", "app"]).unwrap();
        assert!(t.get.recurse && !t.get.keys);
        assert_eq!(t.get.separator, ":");
        assert_eq!(t.get.key.as_deref(), Some("app"));
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.get.separator, "/");
        assert_eq!(t.get.key, None);
        assert!(T::try_parse_from(["t", "a", "b"]).is_err());
    }
}
