//! The Consul API calls the tests make again and again, on any [`Agent`]:
//! who leads, the Raft configuration, reading and registering a service.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::agent::Agent;
use crate::http::Resp;
use crate::wait::{SETTLE_DEADLINE, wait_until_async};

/// What a catalog read of one service returned: the instance IDs and the
/// index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// `ServiceID` of every instance.
    pub ids: BTreeSet<String>,
    /// `X-Consul-Index` of the read.
    pub index: u64,
}

/// A catalog read's consistency mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// No query parameter: the default mode.
    Default,
    /// `?stale`: the agent answers from its own state.
    Stale,
    /// `?consistent`: the leader confirms it still leads first.
    Consistent,
}

impl Consistency {
    fn query(self) -> &'static str {
        match self {
            Self::Default => "",
            Self::Stale => "?stale",
            Self::Consistent => "?consistent",
        }
    }
}

/// The catalog registration of one instance `id` of `service` on its own
/// node `<id>-node` at `addr`.
pub fn register_body(service: &str, id: &str, addr: &str, port: u16) -> Value {
    json!({
        "Node": format!("{id}-node"),
        "Address": addr,
        "Service": {"ID": id, "Service": service, "Port": port},
    })
}

impl Agent {
    /// Who it says leads: `Some("")` when it knows none, `None` when it did
    /// not answer.
    pub async fn leader_seen(&self) -> Option<String> {
        let r = self.get("/v1/status/leader").await.ok()?;
        (r.status == 200).then(|| r.json().as_str().unwrap_or_default().to_string())
    }

    /// Its `/v1/operator/raft/configuration` servers.
    pub async fn raft_servers(&self) -> Result<Vec<Value>, String> {
        let r = self.get("/v1/operator/raft/configuration").await?;
        if r.status != 200 {
            return Err(format!("raft configuration: {} {}", r.status, r.text));
        }
        match r.json()["Servers"].as_array() {
            Some(s) => Ok(s.clone()),
            None => Err(format!("raft configuration without Servers: {}", r.text)),
        }
    }

    /// Reads `service` from its catalog in `mode`.
    pub async fn service(&self, service: &str, mode: Consistency) -> Result<ServiceView, String> {
        let q = mode.query();
        let r = self
            .get(&format!("/v1/catalog/service/{service}{q}"))
            .await?;
        if r.status != 200 {
            return Err(format!(
                "read {service}{q} on {}: {} {}",
                self.name(),
                r.status,
                r.text
            ));
        }
        let ids = r
            .json()
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["ServiceID"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ServiceView {
            ids,
            index: r.index.unwrap_or(0),
        })
    }

    /// Registers instance `id` of `service` through its catalog endpoint
    /// ([`register_body`]).
    pub async fn register(
        &self,
        service: &str,
        id: &str,
        addr: &str,
        port: u16,
    ) -> Result<Resp, String> {
        self.put(
            "/v1/catalog/register",
            &register_body(service, id, addr, port),
        )
        .await
    }

    /// Registers like [`Self::register`] and asserts it is acknowledged,
    /// repeating the same (idempotent) registration while the answer is
    /// "No cluster leader": an election a slow machine provoked is not what
    /// the callers test. Any other failure, or no answer, fails at once.
    pub async fn register_acked(&self, service: &str, id: &str, addr: &str, port: u16) {
        let what = format!("registration of {id} through {}", self.name());
        wait_until_async(&what, SETTLE_DEADLINE, || async {
            let r = self
                .register(service, id, addr, port)
                .await
                .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
            match r.status {
                s if (200..300).contains(&s) => Ok(()),
                500 if r.text.contains("No cluster leader") => Err(r.text),
                _ => panic!("{what}: {r:?}"),
            }
        })
        .await;
    }

    /// Registers instance `id` of service `name` at `address:port` with
    /// `tags` through its agent API.
    pub async fn register_instance(
        &self,
        id: &str,
        name: &str,
        address: &str,
        port: u16,
        tags: &[&str],
    ) -> Result<Resp, String> {
        let body = json!({"ID": id, "Name": name, "Address": address, "Port": port, "Tags": tags});
        self.put("/v1/agent/service/register", &body).await
    }

    /// Registers service `name` (ID = name) on its own node through its
    /// agent API.
    pub async fn register_service(&self, name: &str, port: u16) -> Result<Resp, String> {
        let body = json!({"Name": name, "ID": name, "Port": port});
        self.put("/v1/agent/service/register", &body).await
    }
}
