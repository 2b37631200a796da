//! Request bodies: JSON to typed values the way Consul reads them.
//!
//! Consul decodes with Go's `encoding/json`, which matches field names
//! case-insensitively, and its agent endpoints also accept snake_case spellings
//! (`enable_tag_override`). [`Fields`] looks keys up after folding case and
//! dropping `_`/`-`, so all of those spellings land on the same field, and
//! every type error names the field by its path (`Service.Port`,
//! `Checks[1].TTL`). Unknown fields are ignored and `null` is "absent", as in Go.
//!
//! Agent registrations decode into the [`crate::definition`] types that
//! configuration files produce too, with the same duration grammar and
//! status names; the agent's local state validates them with the same rules.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::catalog::{
    CheckRegistration, Deregistration, HealthStatus, Registration, ServiceAddress,
    ServiceRegistration, Weights,
};
use crate::definition::{CheckDefinition, ServiceDefinition, parse_duration, parse_status};

/// Why a body could not be decoded. The display text is the 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("Request decode failed: {0}")]
    Syntax(String),
    /// A field holds the wrong JSON type.
    #[error("Request decode failed: {field}: expected {expected}, got {found}")]
    Type {
        /// Path of the field.
        field: String,
        /// What it should have been.
        expected: &'static str,
        /// What it was.
        found: &'static str,
    },
    /// A field has the right type but an unusable value.
    #[error("Request decode failed: {field}: {reason}")]
    Value {
        /// Path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

type Result<T> = std::result::Result<T, DecodeError>;

/// Parses a body that must be a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Value> {
    let v: Value = serde_json::from_slice(body).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    if !v.is_object() {
        return Err(type_error("body", "object", &v));
    }
    Ok(v)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(
    field: &(impl fmt::Display + ?Sized),
    expected: &'static str,
    found: &Value,
) -> DecodeError {
    DecodeError::Type {
        field: field.to_string(),
        expected,
        found: kind(found),
    }
}

/// Folds a key the way lookups compare it: case-insensitive, `_` and `-` ignored.
fn fold(key: &str) -> String {
    if key.is_ascii() {
        // Every key Consul defines, without Unicode's case tables: folding
        // char by char through them cost more than applying the write
        // (callgrind, catalog registrations).
        let mut folded = String::with_capacity(key.len());
        folded.extend(fold_ascii(key).map(char::from));
        return folded;
    }
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// [`fold`] of an ASCII key, byte by byte.
fn fold_ascii(key: &str) -> impl Iterator<Item = u8> + '_ {
    key.bytes()
        .filter(|b| *b != b'_' && *b != b'-')
        .map(|b| b.to_ascii_lowercase())
}

/// Calls `f` with `name` folded as [`fold`] does, on the stack when it is
/// short and ASCII (as the names this module asks for all are).
fn with_folded<R>(name: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 64];
    if name.is_ascii() && name.len() <= buf.len() {
        let mut len = 0;
        for b in fold_ascii(name) {
            buf[len] = b;
            len += 1;
        }
        if let Ok(folded) = std::str::from_utf8(&buf[..len]) {
            return f(folded);
        }
    }
    f(&fold(name))
}

/// A JSON object read field by field, remembering its path for errors.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    /// The object as sent, for exact-key lookups.
    map: &'a Map<String, Value>,
    /// Non-null values by folded key, first occurrence wins; built once so a
    /// body with many keys costs one pass, not one pass per field.
    folded: HashMap<String, &'a Value>,
    /// Path of this object in the body ("" at the top).
    path: &'a str,
}

/// A field's value with its path.
type Found<'p, 'a> = (FieldPath<'p>, &'a Value);

/// A field's full path (`Service.Port`), written out only when needed: an
/// error, a nested object. Each field found wrote it before, an allocation
/// per field of every body.
#[derive(Debug, Clone, Copy)]
struct FieldPath<'p> {
    /// The object's path ("" at the top).
    parent: &'p str,
    /// The field's canonical name.
    name: &'p str,
}

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parent.is_empty() {
            f.write_str(self.name)
        } else {
            write!(f, "{}.{}", self.parent, self.name)
        }
    }
}

