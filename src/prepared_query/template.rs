//! Query templates (`Template.Type = "name_prefix_match"`): a template
//! answers every name it prefixes, its string fields rendered for the name
//! asked (Consul's `agent/consul/prepared_query/template.go`).
//!
//! Consul renders with HashiCorp's HIL; trellis reads the part of it a
//! template can use: `${name.full}` (the name asked), `${name.prefix}` (the
//! template's name), `${name.suffix}` (the rest), `${match(N)}` (group N of
//! `Regexp` matched against the full name; `""` when it did not match or
//! has no such group), and `$${` for a literal `${`. Anything else in
//! `${…}` is refused when the template is written, never at lookup time:
//! a template is rendered once with its own name before it is stored.
//! Every string field is rendered except the ID, the template options
//! themselves and the token.

use regex_automata::meta::Regex;

use crate::catalog::{NAME_PREFIX_MATCH, PreparedQuery};

/// Why a template cannot be used, in Consul's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A type other than `name_prefix_match`.
    #[error("Bad Template.Type '{0}'")]
    BadType(String),
    /// The regular expression does not compile.
    #[error("Bad Regexp: {0}")]
    BadRegexp(String),
    /// A `${…}` that is not one of ours, or not closed.
    #[error("Bad format '{field}' in template: {why}")]
    BadFormat {
        /// The text with the expression.
        field: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A template ready to render: its query and compiled regular expression.
#[derive(Debug, Clone)]
pub struct Template {
    /// The stored query.
    query: PreparedQuery,
    /// `Regexp`, compiled; `None` when empty.
    regexp: Option<Regex>,
}

impl Template {
    /// Compiles `query`'s template; `Ok(None)` for a query that is not one.
    pub fn compile(query: &PreparedQuery) -> Result<Option<Self>, TemplateError> {
        if !query.is_template() {
            return Ok(None);
        }
        if query.template.kind != NAME_PREFIX_MATCH {
            return Err(TemplateError::BadType(query.template.kind.clone()));
        }
        let regexp = if query.template.regexp.is_empty() {
            None
        } else {
            Some(
                Regex::new(&query.template.regexp)
                    .map_err(|e| TemplateError::BadRegexp(e.to_string()))?,
            )
        };
        Ok(Some(Self {
            query: query.clone(),
            regexp,
        }))
    }

    /// The query rendered for the name `full` asked for.
    pub fn render(&self, full: &str) -> Result<PreparedQuery, TemplateError> {
        let prefix = self.query.name.as_str();
        let vars = Vars {
            full,
            prefix,
            // As Go's `strings.TrimPrefix`: case-sensitive.
            suffix: full.strip_prefix(prefix).unwrap_or(full),
            groups: self.groups(full),
        };
        let mut q = self.query.clone();
        let r = |s: &mut String| -> Result<(), TemplateError> {
            *s = vars.render(s)?;
            Ok(())
        };
        r(&mut q.name)?;
        r(&mut q.session)?;
        r(&mut q.service.service)?;
        r(&mut q.service.near)?;
        r(&mut q.dns.ttl)?;
        for s in q
            .service
            .failover
            .datacenters
            .iter_mut()
            .chain(q.service.ignore_check_ids.iter_mut())
            .chain(q.service.tags.iter_mut())
            .chain(q.service.node_meta.values_mut())
            .chain(q.service.service_meta.values_mut())
        {
            r(s)?;
        }
        if q.template.remove_empty_tags {
            q.service.tags.retain(|t| !t.is_empty());
        }
        Ok(q)
    }

    /// The regular expression's groups in `full` (group 0 the whole
    /// match); empty when there is none or it does not match.
    fn groups(&self, full: &str) -> Vec<String> {
        let Some(re) = &self.regexp else {
            return Vec::new();
        };
        let mut caps = re.create_captures();
        re.captures(full, &mut caps);
        if !caps.is_match() {
            return Vec::new();
        }
        (0..caps.group_len())
            .map(|i| {
                caps.get_group(i)
                    .map_or("", |s| &full[s.range()])
                    .to_string()
            })
            .collect()
    }
}

/// What a template's expressions may name.
struct Vars<'a> {
    full: &'a str,
    prefix: &'a str,
    suffix: &'a str,
    groups: Vec<String>,
}

