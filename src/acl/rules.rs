//! Consul's ACL rules text, HCL or JSON, parsed into a [`Policy`], bounded
//! and strict: input over [`MAX_RULES_BYTES`] or with more than
//! [`MAX_RULES`] rules is refused before any more work, and every refusal
//! names the line (HCL) or the rule (JSON) at fault. No input panics or
//! runs long: HCL that nests deeper than a rule's block, or holds templates
//! or heredocs, is refused by a pre-scan before hcl-edit (which backtracks
//! exponentially on nested expressions) sees it, and serde_json caps its
//! recursion at 128.

use hcl_edit::Span;
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Block, Body, Structure};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Access, Match, Policy, Resource, Rule};

/// The longest rules text accepted, in bytes. Real policies are a few
/// hundred bytes; Consul bounds them only by the request body.
pub const MAX_RULES_BYTES: usize = 64 * 1024;

/// The most rules (named and single-value) one policy may hold, so a
/// policy's authorizer stays small however it is written.
pub const MAX_RULES: usize = 1024;

/// Consul's rule keywords that trellis does not implement: refused with
/// their own message rather than "unknown".
const UNSUPPORTED: &[&str] = &[
    "event",
    "event_prefix",
    "mesh",
    "peering",
    "identity",
    "identity_prefix",
    "namespace",
    "namespace_prefix",
    "partition",
    "partition_prefix",
];

/// Where in the text a fault is: a line of HCL, or a rule of JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// One-based line of the HCL text.
    Line(usize),
    /// The rule path in the JSON text, as `service_prefix "web"`.
    Rule(String),
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::Rule(path) => write!(f, "rule {path}"),
        }
    }
}

/// Why rules text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The text is longer than [`MAX_RULES_BYTES`]; nothing was parsed.
    #[error("ACL rules are {len} bytes, more than the limit of {MAX_RULES_BYTES}")]
    TooLarge {
        /// The text's length in bytes.
        len: usize,
    },
    /// The text holds more than [`MAX_RULES`] rules.
    #[error("ACL rules: {at}: more than {MAX_RULES} rules")]
    TooMany {
        /// Where the rule over the limit starts.
        at: At,
    },
    /// The text is not HCL or not JSON.
    #[error("Failed to parse ACL rules: line {line}, column {column}: {message}")]
    Syntax {
        /// One-based line of the fault.
        line: usize,
        /// One-based column of the fault.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// The text parsed but a rule in it is not one we accept.
    #[error("Invalid ACL rules: {at}: {message}")]
    Invalid {
        /// Where the rule is.
        at: At,
        /// What is wrong with it.
        message: String,
    },
}

/// Parses rules text into a policy. Empty (or blank) text is the empty
/// policy, as in Consul.
pub fn parse(text: &str) -> Result<Policy, RulesError> {
    if text.len() > MAX_RULES_BYTES {
        return Err(RulesError::TooLarge { len: text.len() });
    }
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Ok(Policy::default());
    }
    // Consul's HCL decoder reads text that opens with `{` as JSON.
    if trimmed.starts_with('{') {
        parse_json(text)
    } else {
        parse_hcl(text)
    }
}

/// Collects rules, counting them against [`MAX_RULES`] and refusing a
/// single-value rule set twice.
#[derive(Default)]
struct Builder {
    policy: Policy,
    count: usize,
}

impl Builder {
    fn count(&mut self, at: &At) -> Result<(), RulesError> {
        self.count += 1;
        if self.count > MAX_RULES {
            return Err(RulesError::TooMany { at: at.clone() });
        }
        Ok(())
    }

    fn named(
        &mut self,
        at: &At,
        (resource, matching): (Resource, Match),
        name: &str,
        policy: Option<&str>,
    ) -> Result<(), RulesError> {
        self.count(at)?;
        let keyword = resource.keyword(matching);
        let Some(word) = policy else {
            return Err(invalid(
                at,
                format!("{keyword} {name:?} has no policy (read, write or deny)"),
            ));
        };
        let access = access_of(word, resource == Resource::Key).ok_or_else(|| {
            let expected = if resource == Resource::Key {
                "read, list, write or deny"
            } else {
                "read, write or deny"
            };
            invalid(
                at,
                format!("invalid {keyword} {name:?} policy {word:?}: expected {expected}"),
            )
        })?;
        self.policy.rules.push(Rule {
            resource,
            matching,
            name: name.to_owned(),
            access,
        });
        Ok(())
    }

    fn single(&mut self, at: &At, keyword: &str, word: &str) -> Result<(), RulesError> {
        self.count(at)?;
        let access = access_of(word, false).ok_or_else(|| {
            invalid(
                at,
                format!("invalid {keyword} policy {word:?}: expected read, write or deny"),
            )
        })?;
        let slot = match keyword {
            "operator" => &mut self.policy.operator,
            "acl" => &mut self.policy.acl,
            _ => &mut self.policy.keyring,
        };
        if slot.is_some() {
            return Err(invalid(at, format!("{keyword} is set twice")));
        }
        *slot = Some(access);
        Ok(())
    }
}