impl<'a> Fields<'a> {
    /// Wraps an object; `path` prefixes field names in errors ("" at the top).
    pub fn new(value: &'a Value, path: &'a str) -> Result<Self> {
        match value {
            Value::Object(map) => {
                let mut folded = HashMap::with_capacity(map.len());
                for (k, v) in map.iter().filter(|(_, v)| !v.is_null()) {
                    folded.entry(fold(k)).or_insert(v);
                }
                Ok(Self { map, folded, path })
            }
            other => Err(type_error(
                if path.is_empty() { "body" } else { path },
                "object",
                other,
            )),
        }
    }

    fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The first non-null value under any of `names` (the first is canonical
    /// and used in errors). An exact key wins over a folded match.
    fn get<'p>(&'p self, names: &[&'p str]) -> Option<Found<'p, 'a>> {
        let exact = names
            .iter()
            .find_map(|n| self.map.get(*n).filter(|v| !v.is_null()));
        let value = exact.or_else(|| {
            names
                .iter()
                .find_map(|n| with_folded(n, |k| self.folded.get(k).copied()))
        })?;
        let path = FieldPath {
            parent: self.path,
            name: names.first().copied().unwrap_or_default(),
        };
        Some((path, value))
    }

    /// A string field; empty when absent.
    pub fn string(&self, names: &[&str]) -> Result<String> {
        match self.get(names) {
            None => Ok(String::new()),
            Some((_, Value::String(s))) => Ok(s.clone()),
            Some((p, v)) => Err(type_error(&p, "string", v)),
        }
    }

    /// A boolean field; false when absent.
    pub fn bool(&self, names: &[&str]) -> Result<bool> {
        match self.get(names) {
            None => Ok(false),
            Some((_, Value::Bool(b))) => Ok(*b),
            Some((p, v)) => Err(type_error(&p, "boolean", v)),
        }
    }

    /// An unsigned integer field that must fit in `max`; `None` when absent.
    pub fn uint(&self, names: &[&str], max: u64) -> Result<Option<u64>> {
        match self.get(names) {
            None => Ok(None),
            Some((p, v @ Value::Number(n))) => match n.as_u64() {
                Some(x) if x <= max => Ok(Some(x)),
                Some(_) => Err(DecodeError::Value {
                    field: p.to_string(),
                    reason: format!("must be at most {max}"),
                }),
                None => Err(type_error(&p, "non-negative integer", v)),
            },
            Some((p, v)) => Err(type_error(&p, "non-negative integer", v)),
        }
    }

    /// A port number; 0 when absent.
    pub fn port(&self, names: &[&str]) -> Result<u16> {
        // The bound is u16::MAX, so the conversion cannot fail.
        Ok(self
            .uint(names, u64::from(u16::MAX))?
            .map_or(0, |p| p as u16))
    }

    /// A list of strings; empty when absent.
    pub fn strings(&self, names: &[&str]) -> Result<Vec<String>> {
        match self.get(names) {
            None => Ok(Vec::new()),
            Some((p, Value::Array(items))) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(type_error(&format!("{p}[{i}]"), "string", other)),
                })
                .collect(),
            Some((p, v)) => Err(type_error(&p, "array of strings", v)),
        }
    }

    /// A map of string to string; empty when absent.
    pub fn string_map(&self, names: &[&str]) -> Result<BTreeMap<String, String>> {
        match self.get(names) {
            None => Ok(BTreeMap::new()),
            Some((p, Value::Object(m))) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(type_error(&format!("{p}.{k}"), "string", other)),
                })
                .collect(),
            Some((p, v)) => Err(type_error(&p, "object of strings", v)),
        }
    }

    /// A map of string to list of strings (HTTP headers); empty when absent.
    pub fn string_lists(&self, names: &[&str]) -> Result<BTreeMap<String, Vec<String>>> {
        match self.get(names) {
            None => Ok(BTreeMap::new()),
            Some((p, Value::Object(m))) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let field = format!("{p}.{k}");
                    let list = match v {
                        Value::Array(items) => items
                            .iter()
                            .enumerate()
                            .map(|(i, x)| match x {
                                Value::String(s) => Ok(s.clone()),
                                other => Err(type_error(&format!("{field}[{i}]"), "string", other)),
                            })
                            .collect::<Result<Vec<_>>>()?,
                        other => return Err(type_error(&field, "array of strings", other)),
                    };
                    out.insert(k.clone(), list);
                }
                Ok(out)
            }
            Some((p, v)) => Err(type_error(&p, "object of string arrays", v)),
        }
    }

    /// A nested object and its path; `None` when absent.
    pub fn object(&self, names: &[&str]) -> Result<Option<(String, &'a Value)>> {
        match self.get(names) {
            None => Ok(None),
            Some((p, v @ Value::Object(_))) => Ok(Some((p.to_string(), v))),
            Some((p, v)) => Err(type_error(&p, "object", v)),
        }
    }

    /// A list of objects with their paths; empty when absent.
    pub fn objects(&self, names: &[&str]) -> Result<Vec<(String, &'a Value)>> {
        match self.get(names) {
            None => Ok(Vec::new()),
            Some((p, Value::Array(items))) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let path = format!("{p}[{i}]");
                    if v.is_object() {
                        Ok((path, v))
                    } else {
                        Err(type_error(&path, "object", v))
                    }
                })
                .collect(),
            Some((p, v)) => Err(type_error(&p, "array of objects", v)),
        }
    }

    /// A duration: a Go duration string ("10s", "1m30s") or a number of
    /// nanoseconds, as Consul accepts; `None` when absent.
    pub fn duration(&self, names: &[&str]) -> Result<Option<Duration>> {
        match self.get(names) {
            None => Ok(None),
            Some((p, Value::String(s))) => {
                parse_duration(s)
                    .map(Some)
                    .map_err(|reason| DecodeError::Value {
                        field: p.to_string(),
                        reason,
                    })
            }
            Some((p, v @ Value::Number(n))) => n
                .as_u64()
                .map(|ns| Some(Duration::from_nanos(ns)))
                .ok_or_else(|| type_error(&p, "duration", v)),
            Some((p, v)) => Err(type_error(&p, "duration", v)),
        }
    }

    /// A check status; `None` when absent.
    pub fn status(&self, names: &[&str]) -> Result<Option<HealthStatus>> {
        let s = self.string(names)?;
        if s.is_empty() {
            return Ok(None);
        }
        parse_status(&s)
            .map(Some)
            .map_err(|reason| DecodeError::Value {
                field: self.path_of(names.first().copied().unwrap_or_default()),
                reason,
            })
    }
}

