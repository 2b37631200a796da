//! Checks on the service and check definitions of configuration files at
//! load time, so a bad one is refused with its key and file before the
//! agent starts. The definitions themselves are carried as written
//! ([`ServiceFile`], [`CheckFile`]) to the agent's local state.

use std::time::Duration;

use super::ConfigError;
use super::file::{CheckFile, ServiceFile};
use super::validate::parse_duration;

/// The shortest interval a check may run at; below it, a check is refused.
// moved to definition/ at merge: the same constant as the check runners'
// `MIN_INTERVAL`, kept here so config imports nothing from the parts.
const CHECK_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Whether `s` names a check status (any case), as the catalog reads it.
// moved to definition/ at merge: the check status parse.
fn is_check_status(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "passing" | "warning" | "critical"
    )
}

/// Checks a service definition and its checks; `source_name` is its file.
pub(super) fn validate_service(s: &ServiceFile, source_name: &str) -> Result<(), ConfigError> {
    if s.name.is_empty() {
        return Err(ConfigError::Invalid {
            key: "service.name",
            source_name: source_name.to_string(),
            message: "must not be empty".into(),
        });
    }
    for c in s.check.iter().chain(&s.checks) {
        validate_check(c, &SERVICE_CHECK_KEYS, source_name)?;
    }
    Ok(())
}

/// Checks a top-level check definition; `source_name` is its file.
pub(super) fn validate_node_check(c: &CheckFile, source_name: &str) -> Result<(), ConfigError> {
    validate_check(c, &NODE_CHECK_KEYS, source_name)
}

/// The keys a check's errors name, by where the check is written.
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

fn validate_check(c: &CheckFile, keys: &CheckKeys, source_name: &str) -> Result<(), ConfigError> {
    let bad = |key: &'static str, message: String| ConfigError::Invalid {
        key,
        source_name: source_name.to_string(),
        message,
    };
    if let Some(st) = &c.status
        && !is_check_status(st)
    {
        return Err(bad(
            keys.status,
            format!("{st:?} is not one of passing, warning, critical"),
        ));
    }
    for (key, v) in [
        (keys.interval, &c.interval),
        (keys.timeout, &c.timeout),
        (keys.ttl, &c.ttl),
        (
            keys.deregister_critical_service_after,
            &c.deregister_critical_service_after,
        ),
    ] {
        if let Some(v) = v {
            parse_duration(v).map_err(|m| bad(key, m))?;
        }
    }
    if let Some(v) = &c.interval
        && let Ok(d) = parse_duration(v)
        && !d.is_zero()
        && d < CHECK_MIN_INTERVAL
    {
        return Err(bad(
            keys.interval,
            format!("{v:?} is below the minimum of {CHECK_MIN_INTERVAL:?}"),
        ));
    }
    Ok(())
}