fn access_of(word: &str, list_allowed: bool) -> Option<Access> {
    match word {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "deny" => Some(Access::Deny),
        "list" if list_allowed => Some(Access::List),
        _ => None,
    }
}

fn is_single(keyword: &str) -> bool {
    matches!(keyword, "operator" | "acl" | "keyring")
}

fn invalid(at: &At, message: String) -> RulesError {
    RulesError::Invalid {
        at: at.clone(),
        message,
    }
}

/// The refusal for a keyword that is neither a named nor a single rule.
fn unknown(at: &At, keyword: &str) -> RulesError {
    if UNSUPPORTED.contains(&keyword) {
        invalid(at, format!("{keyword} rules are not supported by trellis"))
    } else {
        invalid(at, format!("unknown rule {keyword:?}"))
    }
}

// ---- HCL ----

/// The deepest bracket nesting rules text may have outside strings: a
/// rule's block is one level; a second lets a stray inner block or object
/// reach the parser and be refused by name.
const MAX_HCL_DEPTH: usize = 2;

/// Refuses, before the HCL parser sees it, text it could take exponential
/// time on: hcl-edit backtracks between the forms an expression in braces
/// may take, so nested object expressions of a few hundred bytes cost
/// seconds (found by the `acl_rules` fuzz target). Rules need none of it:
/// no nesting beyond a rule's block, no templates (`${`, `%{`), no heredocs.
/// A small lexer of its own, aware of strings and comments so a `{` in a
/// name or a comment does not count.
fn prescan_hcl(text: &str) -> Result<(), RulesError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut i = 0usize;
    let refuse = |line: usize, message: &str| Err(invalid(&At::Line(line), message.to_owned()));
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        match bytes[i] {
            b'\n' => line += 1,
            b'#' => i = skip_line(bytes, i),
            b'/' if next == Some(b'/') => i = skip_line(bytes, i),
            b'/' if next == Some(b'*') => {
                let end = text[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |e| i + 2 + e + 2);
                line += bytes[i..end].iter().filter(|&&b| b == b'\n').count();
                i = end;
                continue;
            }
            b'<' if next == Some(b'<') => {
                return refuse(line, "heredocs are not allowed in ACL rules");
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    match (bytes[i], bytes.get(i + 1)) {
                        // A quoted string ends on its line in HCL; refusing
                        // one that does not keeps this lexer's idea of where
                        // strings are the parser's, so no brace escapes the
                        // count by hiding in what only one of them sees as a
                        // string.
                        (b'\n', _) | (b'\\', Some(b'\n')) => {
                            return refuse(line, "a quoted string does not end on its line");
                        }
                        (b'\\', _) => i += 1,
                        // `$${` and `%%{` are a literal `${` and `%{`.
                        (b'$' | b'%', Some(&b2))
                            if b2 == bytes[i] && bytes.get(i + 2) == Some(&b'{') =>
                        {
                            i += 2;
                        }
                        (b'$' | b'%', Some(b'{')) => {
                            return refuse(
                                line,
                                "templates (${…}, %{…}) are not allowed in ACL rules",
                            );
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_HCL_DEPTH {
                    return refuse(
                        line,
                        "nested too deep: rules are `kind \"name\" { policy = \"…\" }` blocks and `kind = \"…\"` values",
                    );
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index of the newline ending the comment that starts at `i`, or the
/// end of the text.
fn skip_line(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| i + p)
        .saturating_sub(1)
        .max(i)
}

fn parse_hcl(text: &str) -> Result<Policy, RulesError> {
    prescan_hcl(text)?;
    let body = hcl_edit::parser::parse_body(text).map_err(|e| RulesError::Syntax {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_owned(),
    })?;
    let line_of = |span: Option<std::ops::Range<usize>>| {
        let start = span.map_or(0, |s| s.start.min(text.len()));
        At::Line(
            text.as_bytes()[..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1,
        )
    };
    let mut out = Builder::default();
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) => {
                let at = line_of(attr.span());
                let keyword = attr.key.as_str();
                if is_single(keyword) {
                    let word = hcl_string(&at, keyword, &attr.value)?;
                    out.single(&at, keyword, word)?;
                } else if Resource::from_keyword(keyword).is_some() {
                    return Err(invalid(
                        &at,
                        format!("{keyword} is a block: {keyword} \"name\" {{ policy = \"read\" }}"),
                    ));
                } else {
                    return Err(unknown(&at, keyword));
                }
            }
            Structure::Block(block) => {
                let at = line_of(block.span());
                let keyword = block.ident.as_str();
                let Some(kind) = Resource::from_keyword(keyword) else {
                    if is_single(keyword) {
                        return Err(invalid(
                            &at,
                            format!("{keyword} takes a value: {keyword} = \"read\""),
                        ));
                    }
                    return Err(unknown(&at, keyword));
                };
                let [label] = block.labels.as_slice() else {
                    return Err(invalid(
                        &at,
                        format!("{keyword} takes one name: {keyword} \"name\" {{ … }}"),
                    ));
                };
                let policy = hcl_rule_body(&at, keyword, block)?;
                out.named(&at, kind, label.as_str(), policy)?;
            }
        }
    }
    Ok(out.policy)
}

/// The `policy` of a named rule's block, refusing anything else in it.
fn hcl_rule_body<'a>(
    at: &At,
    keyword: &str,
    block: &'a Block,
) -> Result<Option<&'a str>, RulesError> {
    let body: &Body = &block.body;
    let mut policy = None;
    for inner in body.iter() {
        match inner {
            Structure::Attribute(attr) if attr.key.as_str() == "policy" => {
                if policy.is_some() {
                    return Err(invalid(at, format!("{keyword}: policy is set twice")));
                }
                policy = Some(hcl_string(at, "policy", &attr.value)?);
            }
            Structure::Attribute(attr) if attr.key.as_str() == "intentions" => {
                return Err(invalid(
                    at,
                    format!("{keyword}: intentions are not supported by trellis"),
                ));
            }
            Structure::Attribute(attr) => {
                return Err(invalid(
                    at,
                    format!("{keyword}: unknown field {:?}", attr.key.as_str()),
                ));
            }
            Structure::Block(inner) => {
                return Err(invalid(
                    at,
                    format!("{keyword}: unexpected block {:?}", inner.ident.as_str()),
                ));
            }
        }
    }
    Ok(policy)
}

