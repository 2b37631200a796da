//! A semaphore as the Go client's `api.Semaphore` keeps one
//! (`api/semaphore.go`): each contender holds its own key
//! `<prefix>/<session>` through a session with Behavior `delete`, and the
//! key `<prefix>/.lock` (flags [`SEMAPHORE_FLAGS`]) records
//! `{"Limit":N,"Holders":{"<session>":true}}`, changed only with `?cas`.
//! A holder whose contender key has lost its session is dead and pruned.
//! A Go program's `Semaphore` on the same prefix counts as a peer.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::contend::{Stop, monitor};
use super::session::{Behavior, Session};
use crate::cli::client::Api;
use crate::cli::gopath;
use crate::cli::kv::api::{Delete, Kv, KvPair, Read, Write};

/// The flags that mark a key as a semaphore's (Go's `SemaphoreFlagValue`).
pub(super) const SEMAPHORE_FLAGS: u64 = 0xe0f6_9a2b_aa41_4de0;

/// The coordination key under the prefix (Go's `DefaultSemaphoreKey`); a
/// lock uses the same name, so a lock and a semaphore on one prefix clash
/// by flags instead of silently ignoring each other.
pub(super) const COORDINATION_KEY: &str = ".lock";

/// Why the semaphore could not be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum SemaphoreError {
    /// Go's `ErrSemaphoreConflict`.
    #[error("Existing key does not match semaphore use")]
    Conflict,
    /// Go's `ErrSemaphoreInUse`.
    #[error("Semaphore in use")]
    InUse,
    #[error("semaphore limit conflict (lock: {theirs}, local: {ours})")]
    Limit { theirs: u64, ours: u64 },
}

/// The value of the coordination key, as Go's `semaphoreLock` encodes it
/// (map keys sorted, as Go's encoder sorts them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Holders {
    pub(super) limit: u64,
    #[serde(default)]
    pub(super) holders: BTreeMap<String, bool>,
}

impl Holders {
    /// The record in `pair`; an empty value is a fresh record for `limit`.
    pub(super) fn decode(pair: &KvPair, limit: u64) -> anyhow::Result<Self> {
        match &pair.value {
            None => Ok(Self {
                limit,
                holders: BTreeMap::new(),
            }),
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| anyhow::anyhow!("lock decoding failed: {e}")),
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        // A struct of an integer and a map of strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Drops the holders no key under the prefix is held by any more.
    pub(super) fn prune(&mut self, pairs: &[KvPair]) {
        self.holders
            .retain(|holder, _| pairs.iter().any(|p| p.session == *holder));
    }
}

/// One contender for a slot of the semaphore at `prefix`.
#[derive(Debug)]
pub(super) struct Semaphore {
    kv: Kv,
    api: Api,
    prefix: String,
    limit: u64,
    session_name: String,
    monitor_retries: u32,
    monitor_retry_wait: Duration,
    /// Set while a slot is held (and after it was lost, until released).
    session: Option<Session>,
}

impl Semaphore {
    pub(super) fn new(
        api: Api,
        prefix: String,
        limit: u64,
        session_name: String,
        monitor_retries: u32,
        monitor_retry_wait: Duration,
    ) -> Self {
        Self {
            kv: Kv::new(api.clone()),
            api,
            prefix,
            limit,
            session_name,
            monitor_retries,
            monitor_retry_wait,
            session: None,
        }
    }

    fn lock_key(&self) -> String {
        gopath::join(&[&self.prefix, COORDINATION_KEY])
    }

    fn contender_key(&self, session: &str) -> String {
        gopath::join(&[&self.prefix, session])
    }

    /// The coordination entry among `pairs`, or a fresh one.
    fn find_lock(&self, pairs: &[KvPair]) -> KvPair {
        let key = self.lock_key();
        pairs
            .iter()
            .find(|p| p.key == key)
            .cloned()
            .unwrap_or(KvPair {
                key,
                create_index: 0,
                modify_index: 0,
                lock_index: 0,
                flags: SEMAPHORE_FLAGS,
                value: None,
                session: String::new(),
            })
    }

