//! Consul's rules for a service and a check definition, with its wording,
//! plus what a runner needs to run a check (a floor on the interval, a
//! usable target). The one validation both roads run: the HTTP API when a
//! definition is registered, the configuration when a file is loaded (so
//! `trellis validate` finds what the agent would refuse).

use std::collections::BTreeSet;

use super::invalid::{Field, Invalid};
use super::{CheckDefinition, CheckKind, MIN_INTERVAL, ServiceDefinition, limits};

impl ServiceDefinition {
    /// Consul's rules for a service and its checks. Call it on the
    /// definition [`with_defaults`](Self::with_defaults) made, so that check
    /// IDs are what they will be registered as.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.name.is_empty() {
            return Err(Invalid::new(Field::ServiceName, "Missing service name"));
        }
        limits::name(Field::ServiceName, "Service name", &self.name)?;
        limits::name(Field::ServiceId, "Service ID", &self.id)?;
        limits::tags(&self.tags)?;
        limits::service_meta(&self.meta)?;
        if let Some(w) = self.weights
            && w.passing < 1
        {
            return Err(Invalid::new(
                Field::Weights,
                "Passing must be greater than 0",
            ));
        }
        let mut ids = BTreeSet::new();
        for c in &self.checks {
            c.validate()?;
            if !ids.insert(c.id.as_str()) {
                return Err(Invalid::new(
                    Field::CheckId,
                    format!("Duplicate check ID {:?}", c.id),
                ));
            }
        }
        Ok(())
    }
}