/// `PUT /v1/agent/service/register`: a service definition with `Check` and `Checks`.
pub fn service_definition(v: &Value) -> Result<ServiceDefinition> {
    let f = Fields::new(v, "")?;
    let mut checks = Vec::new();
    if let Some((p, c)) = f.object(&["Check"])? {
        checks.push(check_definition(c, &p)?);
    }
    for (p, c) in f.objects(&["Checks"])? {
        checks.push(check_definition(c, &p)?);
    }
    Ok(ServiceDefinition {
        id: f.string(&["ID"])?,
        name: f.string(&["Name"])?,
        tags: f.strings(&["Tags"])?,
        address: f.string(&["Address"])?,
        tagged_addresses: tagged_service_addresses(&f)?,
        meta: f.string_map(&["Meta"])?.into(),
        port: f.port(&["Port"])?,
        weights: weights(&f)?,
        enable_tag_override: f.bool(&["EnableTagOverride"])?,
        checks,
    })
}

fn check_definition(v: &Value, path: &str) -> Result<CheckDefinition> {
    let f = Fields::new(v, path)?;
    Ok(CheckDefinition {
        id: f.string(&["CheckID", "ID"])?,
        name: f.string(&["Name"])?,
        status: f.status(&["Status"])?,
        notes: f.string(&["Notes"])?,
        ttl: f.duration(&["TTL"])?,
        interval: f.duration(&["Interval"])?,
        timeout: f.duration(&["Timeout"])?,
        http: f.string(&["HTTP"])?,
        method: f.string(&["Method"])?,
        header: f.string_lists(&["Header"])?,
        tls_skip_verify: f.bool(&["TLSSkipVerify"])?,
        tcp: f.string(&["TCP"])?,
        args: f.strings(&["Args", "ScriptArgs"])?,
        deregister_critical_service_after: f.duration(&["DeregisterCriticalServiceAfter"])?,
        service_id: f.string(&["ServiceID"])?,
        body: f.string(&["Body"])?,
        success_before_passing: counter(&f, "SuccessBeforePassing")?,
        failures_before_warning: counter(&f, "FailuresBeforeWarning")?,
        failures_before_critical: counter(&f, "FailuresBeforeCritical")?,
    })
}

