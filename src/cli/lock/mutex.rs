//! A lock as the Go client's `api.Lock` takes one (`api/lock.go`): the key
//! `<prefix>/.lock` with flags [`LOCK_FLAGS`], acquired with `?acquire`
//! by a session of our own, watched with consistent blocking reads, and
//! given back with `?release` before the session is destroyed. A Go
//! program's `Lock` on the same key contends with this one as an equal.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::contend::{Say, Stop, monitor};
use super::session::{Behavior, Session};
use crate::cli::client::Api;
use crate::cli::kv::api::{Delete, Kv, Read, Write};

/// The flags that mark a key as a lock (Go's `LockFlagValue`); a key at
/// the lock's path with other flags is not ours to take.
pub(super) const LOCK_FLAGS: u64 = 0x2ddc_cbc0_58a5_0c18;

/// How long to wait after an acquire was refused by lock-delay (the key is
/// free but cannot be taken yet), so the loop does not spin (Go's
/// `DefaultLockRetryTime`).
const LOCK_DELAY_RETRY: Duration = Duration::from_secs(5);

/// Why the lock could not be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum LockError {
    /// Go's `ErrLockConflict`.
    #[error("Existing key does not match lock use")]
    Conflict,
    /// Go's `ErrLockInUse`: another holder has it, so it is not removed.
    #[error("Lock in use")]
    InUse,
}

/// One contender for the lock at `key`.
#[derive(Debug)]
pub(super) struct Mutex {
    kv: Kv,
    api: Api,
    key: String,
    session_name: String,
    monitor_retries: u32,
    monitor_retry_wait: Duration,
    say: Say,
    /// Set while held (and after the hold was lost, until unlocked).
    session: Option<Session>,
}

impl Mutex {
    pub(super) fn new(
        api: Api,
        key: String,
        session_name: String,
        monitor_retries: u32,
        monitor_retry_wait: Duration,
        say: Say,
    ) -> Self {
        Self {
            kv: Kv::new(api.clone()),
            api,
            key,
            session_name,
            monitor_retries,
            monitor_retry_wait,
            say,
            session: None,
        }
    }

    /// Contends until the lock is held (`Some(lost)`, a token cancelled if
    /// the hold is lost) or `stop` says to give up (`None`). A session is
    /// created for the attempt and destroyed if it fails.
    pub(super) async fn lock(&mut self, stop: &Stop) -> anyhow::Result<Option<CancellationToken>> {
        let session = Session::create(&self.api, &self.session_name, Behavior::Release)
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
                // Not held: the session has nothing to keep. Destroying it
                // is tidy, not vital: its TTL would end it.
                let _ = session.destroy().await;
                outcome.map(|_| None)
            }
        }
    }

    /// The acquire loop of Go's `Lock.Lock`: `true` once held.
    async fn contend(&self, session: &str, stop: &Stop) -> anyhow::Result<bool> {
        let mut index = 0;
        loop {
            if stop.stopped() {
                return Ok(false);
            }
            let read = Read::blocking(index, stop.wait());
            let Some(got) = stop.run(self.kv.get(&self.key, read)).await else {
                return Ok(false);
            };
            let (pair, at) = got.map_err(|e| anyhow::anyhow!("failed to read lock: {e:#}"))?;
            if let Some(pair) = &pair {
                if pair.flags != LOCK_FLAGS {
                    return Err(LockError::Conflict.into());
                }
                if pair.session == session {
                    return Ok(true);
                }
                if !pair.session.is_empty() {
                    // Held by another: wait for it to change.
                    index = at;
                    continue;
                }
            }
            let acquire = Write::Acquire(session.to_string());
            let locked = self
                .kv
                .put_explained(&self.key, b"", LOCK_FLAGS, &acquire)
                .await
                .map_err(|e| anyhow::anyhow!("failed to acquire lock: {e:#}"))?;
            match locked {
                Ok(()) => return Ok(true),
                Err(Some(why)) => self.say.say(&format!("Lock acquisition refused: {why}")),
                Err(None) => self.say.say("Lock acquisition refused"),
            }
            // Refused: someone was quicker (wait on them), or the key is
            // free but under lock-delay (wait a while and try again).
            let (pair, at) = self.kv.get(&self.key, Read::default()).await?;
            if pair.is_some_and(|p| !p.session.is_empty()) {
                index = at;
                continue;
            }
            index = 0;
            if stop
                .run(tokio::time::sleep(LOCK_DELAY_RETRY))
                .await
                .is_none()
            {
                return Ok(false);
            }
        }
    }

    /// Go's `monitorLock`: consistent blocking reads of the key until our
    /// session no longer holds it.
    fn watch(&self, session: String, lost: CancellationToken) -> impl Future<Output = ()> + use<> {
        let kv = self.kv.clone();
        let key = self.key.clone();
        let check = move |index: u64| {
            let kv = kv.clone();
            let key = key.clone();
            let session = session.clone();
            async move {
                let read = Read {
                    index,
                    consistent: true,
                    ..Read::default()
                };
                let (pair, at) = kv.get(&key, read).await?;
                Ok(pair.filter(|p| p.session == session).map(|_| at))
            }
        };
        monitor(check, self.monitor_retries, self.monitor_retry_wait, lost)
    }

    /// Go's `Lock.Unlock`: release the key (whether or not we still hold
    /// it), then destroy the session. Releasing first spares the next
    /// holder the lock-delay a destroy would start.
    pub(super) async fn unlock(&mut self) -> anyhow::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let release = Write::Release(session.id().to_string());
        let released = self
            .kv
            .put(&self.key, b"", LOCK_FLAGS, &release)
            .await
            .map_err(|e| anyhow::anyhow!("failed to release lock: {e:#}"));
        let destroyed = session.destroy().await;
        released?;
        destroyed
    }

    /// Go's `Lock.Destroy`: remove the key if nobody holds it;
    /// [`LockError::InUse`] if somebody does.
    pub(super) async fn destroy(&self) -> anyhow::Result<()> {
        let (pair, _) = self
            .kv
            .get(&self.key, Read::default())
            .await
            .map_err(|e| anyhow::anyhow!("failed to read lock: {e:#}"))?;
        let Some(pair) = pair else {
            return Ok(());
        };
        if pair.flags != LOCK_FLAGS {
            return Err(LockError::Conflict.into());
        }
        if !pair.session.is_empty() {
            return Err(LockError::InUse.into());
        }
        let removed = self
            .kv
            .delete(&self.key, Delete::Cas(pair.modify_index))
            .await
            .map_err(|e| anyhow::anyhow!("failed to remove lock: {e:#}"))?;
        if removed {
            Ok(())
        } else {
            Err(LockError::InUse.into())
        }
    }
}
