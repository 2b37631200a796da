//! The KV endpoints as the Go client (`api/kv.go`) calls them: the entry
//! JSON, reads with the consistency and blocking options, and the writes
//! that answer `true` or `false`. Both `trellis kv` and `trellis lock` speak
//! to the store through these.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer};

use crate::cli::client::{Api, Method, Request};

/// One KV entry as `GET /v1/kv/<key>` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvPair {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) create_index: u64,
    #[serde(default)]
    pub(crate) modify_index: u64,
    #[serde(default)]
    pub(crate) lock_index: u64,
    #[serde(default)]
    pub(crate) flags: u64,
    /// `None` for an empty value, which the agent sends as `null`; the
    /// semaphore tells "no holder record yet" by it, as the Go client does.
    #[serde(default, deserialize_with = "base64_value")]
    pub(crate) value: Option<Vec<u8>>,
    /// Empty when no session holds the key (the field is then left out).
    #[serde(default)]
    pub(crate) session: String,
}

impl KvPair {
    /// The value's bytes; an empty value has none.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.value.as_deref().unwrap_or_default()
    }
}

fn base64_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
        .transpose()
}

/// How a read is made (Go's `QueryOptions`, the part the CLI uses).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Read {
    /// Block until the index moves past this (`?index`); 0 does not block.
    pub(crate) index: u64,
    /// How long a blocking read may wait (`?wait`).
    pub(crate) wait: Option<Duration>,
    /// `?consistent`: the leader confirms it still leads before answering.
    pub(crate) consistent: bool,
    /// `?stale`: any server answers from its own replica.
    pub(crate) stale: bool,
}

impl Read {
    /// A blocking read at `index` that waits at most `wait`.
    pub(crate) fn blocking(index: u64, wait: Duration) -> Self {
        Self {
            index,
            wait: Some(wait),
            ..Self::default()
        }
    }

    fn apply(self, mut req: Request) -> Request {
        if self.index != 0 {
            req = req.param("index", self.index);
        }
        if let Some(wait) = self.wait.filter(|w| !w.is_zero()) {
            // As the Go client: whole milliseconds.
            req = req.param("wait", format!("{}ms", wait.as_millis()));
        }
        if self.consistent {
            req = req.flag("consistent");
        }
        if self.stale {
            req = req.flag("stale");
        }
        req
    }
}

/// What a PUT does besides storing the value (Go's `KV.Put`, `CAS`,
/// `Acquire`, `Release`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    /// A plain set.
    Set,
    /// Only if the key's ModifyIndex is this (0: only if it does not exist).
    Cas(u64),
    /// Take the key's lock for this session.
    Acquire(String),
    /// Give up the key's lock held by this session.
    Release(String),
}

/// What a DELETE removes (Go's `KV.Delete`, `DeleteCAS`, `DeleteTree`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delete {
    Key,
    Cas(u64),
    Tree,
}

/// The Go client refuses keys with a leading `/` before asking the agent.
fn check_key(key: &str) -> anyhow::Result<()> {
    if key.starts_with('/') {
        anyhow::bail!("Invalid key. Key must not begin with a '/': {key}");
    }
    Ok(())
}

fn path(key: &str) -> String {
    format!("/v1/kv/{key}")
}

/// The KV store of one agent.
#[derive(Debug, Clone)]
pub(crate) struct Kv {
    api: Api,
}

impl Kv {
    pub(crate) fn new(api: Api) -> Self {
        Self { api }
    }

    /// One key, `None` when it does not exist, with the answer's index.
    pub(crate) async fn get(&self, key: &str, read: Read) -> anyhow::Result<(Option<KvPair>, u64)> {
        check_key(key)?;
        let reply = self
            .api
            .send(read.apply(Request::new(Method::Get, path(key))))
            .await?;
        let index = reply.index.unwrap_or_default();
        if reply.status == 404 {
            return Ok((None, index));
        }
        let pairs: Vec<KvPair> = reply.ok()?.json()?;
        Ok((pairs.into_iter().next(), index))
    }

