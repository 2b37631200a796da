//! The agent's settings: defaults, configuration files and flags, merged in
//! that order, then resolved into one settings struct per subsystem.
//!
//! Precedence, lowest first: [`defaults`]; `--config-file` files in the
//! order given; each `--config-dir`'s `*.toml` and `*.json` files in name
//! order; flags. Files use Consul's key names and reject unknown keys;
//! every error names the key and the file (or the flag) so the operator can
//! fix it without guessing.
//!
//! The layout: [`file`](mod@file) is the on-disk format and [`flags`](AgentFlags) the
//! command line; `merge` stacks the files; `resolve` turns the layers into
//! [`settings`], checking values with `validate` and the definitions of
//! services and checks with `definitions`. This module is a leaf: it
//! imports nothing from the parts it configures, which read their settings
//! (and their defaults) from here.

mod acl;
pub mod defaults;
mod definitions;
pub mod file;
mod flags;
pub mod join;
mod merge;
mod resolve;
mod rrl;
pub mod settings;
mod tls;
mod validate;
mod wan;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use acl::{AclSettings, DownPolicy};
pub use file::{CheckFile, FileConfig, ServiceFile};
pub use flags::AgentFlags;
pub use settings::{
    CheckSettings, DnsSettings, EncryptKey, GossipSettings, KvSettings, LimitsSettings,
    LogSettings, NetworkSettings, NodeSettings, Ports, RaftSettings, RrlSettings, ServiceSettings,
    TlsProtocol, TlsSettings, WanSettings,
};
pub use validate::parse_socket;

use merge::Layered;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("reading {file}: {source}")]
    Read {
        /// The path.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file has a syntax error, an unknown key or a value of the wrong type.
    #[error("{file}: key `{key}`: {message}")]
    File {
        /// The file.
        file: PathBuf,
        /// Dotted path of the key (`.` for the whole file).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A setting has a value that cannot work.
    #[error("{key} ({source_name}): {message}")]
    Invalid {
        /// The setting's key or flag.
        key: &'static str,
        /// Where the value came from: a file path, a flag or "default".
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// The agent's resolved settings, by subsystem. Each part is handed its
/// own: the listeners `network`, Raft `raft` (with `node`), gossip and the
/// reconciler `gossip`, DNS `dns`, the check runners `checks`, the local
/// state `services`, the session endpoints and the leader's expiry timers
/// `kv`, a server's WAN pool `wan`, the listeners' per-client caps `limits`, logging `log`, the HTTPS
/// listener and server RPC `tls`, the HTTP API and DNS `acl`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Who this node is.
    pub node: NodeSettings,
    /// Addresses and ports.
    pub network: NetworkSettings,
    /// DNS behaviour.
    pub dns: DnsSettings,
    /// The node's role in Raft and the log's tuning.
    pub raft: RaftSettings,
    /// The gossip pool.
    pub gossip: GossipSettings,
    /// The WAN pool (servers).
    pub wan: WanSettings,
    /// Health checks.
    pub checks: CheckSettings,
    /// Services and checks to register, and anti-entropy.
    pub services: ServiceSettings,
    /// The KV store and sessions.
    pub kv: KvSettings,
    /// Per-client caps and timeouts of the HTTP, server RPC and DNS TCP
    /// listeners.
    pub limits: LimitsSettings,
    /// Logging.
    pub log: LogSettings,
    /// TLS for HTTPS and server RPC.
    pub tls: TlsSettings,
    /// ACLs: on or off, the default policy, the agent's tokens.
    pub acl: AclSettings,
}

/// What the configuration is resolved for: a file checked on its own lacks
/// what flags supply at run time (a data dir, the server role), so those
/// run-time requirements are not enforced for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `trellis agent`.
    Run,
    /// `trellis validate`.
    Validate,
}

impl Config {
    /// Loads files named by the flags, applies the flags and validates.
    pub fn load(flags: &AgentFlags) -> Result<Self, ConfigError> {
        let layers = Layered::read(&merge::files(&flags.config_file, &flags.config_dir)?)?;
        Self::resolve(flags, layers, Purpose::Run)
    }

    /// Checks configuration files on their own (`trellis validate`): parses
    /// them and validates the merged result with no flags. Directories among
    /// `paths` are read after the files, as `--config-dir` is.
    pub fn validate_files(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) =
            paths.iter().cloned().partition(|p| p.is_dir());
        let layers = Layered::read(&merge::files(&files, &dirs)?)?;
        Self::resolve(&AgentFlags::default(), layers, Purpose::Validate)
    }
}
