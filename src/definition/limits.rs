//! How much a registration may carry, and in which characters: Consul's
//! limits on metadata (64 pairs, keys of at most 128 characters from
//! `[A-Za-z0-9_-]`, the `consul-` prefix reserved, values of at most 512),
//! and, where Consul has none, bounds of our own on names, IDs and tags, so
//! that one registration cannot fill the catalog, the view every DNS query
//! reads and every replica's memory (10,000 tags or a name with a NUL byte
//! were accepted before).
//!
//! The same checks serve every road in: [`ServiceDefinition::validate`]
//! (agent registrations over HTTP and services in configuration files) and
//! [`validate_registration`] (`/v1/catalog/register`). Each refusal is an
//! [`Invalid`] naming its field.
//!
//! [`ServiceDefinition::validate`]: super::ServiceDefinition::validate

use super::invalid::{Field, Invalid};
use crate::catalog::{Meta, Registration};

/// Most metadata pairs on a service or a node (Consul's `metaMaxKeyPairs`).
pub const META_MAX_PAIRS: usize = 64;
/// Longest metadata key, in characters (Consul's `metaKeyMaxLength`).
pub const META_KEY_MAX: usize = 128;
/// Longest metadata value, in characters (Consul's `metaValueMaxLength`).
pub const META_VALUE_MAX: usize = 512;
/// The metadata key prefix Consul keeps for its own use.
pub const META_RESERVED_PREFIX: &str = "consul-";
/// Longest service name, service ID, node name, check ID or check name, in
/// characters. Consul sets none; DNS can carry 63 per label, and names past
/// that are not discoverable over DNS anyway.
pub const NAME_MAX: usize = 256;
/// Most tags on one service. Consul sets none; this leaves room for the
/// routers' tags proxies like Traefik read.
pub const TAGS_MAX: usize = 256;
/// Longest tag, in characters: a metadata value's limit.
pub const TAG_MAX: usize = META_VALUE_MAX;

/// Which metadata a rule is about, for Consul's wording.
#[derive(Debug, Clone, Copy)]
enum MetaOf {
    Service,
    Node,
}

impl MetaOf {
    fn field(self) -> Field {
        match self {
            Self::Service => Field::ServiceMeta,
            Self::Node => Field::NodeMeta,
        }
    }

    /// Consul's prefix for a refused map ("Invalid Service Meta: …").
    fn prefix(self) -> &'static str {
        match self {
            Self::Service => "Invalid Service Meta",
            Self::Node => "Invalid Node Meta",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Service => "Service metadata",
            Self::Node => "Node metadata",
        }
    }
}

/// A value as an error shows it: quoted with escapes (a NUL shows as
/// `\0`), and cut short, so an over-long value is not echoed whole.
fn shown(s: &str) -> String {
    const SHOW: usize = 64;
    match s.char_indices().nth(SHOW) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

/// Consul's rules for one metadata map.
fn meta(of: MetaOf, meta: &Meta) -> Result<(), Invalid> {
    let refuse = |why: String| Invalid::new(of.field(), format!("{}: {why}", of.prefix()));
    if meta.len() > META_MAX_PAIRS {
        return Err(refuse(format!(
            "{} cannot contain more than {META_MAX_PAIRS} key/value pairs (got {})",
            of.noun(),
            meta.len()
        )));
    }
    for (key, value) in meta {
        let why = if key.is_empty() {
            "Key cannot be blank".to_string()
        } else if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            "Key contains invalid characters (allowed: letters, digits, '_' and '-')".to_string()
        } else if key.len() > META_KEY_MAX {
            format!("Key is too long (limit: {META_KEY_MAX} characters)")
        } else if key.starts_with(META_RESERVED_PREFIX) {
            format!("Key prefix '{META_RESERVED_PREFIX}' is reserved for internal use")
        } else if value.chars().count() > META_VALUE_MAX {
            format!("Value is too long (limit: {META_VALUE_MAX} characters)")
        } else if value.contains('\0') {
            "Value contains a NUL character".to_string()
        } else {
            continue;
        };
        return Err(refuse(format!(
            "Couldn't load metadata pair ({}, {}): {why}",
            shown(key),
            shown(value)
        )));
    }
    Ok(())
}

