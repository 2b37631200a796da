//! Service and check definitions from configuration files, turned into the
//! [`crate::definition`] types the HTTP API produces too, and checked by the
//! same rules ([`ServiceDefinition::validate`]) when the files load, so
//! `trellis validate` refuses what the agent would. Every error names the
//! key (`service.check.interval`) and the file.

use std::time::Duration;

use super::ConfigError;
use super::file::{CheckFile, ServiceFile};
use crate::catalog::{ServiceAddress, Weights};
use crate::definition::{
    CheckDefinition, Field, Invalid, ServiceDefinition, parse_duration, parse_status,
};

/// Where a definition is written, for the keys its errors name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Inside a `service` (or `services`).
    Service,
    /// A top-level `check` (or `checks`).
    Node,
}

/// The keys of a check's fields that are parsed, by where it is written.
struct CheckKeys {
    status: &'static str,
    interval: &'static str,
    timeout: &'static str,
    ttl: &'static str,
    deregister_critical_service_after: &'static str,
}

const SERVICE_CHECK_KEYS: CheckKeys = CheckKeys {
    status: "service.check.status",
    interval: "service.check.interval",
    timeout: "service.check.timeout",
    ttl: "service.check.ttl",
    deregister_critical_service_after: "service.check.deregister_critical_service_after",
};

const NODE_CHECK_KEYS: CheckKeys = CheckKeys {
    status: "check.status",
    interval: "check.interval",
    timeout: "check.timeout",
    ttl: "check.ttl",
    deregister_critical_service_after: "check.deregister_critical_service_after",
};

/// The key an error about `field` names, where the definition is written.
fn key(place: Place, field: Field) -> &'static str {
    match (place, field) {
        (_, Field::ServiceName) => "service.name",
        (_, Field::ServiceId) => "service.id",
        (_, Field::Tags) => "service.tags",
        (_, Field::ServiceMeta) => "service.meta",
        (_, Field::Weights) => "service.weights",
        // Files set neither; the node's name is `node_name`, checked apart.
        (_, Field::NodeName) => "node_name",
        (_, Field::NodeMeta) => "node_meta",
        (Place::Service, Field::CheckName) => "service.check.name",
        (Place::Node, Field::CheckName) => "check.name",
        (Place::Service, Field::CheckId) => "service.check.id",
        (Place::Service, Field::Interval) => "service.check.interval",
        (Place::Service, Field::Ttl) => "service.check.ttl",
        (Place::Service, Field::Timeout) => "service.check.timeout",
        (Place::Service, Field::Http) => "service.check.http",
        (Place::Service, Field::Method) => "service.check.method",
        (Place::Service, Field::Header) => "service.check.header",
        (Place::Service, Field::Tcp) => "service.check.tcp",
        (Place::Service, Field::Args) => "service.check.args",
        (Place::Node, Field::CheckId) => "check.id",
        (Place::Node, Field::Interval) => "check.interval",
        (Place::Node, Field::Ttl) => "check.ttl",
        (Place::Node, Field::Timeout) => "check.timeout",
        (Place::Node, Field::Http) => "check.http",
        (Place::Node, Field::Method) => "check.method",
        (Place::Node, Field::Header) => "check.header",
        (Place::Node, Field::Tcp) => "check.tcp",
        (Place::Node, Field::Args) => "check.args",
    }
}

fn refused(place: Place, source_name: &str, e: Invalid) -> ConfigError {
    ConfigError::Invalid {
        key: key(place, e.field),
        source_name: source_name.to_string(),
        message: e.message,
    }
}

/// A service from `source_name`, with its checks, validated.
pub(super) fn service(
    s: &ServiceFile,
    source_name: &str,
) -> Result<ServiceDefinition, ConfigError> {
    let checks = s
        .check
        .iter()
        .chain(&s.checks)
        .map(|c| check_fields(c, Place::Service, source_name))
        .collect::<Result<Vec<_>, _>>()?;
    let def = ServiceDefinition {
        id: s.id.clone().unwrap_or_default(),
        name: s.name.clone(),
        tags: s.tags.clone(),
        address: s.address.clone().unwrap_or_default(),
        tagged_addresses: s
            .tagged_addresses
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    ServiceAddress {
                        address: v.address.clone(),
                        port: v.port,
                    },
                )
            })
            .collect(),
        meta: s.meta.clone().into(),
        port: s.port.unwrap_or(0),
        weights: s.weights.map(|w| Weights {
            passing: w.passing,
            warning: w.warning,
        }),
        enable_tag_override: s.enable_tag_override,
        checks,
    };
    def.clone()
        .with_defaults()
        .validate()
        .map_err(|e| refused(Place::Service, source_name, e))?;
    Ok(def)
}