fn hcl_string<'a>(at: &At, field: &str, value: &'a Expression) -> Result<&'a str, RulesError> {
    match value {
        Expression::String(s) => Ok(s.as_str()),
        _ => Err(invalid(at, format!("{field} must be a quoted string"))),
    }
}

// ---- JSON ----

/// A JSON value that keeps every member of an object, duplicates included,
/// in order: `serde_json::Value` would keep only the last of a duplicate,
/// and Consul merges duplicates instead.
enum Json {
    String(String),
    Object(Vec<(String, Self)>),
    Array(Vec<Self>),
    /// Numbers, booleans and null: never valid in rules.
    Other,
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

fn parse_json(text: &str) -> Result<Policy, RulesError> {
    let top: Json = serde_json::from_str(text).map_err(|e| RulesError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Json::Object(members) = top else {
        return Err(invalid(
            &At::Rule("(top)".into()),
            "the rules must be a JSON object".into(),
        ));
    };
    let mut out = Builder::default();
    for (keyword, value) in &members {
        let at = At::Rule(keyword.clone());
        if is_single(keyword) {
            let Json::String(word) = value else {
                return Err(invalid(&at, format!("{keyword} must be a string")));
            };
            out.single(&at, keyword, word)?;
            continue;
        }
        let Some(kind) = Resource::from_keyword(keyword) else {
            return Err(unknown(&at, keyword));
        };
        // `{"web": {...}}`, or a list of such objects (HCL's JSON form of
        // repeated blocks, which keeps duplicates and order).
        let groups: &[Json] = match value {
            Json::Array(items) => items,
            single => std::slice::from_ref(single),
        };
        for group in groups {
            let Json::Object(rules) = group else {
                return Err(invalid(
                    &at,
                    format!("{keyword} must map names to {{\"policy\": \"…\"}}"),
                ));
            };
            for (name, body) in rules {
                let at = At::Rule(format!("{keyword} {name:?}"));
                let policy = json_rule_body(&at, keyword, body)?;
                out.named(&at, kind, name, policy)?;
            }
        }
    }
    Ok(out.policy)
}

/// The `policy` of one named rule in JSON, refusing anything else in it.
fn json_rule_body<'a>(
    at: &At,
    keyword: &str,
    body: &'a Json,
) -> Result<Option<&'a str>, RulesError> {
    // A one-element list around the body is HCL's JSON form of a block.
    let body = match body {
        Json::Array(items) if items.len() == 1 => &items[0],
        other => other,
    };
    let Json::Object(fields) = body else {
        return Err(invalid(
            at,
            format!("{keyword} must be an object {{\"policy\": \"…\"}}"),
        ));
    };
    let mut policy = None;
    for (field, value) in fields {
        match (field.as_str(), value) {
            ("policy", Json::String(word)) if policy.is_none() => policy = Some(word.as_str()),
            ("policy", Json::String(_)) => {
                return Err(invalid(at, format!("{keyword}: policy is set twice")));
            }
            ("policy", _) => return Err(invalid(at, "policy must be a string".into())),
            ("intentions", _) => {
                return Err(invalid(
                    at,
                    format!("{keyword}: intentions are not supported by trellis"),
                ));
            }
            (other, _) => {
                return Err(invalid(at, format!("{keyword}: unknown field {other:?}")));
            }
        }
    }
    Ok(policy)
}

#[cfg(test)]
mod tests;
