//! A service and a check as users write them, in a configuration file or in
//! a body to `/v1/agent/service/register` and `/v1/agent/check/register`:
//! the types both roads produce ([`ServiceDefinition`], [`CheckDefinition`]),
//! Consul's rules for them in one place ([`ServiceDefinition::validate`],
//! [`CheckDefinition::validate`]), the defaults Consul fills in
//! ([`ServiceDefinition::with_defaults`]), and the one duration grammar
//! ([`parse_duration`], Go's).
//!
//! A leaf: it names nothing of the agent but the catalog's value types, so
//! the configuration, the HTTP API and the agent's local state all take it.

mod duration;
mod invalid;
pub mod limits;
mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::{HealthStatus, Meta, ServiceAddress, ServiceRegistration, Weights};

pub use duration::parse_duration;
pub use invalid::{Field, Invalid};
pub use limits::validate_registration;

/// The shortest interval a check may run at; below it, a check is refused.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The shortest `DeregisterCriticalServiceAfter`; shorter values are raised
/// to it, as Consul does (its reaper runs every 30 s, so less cannot be
/// honoured).
pub const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(60);
/// Most bytes of output a check keeps.
pub const MAX_OUTPUT: usize = 4096;

/// Where a definition came from; decides whether a script check may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The HTTP API (anyone who can reach it).
    Api,
    /// A configuration file (whoever runs the agent).
    Config,
}

/// A service as an agent receives it (HTTP register or a config file).
///
/// The serialized form is what the agent saves in its data dir
/// (`local/definitions.json`), so its field names and types stay as they
/// are: a data dir written by an earlier release must open.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceDefinition {
    /// Instance ID; empty means "the name".
    pub id: String,
    /// Service name; required.
    pub name: String,
    /// Tags in the given order.
    pub tags: Vec<String>,
    /// Address; empty means the node's.
    pub address: String,
    /// Tagged addresses.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Metadata.
    pub meta: Meta,
    /// Port.
    pub port: u16,
    /// SRV weights; `None` for Consul's default of 1/1.
    pub weights: Option<Weights>,
    /// Whether anti-entropy leaves catalog tag changes alone.
    pub enable_tag_override: bool,
    /// The service's checks (`Check` and `Checks` together).
    pub checks: Vec<CheckDefinition>,
}

/// What a check runs, as Consul tells its types apart: by which target
/// field is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// `HTTP`: a GET (or `Method`) to a URL.
    Http,
    /// `TCP`: a connect to `host:port`.
    Tcp,
    /// `Args`: a command run without a shell.
    Script,
    /// `TTL`: the application reports its own status.
    Ttl,
}

impl CheckKind {
    /// Consul's name for the type, as the catalog's `Type` carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::Script => "script",
            Self::Ttl => "ttl",
        }
    }
}

/// A check as an agent receives it. The runner fields are kept for the check
/// runners; only the identity and status reach the catalog.
///
/// Saved in the data dir with its service, like [`ServiceDefinition`]: the
/// serialized form stays as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckDefinition {
    /// Check ID; empty means a default derived from the service ID.
    pub id: String,
    /// Name; empty means a default derived from the service name.
    pub name: String,
    /// Initial status; `None` keeps a re-registered check's status, else critical.
    pub status: Option<HealthStatus>,
    /// Operator notes.
    pub notes: String,
    /// TTL for a TTL check.
    pub ttl: Option<Duration>,
    /// How often an interval check runs.
    pub interval: Option<Duration>,
    /// How long one run may take.
    pub timeout: Option<Duration>,
    /// URL for an HTTP check.
    pub http: String,
    /// HTTP method for an HTTP check.
    pub method: String,
    /// HTTP headers for an HTTP check.
    pub header: BTreeMap<String, Vec<String>>,
    /// Skip TLS verification for an HTTP check.
    pub tls_skip_verify: bool,
    /// `host:port` for a TCP check.
    pub tcp: String,
    /// Command and arguments for a script check.
    pub args: Vec<String>,
    /// Deregister the service when the check stays critical this long.
    pub deregister_critical_service_after: Option<Duration>,
    /// The service this check belongs to; empty for a node check. Only
    /// `/v1/agent/check/register` sets it; a service's own checks get the
    /// service's ID.
    pub service_id: String,
    /// Request body for an HTTP check.
    pub body: String,
    /// Consecutive passing results before the status turns passing.
    pub success_before_passing: u32,
    /// Consecutive failures before the status turns warning; 0 means the
    /// same as `failures_before_critical`.
    pub failures_before_warning: u32,
    /// Consecutive failures before the status turns critical.
    pub failures_before_critical: u32,
}

impl CheckDefinition {
    /// The check's type: the first target set of `HTTP`, `TCP`, `Args`;
    /// a check with none is a TTL check.
    pub fn kind(&self) -> CheckKind {
        if !self.http.is_empty() {
            CheckKind::Http
        } else if !self.tcp.is_empty() {
            CheckKind::Tcp
        } else if !self.args.is_empty() {
            CheckKind::Script
        } else {
            CheckKind::Ttl
        }
    }

