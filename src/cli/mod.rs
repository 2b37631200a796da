//! The command line: one file per subcommand. Every subcommand but `agent`,
//! `validate` and `keygen` talks to a running agent over its HTTP API.
//! `kv`, `lock` and `acl` mirror Consul's commands of those names, flags and
//! messages included (`goflags.rs` reads Consul's `-flag` spelling).

mod acl;
mod agent;
mod catalog;
mod client;
mod force_leave;
mod goflags;
mod gopath;
mod join;
mod keygen;
mod kv;
mod leave;
mod lock;
mod members;
mod operator;
mod services;
mod tls;
mod validate;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// trellis: DNS-first service discovery, a Consul-compatible agent.
///
/// Run `trellis agent --dev` for a single in-memory server answering DNS on
/// 127.0.0.1:8600 and HTTP on 127.0.0.1:8500, then try
/// `dig @127.0.0.1 -p 8600 consul.service.consul SRV`.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Verb,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Verb {
    /// Run an agent: a server (--server, --dev) keeping the catalog in Raft,
    /// answering DNS and the HTTP API.
    Agent(Box<agent::AgentCmd>),
    /// Check configuration files (TOML or JSON, or directories of them) and
    /// exit: 0 when valid, 1 with the offending key and file otherwise.
    Validate(validate::ValidateCmd),
    /// Read the catalog of a running agent.
    #[command(subcommand)]
    Catalog(catalog::CatalogCmd),
    /// Register or deregister services with a running agent.
    #[command(subcommand)]
    Services(services::ServicesCmd),
    /// List the members of the LAN gossip pool and their state.
    Members(members::MembersCmd),
    /// Make the agent join the gossip pool of another agent.
    Join(join::JoinCmd),
    /// Mark a failed node as left, so it is deregistered now.
    ForceLeave(force_leave::ForceLeaveCmd),
    /// Operate the cluster: the servers' Raft configuration.
    #[command(subcommand)]
    Operator(operator::OperatorCmd),
    /// Make the agent leave gracefully and shut down (a server leaves the
    /// Raft configuration first).
    Leave(leave::LeaveCmd),
    /// Print a new gossip encryption key (base64 of 32 random bytes) for
    /// `--encrypt`.
    Keygen(keygen::KeygenCmd),
    /// Read and write the KV store, as `consul kv` (Consul's `-flag`
    /// spelling works too).
    #[command(subcommand)]
    Kv(kv::KvCmd),
    /// Run a command while holding a lock (or one of N semaphore slots) at
    /// a KV prefix, as `consul lock`.
    Lock(lock::LockCmd),
    /// Create a CA and certificates for TLS, as `consul tls` (Consul's
    /// `-flag` spelling works too).
    #[command(subcommand)]
    Tls(tls::TlsCmd),
    /// Bootstrap ACLs and manage tokens and policies, as `consul acl`
    /// (Consul's `-flag` spelling works too).
    #[command(subcommand)]
    Acl(acl::AclCmd),
}

impl Cli {
    /// Parses the process's arguments, reading Consul's `-flag` spelling
    /// for the subcommands that mirror Consul's (`kv`, `lock`); exits with
    /// clap's message on a bad command line.
    pub fn from_env() -> Self {
        Self::parse_from(goflags::normalize(
            std::env::args_os().collect(),
            &Self::command(),
        ))
    }

    /// Runs the chosen subcommand to completion. `Err` is a failure for
    /// the caller to print; `kv` and `lock` print their own, in Consul's
    /// words, and give their exit code (`lock`: its child's).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let done = match self.command {
            Verb::Agent(cmd) => cmd.run(),
            Verb::Validate(cmd) => cmd.run(),
            Verb::Catalog(cmd) => cmd.run(),
            Verb::Services(cmd) => cmd.run(),
            Verb::Members(cmd) => cmd.run(),
            Verb::Join(cmd) => cmd.run(),
            Verb::ForceLeave(cmd) => cmd.run(),
            Verb::Operator(cmd) => cmd.run(),
            Verb::Leave(cmd) => cmd.run(),
            Verb::Keygen(cmd) => cmd.run(),
            Verb::Tls(cmd) => cmd.run(),
            Verb::Kv(cmd) => return cmd.run(),
            Verb::Lock(cmd) => return cmd.run(),
            Verb::Acl(cmd) => return cmd.run(),
        };
        done.map(|()| ExitCode::SUCCESS)
    }
}

/// An error with its causes, as `Error: …` prints it: each cause after a
/// colon, unless the text before already says it (most of our errors
/// include their source's text in their own, as their `Display` is also
/// what HTTP clients and logs read).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[from] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Adds(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn a_cause_is_printed_once() {
        assert_eq!(error_chain(&Repeats(Inner)), "outer: inner");
        assert_eq!(error_chain(&Adds(Inner)), "outer: inner");
        let wrapped = anyhow::Error::new(Repeats(Inner)).context("starting");
        assert_eq!(error_chain(wrapped.as_ref()), "starting: outer: inner");
    }
}