impl CheckDefinition {
    /// Consul's rules for a check type, plus what a runner needs to run it.
    /// Call it on the definition `with_defaults` made: a check that has
    /// neither an ID nor a name then has no name.
    pub fn validate(&self) -> Result<(), Invalid> {
        let has_target = !self.http.is_empty() || !self.tcp.is_empty() || !self.args.is_empty();
        let has_interval = self.interval.is_some_and(|d| !d.is_zero());
        let has_ttl = self.ttl.is_some_and(|d| !d.is_zero());
        if has_interval && has_ttl {
            return Err(Invalid::check(
                Field::Interval,
                "Interval and TTL cannot both be specified",
            ));
        }
        if has_interval && !has_target {
            return Err(Invalid::check(
                Field::Interval,
                "Interval needs a target: one of HTTP, TCP or Args",
            ));
        }
        if has_target && !has_interval {
            return Err(Invalid::check(
                Field::Interval,
                "Interval must be > 0 for Script, HTTP, or TCP checks",
            ));
        }
        if !has_target && !has_ttl {
            return Err(Invalid::check(Field::Ttl, "TTL must be > 0 for TTL checks"));
        }
        if let Some(i) = self.interval
            && has_interval
            && i < MIN_INTERVAL
        {
            return Err(Invalid::check(
                Field::Interval,
                format!("Interval must be at least {MIN_INTERVAL:?} (got {i:?})"),
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Invalid::check(Field::Timeout, "Timeout must be > 0"));
        }
        match self.kind() {
            CheckKind::Http => self.validate_http()?,
            CheckKind::Tcp => {
                let port = self
                    .tcp
                    .rsplit_once(':')
                    .map(|(h, p)| (h, p.parse::<u16>()));
                if !matches!(port, Some((h, Ok(p))) if !h.is_empty() && p != 0) {
                    return Err(Invalid::check(
                        Field::Tcp,
                        format!("TCP: {:?} is not host:port", self.tcp),
                    ));
                }
            }
            // `kind()` is `Script` only when `args` is not empty.
            CheckKind::Script if self.args[0].is_empty() => {
                return Err(Invalid::check(
                    Field::Args,
                    "Args: the command (first element) is empty",
                ));
            }
            CheckKind::Script | CheckKind::Ttl => {}
        }
        if self.id.is_empty() {
            return Err(Invalid::new(Field::CheckId, "Missing check name"));
        }
        limits::name(Field::CheckId, "Check ID", &self.id)?;
        limits::name(Field::CheckName, "Check name", &self.name)?;
        Ok(())
    }

    fn validate_http(&self) -> Result<(), Invalid> {
        let url = reqwest::Url::parse(&self.http).map_err(|e| {
            Invalid::check(
                Field::Http,
                format!("HTTP: invalid URL {:?}: {e}", self.http),
            )
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(Invalid::check(
                Field::Http,
                format!(
                    "HTTP: scheme {:?} is not supported (http or https)",
                    url.scheme()
                ),
            ));
        }
        if !self.method.is_empty() && reqwest::Method::from_bytes(self.method.as_bytes()).is_err() {
            return Err(Invalid::check(
                Field::Method,
                format!("Method: invalid HTTP method {:?}", self.method),
            ));
        }
        for (name, values) in &self.header {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(Invalid::check(
                    Field::Header,
                    format!("Header: invalid header name {name:?}"),
                ));
            }
            if values
                .iter()
                .any(|v| reqwest::header::HeaderValue::from_str(v).is_err())
            {
                return Err(Invalid::check(
                    Field::Header,
                    format!("Header: invalid value for {name:?}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::catalog::Weights;

    fn ttl() -> CheckDefinition {
        CheckDefinition {
            id: "c".into(),
            ttl: Some(Duration::from_secs(10)),
            ..CheckDefinition::default()
        }
    }

    fn refused(c: CheckDefinition) -> Invalid {
        c.validate().unwrap_err()
    }

    #[test]
    fn each_check_rule_names_its_field() {
        let e = refused(CheckDefinition {
            interval: Some(Duration::from_secs(1)),
            ..ttl()
        });
        assert_eq!(e.field, Field::Interval);
        assert_eq!(
            e.to_string(),
            "Invalid check: Interval and TTL cannot both be specified"
        );
        let http = |url: &str, interval: u64| CheckDefinition {
            id: "c".into(),
            http: url.into(),
            interval: Some(Duration::from_millis(interval)),
            ..CheckDefinition::default()
        };
        let e = refused(http("http://h/", 50));
        assert_eq!(
            (e.field, e.message.as_str()),
            (
                Field::Interval,
                "Invalid check: Interval must be at least 100ms (got 50ms)"
            )
        );
        assert_eq!(refused(http("ftp://h/", 1000)).field, Field::Http);
        assert_eq!(refused(http("not a url", 1000)).field, Field::Http);
        let e = refused(CheckDefinition { ttl: None, ..ttl() });
        assert_eq!(e.field, Field::Ttl);
        assert!(e.message.contains("TTL must be > 0"), "{e}");
        let e = refused(CheckDefinition {
            ttl: None,
            tcp: "nohost".into(),
            interval: Some(Duration::from_secs(1)),
            ..ttl()
        });
        assert_eq!(e.field, Field::Tcp);
        let e = refused(CheckDefinition {
            id: String::new(),
            ..ttl()
        });
        assert_eq!(
            (e.field, e.message.as_str()),
            (Field::CheckId, "Missing check name")
        );
        assert!(ttl().validate().is_ok());
    }

    #[test]
    fn service_rules_come_before_their_checks() {
        let e = ServiceDefinition::default().validate().unwrap_err();
        assert_eq!(
            (e.field, e.message.as_str()),
            (Field::ServiceName, "Missing service name")
        );
        let weightless = ServiceDefinition {
            name: "web".into(),
            weights: Some(Weights {
                passing: 0,
                warning: 1,
            }),
            checks: vec![CheckDefinition::default()],
            ..ServiceDefinition::default()
        };
        assert_eq!(weightless.validate().unwrap_err().field, Field::Weights);
        let dup = ServiceDefinition {
            name: "web".into(),
            checks: vec![ttl(), ttl()],
            ..ServiceDefinition::default()
        }
        .with_defaults();
        let e = dup.validate().unwrap_err();
        assert_eq!(
            (e.field, e.message.as_str()),
            (Field::CheckId, "Duplicate check ID \"c\"")
        );
    }
}
