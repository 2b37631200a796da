//! The ACL endpoints' JSON: tokens and policies as Consul's `ACLToken`,
//! `ACLPolicy` and their list stubs (fields in Consul's order), and the
//! bodies of their writes, read as Go reads them (field names in any case,
//! unknown fields ignored, `null` absent).

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::catalog::{AclPolicy, AclToken, Index, State};
use crate::http::decode::{DecodeError, Fields};

/// What Consul shows instead of a secret to a token without `acl:write`
/// (and what trellis shows where this agent does not hold the secret).
pub(super) const HIDDEN: &str = "<hidden>";

/// A token as `GET /v1/acl/token/:id` answers it. The list stub has the
/// same fields in the same order, so one shape serves both.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct TokenJson {
    #[serde(rename = "AccessorID")]
    pub(super) accessor_id: String,
    #[serde(rename = "SecretID")]
    pub(super) secret_id: String,
    pub(super) description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) policies: Vec<PolicyLink>,
    pub(super) local: bool,
    pub(super) create_time: String,
    pub(super) hash: String,
    pub(super) create_index: Index,
    pub(super) modify_index: Index,
}

/// A token's link to a policy; the name is looked up when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct PolicyLink {
    #[serde(rename = "ID")]
    pub(super) id: String,
    #[serde(rename = "Name")]
    pub(super) name: String,
}

impl TokenJson {
    /// `token` as read from `state`: links to policies that are gone are
    /// left out (Consul drops them when a token is read), the secret shown
    /// only when `show_secret`, and `<hidden>` where this agent's replica
    /// holds no secret (a client agent's).
    pub(super) fn new(state: &State, token: &AclToken, show_secret: bool) -> Self {
        let policies = token
            .policies
            .iter()
            .filter_map(|id| {
                state.acl_policy(id).map(|p| PolicyLink {
                    id: p.id.clone(),
                    name: p.name.clone(),
                })
            })
            .collect();
        let secret_id = if show_secret && !token.secret_id.is_empty() {
            token.secret_id.clone()
        } else {
            HIDDEN.to_string()
        };
        Self {
            accessor_id: token.accessor_id.clone(),
            secret_id,
            description: token.description.clone(),
            policies,
            local: token.local,
            create_time: rfc3339(token.create_time),
            hash: token_hash(token),
            create_index: token.create_index,
            modify_index: token.modify_index,
        }
    }
}

/// `PUT /v1/acl/bootstrap`'s answer: the token and Consul's legacy `ID`,
/// the secret again.
#[derive(Debug, Serialize)]
pub(super) struct BootstrapJson {
    #[serde(rename = "ID")]
    pub(super) id: String,
    #[serde(flatten)]
    pub(super) token: TokenJson,
}

/// A policy as `GET /v1/acl/policy/:id` answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PolicyJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    description: String,
    rules: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    datacenters: Vec<String>,
    hash: String,
    create_index: Index,
    modify_index: Index,
}

impl From<&AclPolicy> for PolicyJson {
    fn from(p: &AclPolicy) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            rules: p.rules.clone(),
            datacenters: p.datacenters.clone(),
            hash: policy_hash(p),
            create_index: p.create_index,
            modify_index: p.modify_index,
        }
    }
}

/// A policy in `GET /v1/acl/policies`: no rules, and `Datacenters` is
/// `null` rather than absent when empty, as Consul's stub.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PolicyStubJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    description: String,
    datacenters: Option<Vec<String>>,
    hash: String,
    create_index: Index,
    modify_index: Index,
}

impl From<&AclPolicy> for PolicyStubJson {
    fn from(p: &AclPolicy) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            datacenters: (!p.datacenters.is_empty()).then(|| p.datacenters.clone()),
            hash: policy_hash(p),
            create_index: p.create_index,
            modify_index: p.modify_index,
        }
    }
}