fn counter(f: &Fields<'_>, name: &str) -> Result<u32> {
    // Bounded by u32::MAX, so the conversion cannot truncate.
    Ok(f.uint(&[name], u64::from(u32::MAX))?
        .map_or(0, |n| n as u32))
}

/// `PUT /v1/agent/check/register`: one check, with `ServiceID` naming its
/// service (empty for a node check).
pub fn check_registration(v: &Value) -> Result<CheckDefinition> {
    check_definition(v, "")
}

fn weights(f: &Fields<'_>) -> Result<Option<Weights>> {
    let Some((p, w)) = f.object(&["Weights"])? else {
        return Ok(None);
    };
    let w = Fields::new(w, &p)?;
    let max = u64::from(u32::MAX);
    // Bounded by u32::MAX above, so the conversions cannot truncate.
    Ok(Some(Weights {
        passing: w.uint(&["Passing"], max)?.map_or(1, |x| x as u32),
        warning: w.uint(&["Warning"], max)?.map_or(1, |x| x as u32),
    }))
}

fn tagged_service_addresses(f: &Fields<'_>) -> Result<BTreeMap<String, ServiceAddress>> {
    let Some((p, m)) = f.object(&["TaggedAddresses"])? else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(map) = m else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let path = format!("{p}.{k}");
        let a = Fields::new(v, &path)?;
        out.insert(
            k.clone(),
            ServiceAddress {
                address: a.string(&["Address"])?,
                port: a.port(&["Port"])?,
            },
        );
    }
    Ok(out)
}

/// `PUT /v1/catalog/register`.
pub fn registration(v: &Value) -> Result<Registration> {
    let f = Fields::new(v, "")?;
    let node = f.string(&["Node"])?;
    let service = match f.object(&["Service"])? {
        None => None,
        Some((p, s)) => {
            let s = Fields::new(s, &p)?;
            Some(ServiceRegistration {
                id: s.string(&["ID"])?,
                service: s.string(&["Service"])?,
                tags: s.strings(&["Tags"])?,
                address: s.string(&["Address"])?,
                tagged_addresses: tagged_service_addresses(&s)?,
                meta: s.string_map(&["Meta"])?.into(),
                port: s.port(&["Port"])?,
                weights: weights(&s)?,
                enable_tag_override: s.bool(&["EnableTagOverride"])?,
            })
        }
    };
    let mut checks = Vec::new();
    let single = f.object(&["Check"])?;
    for (p, c) in single.into_iter().chain(f.objects(&["Checks"])?) {
        checks.push(catalog_check(c, &p, &node)?);
    }
    Ok(Registration {
        node,
        id: f.string(&["ID"])?,
        address: f.string(&["Address"])?,
        datacenter: f.string(&["Datacenter"])?,
        tagged_addresses: f.string_map(&["TaggedAddresses"])?,
        node_meta: f.string_map(&["NodeMeta"])?.into(),
        skip_node_update: f.bool(&["SkipNodeUpdate"])?,
        service,
        checks,
    })
}

