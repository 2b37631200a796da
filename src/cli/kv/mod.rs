//! `trellis kv get|put|delete|export|import`: Consul's `consul kv` against
//! a running agent, with its flags (`-recurse`, `-cas -modify-index`,
//! `-flags`, `-base64`, ...), its output and its messages, so scripts
//! written for `consul kv` read the same lines. Each verb is a file; the
//! HTTP calls are in `api.rs`, shared with `trellis lock`.

pub(crate) mod api;
mod delete;
mod get;
mod put;
mod transfer;

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use clap::Subcommand;

use super::client::block_on;

#[derive(Debug, Subcommand)]
pub(crate) enum KvCmd {
    /// Print the value at a key, or the keys and values under a prefix.
    Get(get::GetCmd),
    /// Write a value (an argument, `@file` or `-` for stdin) at a key.
    Put(put::PutCmd),
    /// Delete a key, or every key under a prefix.
    Delete(delete::DeleteCmd),
    /// Print the keys under a prefix as JSON for `kv import`.
    Export(transfer::ExportCmd),
    /// Write the keys of a `kv export` JSON document (`@file`, `-` or
    /// the JSON itself).
    Import(transfer::ImportCmd),
}

impl KvCmd {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let outcome = match self {
            Self::Get(cmd) => block_on(async { Ok(cmd.run().await) })?,
            Self::Put(cmd) => block_on(async { Ok(cmd.run().await) })?,
            Self::Delete(cmd) => block_on(async { Ok(cmd.run().await) })?,
            Self::Export(cmd) => block_on(async { Ok(cmd.run().await) })?,
            Self::Import(cmd) => block_on(async { Ok(cmd.run().await) })?,
        };
        Ok(finish(outcome))
    }
}

/// How a verb ended: `Err` holds Consul's message for the failure.
type Outcome = Result<(), String>;

/// Prints a failure as Consul does (the message alone on stderr) and gives
/// the exit code.
fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `bytes` and a newline to stdout, as Consul's `UI.Info` does; a
/// value need not be UTF-8.
fn info(bytes: &[u8]) -> Outcome {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| format!("Error writing output: {e}"))
}

/// Consul's "nice thing": keys cannot start with `/`, but users type
/// `/foo`, so one leading slash is dropped.
fn strip_slash(key: &str) -> &str {
    key.strip_prefix('/').unwrap_or(key)
}

/// The data argument of `put` and `import` as Consul reads it: `@path` is
/// the file's contents, `-` alone is stdin, anything else (`-5` too) is
/// itself.
pub(crate) fn data_from_arg(arg: &str) -> Result<Vec<u8>, String> {
    if let Some(file) = arg.strip_prefix('@') {
        return std::fs::read(file).map_err(|e| format!("Failed to read file: {e}"));
    }
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("Failed to read stdin: {e}"))?;
        return Ok(buf);
    }
    Ok(arg.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_comes_from_a_file_or_the_argument_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v");
        std::fs::write(&file, b"from file\n").unwrap();
        assert_eq!(
            data_from_arg(&format!("@{}", file.display())).unwrap(),
            b"from file\n"
        );
        assert_eq!(data_from_arg("-5").unwrap(), b"-5");
        assert_eq!(data_from_arg("plain").unwrap(), b"plain");
        let e = data_from_arg("@/nonexistent/x").unwrap_err();
        assert!(e.starts_with("Failed to read file: "), "{e}");
    }

    #[test]
    fn one_leading_slash_is_dropped() {
        assert_eq!(strip_slash("/a/b"), "a/b");
        assert_eq!(strip_slash("a/b"), "a/b");
        assert_eq!(strip_slash("//a"), "/a");
    }
}