/// Milliseconds since the epoch as Go prints a `time.Time` in JSON.
fn rfc3339(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// A digest of what a token grants, base64 as Consul's `Hash` field: it
/// changes when the token's description, locality or policies change, so
/// clients comparing hashes see a change. Consul's is a blake2b over its
/// own field encoding; clients only compare it, never recompute it.
fn token_hash(t: &AclToken) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        t.description.as_str(),
        if t.local { "local" } else { "global" },
    ] {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    for p in &t.policies {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// As [`token_hash`], over a policy's name, description, rules and
/// datacenters.
fn policy_hash(p: &AclPolicy) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [&p.name, &p.description, &p.rules] {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    for dc in &p.datacenters {
        ctx.update(dc.as_bytes());
        ctx.update(&[0]);
    }
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// A token write's body.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TokenBody {
    pub(super) accessor_id: String,
    pub(super) secret_id: String,
    pub(super) description: String,
    /// Each link as given: an ID, a name, or both.
    pub(super) policies: Vec<LinkBody>,
    pub(super) local: bool,
}

/// One `Policies` entry of a token write.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct LinkBody {
    pub(super) id: String,
    pub(super) name: String,
}

/// Decodes a token write; what trellis does not keep (roles, identities,
/// auth methods, expiry) is refused rather than silently dropped.
pub(super) fn token_body(v: &Value) -> Result<TokenBody, DecodeError> {
    let f = Fields::new(v, "")?;
    for unsupported in [
        "Roles",
        "ServiceIdentities",
        "NodeIdentities",
        "TemplatedPolicies",
    ] {
        if !f.objects(&[unsupported])?.is_empty() {
            return Err(DecodeError::Value {
                field: unsupported.into(),
                reason: "not supported by trellis: link policies instead".into(),
            });
        }
    }
    for unsupported in ["ExpirationTime", "ExpirationTTL", "AuthMethod"] {
        if !f.string(&[unsupported]).unwrap_or_default().is_empty()
            || f.uint(&[unsupported], u64::MAX)
                .ok()
                .flatten()
                .is_some_and(|n| n > 0)
        {
            return Err(DecodeError::Value {
                field: unsupported.into(),
                reason: "not supported by trellis: tokens do not expire".into(),
            });
        }
    }
    let policies = f
        .objects(&["Policies"])?
        .into_iter()
        .map(|(path, v)| {
            let link = Fields::new(v, &path)?;
            Ok(LinkBody {
                id: link.string(&["ID"])?,
                name: link.string(&["Name"])?,
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    Ok(TokenBody {
        accessor_id: f.string(&["AccessorID"])?,
        secret_id: f.string(&["SecretID"])?,
        description: f.string(&["Description"])?,
        policies,
        local: f.bool(&["Local"])?,
    })
}

/// A policy write's body.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PolicyBody {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) rules: String,
    pub(super) datacenters: Vec<String>,
}

impl PolicyBody {
    /// The policy the body describes, under `id` (indexes are the state's
    /// to set).
    pub(super) fn into_policy(self, id: String) -> AclPolicy {
        AclPolicy {
            id,
            name: self.name,
            description: self.description,
            rules: self.rules,
            datacenters: self.datacenters,
            create_index: 0,
            modify_index: 0,
        }
    }
}

/// Decodes a policy write.
pub(super) fn policy_body(v: &Value) -> Result<PolicyBody, DecodeError> {
    let f = Fields::new(v, "")?;
    Ok(PolicyBody {
        id: f.string(&["ID"])?,
        name: f.string(&["Name"])?,
        description: f.string(&["Description"])?,
        rules: f.string(&["Rules"])?,
        datacenters: f.strings(&["Datacenters"])?,
    })
}

/// `{"BootstrapSecret": "…"}`, the optional body of a bootstrap.
pub(super) fn bootstrap_secret(v: &Value) -> Result<String, DecodeError> {
    Fields::new(v, "")?.string(&["BootstrapSecret"])
}
