//! `trellis kv export [PREFIX]` and `trellis kv import [-prefix P]
//! DATA|@file|-`: Consul's `command/kv/{exp,imp}` and their shared JSON
//! (`command/kv/impexp`), an array of `{"key","flags","value"}` with the
//! value in base64, pretty-printed with tabs as Go's `json.MarshalIndent`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::api::{Kv, KvPair, Read, Write};
use super::{Outcome, data_from_arg, info, strip_slash};
use crate::cli::client::HttpAddr;
use crate::cli::gopath;

#[derive(Debug, Args)]
pub(crate) struct ExportCmd {
    #[command(flatten)]
    addr: HttpAddr,
    /// Let any server answer from its own replica.
    #[arg(long)]
    stale: bool,
    /// The prefix to export (default: everything).
    prefix: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ImportCmd {
    #[command(flatten)]
    addr: HttpAddr,
    /// A prefix put before every imported key.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    prefix: String,
    /// The JSON: itself, `@path` for a file, `-` for stdin.
    #[arg(allow_hyphen_values = true)]
    data: Option<String>,
}

/// One exported entry, in Consul's field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) flags: u64,
    /// Base64 of the value.
    pub(super) value: String,
}

impl Entry {
    fn of(pair: &KvPair) -> Self {
        Self {
            key: pair.key.clone(),
            flags: pair.flags,
            value: STANDARD.encode(pair.bytes()),
        }
    }
}

impl ExportCmd {
    pub(super) async fn run(self) -> Outcome {
        let prefix = strip_slash(self.prefix.as_deref().unwrap_or_default()).to_string();
        let api = self
            .addr
            .api()
            .map_err(|e| format!("Error connecting to Consul agent: {e:#}"))?;
        let read = Read {
            stale: self.stale,
            ..Read::default()
        };
        let (pairs, _) = Kv::new(api)
            .list(&prefix, read)
            .await
            .map_err(|e| format!("Error querying Consul agent: {e:#}"))?;
        let entries: Vec<Entry> = pairs.iter().map(Entry::of).collect();
        info(export_json(&entries).as_bytes())
    }
}

/// The entries as `json.MarshalIndent(entries, "", "\t")` writes them,
/// with Go's escaping of `<`, `>`, `&`, U+2028 and U+2029 (those can only
/// occur inside strings, so replacing them in the text is exact).
pub(super) fn export_json(entries: &[Entry]) -> String {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"\t"),
    );
    // Serializing plain strings and integers into memory cannot fail.
    let _ = entries.serialize(&mut ser);
    let text = String::from_utf8_lossy(&buf);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// An entry to import, read as Go's `json.Unmarshal` reads one: field
/// names in any case, unknown fields ignored, missing fields zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Incoming {
    pub(super) key: String,
    pub(super) flags: u64,
    pub(super) value: String,
}

/// Reads an export document. `null` entries are skipped.
pub(super) fn parse_import(data: &[u8]) -> Result<Vec<Incoming>, String> {
    let doc: Value =
        serde_json::from_slice(data).map_err(|e| format!("Cannot unmarshal data: {e}"))?;
    let items = match doc {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => {
            return Err(format!(
                "Cannot unmarshal data: expected an array of entries, found {other}"
            ));
        }
    };
    let mut out = Vec::new();
    for item in items {
        let fields = match item {
            Value::Null => continue,
            Value::Object(fields) => fields,
            other => {
                return Err(format!(
                    "Cannot unmarshal data: expected an entry object, found {other}"
                ));
            }
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        };
        let string = |name: &str| -> Result<String, String> {
            match field(name) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!(
                    "Cannot unmarshal data: {name} must be a string, found {other}"
                )),
            }
        };
        let flags = match field("flags") {
            None => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                format!("Cannot unmarshal data: flags must be an unsigned integer, found {v}")
            })?,
        };
        out.push(Incoming {
            key: string("key")?,
            flags,
            value: string("value")?,
        });
    }
    Ok(out)
}

/// The key an entry is imported at: Go's `path.Join(prefix, key)`, with
/// the trailing `/` of a "directory" key kept, as Consul's import does.
pub(super) fn import_key(prefix: &str, key: &str) -> String {
    let mut joined = gopath::join(&[prefix, key]);
    if key.ends_with('/') {
        joined.push('/');
    }
    joined
}

impl ImportCmd {
    pub(super) async fn run(self) -> Outcome {
        let data = match self.data.as_deref() {
            None => return Err("Error! Missing DATA argument".into()),
            Some("") => return Err("Error! Empty DATA argument".into()),
            Some(arg) => data_from_arg(arg).map_err(|e| format!("Error! {e}"))?,
        };
        let api = self
            .addr
            .api()
            .map_err(|e| format!("Error connecting to Consul agent: {e:#}"))?;
        let kv = Kv::new(api);
        for entry in parse_import(&data)? {
            let value = STANDARD
                .decode(&entry.value)
                .map_err(|e| format!("Error base 64 decoding value for key {}: {e}", entry.key))?;
            let key = import_key(&self.prefix, &entry.key);
            kv.put(&key, &value, entry.flags, &Write::Set)
                .await
                .map_err(|e| format!("Error! Failed writing data for key {key}: {e:#}"))?;
            info(format!("Imported: {key}").as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_gos_indented_json() {
        let entries = vec![
            Entry {
                key: "app/a".into(),
                flags: 0,
                value: STANDARD.encode("1"),
            },
            Entry {
                key: "app/<b>&".into(),
                flags: 42,
                value: String::new(),
            },
        ];
        assert_eq!(
            export_json(&entries),
            "[\n\t{\n\t\t\"key\": \"app/a\",\n\t\t\"flags\": 0,\n\t\t\"value\": \"MQ==\"\n\t},\n\
             \t{\n\t\t\"key\": \"app/\\u003cb\\u003e\\u0026\",\n\t\t\"flags\": 42,\n\t\t\"value\": \"\"\n\t}\n]"
        );
        assert_eq!(export_json(&[]), "[]");
    }

    #[test]
    fn import_reads_what_export_writes_and_what_go_would_accept() {
        let entries = vec![Entry {
            key: "a/b".into(),
            flags: 7,
            value: STANDARD.encode(b"\x00\xffbin"),
        }];
        let back = parse_import(export_json(&entries).as_bytes()).unwrap();
        assert_eq!(
            back,
            vec![Incoming {
                key: "a/b".into(),
                flags: 7,
                value: entries[0].value.clone(),
            }]
        );
        // Go matches field names in any case and ignores the rest.
        let loose =
            parse_import(br#"[{"Key":"k","VALUE":"dg==","namespace":"default"},null]"#).unwrap();
        assert_eq!(
            loose,
            vec![Incoming {
                key: "k".into(),
                flags: 0,
                value: "dg==".into(),
            }]
        );
        assert!(
            parse_import(b"{")
                .unwrap_err()
                .starts_with("Cannot unmarshal data: ")
        );
        assert!(parse_import(br#"[{"key":1}]"#).is_err());
        assert!(parse_import(br#"[{"flags":-1}]"#).is_err());
    }

    #[test]
    fn import_keys_are_joined_as_go_joins_paths() {
        assert_eq!(import_key("", "a/b"), "a/b");
        assert_eq!(import_key("", "a//b/"), "a/b/");
        assert_eq!(import_key("new", "a/b"), "new/a/b");
        assert_eq!(import_key("new/", "/a/./c/../b"), "new/a/b");
        assert_eq!(import_key("new", "dir/"), "new/dir/");
        assert_eq!(import_key("", ""), "");
    }
}