    /// Every key under `prefix` (`?recurse`), with the answer's index.
    pub(crate) async fn list(
        &self,
        prefix: &str,
        read: Read,
    ) -> anyhow::Result<(Vec<KvPair>, u64)> {
        check_key(prefix)?;
        let reply = self
            .api
            .send(read.apply(Request::new(Method::Get, path(prefix)).flag("recurse")))
            .await?;
        let index = reply.index.unwrap_or_default();
        if reply.status == 404 {
            return Ok((Vec::new(), index));
        }
        Ok((reply.ok()?.json()?, index))
    }

    /// The key names under `prefix`, folded after `separator` (`?keys`).
    pub(crate) async fn keys(
        &self,
        prefix: &str,
        separator: &str,
        read: Read,
    ) -> anyhow::Result<Vec<String>> {
        check_key(prefix)?;
        let mut req = Request::new(Method::Get, path(prefix)).flag("keys");
        if !separator.is_empty() {
            req = req.param("separator", separator);
        }
        let reply = self.api.send(read.apply(req)).await?;
        if reply.status == 404 {
            return Ok(Vec::new());
        }
        reply.ok()?.json()
    }

    /// Stores `value` at `key` with `flags`; whether the agent did.
    pub(crate) async fn put(
        &self,
        key: &str,
        value: &[u8],
        flags: u64,
        how: &Write,
    ) -> anyhow::Result<bool> {
        Ok(self.put_explained(key, value, flags, how).await?.is_ok())
    }

    /// [`Self::put`], with the agent's reason when it refused (trellis
    /// names it; an agent that does not gives `None`).
    pub(crate) async fn put_explained(
        &self,
        key: &str,
        value: &[u8],
        flags: u64,
        how: &Write,
    ) -> anyhow::Result<Result<(), Option<String>>> {
        check_key(key)?;
        let mut req = Request::new(Method::Put, path(key)).body(value.to_vec());
        // As the Go client: zero flags are not sent (the agent stores 0).
        if flags != 0 {
            req = req.param("flags", flags);
        }
        req = match how {
            Write::Set => req,
            Write::Cas(index) => req.param("cas", index),
            Write::Acquire(session) => req.param("acquire", session),
            Write::Release(session) => req.param("release", session),
        };
        let reply = self.api.send(req).await?.ok()?;
        if reply.bool()? {
            Ok(Ok(()))
        } else {
            Ok(Err(reply.refused))
        }
    }

    /// Deletes `key` (or the tree under it); whether the agent did.
    pub(crate) async fn delete(&self, key: &str, how: Delete) -> anyhow::Result<bool> {
        check_key(key)?;
        let req = Request::new(Method::Delete, path(key));
        let req = match how {
            Delete::Key => req,
            Delete::Cas(index) => req.param("cas", index),
            Delete::Tree => req.flag("recurse"),
        };
        let reply = self.api.send(req).await?.ok()?;
        // An agent that answers a delete with an empty body did it.
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(true);
        }
        reply.bool()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_decodes_from_consuls_json() {
        let text = r#"[{"LockIndex":1,"Key":"app/.lock","Flags":3304740253564472344,
            "Value":"aGk=","Session":"adf4238a-882b-9ddc-4a9d-5b6758e4159e",
            "CreateIndex":5,"ModifyIndex":7}]"#;
        let pairs: Vec<KvPair> = serde_json::from_str(text).unwrap();
        assert_eq!(
            pairs[0],
            KvPair {
                key: "app/.lock".into(),
                create_index: 5,
                modify_index: 7,
                lock_index: 1,
                flags: 0x2ddc_cbc0_58a5_0c18,
                value: Some(b"hi".to_vec()),
                session: "adf4238a-882b-9ddc-4a9d-5b6758e4159e".into(),
            }
        );
        let empty: Vec<KvPair> = serde_json::from_str(
            r#"[{"LockIndex":0,"Key":"k","Flags":0,"Value":null,"CreateIndex":1,"ModifyIndex":1}]"#,
        )
        .unwrap();
        assert_eq!(empty[0].value, None);
        assert_eq!(empty[0].bytes(), b"");
        assert_eq!(empty[0].session, "");
        assert!(serde_json::from_str::<Vec<KvPair>>(r#"[{"Key":"k","Value":"!!"}]"#).is_err());
    }

    #[test]
    fn a_key_with_a_leading_slash_is_refused_as_the_go_client_does() {
        let e = check_key("/a").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "Invalid key. Key must not begin with a '/': /a"
        );
        assert!(check_key("a/").is_ok());
    }
}
