//! A real `trellis agent` process, launched from a typed builder
//! ([`AgentBuilder`]): its role, node, data dir, address and ports, never
//! flag strings put together by hand. The agent reports its bound addresses
//! in its `listening` line; the kit reads them from there ([`Listening`]).

mod builder;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use serde_json::Value;

pub use self::builder::{AgentBuilder, Role, Trellis};
use self::builder::{started_async, started_blocking};
use crate::http::{Http, Resp};
use crate::listening::{Listening, MARKER};
use crate::log::Log;
use crate::process::{Life, Process};

/// One running agent (or one that was killed and may be restarted). Every
/// method takes `&self`, so a test can kill one member of a cluster while
/// it holds others.
pub struct Agent {
    name: String,
    role: Role,
    /// How it was launched, for restarts.
    spec: Mutex<AgentBuilder>,
    /// The current process and the addresses it reported.
    run: Mutex<Run>,
    /// Kept across restarts.
    log: Log,
    http: Http,
}

struct Run {
    process: Process,
    at: Listening,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("addrs", &self.addrs())
            .field("life", &self.life())
            .finish()
    }
}

/// Two handles are equal when they are the same agent.
impl PartialEq for Agent {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Agent {
    fn new(spec: AgentBuilder, log: Log, process: Process, at: Listening) -> Self {
        Self {
            name: spec.name(),
            role: spec.role,
            http: Http::new(spec.http_timeout, spec.netns.clone()),
            spec: Mutex::new(spec),
            run: Mutex::new(Run { process, at }),
            log,
        }
    }

    fn run(&self) -> MutexGuard<'_, Run> {
        // A panic while holding it leaves nothing half-changed that a
        // failure report could not read.
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spec(&self) -> MutexGuard<'_, AgentBuilder> {
        self.spec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its node name (or `agent <ip>` when it was not given one).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dev, server or client.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The address it binds everything to.
    pub fn ip(&self) -> IpAddr {
        self.addrs().http.ip()
    }

    /// The addresses it reported when it last started.
    pub fn addrs(&self) -> Listening {
        self.run().at
    }

    /// Its server RPC address, which the cluster calls it by.
    pub fn rpc(&self) -> SocketAddr {
        self.addrs()
            .server
            .unwrap_or_else(|| panic!("{} runs no server", self.name))
    }

    /// Its LAN gossip address, which others join through.
    pub fn serf(&self) -> SocketAddr {
        self.addrs()
            .serf_lan
            .unwrap_or_else(|| panic!("{} reported no gossip address", self.name))
    }

    /// Its WAN gossip address (a server's), which other datacenters join
    /// through.
    pub fn serf_wan(&self) -> SocketAddr {
        self.addrs()
            .serf_wan
            .unwrap_or_else(|| panic!("{} reported no WAN gossip address", self.name))
    }

    /// `http://<its HTTP address><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs().http)
    }

    /// The current process's ID.
    pub fn pid(&self) -> u32 {
        self.run().process.pid()
    }

    /// Its data dir, if it has one.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.spec().data_path().map(Path::to_path_buf)
    }

    /// Everything it logged, across restarts.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Its log.
    pub fn log_handle(&self) -> &Log {
        &self.log
    }

    /// Whether it runs, is paused or has exited.
    pub fn life(&self) -> Life {
        self.run().process.life()
    }

    /// Fails, with the end of its log, if it has exited.
    pub fn check_running(&self) -> anyhow::Result<()> {
        self.run().process.check_running()
    }

    // ---- process control ----

    /// SIGKILL and reap: its machine died.
    pub fn kill(&self) {
        self.run().process.kill();
    }

    /// SIGSTOP: its machine hangs.
    pub fn pause(&self) {
        self.run().process.pause();
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.run().process.resume();
    }

    /// SIGTERM, and wait for its exit status.
    pub fn terminate(&self) -> ExitStatus {
        self.run().process.terminate()
    }

    /// Waits up to `timeout` for it to exit on its own.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.run().process.exited() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again (killing it first if it runs) as the same machine:
    /// the same node, data dir, address and fixed ports. Ports it was
    /// given as 0 are new.
    pub fn restart(&self) {
        self.try_restart().unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// [`Self::restart`] with `change` applied to how it is launched: the
    /// same machine, reconfigured (the change stays for later restarts).
    pub fn restart_with(&self, change: impl FnOnce(AgentBuilder) -> AgentBuilder) {
        {
            let mut spec = self.spec();
            *spec = change(spec.clone());
        }
        self.restart();
    }

    /// Kills it, empties its data dir and starts it again: a server that
    /// lost its disk and comes back at the same address.
    pub fn wipe_and_restart(&self) {
        self.kill();
        let dir = self
            .data_dir()
            .unwrap_or_else(|| panic!("{} has no data dir to wipe", self.name));
        std::fs::remove_dir_all(&dir).expect("wipe data dir");
        std::fs::create_dir_all(&dir).expect("recreate data dir");
        self.restart();
    }

    /// [`Self::restart`] that returns the failure.
    pub fn try_restart(&self) -> anyhow::Result<()> {
        let (mut process, before) = self.relaunch()?;
        let at = started_blocking(&mut process, before)?;
        *self.run() = Run { process, at };
        Ok(())
    }

    /// [`Self::try_restart`] for async callers.
    pub async fn restart_async(&self) -> anyhow::Result<()> {
        let (mut process, before) = self.relaunch()?;
        let at = started_async(&mut process, before).await?;
        *self.run() = Run { process, at };
        Ok(())
    }

    /// Kills the current process and launches the next; returns it and the
    /// number of `listening` lines before it.
    fn relaunch(&self) -> anyhow::Result<(Process, usize)> {
        self.kill();
        // The old log stays: a failure after a restart is often explained by
        // what the previous incarnation did.
        self.log.note("---- restarted ----");
        let before = self.log.count(MARKER);
        let process = self.spec().launch(&self.log)?;
        Ok((process, before))
    }

    // ---- HTTP ----

    /// One HTTP request; `Err` when no answer came.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        self.http
            .request(self.addrs().http, method, path, body)
            .await
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Result<Resp, String> {
        self.request("GET", path, None).await
    }

    /// PUT `body` as JSON to `path`.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Resp, String> {
        self.request("PUT", path, Some(body)).await
    }

    // ---- DNS ----

    /// Asks its DNS for `name` over UDP.
    pub fn query_udp(&self, name: &str, rtype: RecordType) -> Message {
        crate::dns::query_udp(self.addrs().dns, name, rtype)
    }

    /// Asks its DNS for `name` over TCP (no truncation).
    pub fn query_tcp(&self, name: &str, rtype: RecordType) -> Message {
        crate::dns::query_tcp(self.addrs().dns, name, rtype)
    }

    /// Runs `dig` against its DNS; returns stdout.
    pub fn dig(&self, args: &[&str]) -> String {
        crate::dns::dig(self.addrs().dns, args)
    }
}
