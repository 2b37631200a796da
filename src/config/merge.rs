//! The file layer: which files are read, in what order, and how their
//! values stack (a later file wins key by key; service and check
//! definitions add up), remembering which file set each key so an error
//! can name it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::file::{CheckFile, FileConfig, ServiceFile};

/// Values gathered from files, before flags and validation.
#[derive(Debug, Default)]
pub(super) struct Layered {
    /// Merged file values.
    pub(super) file: FileConfig,
    /// The file that set each key last, for error messages.
    origin: BTreeMap<&'static str, PathBuf>,
    /// Services from every file, in load order.
    pub(super) services: Vec<ServiceFile>,
    /// Top-level checks from every file, in load order.
    pub(super) checks: Vec<CheckFile>,
}

impl Layered {
    /// Reads `paths` in order, each over the ones before.
    pub(super) fn read(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut layered = Self::default();
        for path in paths {
            layered.merge(path, super::file::load(path)?);
        }
        Ok(layered)
    }

    /// Lays `f`, read from `path`, over what is there.
    pub(super) fn merge(&mut self, path: &Path, f: FileConfig) {
        macro_rules! take {
            ($($field:ident),*) => {$(
                if f.$field.is_some() {
                    self.file.$field = f.$field.clone();
                    self.origin.insert(stringify!($field), path.to_path_buf());
                }
            )*};
        }
        take!(
            node_name,
            datacenter,
            data_dir,
            server,
            bootstrap_expect,
            bind_addr,
            advertise_addr,
            client_addr,
            retry_join,
            retry_join_wan,
            retry_interval_wan,
            advertise_addr_wan,
            reconnect_timeout_wan,
            recursors,
            domain,
            log_level,
            log_json,
            zone_dirs,
            ports,
            dns_config,
            tls,
            limits,
            acl,
            enable_script_checks,
            enable_local_script_checks,
            check_update_interval,
            raft_snapshot_threshold,
            raft_trailing_logs,
            encrypt,
            leave_on_terminate,
            translate_wan_addrs,
            reconnect_timeout,
            ae_interval,
            session_ttl_min,
            tombstone_ttl
        );
        if let Some(s) = f.service {
            self.origin.insert("service", path.to_path_buf());
            self.services.push(s);
        }
        if let Some(list) = f.services {
            self.origin.insert("services", path.to_path_buf());
            self.services.extend(list);
        }
        if let Some(c) = f.check {
            self.origin.insert("check", path.to_path_buf());
            self.checks.push(c);
        }
        if let Some(list) = f.checks {
            self.origin.insert("checks", path.to_path_buf());
            self.checks.extend(list);
        }
    }

    /// Where a setting's value came from, for an error: `flag` when the
    /// flag set it, else the file that set `key` last, else "default".
    pub(super) fn source(&self, key: &'static str, flag: &'static str, from_flag: bool) -> String {
        if from_flag {
            flag.to_string()
        } else {
            self.origin
                .get(key)
                .map_or_else(|| "default".to_string(), |p| p.display().to_string())
        }
    }

    /// The file that set the first of `keys` found (the plural form of a
    /// definition list before the singular), or "" when none did.
    pub(super) fn file_of(&self, keys: [&'static str; 2]) -> String {
        keys.iter()
            .find_map(|k| self.origin.get(k))
            .map_or_else(String::new, |p| p.display().to_string())
    }
}

/// The configuration files to load: explicit files first, then each
/// directory's `*.toml` and `*.json` in name order.
pub(super) fn files(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut out = files.to_vec();
    for dir in dirs {
        let read = |source| ConfigError::Read {
            file: dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for e in std::fs::read_dir(dir).map_err(read)? {
            let p = e.map_err(read)?.path();
            if p.extension().is_some_and(|x| x == "toml" || x == "json") {
                entries.push(p);
            }
        }
        entries.sort();
        out.extend(entries);
    }
    Ok(out)
}