impl Vars<'_> {
    /// `text` with every `${…}` replaced.
    fn render(&self, text: &str) -> Result<String, TemplateError> {
        let bad = |why: String| TemplateError::BadFormat {
            field: text.to_string(),
            why,
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            // `$${` is a literal `${`.
            if rest[..at].ends_with('$') {
                out.push_str(&rest[..at - 1]);
                out.push_str("${");
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            let body = &rest[at + 2..];
            let Some(end) = body.find('}') else {
                return Err(bad("expected \"}\" but found end of input".into()));
            };
            out.push_str(&self.eval(body[..end].trim()).map_err(bad)?);
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// One expression's value.
    fn eval(&self, expr: &str) -> Result<String, String> {
        match expr {
            "name.full" => return Ok(self.full.to_string()),
            "name.prefix" => return Ok(self.prefix.to_string()),
            "name.suffix" => return Ok(self.suffix.to_string()),
            _ => {}
        }
        if let Some(arg) = expr
            .strip_prefix("match(")
            .and_then(|a| a.strip_suffix(')'))
        {
            let arg = arg.trim().trim_matches('"');
            let n: i64 = arg
                .parse()
                .map_err(|_| format!("match: argument {arg:?} is not an integer"))?;
            // An index that is not a group renders empty, as Consul's.
            return Ok(usize::try_from(n)
                .ok()
                .and_then(|n| self.groups.get(n))
                .cloned()
                .unwrap_or_default());
        }
        if expr.contains('(') {
            return Err(format!("unknown function called: {expr}"));
        }
        Err(format!("unknown variable accessed: {expr}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::QueryTemplate;

    fn template(name: &str, regexp: &str, service: &str) -> PreparedQuery {
        let mut q = PreparedQuery {
            id: "t".into(),
            name: name.into(),
            template: QueryTemplate {
                kind: NAME_PREFIX_MATCH.into(),
                regexp: regexp.into(),
                remove_empty_tags: false,
            },
            ..PreparedQuery::default()
        };
        q.service.service = service.into();
        q
    }

    fn render(q: &PreparedQuery, name: &str) -> PreparedQuery {
        Template::compile(q).unwrap().unwrap().render(name).unwrap()
    }

    #[test]
    fn name_variables_render_the_full_name_its_prefix_and_the_rest() {
        let q = template("geo-", "", "${name.suffix}");
        let mut q2 = q.clone();
        q2.service.tags = vec!["${name.prefix}".into(), "x-${name.full}-y".into()];
        let r = render(&q2, "geo-web");
        assert_eq!(r.service.service, "web");
        assert_eq!(r.service.tags, vec!["geo-", "x-geo-web-y"]);
        // The catch-all: the whole name is the suffix.
        let all = template("", "", "${name.full}");
        assert_eq!(render(&all, "db").service.service, "db");
    }

    #[test]
    fn match_gives_regexp_groups_and_empty_for_a_miss_or_a_missing_group() {
        let mut q = template("", "^([a-z]+)-(v[0-9]+)$", "${match(1)}");
        q.service.tags = vec![
            "${match(2)}".into(),
            "${match(0)}".into(),
            "${match(7)}".into(),
        ];
        let r = render(&q, "web-v2");
        assert_eq!(r.service.service, "web");
        assert_eq!(r.service.tags, vec!["v2", "web-v2", ""]);
        let miss = render(&q, "nothing");
        assert_eq!(miss.service.service, "");
        q.template.remove_empty_tags = true;
        assert_eq!(render(&q, "web-v2").service.tags, vec!["v2", "web-v2"]);
    }

    #[test]
    fn escapes_and_text_around_expressions_are_kept() {
        let q = template("p", "", "a$${name.full}b${ name.suffix }c");
        assert_eq!(render(&q, "pxyz").service.service, "a${name.full}bxyzc");
    }

    #[test]
    fn bad_templates_are_refused_when_compiled_or_rendered() {
        let mut q = template("p", "(", "x");
        assert!(matches!(
            Template::compile(&q),
            Err(TemplateError::BadRegexp(_))
        ));
        q.template.regexp.clear();
        q.template.kind = "other".into();
        assert_eq!(
            Template::compile(&q).unwrap_err().to_string(),
            "Bad Template.Type 'other'"
        );
        for bad in ["${name.nope}", "${oops(1)}", "${name.full", "${match(x)}"] {
            let q = template("p", "", bad);
            let t = Template::compile(&q).unwrap().unwrap();
            assert!(t.render("p").is_err(), "{bad}");
        }
        let plain = PreparedQuery::default();
        assert!(Template::compile(&plain).unwrap().is_none());
    }
}