fn catalog_check(v: &Value, path: &str, node: &str) -> Result<CheckRegistration> {
    let f = Fields::new(v, path)?;
    let check_node = f.string(&["Node"])?;
    if !check_node.is_empty() && !check_node.eq_ignore_ascii_case(node) {
        return Err(DecodeError::Value {
            field: f.path_of("Node"),
            reason: format!("check node {check_node:?} does not match node {node:?}"),
        });
    }
    let kind = match f.object(&["Definition"])? {
        Some((p, d)) => {
            let d = Fields::new(d, &p)?;
            if !d.string(&["HTTP"])?.is_empty() {
                "http"
            } else if !d.string(&["TCP"])?.is_empty() {
                "tcp"
            } else {
                ""
            }
        }
        None => "",
    };
    let kind = match f.string(&["Type"])? {
        t if t.is_empty() => kind.to_string(),
        t => t,
    };
    Ok(CheckRegistration {
        check_id: f.string(&["CheckID", "ID"])?,
        name: f.string(&["Name"])?,
        status: f.status(&["Status"])?.unwrap_or(HealthStatus::Critical),
        notes: f.string(&["Notes"])?,
        output: f.string(&["Output"])?,
        service_id: f.string(&["ServiceID"])?,
        kind,
    })
}

/// `PUT /v1/catalog/deregister`.
pub fn deregistration(v: &Value) -> Result<Deregistration> {
    let f = Fields::new(v, "")?;
    Ok(Deregistration {
        node: f.string(&["Node"])?,
        service_id: f.string(&["ServiceID"])?,
        check_id: f.string(&["CheckID"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::CheckKind;
    use serde_json::json;

    #[test]
    fn field_names_match_in_any_case_and_snake_case() {
        for body in [
            json!({"Name": "web", "Port": 80, "EnableTagOverride": true}),
            json!({"name": "web", "port": 80, "enable_tag_override": true}),
            json!({"NAME": "web", "PORT": 80, "ENABLETAGOVERRIDE": true}),
        ] {
            let d = service_definition(&body).unwrap();
            assert_eq!(d.name, "web");
            assert_eq!(d.port, 80);
            assert!(d.enable_tag_override);
        }
    }

    #[test]
    fn folding_is_the_same_on_every_path() {
        let unicode = |k: &str| -> String {
            k.chars()
                .filter(|c| *c != '_' && *c != '-')
                .flat_map(char::to_lowercase)
                .collect()
        };
        let long = "Very_Long-Name".repeat(8);
        // The stack buffer's edge: 64 bytes fold there, 65 do not.
        let (at, past) = ("Ab_D".repeat(16), "Ab_D".repeat(16) + "E");
        for key in [
            "Node",
            "enable_tag_override",
            "X-Y_Z",
            "",
            "ÉTAT_Ünï",
            "İ",
            &long,
            &at,
            &past,
        ] {
            assert_eq!(fold(key), unicode(key), "{key}");
            assert_eq!(with_folded(key, str::to_owned), unicode(key), "{key}");
        }
    }

    #[test]
    fn exact_key_wins_over_folded_match() {
        let d = service_definition(&json!({"name": "lower", "Name": "exact"})).unwrap();
        assert_eq!(d.name, "exact");
    }

    #[test]
    fn null_is_absent() {
        let d = service_definition(&json!({"Name": "web", "Tags": null, "Port": null})).unwrap();
        assert!(d.tags.is_empty());
        assert_eq!(d.port, 0);
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let e = service_definition(&json!({"Name": "web", "Port": "80"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Request decode failed: Port: expected non-negative integer, got string"
        );
        let e = service_definition(&json!({"Name": "web", "Port": 70000})).unwrap_err();
        assert!(e.to_string().contains("Port: must be at most 65535"), "{e}");
        let e = service_definition(&json!({"Name": "web", "Tags": ["a", 1]})).unwrap_err();
        assert!(e.to_string().contains("Tags[1]: expected string"), "{e}");
        let e =
            service_definition(&json!({"Name": "web", "Checks": [{"TTL": "10s"}, {"TTL": 1.5}]}))
                .unwrap_err();
        assert!(e.to_string().contains("Checks[1].TTL"), "{e}");
        let e = registration(&json!({"Node": "n", "Service": {"Service": "s", "Meta": {"a": 1}}}))
            .unwrap_err();
        assert!(
            e.to_string().contains("Service.Meta.a: expected string"),
            "{e}"
        );
        let e =
            service_definition(&json!({"Name": "web", "Check": {"TTL": "10s", "Status": "bad"}}))
                .unwrap_err();
        assert!(
            e.to_string().contains("Check.Status: invalid check status"),
            "{e}"
        );
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(matches!(parse_object(b"{"), Err(DecodeError::Syntax(_))));
        assert_eq!(
            parse_object(b"[1]").unwrap_err().to_string(),
            "Request decode failed: body: expected object, got array"
        );
    }

    #[test]
    fn durations_accept_nanosecond_numbers() {
        let d =
            service_definition(&json!({"Name": "w", "check": {"ttl": 1_000_000_000u64}})).unwrap();
        assert_eq!(d.checks[0].ttl, Some(Duration::from_secs(1)));
    }

    #[test]
    fn service_definition_reads_checks_and_aliases() {
        let d = service_definition(&json!({
            "name": "web", "id": "web1", "tags": ["a"], "meta": {"k": "v"},
            "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 81}},
            "weights": {"passing": 3},
            "check": {"ttl": "10s", "status": "passing", "check_id": "c1"},
            "checks": [{"http": "http://x", "interval": "5s", "header": {"A": ["b"]}},
                       {"script_args": ["/bin/true"], "interval": "1m"}]
        }))
        .unwrap();
        assert_eq!(d.id, "web1");
        assert_eq!(d.tagged_addresses["lan"].port, 81);
        assert_eq!(
            d.weights,
            Some(Weights {
                passing: 3,
                warning: 1
            })
        );
        assert_eq!(d.checks.len(), 3);
        assert_eq!(d.checks[0].id, "c1");
        assert_eq!(d.checks[0].status, Some(HealthStatus::Passing));
        assert_eq!(d.checks[1].kind(), CheckKind::Http);
        assert_eq!(d.checks[1].header["A"], vec!["b".to_string()]);
        assert_eq!(d.checks[2].kind(), CheckKind::Script);
        assert_eq!(d.checks[2].interval, Some(Duration::from_secs(60)));
    }

    #[test]
    fn catalog_registration_defaults_check_status_to_critical() {
        let r = registration(&json!({
            "node": "n1", "address": "10.0.0.1",
            "service": {"service": "db", "port": 5432},
            "check": {"name": "alive"},
            "checks": [{"CheckID": "c2", "Status": "warning", "ServiceID": "db"}]
        }))
        .unwrap();
        assert_eq!(r.service.unwrap().port, 5432);
        assert_eq!(r.checks[0].status, HealthStatus::Critical);
        assert_eq!(r.checks[1].status, HealthStatus::Warning);
        assert_eq!(r.checks[1].service_id, "db");
        let e =
            registration(&json!({"Node": "a", "Check": {"Node": "b", "Name": "x"}})).unwrap_err();
        assert!(e.to_string().contains("Check.Node"), "{e}");
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "Name",
            "name",
            "ID",
            "Port",
            "port",
            "Tags",
            "Meta",
            "Check",
            "checks",
            "TTL",
            "interval",
            "Status",
            "Weights",
            "Passing",
            "TaggedAddresses",
            "Address",
            "Node",
            "Service",
            "Header",
            "args",
            "x",
        ])
        .prop_map(String::from);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            "[0-9a-zµ.]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_json_never_panics(v in json_value()) {
            let _ = service_definition(&v);
            let _ = registration(&v);
            let _ = deregistration(&v);
        }
    }
}