    /// Contends until a slot is held (`Some(lost)`) or `stop` says to give
    /// up (`None`). The session (and with it the contender key) is
    /// destroyed if no slot was taken.
    pub(super) async fn acquire(
        &mut self,
        stop: &Stop,
    ) -> anyhow::Result<Option<CancellationToken>> {
        let session = Session::create(&self.api, &self.session_name, Behavior::Delete)
            .await
            .map_err(|e| anyhow::anyhow!("failed to create session: {e:#}"))?;
        match self.contend(session.id(), stop).await {
            Ok(true) => {
                let lost = CancellationToken::new();
                tokio::spawn(self.watch(session.id().to_string(), lost.clone()));
                self.session = Some(session);
                Ok(Some(lost))
            }
            outcome => {
                // Tidy, not vital: the TTL would end it too.
                let _ = session.destroy().await;
                outcome.map(|_| None)
            }
        }
    }

    /// The acquire loop of Go's `Semaphore.Acquire`: `true` once ours is
    /// among the holders.
    async fn contend(&self, session: &str, stop: &Stop) -> anyhow::Result<bool> {
        let contender = Write::Acquire(session.to_string());
        let made = self
            .kv
            .put(
                &self.contender_key(session),
                b"",
                SEMAPHORE_FLAGS,
                &contender,
            )
            .await;
        match made {
            Ok(true) => {}
            Ok(false) => anyhow::bail!("failed to make contender entry: refused by the agent"),
            Err(e) => anyhow::bail!("failed to make contender entry: {e:#}"),
        }
        let mut index = 0;
        loop {
            if stop.stopped() {
                return Ok(false);
            }
            let read = Read::blocking(index, stop.wait());
            let Some(got) = stop.run(self.kv.list(&self.prefix, read)).await else {
                return Ok(false);
            };
            let (pairs, at) = got.map_err(|e| anyhow::anyhow!("failed to read prefix: {e:#}"))?;
            let lock_pair = self.find_lock(&pairs);
            if lock_pair.flags != SEMAPHORE_FLAGS {
                return Err(SemaphoreError::Conflict.into());
            }
            let mut holders = Holders::decode(&lock_pair, self.limit)?;
            if holders.limit != self.limit {
                return Err(SemaphoreError::Limit {
                    theirs: holders.limit,
                    ours: self.limit,
                }
                .into());
            }
            holders.prune(&pairs);
            if holders.holders.len() as u64 >= holders.limit {
                index = at;
                continue;
            }
            holders.holders.insert(session.to_string(), true);
            let set = self
                .kv
                .put(
                    &self.lock_key(),
                    &holders.encode(),
                    SEMAPHORE_FLAGS,
                    &Write::Cas(lock_pair.modify_index),
                )
                .await
                .map_err(|e| anyhow::anyhow!("failed to update lock: {e:#}"))?;
            if set {
                return Ok(true);
            }
            // Another contender changed the record first: read it again.
        }
    }

    /// Go's `monitorLock`: consistent blocking reads of the prefix until
    /// our session is no longer a live holder.
    fn watch(&self, session: String, lost: CancellationToken) -> impl Future<Output = ()> + use<> {
        let kv = self.kv.clone();
        let prefix = self.prefix.clone();
        let lock_key = self.lock_key();
        let limit = self.limit;
        let check = move |index: u64| {
            let kv = kv.clone();
            let prefix = prefix.clone();
            let lock_key = lock_key.clone();
            let session = session.clone();
            async move {
                let read = Read {
                    index,
                    consistent: true,
                    ..Read::default()
                };
                let (pairs, at) = kv.list(&prefix, read).await?;
                let Some(pair) = pairs.iter().find(|p| p.key == lock_key) else {
                    return Ok(None);
                };
                let mut holders = Holders::decode(pair, limit)?;
                holders.prune(&pairs);
                Ok(holders.holders.contains_key(&session).then_some(at))
            }
        };
        monitor(check, self.monitor_retries, self.monitor_retry_wait, lost)
    }

