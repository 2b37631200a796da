//! Consul's flag spelling for the subcommands that mirror Consul's own
//! (`kv`, `lock`, `tls`, `acl`, `members`, `join`, `force-leave`). Consul parses flags with Go's `flag` package, where a
//! long flag takes one dash (`-recurse`, `-modify-index=5`, `-n 2`), a
//! boolean may say `-cas=true`, and parsing stops at the first argument
//! that is not a flag. clap reads `--long` flags, so those arguments are
//! rewritten to clap's spelling before parsing; both spellings work.

use std::ffi::OsString;

use clap::{ArgAction, Command};

/// The subcommands whose flags are Consul's.
const GO_STYLE: &[&str] = &["kv", "lock", "tls", "acl", "members", "join", "force-leave"];

/// Consul's flags for reaching the agent, which every Consul command that
/// talks HTTP takes with one dash: accepted so on every subcommand.
const HTTP_FLAGS: &[&str] = &[
    "http-addr",
    "ca-file",
    "ca-path",
    "client-cert",
    "client-key",
    "tls-server-name",
    "token",
    "token-file",
];

/// Rewrites the Go-style flags of a `kv` or `lock` command line for clap;
/// other command lines are returned unchanged. `cmd` is the whole CLI.
pub(crate) fn normalize(args: Vec<OsString>, cmd: &Command) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = args.into_iter();
    // The program name.
    out.extend(rest.next());
    // Descend through the subcommand names to the command that takes the flags.
    let mut leaf = cmd;
    let mut go_style = false;
    let mut rest = rest.peekable();
    while let Some(next) = rest.peek() {
        let Some(sub) = next.to_str().and_then(|n| leaf.find_subcommand(n)) else {
            break;
        };
        if std::ptr::eq(leaf, cmd) {
            go_style = GO_STYLE.contains(&sub.get_name());
        }
        leaf = sub;
        out.extend(rest.next());
    }
    if !go_style {
        // Only Consul's HTTP flags, up to `--`; the rest is clap's.
        for arg in rest.by_ref() {
            if arg == "--" {
                out.push(arg);
                break;
            }
            let text = arg.to_str().unwrap_or_default();
            let body = text.strip_prefix('-').filter(|b| !b.starts_with('-'));
            match body {
                Some(b) if HTTP_FLAGS.contains(&b.split('=').next().unwrap_or_default()) => {
                    out.push(format!("--{b}").into());
                }
                _ => out.push(arg),
            }
        }
        out.extend(rest);
        return out;
    }
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str() else {
            // Not UTF-8, so not a flag name: a positional, where Go stops.
            out.push(arg);
            break;
        };
        if text == "--" || text == "-" || !text.starts_with('-') {
            // Go's `flag` stops at `--` or at the first non-flag.
            out.push(arg);
            break;
        }
        let body = text.trim_start_matches('-');
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if name == "h" || name == "help" {
            out.push("--help".into());
            continue;
        }
        let Some(flag) = leaf.get_arguments().find(|a| a.get_long() == Some(name)) else {
            // Unknown: let clap name it in its error.
            out.push(format!("--{body}").into());
            continue;
        };
        match (flag.get_action(), value) {
            // Go's booleans take `=true`/`=false`; clap's switches take none.
            (ArgAction::SetTrue, Some(v)) => match parse_go_bool(v) {
                Some(true) => out.push(format!("--{name}").into()),
                Some(false) => {}
                None => out.push(format!("--{body}").into()),
            },
            (action, None) if action.takes_values() && !flag.is_require_equals_set() => {
                out.push(format!("--{name}").into());
                // The value is the next argument, whatever it looks like.
                out.extend(rest.next());
            }
            _ => out.push(format!("--{body}").into()),
        }
    }
    out.extend(rest);
    out
}