/// Service metadata, as Consul's `ValidateServiceMetadata` checks it.
pub(super) fn service_meta(m: &Meta) -> Result<(), Invalid> {
    meta(MetaOf::Service, m)
}

/// A name or ID: at most [`NAME_MAX`] characters, no control characters.
/// `what` is how the message names it ("Service name").
pub(super) fn name(field: Field, what: &str, value: &str) -> Result<(), Invalid> {
    if value.chars().count() > NAME_MAX {
        return Err(Invalid::new(
            field,
            format!("{what} is too long (limit: {NAME_MAX} characters)"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::new(
            field,
            format!("{what} {} contains a control character", shown(value)),
        ));
    }
    Ok(())
}

/// A service's tags: at most [`TAGS_MAX`], each at most [`TAG_MAX`]
/// characters without control characters.
pub(super) fn tags(tags: &[String]) -> Result<(), Invalid> {
    if tags.len() > TAGS_MAX {
        return Err(Invalid::new(
            Field::Tags,
            format!(
                "Service tags cannot contain more than {TAGS_MAX} tags (got {})",
                tags.len()
            ),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.chars().count() > TAG_MAX {
            return Err(Invalid::new(
                Field::Tags,
                format!("Service tag {i} is too long (limit: {TAG_MAX} characters)"),
            ));
        }
        if tag.chars().any(char::is_control) {
            return Err(Invalid::new(
                Field::Tags,
                format!(
                    "Service tag {i} {} contains a control character",
                    shown(tag)
                ),
            ));
        }
    }
    Ok(())
}

/// The limits on a `/v1/catalog/register` body: the node's name and
/// metadata, the service's name, ID, tags and metadata, and the checks'
/// IDs and names. (The agent's own registrations are built from
/// definitions [`ServiceDefinition::validate`](super::ServiceDefinition::validate)
/// already passed.)
pub fn validate_registration(reg: &Registration) -> Result<(), Invalid> {
    name(Field::NodeName, "Node name", &reg.node)?;
    meta(MetaOf::Node, &reg.node_meta)?;
    if let Some(s) = &reg.service {
        name(Field::ServiceName, "Service name", &s.service)?;
        name(Field::ServiceId, "Service ID", &s.id)?;
        tags(&s.tags)?;
        service_meta(&s.meta)?;
    }
    for c in &reg.checks {
        name(Field::CheckId, "Check ID", &c.check_id)?;
        name(Field::CheckName, "Check name", &c.name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CheckRegistration, HealthStatus, ServiceRegistration};

    fn pairs(n: usize) -> Meta {
        (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
    }

    fn one(key: &str, value: &str) -> Meta {
        Meta::from([(key.to_string(), value.to_string())])
    }

    #[test]
    fn metadata_follows_consuls_limits() {
        assert!(service_meta(&pairs(64)).is_ok());
        let e = service_meta(&pairs(65)).unwrap_err();
        assert_eq!(e.field, Field::ServiceMeta);
        assert_eq!(
            e.message,
            "Invalid Service Meta: Service metadata cannot contain more than 64 key/value pairs (got 65)"
        );
        assert!(service_meta(&one(&"k".repeat(128), "v")).is_ok());
        assert!(service_meta(&one("ok_key-1", &"v".repeat(512))).is_ok());
        for (key, value, why) in [
            ("", "v", "Key cannot be blank"),
            ("a.b", "v", "Key contains invalid characters"),
            ("a\0b", "v", "Key contains invalid characters"),
            (
                &"k".repeat(129),
                "v",
                "Key is too long (limit: 128 characters)",
            ),
            ("consul-x", "v", "Key prefix 'consul-' is reserved"),
            (
                "k",
                &"v".repeat(513),
                "Value is too long (limit: 512 characters)",
            ),
            ("k", "a\0b", "Value contains a NUL character"),
        ] {
            let e = service_meta(&one(key, value)).unwrap_err();
            assert!(e.message.contains(why), "{key:?}: {}", e.message);
            assert!(
                e.message
                    .starts_with("Invalid Service Meta: Couldn't load metadata pair (")
            );
        }
        // An over-long value is not echoed whole.
        let e = service_meta(&one("k", &"v".repeat(100_000))).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message);
    }

    #[test]
    fn names_and_tags_have_bounds_and_no_control_characters() {
        assert!(name(Field::ServiceName, "Service name", &"a".repeat(256)).is_ok());
        let e = name(Field::ServiceName, "Service name", &"a".repeat(257)).unwrap_err();
        assert_eq!(
            e.message,
            "Service name is too long (limit: 256 characters)"
        );
        let e = name(Field::ServiceName, "Service name", "we\0b").unwrap_err();
        assert_eq!(
            e.message,
            r#"Service name "we\0b" contains a control character"#
        );
        assert!(tags(&vec!["t".to_string(); 256]).is_ok());
        let e = tags(&vec!["t".to_string(); 10_000]).unwrap_err();
        assert_eq!(e.field, Field::Tags);
        assert!(e.message.contains("more than 256 tags"), "{}", e.message);
        assert!(
            tags(&["ok".into(), "x".repeat(513)])
                .unwrap_err()
                .message
                .contains("tag 1 is too long")
        );
        assert!(
            tags(&["a\nb".into()])
                .unwrap_err()
                .message
                .contains("control character")
        );
        // Limits count characters, as the messages say, not bytes.
        assert!(name(Field::ServiceName, "Service name", &"é".repeat(256)).is_ok());
    }

    #[test]
    fn a_catalog_registration_is_checked_field_by_field() {
        let ok = Registration {
            node: "n1".into(),
            id: String::new(),
            address: "10.0.0.1".into(),
            datacenter: String::new(),
            tagged_addresses: Default::default(),
            node_meta: pairs(3),
            skip_node_update: false,
            service: Some(ServiceRegistration {
                id: String::new(),
                service: "web".into(),
                tags: vec!["a".into()],
                address: String::new(),
                tagged_addresses: Default::default(),
                meta: pairs(2),
                port: 80,
                weights: None,
                enable_tag_override: false,
            }),
            checks: vec![CheckRegistration {
                check_id: "c".into(),
                name: "c".into(),
                status: HealthStatus::Passing,
                notes: String::new(),
                output: String::new(),
                service_id: String::new(),
                kind: String::new(),
            }],
        };
        assert!(validate_registration(&ok).is_ok());
        let field = |change: &dyn Fn(&mut Registration)| {
            let mut r = ok.clone();
            change(&mut r);
            validate_registration(&r).unwrap_err().field
        };
        assert_eq!(field(&|r| r.node = "n\0x".into()), Field::NodeName);
        assert_eq!(field(&|r| r.node_meta = pairs(10_000)), Field::NodeMeta);
        assert_eq!(
            field(&|r| r.node_meta = one("consul-version", "1")),
            Field::NodeMeta
        );
        assert_eq!(
            field(&|r| {
                if let Some(s) = r.service.as_mut() {
                    s.tags = vec!["t".into(); 10_000];
                }
            }),
            Field::Tags
        );
        assert_eq!(
            field(&|r| {
                if let Some(s) = r.service.as_mut() {
                    s.meta = pairs(10_000);
                }
            }),
            Field::ServiceMeta
        );
        assert_eq!(
            field(&|r| {
                if let Some(s) = r.service.as_mut() {
                    s.service = "w\0eb".into();
                }
            }),
            Field::ServiceName
        );
        assert_eq!(
            field(&|r| r.checks[0].name = "c".repeat(300)),
            Field::CheckName
        );
    }
}