    /// Go's `Semaphore.Release`: take our session out of the holders (by
    /// cas, re-reading on a race), delete our contender key, then destroy
    /// the session.
    pub(super) async fn release(&mut self) -> anyhow::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let removed = self.remove_holder(session.id()).await;
        let destroyed = session.destroy().await;
        removed?;
        destroyed
    }

    async fn remove_holder(&self, session: &str) -> anyhow::Result<()> {
        let key = self.lock_key();
        loop {
            let (pair, _) = self.kv.get(&key, Read::default()).await?;
            let pair = pair.unwrap_or_else(|| self.find_lock(&[]));
            let mut holders = Holders::decode(&pair, self.limit)?;
            if holders.holders.remove(session).is_none() {
                break;
            }
            let set = self
                .kv
                .put(
                    &key,
                    &holders.encode(),
                    SEMAPHORE_FLAGS,
                    &Write::Cas(pair.modify_index),
                )
                .await
                .map_err(|e| anyhow::anyhow!("failed to update lock: {e:#}"))?;
            if set {
                break;
            }
        }
        self.kv
            .delete(&self.contender_key(session), Delete::Key)
            .await?;
        Ok(())
    }

    /// Go's `Semaphore.Destroy`: remove the coordination key if no live
    /// holder is left; [`SemaphoreError::InUse`] otherwise.
    pub(super) async fn destroy(&self) -> anyhow::Result<()> {
        let (pairs, _) = self
            .kv
            .list(&self.prefix, Read::default())
            .await
            .map_err(|e| anyhow::anyhow!("failed to read prefix: {e:#}"))?;
        let lock_pair = self.find_lock(&pairs);
        if lock_pair.modify_index == 0 {
            return Ok(());
        }
        if lock_pair.flags != SEMAPHORE_FLAGS {
            return Err(SemaphoreError::Conflict.into());
        }
        let mut holders = Holders::decode(&lock_pair, self.limit)?;
        holders.prune(&pairs);
        if !holders.holders.is_empty() {
            return Err(SemaphoreError::InUse.into());
        }
        let removed = self
            .kv
            .delete(&lock_pair.key, Delete::Cas(lock_pair.modify_index))
            .await
            .map_err(|e| anyhow::anyhow!("failed to remove semaphore: {e:#}"))?;
        if removed {
            Ok(())
        } else {
            Err(SemaphoreError::InUse.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, session: &str, value: Option<&[u8]>) -> KvPair {
        KvPair {
            key: key.into(),
            create_index: 1,
            modify_index: 1,
            lock_index: 0,
            flags: SEMAPHORE_FLAGS,
            value: value.map(<[u8]>::to_vec),
            session: session.into(),
        }
    }

    #[test]
    fn the_holder_record_is_gos_json() {
        let mut h = Holders {
            limit: 2,
            holders: BTreeMap::new(),
        };
        h.holders.insert("b-session".into(), true);
        h.holders.insert("a-session".into(), true);
        assert_eq!(
            String::from_utf8(h.encode()).unwrap(),
            r#"{"Limit":2,"Holders":{"a-session":true,"b-session":true}}"#
        );
        let back = Holders::decode(&pair("p/.lock", "", Some(&h.encode())), 9).unwrap();
        assert_eq!(back, h);
        let fresh = Holders::decode(&pair("p/.lock", "", None), 3).unwrap();
        assert_eq!(fresh.limit, 3);
        assert!(fresh.holders.is_empty());
        let e = Holders::decode(&pair("p/.lock", "", Some(b"{")), 3).unwrap_err();
        assert!(e.to_string().starts_with("lock decoding failed: "), "{e}");
    }

    #[test]
    fn holders_without_a_held_contender_key_are_pruned() {
        let mut h = Holders {
            limit: 2,
            holders: [("alive".to_string(), true), ("dead".to_string(), true)].into(),
        };
        let pairs = [
            pair("p/.lock", "", Some(b"{}")),
            pair("p/alive", "alive", None),
            pair("p/dead", "", None),
        ];
        h.prune(&pairs);
        assert_eq!(h.holders.keys().collect::<Vec<_>>(), ["alive"]);
    }
}