/// Go's `strconv.ParseBool`, which Consul also reads its environment
/// variables with.
pub(crate) fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn norm(args: &[&str]) -> Vec<String> {
        let args = std::iter::once("trellis")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        normalize(args, &Cli::command())
            .into_iter()
            .skip(1)
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_flags_become_clap_long_flags_up_to_the_first_positional() {
        assert_eq!(
            norm(&["kv", "get", "-recurse", "-separator", "/", "app", "-keys"]),
            ["kv", "get", "--recurse", "--separator", "/", "app", "-keys"]
        );
        assert_eq!(
            norm(&["kv", "put", "-cas=true", "-modify-index=5", "k", "-5"]),
            ["kv", "put", "--cas", "--modify-index=5", "k", "-5"]
        );
        assert_eq!(
            norm(&["kv", "delete", "-recurse=false", "k"]),
            ["kv", "delete", "k"]
        );
        assert_eq!(
            norm(&["kv", "put", "-session", "-odd-id", "-acquire", "k"]),
            ["kv", "put", "--session", "-odd-id", "--acquire", "k"]
        );
        assert_eq!(
            norm(&["lock", "-n", "2", "-shell=false", "app", "sh", "-c", "x"]),
            ["lock", "--n", "2", "--shell=false", "app", "sh", "-c", "x"]
        );
        assert_eq!(
            norm(&[
                "lock",
                "--verbose",
                "-http-addr=1.2.3.4:1",
                "--",
                "app",
                "-x"
            ]),
            [
                "lock",
                "--verbose",
                "--http-addr=1.2.3.4:1",
                "--",
                "app",
                "-x"
            ]
        );
        assert_eq!(norm(&["kv", "get", "-h"]), ["kv", "get", "--help"]);
        assert_eq!(norm(&["kv", "get", "-bogus"]), ["kv", "get", "--bogus"]);
    }

    #[test]
    fn other_subcommands_are_left_alone_but_for_consuls_http_flags() {
        assert_eq!(
            norm(&["catalog", "services", "-x", "--tags"]),
            ["catalog", "services", "-x", "--tags"]
        );
        assert_eq!(norm(&["leave"]), ["leave"]);
        assert_eq!(
            norm(&["leave", "-ca-file", "ca.pem", "-client-cert=c.pem", "-x"]),
            ["leave", "--ca-file", "ca.pem", "--client-cert=c.pem", "-x"]
        );
    }

    #[test]
    fn members_and_join_take_consuls_wan_flag() {
        assert_eq!(norm(&["members", "-wan"]), ["members", "--wan"]);
        assert_eq!(
            norm(&["members", "-http-addr", "127.0.0.1:8500", "-wan"]),
            ["members", "--http-addr", "127.0.0.1:8500", "--wan"]
        );
        assert_eq!(
            norm(&["join", "-wan", "10.0.0.1:8302"]),
            ["join", "--wan", "10.0.0.1:8302"]
        );
        assert_eq!(norm(&["join", "10.0.0.1"]), ["join", "10.0.0.1"]);
        assert_eq!(
            norm(&["force-leave", "-wan", "s3.dc2"]),
            ["force-leave", "--wan", "s3.dc2"]
        );
    }

    #[test]
    fn acl_takes_consuls_flags_and_every_subcommand_takes_a_token() {
        assert_eq!(
            norm(&["acl", "token", "read", "-self", "-token", "s3cr3t"]),
            ["acl", "token", "read", "--self", "--token", "s3cr3t"]
        );
        assert_eq!(
            norm(&["acl", "policy", "create", "-name=web", "-rules", "@r.hcl"]),
            ["acl", "policy", "create", "--name=web", "--rules", "@r.hcl"]
        );
        assert_eq!(
            norm(&[
                "acl",
                "token",
                "create",
                "-policy-name",
                "a",
                "-format=json"
            ]),
            [
                "acl",
                "token",
                "create",
                "--policy-name",
                "a",
                "--format=json"
            ]
        );
        assert_eq!(
            norm(&["members", "-token=abc", "-token-file", "t"]),
            ["members", "--token=abc", "--token-file", "t"]
        );
    }

    #[test]
    fn go_booleans_parse_as_strconv_does() {
        assert_eq!(parse_go_bool("T"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
