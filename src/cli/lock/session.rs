//! The session a lock or semaphore holds its keys with, as the Go client
//! makes and keeps one (`api/session.go`): created with a name, a 15 s TTL
//! and a behavior, renewed every TTL/2 while held (every second after a
//! failed renewal, until a whole TTL passed without one), destroyed when
//! the holder lets go.

use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::client::{Api, Method, Request};
use crate::definition::parse_duration;

/// The TTL the Go client gives lock and semaphore sessions.
pub(super) const TTL: Duration = Duration::from_secs(15);

/// How soon a renewal is tried again after one failed to reach the agent.
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// What the session's keys become when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Behavior {
    /// Released (a lock: the next contender takes it).
    Release,
    /// Deleted (a semaphore's contender key vanishes with its holder).
    Delete,
}

/// The body of `PUT /v1/session/create`, as the Go client's
/// `Session.Create` sends it: only the fields set, LockDelay left to the
/// agent's default (15 s), the default Behavior (release) left out.
pub(super) fn create_body(name: &str, behavior: Behavior) -> serde_json::Value {
    let ttl = format!("{}s", TTL.as_secs());
    match behavior {
        Behavior::Release => json!({ "Name": name, "TTL": ttl }),
        Behavior::Delete => json!({ "Name": name, "TTL": ttl, "Behavior": "delete" }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    #[serde(default, rename = "TTL")]
    ttl: String,
}

/// A live session and the task renewing it.
#[derive(Debug)]
pub(super) struct Session {
    id: String,
    api: Api,
    /// Cancelled to stop renewing.
    stop: CancellationToken,
    renewer: JoinHandle<()>,
}

impl Session {
    /// Creates the session and starts renewing it.
    pub(super) async fn create(api: &Api, name: &str, behavior: Behavior) -> anyhow::Result<Self> {
        let reply = api
            .send(
                Request::new(Method::Put, "/v1/session/create").json(&create_body(name, behavior)),
            )
            .await?
            .ok()?;
        let created: Created = reply.json()?;
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew_periodic(
            api.clone(),
            created.id.clone(),
            stop.clone(),
        ));
        Ok(Self {
            id: created.id,
            api: api.clone(),
            stop,
            renewer,
        })
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Stops renewing and destroys the session (which releases or deletes
    /// whatever it still holds, and starts those keys' lock-delay).
    pub(super) async fn destroy(self) -> anyhow::Result<()> {
        self.stop.cancel();
        // The renewer only ends on its own or on `stop`; a panic in it
        // changes nothing here.
        let _ = self.renewer.await;
        self.api
            .send(Request::new(
                Method::Put,
                format!("/v1/session/destroy/{}", self.id),
            ))
            .await?
            .ok()
            .with_context(|| format!("destroying session {}", self.id))?;
        Ok(())
    }
}

/// What one renewal learned.
enum Renewed {
    /// The session lives; the agent's TTL for it.
    Alive(Duration),
    /// The agent no longer knows it (404): it was invalidated.
    Gone,
}

async fn renew(api: &Api, id: &str) -> anyhow::Result<Renewed> {
    let reply = api
        .send(Request::new(Method::Put, format!("/v1/session/renew/{id}")))
        .await?;
    if reply.status == 404 {
        return Ok(Renewed::Gone);
    }
    let entries: Vec<Entry> = reply.ok()?.json()?;
    let Some(entry) = entries.into_iter().next() else {
        return Ok(Renewed::Gone);
    };
    Ok(Renewed::Alive(parse_duration(&entry.ttl).unwrap_or(TTL)))
}

/// Go's `Session.RenewPeriodic`: renew every TTL/2; after a failed renewal
/// retry every second, giving up once a whole TTL passed since the last
/// success; stop when the agent says the session is gone or on `stop`.
async fn renew_periodic(api: Api, id: String, stop: CancellationToken) {
    let mut ttl = TTL;
    let mut wait = ttl / 2;
    let mut last_renewed = Instant::now();
    loop {
        if last_renewed.elapsed() > ttl {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match renew(&api, &id).await {
            Ok(Renewed::Alive(new_ttl)) => {
                ttl = new_ttl;
                wait = ttl / 2;
                last_renewed = Instant::now();
            }
            Ok(Renewed::Gone) => return,
            Err(_) => wait = RENEW_RETRY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_created_as_the_go_client_creates_them() {
        assert_eq!(
            create_body("Consul lock for 'x' at 'app'", Behavior::Release).to_string(),
            r#"{"Name":"Consul lock for 'x' at 'app'","TTL":"15s"}"#
        );
        assert_eq!(
            create_body("n", Behavior::Delete).to_string(),
            r#"{"Behavior":"delete","Name":"n","TTL":"15s"}"#
        );
    }
}
