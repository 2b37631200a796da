//! The `acl { … }` stanza: whether ACLs are on, the default and down
//! policies, and the agent's own tokens, each value checked so an error
//! names the key and the file.

use serde::Deserialize;

use super::ConfigError;
use crate::acl::DefaultPolicy;

/// `acl { … }` as a file writes it: Consul's key names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclFile {
    /// Turn ACLs on.
    pub enabled: Option<bool>,
    /// `allow` or `deny`: what a token may do where no rule says.
    pub default_policy: Option<String>,
    /// What happens when tokens cannot be resolved: `allow`, `deny`,
    /// `extend-cache` or `async-cache`.
    pub down_policy: Option<String>,
    /// Listing keys (`?keys`, `?recurse`) needs `list` on the prefix.
    pub enable_key_list_policy: Option<bool>,
    /// Consul persists tokens set through `/v1/agent/token`; trellis sets
    /// them only in configuration, so there is nothing to persist. Accepted
    /// so Consul's configurations load.
    pub enable_token_persistence: Option<bool>,
    /// The agent's own tokens.
    pub tokens: Option<AclTokensFile>,
}

/// `acl { tokens { … } }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclTokensFile {
    /// A management token the leader creates if it does not exist.
    pub initial_management: Option<String>,
    /// Consul's older name for `initial_management`.
    pub master: Option<String>,
    /// The token for requests that carry none (DNS included).
    pub default: Option<String>,
    /// The token the agent acts with itself.
    pub agent: Option<String>,
}

/// What a resolution of tokens does when servers cannot be reached. Tokens
/// resolve from the agent's own replica, so this applies only to a token
/// the replica has never seen while it is cut off from every server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownPolicy {
    /// Allow everything.
    Allow,
    /// Deny everything.
    Deny,
    /// Keep answering from what is known (Consul's default).
    ExtendCache,
    /// As `extend-cache`.
    AsyncCache,
}

/// The resolved `acl` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSettings {
    /// Whether ACLs are enforced.
    pub enabled: bool,
    /// What a token may do where no rule says.
    pub default_policy: DefaultPolicy,
    /// See [`DownPolicy`].
    pub down_policy: DownPolicy,
    /// Listings need `list` on the prefix.
    pub enable_key_list_policy: bool,
    /// A management token the leader creates if it does not exist.
    pub initial_management: Option<String>,
    /// The token for requests that carry none.
    pub default_token: Option<String>,
    /// The token the agent acts with itself.
    pub agent_token: Option<String>,
}

impl Default for AclSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            default_policy: DefaultPolicy::Allow,
            down_policy: DownPolicy::ExtendCache,
            enable_key_list_policy: false,
            initial_management: None,
            default_token: None,
            agent_token: None,
        }
    }
}

/// The `acl` stanza resolved; `src` names the file that set it.
pub(super) fn resolve(
    file: Option<&AclFile>,
    src: impl Fn() -> String,
) -> Result<AclSettings, ConfigError> {
    let Some(f) = file else {
        return Ok(AclSettings::default());
    };
    let invalid = |key: &'static str, message: String| ConfigError::Invalid {
        key,
        source_name: src(),
        message,
    };
    let default_policy = match f.default_policy.as_deref() {
        None => DefaultPolicy::Allow,
        Some(word) => word
            .parse()
            .map_err(|e: String| invalid("acl.default_policy", e))?,
    };
    let down_policy = match f.down_policy.as_deref() {
        None | Some("extend-cache") => DownPolicy::ExtendCache,
        Some("async-cache") => DownPolicy::AsyncCache,
        Some("allow") => DownPolicy::Allow,
        Some("deny") => DownPolicy::Deny,
        Some(other) => {
            return Err(invalid(
                "acl.down_policy",
                format!(
                    "invalid down policy {other:?}: expected \"allow\", \"deny\", \
                     \"extend-cache\" or \"async-cache\""
                ),
            ));
        }
    };
    let tokens = f.tokens.clone().unwrap_or_default();
    let token = |key: &'static str, value: Option<String>| {
        match value {
        Some(t) if t.trim().is_empty() || t.len() > 128 || t.chars().any(char::is_control) => {
            Err(invalid(
                key,
                "a token must be 1 to 128 characters without spaces around it or control characters"
                    .into(),
            ))
        }
        Some(t) if t.trim() != t => Err(invalid(
            key,
            "a token must not start or end with a space".into(),
        )),
        other => Ok(other),
    }
    };
    if tokens.initial_management.is_some() && tokens.master.is_some() {
        return Err(invalid(
            "acl.tokens.master",
            "set either acl.tokens.initial_management or its older name master, not both".into(),
        ));
    }
    Ok(AclSettings {
        enabled: f.enabled.unwrap_or(false),
        default_policy,
        down_policy,
        enable_key_list_policy: f.enable_key_list_policy.unwrap_or(false),
        initial_management: token(
            "acl.tokens.initial_management",
            tokens.initial_management.or(tokens.master),
        )?,
        default_token: token("acl.tokens.default", tokens.default)?,
        agent_token: token("acl.tokens.agent", tokens.agent)?,
    })
}