/// A top-level check from `source_name` (a node check, or a service's
/// named by `service_id`), validated.
pub(super) fn check(c: &CheckFile, source_name: &str) -> Result<CheckDefinition, ConfigError> {
    let def = check_fields(c, Place::Node, source_name)?;
    def.clone()
        .with_defaults()
        .validate()
        .map_err(|e| refused(Place::Node, source_name, e))?;
    Ok(def)
}

/// A check's fields in the definition's types: the status and the
/// durations parsed (Go's grammar, as the HTTP API and Consul read them).
fn check_fields(
    c: &CheckFile,
    place: Place,
    source_name: &str,
) -> Result<CheckDefinition, ConfigError> {
    let keys = match place {
        Place::Service => &SERVICE_CHECK_KEYS,
        Place::Node => &NODE_CHECK_KEYS,
    };
    let bad = |key: &'static str, message: String| ConfigError::Invalid {
        key,
        source_name: source_name.to_string(),
        message,
    };
    let dur = |key: &'static str, v: &Option<String>| -> Result<Option<Duration>, ConfigError> {
        v.as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|m| bad(key, m))
    };
    let status = c
        .status
        .as_deref()
        .map(parse_status)
        .transpose()
        .map_err(|m| bad(keys.status, m))?;
    Ok(CheckDefinition {
        id: c.id.clone().unwrap_or_default(),
        name: c.name.clone().unwrap_or_default(),
        status,
        notes: c.notes.clone().unwrap_or_default(),
        ttl: dur(keys.ttl, &c.ttl)?,
        interval: dur(keys.interval, &c.interval)?,
        timeout: dur(keys.timeout, &c.timeout)?,
        http: c.http.clone().unwrap_or_default(),
        method: c.method.clone().unwrap_or_default(),
        header: c.header.clone().unwrap_or_default(),
        tls_skip_verify: c.tls_skip_verify.unwrap_or(false),
        tcp: c.tcp.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        deregister_critical_service_after: dur(
            keys.deregister_critical_service_after,
            &c.deregister_critical_service_after,
        )?,
        service_id: c.service_id.clone().unwrap_or_default(),
        body: c.body.clone().unwrap_or_default(),
        success_before_passing: c.success_before_passing.unwrap_or(0),
        failures_before_warning: c.failures_before_warning.unwrap_or(0),
        failures_before_critical: c.failures_before_critical.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The error of a file holding `text`, as `trellis validate` shows it.
    fn error(text: &str) -> String {
        let file = super::super::file::parse(Path::new("svc.toml"), text).unwrap();
        let r = match (file.service, file.check) {
            (Some(s), _) => service(&s, "svc.toml").map(drop),
            (_, Some(c)) => check(&c, "svc.toml").map(drop),
            _ => panic!("no service or check in {text}"),
        };
        r.unwrap_err().to_string()
    }

    #[test]
    fn durations_take_go_forms_only_naming_the_key_and_the_file() {
        let ok = super::super::file::parse(
            Path::new("svc.toml"),
            "[service]\nname = \"web\"\n[service.check]\nttl = \"1m30s\"\n",
        )
        .unwrap();
        let def = service(&ok.service.unwrap(), "svc.toml").unwrap();
        assert_eq!(def.checks[0].ttl, Some(Duration::from_secs(90)));
        for (form, unit) in [("3d", "\"d\""), ("2 hours", "\" hours\"")] {
            let e = error(&format!(
                "[service]\nname = \"web\"\n[service.check]\nttl = \"{form}\"\n"
            ));
            assert!(
                e.starts_with("service.check.ttl (svc.toml): ") && e.contains(unit),
                "{e}"
            );
        }
        let e = error("[check]\nname = \"c\"\nttl = \"10s\"\ninterval = \"3d\"\n");
        assert!(e.starts_with("check.interval (svc.toml): "), "{e}");
    }

    #[test]
    fn the_rules_are_the_http_apis_with_the_keys_of_the_file() {
        let e = error("[service]\nname = \"\"\n");
        assert_eq!(e, "service.name (svc.toml): Missing service name");
        let e = error(
            "[service]\nname = \"web\"\n[service.check]\nhttp = \"http://h/\"\ninterval = \"50ms\"\n",
        );
        assert_eq!(
            e,
            "service.check.interval (svc.toml): Invalid check: Interval must be at least 100ms (got 50ms)"
        );
        let e =
            error("[service]\nname = \"web\"\n[service.check]\nttl = \"10s\"\nstatus = \"up\"\n");
        assert_eq!(
            e,
            "service.check.status (svc.toml): invalid check status \"up\""
        );
        let e = error("[check]\nttl = \"10s\"\n");
        assert_eq!(e, "check.id (svc.toml): Missing check name");
        let e = error("[check]\nname = \"c\"\ntcp = \"nohost\"\ninterval = \"1s\"\n");
        assert!(
            e.starts_with("check.tcp (svc.toml): Invalid check: TCP"),
            "{e}"
        );
    }
}