    /// What Consul fills in for a check registered on its own
    /// (`/v1/agent/check/register`, a top-level `check` of a file): the ID
    /// defaults to the name and the name to the ID; a
    /// `DeregisterCriticalServiceAfter` below [`MIN_DEREGISTER_AFTER`] is
    /// raised to it.
    #[must_use]
    pub fn with_defaults(mut self) -> Self {
        if self.id.is_empty() {
            self.id = self.name.clone();
        }
        if self.name.is_empty() {
            self.name = self.id.clone();
        }
        self.raise_deregister_after();
        self
    }

    fn raise_deregister_after(&mut self) {
        if let Some(d) = self.deregister_critical_service_after.as_mut()
            && *d < MIN_DEREGISTER_AFTER
        {
            *d = MIN_DEREGISTER_AFTER;
        }
    }
}

impl ServiceDefinition {
    /// What Consul fills in: the ID defaults to the name; each check belongs
    /// to the service, its ID defaults to `service:<id>` (numbered
    /// `service:<id>:<n>` when there are several) and its name to
    /// `Service '<name>' check`; a `DeregisterCriticalServiceAfter` below
    /// [`MIN_DEREGISTER_AFTER`] is raised to it.
    #[must_use]
    pub fn with_defaults(mut self) -> Self {
        if self.id.is_empty() {
            self.id = self.name.clone();
        }
        let numbered = self.checks.len() > 1;
        for (i, c) in self.checks.iter_mut().enumerate() {
            c.service_id = self.id.clone();
            if c.id.is_empty() {
                c.id = if numbered {
                    format!("service:{}:{}", self.id, i + 1)
                } else {
                    format!("service:{}", self.id)
                };
            }
            if c.name.is_empty() {
                c.name = format!("Service '{}' check", self.name);
            }
            c.raise_deregister_after();
        }
        self
    }

    /// The service as the catalog registers it (its checks apart).
    pub fn registration(&self) -> ServiceRegistration {
        ServiceRegistration {
            id: self.id.clone(),
            service: self.name.clone(),
            tags: self.tags.clone(),
            address: self.address.clone(),
            tagged_addresses: self.tagged_addresses.clone(),
            meta: self.meta.clone(),
            port: self.port,
            weights: self.weights,
            enable_tag_override: self.enable_tag_override,
        }
    }
}

/// A check status as Consul spells it (`passing`, `warning`, `critical`).
pub fn parse_status(s: &str) -> Result<HealthStatus, String> {
    HealthStatus::parse(s).ok_or_else(|| format!("invalid check status {s:?}"))
}

/// Cuts output to [`MAX_OUTPUT`] bytes, keeping the start (on a character
/// boundary).
pub fn cap_output(mut s: String) -> String {
    if s.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_the_first_target_set() {
        let mut c = CheckDefinition {
            ttl: Some(Duration::from_secs(1)),
            ..CheckDefinition::default()
        };
        assert_eq!(c.kind(), CheckKind::Ttl);
        c.args = vec!["/bin/true".into()];
        assert_eq!(c.kind(), CheckKind::Script);
        c.tcp = "h:1".into();
        assert_eq!(c.kind(), CheckKind::Tcp);
        c.http = "http://h/".into();
        assert_eq!(c.kind(), CheckKind::Http);
        assert_eq!(c.kind().as_str(), "http");
    }

    #[test]
    fn service_defaults_name_the_checks_after_the_service() {
        let ttl = CheckDefinition {
            ttl: Some(Duration::from_secs(10)),
            deregister_critical_service_after: Some(Duration::from_secs(5)),
            ..CheckDefinition::default()
        };
        let one = ServiceDefinition {
            name: "web".into(),
            checks: vec![ttl.clone()],
            ..ServiceDefinition::default()
        }
        .with_defaults();
        assert_eq!(one.id, "web");
        assert_eq!(one.checks[0].id, "service:web");
        assert_eq!(one.checks[0].name, "Service 'web' check");
        assert_eq!(one.checks[0].service_id, "web");
        assert_eq!(
            one.checks[0].deregister_critical_service_after,
            Some(MIN_DEREGISTER_AFTER)
        );
        let two = ServiceDefinition {
            id: "web1".into(),
            name: "web".into(),
            checks: vec![ttl.clone(), ttl],
            ..ServiceDefinition::default()
        }
        .with_defaults();
        let ids: Vec<_> = two.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["service:web1:1", "service:web1:2"]);
    }

    #[test]
    fn output_is_capped_on_a_character_boundary() {
        let s = "é".repeat(MAX_OUTPUT);
        let capped = cap_output(s);
        assert!(capped.len() <= MAX_OUTPUT);
        assert!(capped.len() > MAX_OUTPUT - 2);
        assert_eq!(cap_output("ok".into()), "ok");
    }
}
