//! How to launch an agent: the binary ([`Trellis`]) and a typed builder
//! ([`AgentBuilder`]) that turns role, node, data dir, address and ports into
//! the agent's flags, spawns it and waits for its `listening` line.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Agent;
use crate::listening::{Listening, MARKER};
use crate::log::Log;
use crate::net::{Placement, next_loopback};
use crate::process::Process;

/// How long an agent may take to print its `listening` line.
const START_WITHIN: Duration = Duration::from_secs(30);

/// How long one HTTP request to an agent may take unless set otherwise.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `trellis` binary under test. Only the integration tests and benches
/// of the `trellis` package see `env!("CARGO_BIN_EXE_trellis")`, so they
/// hand its path in; the kit never guesses which build to run.
#[derive(Debug, Clone)]
pub struct Trellis {
    bin: PathBuf,
}

impl Trellis {
    /// The binary at `bin`.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self { bin: bin.into() }
    }

    /// The binary named by the environment variable `var` when set (to run
    /// another build), else `bin`.
    pub fn from_env_or(var: &str, bin: &str) -> Self {
        Self::new(std::env::var_os(var).map_or_else(|| PathBuf::from(bin), PathBuf::from))
    }

    /// A command running the binary, for its CLI subcommands.
    pub fn command(&self) -> Command {
        Command::new(&self.bin)
    }

    /// Runs the binary with `args` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()))
    }

    /// `trellis agent --dev`: one in-memory server, bootstrapped alone.
    pub fn dev(&self) -> AgentBuilder {
        AgentBuilder::new(self, Role::Dev)
    }

    /// `trellis agent --server` with a data dir.
    pub fn server(&self) -> AgentBuilder {
        AgentBuilder::new(self, Role::Server)
    }

    /// A client agent: no server, a data dir of its own.
    pub fn client(&self) -> AgentBuilder {
        AgentBuilder::new(self, Role::Client)
    }
}

/// What an agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `--dev`.
    Dev,
    /// `--server`.
    Server,
    /// Neither.
    Client,
}

/// Where an agent keeps its state.
#[derive(Debug, Clone)]
enum DataDir {
    /// A new temporary directory at start (none for a dev agent).
    Fresh,
    /// A directory the caller owns.
    At(PathBuf),
    /// The temporary directory made at start, kept across restarts and
    /// removed with the agent.
    Temp(Arc<tempfile::TempDir>),
}

/// How to launch an agent. Every port is 0 (the kernel picks) unless set;
/// the address is a fresh 127.0.0.x unless set.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    bin: PathBuf,
    pub(super) role: Role,
    node: Option<String>,
    bootstrap_expect: Option<usize>,
    encrypt: Option<String>,
    data_dir: DataDir,
    ip: Option<IpAddr>,
    dns_port: u16,
    http_port: u16,
    server_port: u16,
    serf_lan_port: u16,
    /// -1 runs no WAN pool.
    serf_wan_port: i32,
    retry_join: Vec<SocketAddr>,
    datacenter: Option<String>,
    retry_join_wan: Vec<SocketAddr>,
    advertise_wan: Option<IpAddr>,
    config_files: Vec<PathBuf>,
    /// Flags the builder has no method for, in order.
    extra: Vec<String>,
    pub(super) netns: Option<String>,
    /// Words run before the binary, which exec it in place.
    wrapper: Vec<String>,
    log_file: Option<PathBuf>,
    log_filter: Option<String>,
    pub(super) http_timeout: Duration,
    /// Environment variables set for the process, beyond the log's.
    env: Vec<(String, String)>,
}

impl AgentBuilder {
    fn new(t: &Trellis, role: Role) -> Self {
        Self {
            bin: t.bin.clone(),
            role,
            node: None,
            bootstrap_expect: None,
            encrypt: None,
            data_dir: DataDir::Fresh,
            ip: None,
            dns_port: 0,
            http_port: 0,
            server_port: 0,
            serf_lan_port: 0,
            serf_wan_port: 0,
            retry_join: Vec::new(),
            datacenter: None,
            retry_join_wan: Vec::new(),
            advertise_wan: None,
            config_files: Vec::new(),
            extra: Vec::new(),
            netns: None,
            wrapper: Vec::new(),
            log_file: None,
            // TRELLIS_TEST_LOG raises the agents' log level when chasing a
            // failure.
            log_filter: Some(
                std::env::var("TRELLIS_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            ),
            http_timeout: HTTP_TIMEOUT,
            env: Vec::new(),
        }
    }

    /// `--node`.
    pub fn node(mut self, name: &str) -> Self {
        self.node = Some(name.to_string());
        self
    }

    /// `--bootstrap-expect`.
    pub fn bootstrap_expect(mut self, n: usize) -> Self {
        self.bootstrap_expect = Some(n);
        self
    }

    /// `--encrypt`: the gossip key, base64 of 32 bytes.
    pub fn encrypt(mut self, key: &str) -> Self {
        self.encrypt = Some(key.to_string());
        self
    }

    /// `--data-dir` in a directory the caller owns, instead of a temporary
    /// one the agent removes.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = DataDir::At(dir.into());
        self
    }

    /// `--bind` and `--client`: every listener on `ip`, in 127.0.0.0/8 or
    /// inside a namespace.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// `--dns-port`.
    pub fn dns_port(mut self, port: u16) -> Self {
        self.dns_port = port;
        self
    }

    /// `--http-port`.
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = port;
        self
    }

    /// `--server-port`.
    pub fn server_port(mut self, port: u16) -> Self {
        self.server_port = port;
        self
    }

    /// `--serf-lan-port`.
    pub fn serf_lan_port(mut self, port: u16) -> Self {
        self.serf_lan_port = port;
        self
    }

    /// `--serf-wan-port`: a port fixed up front, so a restarted server
    /// keeps its WAN address.
    pub fn serf_wan_port(mut self, port: u16) -> Self {
        self.serf_wan_port = i32::from(port);
        self
    }

    /// `--serf-wan-port -1`: a server with no WAN pool.
    pub fn no_wan(mut self) -> Self {
        self.serf_wan_port = -1;
        self
    }

    /// `--datacenter`.
    pub fn datacenter(mut self, dc: &str) -> Self {
        self.datacenter = Some(dc.to_string());
        self
    }

    /// One more `--retry-join-wan` address (a server's WAN gossip address
    /// in another datacenter).
    pub fn retry_join_wan(mut self, addr: SocketAddr) -> Self {
        self.retry_join_wan.push(addr);
        self
    }

    /// `--advertise-wan`: the address other datacenters reach this server
    /// at (its WAN gossip binds it when it differs from the LAN address).
    pub fn advertise_wan(mut self, ip: IpAddr) -> Self {
        self.advertise_wan = Some(ip);
        self
    }

    /// One more `--retry-join` address (another agent's LAN gossip address).
    pub fn retry_join(mut self, addr: SocketAddr) -> Self {
        self.retry_join.push(addr);
        self
    }

    /// One more `--config-file`.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_files.push(path.into());
        self
    }

    /// A flag with a value that has no method here: the last resort.
    pub fn arg(mut self, flag: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.extra.push(flag.to_string());
        self.extra
            .push(value.as_ref().to_string_lossy().into_owned());
        self
    }

    /// A flag without a value that has no method here: the last resort.
    pub fn flag(mut self, flag: &str) -> Self {
        self.extra.push(flag.to_string());
        self
    }

    /// Runs the agent inside network namespace `ns` (`ip netns exec`); its
    /// HTTP API is then reached with curl inside the namespace.
    pub fn netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_string());
        self
    }

    /// The address, server and gossip ports and namespace of `place`.
    pub fn place(mut self, place: &Placement) -> Self {
        self.ip = Some(place.ip);
        self.server_port = place.server_port;
        self.serf_lan_port = place.serf_port;
        if self.serf_wan_port != -1 {
            self.serf_wan_port = i32::from(place.serf_wan_port);
        }
        self.netns = place.netns.clone();
        self
    }

    /// Runs the binary through `wrapper`, a command that execs its
    /// arguments in place (such as `taskset -c 0`), so signals reach the
    /// agent itself.
    pub fn run_via(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|w| w.to_string()).collect();
        self
    }

    /// Sets `key=value` in the agent's environment (e.g. the test-only
    /// `TRELLIS_TEST_DELAY`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Appends the agent's output to the file at `path` instead of keeping
    /// it in memory.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// `RUST_LOG` for the agent; `None` leaves the caller's environment
    /// (and so the agent's default) alone.
    pub fn log_filter(mut self, filter: Option<&str>) -> Self {
        self.log_filter = filter.map(String::from);
        self
    }

    /// How long one HTTP request to the agent may take.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// Starts the agent and waits for its `listening` line; panics, with
    /// its log, if it does not come.
    pub fn start(self) -> Agent {
        self.try_start().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`Self::start`] that returns the failure.
    pub fn try_start(self) -> anyhow::Result<Agent> {
        let (spec, log) = self.resolve()?;
        let mut process = spec.launch(&log)?;
        let at = started_blocking(&mut process, 0)?;
        Ok(Agent::new(spec, log, process, at))
    }

    /// [`Self::try_start`] for async callers: the wait does not block the
    /// runtime's thread.
    pub async fn start_async(self) -> anyhow::Result<Agent> {
        let (spec, log) = self.resolve()?;
        let mut process = spec.launch(&log)?;
        let at = started_async(&mut process, 0).await?;
        Ok(Agent::new(spec, log, process, at))
    }

    /// Fixes what a restart must keep: the address and the data dir.
    fn resolve(mut self) -> anyhow::Result<(Self, Log)> {
        if self.ip.is_none() {
            self.ip = Some(next_loopback());
        }
        if matches!(self.data_dir, DataDir::Fresh) && self.role != Role::Dev {
            let dir = tempfile::tempdir().context("creating a data dir")?;
            self.data_dir = DataDir::Temp(Arc::new(dir));
        }
        let log = match &self.log_file {
            Some(p) => Log::file(p),
            None => Log::captured(),
        };
        Ok((self, log))
    }

    pub(super) fn data_path(&self) -> Option<&Path> {
        match &self.data_dir {
            DataDir::Fresh => None,
            DataDir::At(p) => Some(p),
            DataDir::Temp(t) => Some(t.path()),
        }
    }

    pub(super) fn name(&self) -> String {
        match (&self.node, self.ip) {
            (Some(n), _) => n.clone(),
            (None, Some(ip)) => format!("agent {ip}"),
            (None, None) => "agent".into(),
        }
    }

    /// The arguments after the binary.
    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["agent".into()];
        match self.role {
            Role::Dev => a.push("--dev".into()),
            Role::Server => a.push("--server".into()),
            Role::Client => {}
        }
        let mut kv = |k: &str, v: String| a.extend([k.to_string(), v]);
        if let Some(n) = self.bootstrap_expect {
            kv("--bootstrap-expect", n.to_string());
        }
        if let Some(n) = &self.node {
            kv("--node", n.clone());
        }
        if let Some(d) = self.data_path() {
            kv("--data-dir", d.display().to_string());
        }
        if let Some(k) = &self.encrypt {
            kv("--encrypt", k.clone());
        }
        if let Some(ip) = self.ip {
            kv("--bind", ip.to_string());
            kv("--client", ip.to_string());
        }
        kv("--dns-port", self.dns_port.to_string());
        kv("--http-port", self.http_port.to_string());
        kv("--server-port", self.server_port.to_string());
        kv("--serf-lan-port", self.serf_lan_port.to_string());
        kv("--serf-wan-port", self.serf_wan_port.to_string());
        for j in &self.retry_join {
            kv("--retry-join", j.to_string());
        }
        if let Some(dc) = &self.datacenter {
            kv("--datacenter", dc.clone());
        }
        for j in &self.retry_join_wan {
            kv("--retry-join-wan", j.to_string());
        }
        if let Some(ip) = self.advertise_wan {
            kv("--advertise-wan", ip.to_string());
        }
        for f in &self.config_files {
            kv("--config-file", f.display().to_string());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    pub(super) fn launch(&self, log: &Log) -> anyhow::Result<Process> {
        if let Some(d) = self.data_path() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut words: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            words.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        words.extend(self.wrapper.iter().cloned());
        let mut cmd = match words.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args(self.args()).env("NO_COLOR", "1");
        if let Some(f) = &self.log_filter {
            cmd.env("RUST_LOG", f);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Process::spawn(&self.name(), &mut cmd, log)
    }
}

/// Whether `process` has printed more than `before` `listening` lines:
/// `Ok(Some)` with the addresses of the last once it has, an error if it
/// exited first.
fn poll_started(process: &mut Process, before: usize) -> anyhow::Result<Option<Listening>> {
    let exited = process.exited();
    let text = process.log().text();
    if Listening::count_in(&text) > before
        && let Some(at) = Listening::last_in(&text)
    {
        return Ok(Some(at));
    }
    if let Some(status) = exited {
        // Give a pipe reader a moment to drain what the process printed.
        std::thread::sleep(Duration::from_millis(50));
        bail!(
            "{} exited ({status}) before reporting its listeners; log:\n{}",
            process.name(),
            process.log().tail(200)
        );
    }
    Ok(None)
}

fn start_timeout(process: &Process) -> anyhow::Error {
    anyhow::anyhow!(
        "{} did not report its listeners (`{MARKER}…`) within {START_WITHIN:?}; log:\n{}",
        process.name(),
        process.log().tail(200)
    )
}

pub(super) fn started_blocking(process: &mut Process, before: usize) -> anyhow::Result<Listening> {
    let end = Instant::now() + START_WITHIN;
    loop {
        if let Some(at) = poll_started(process, before)? {
            return Ok(at);
        }
        if Instant::now() >= end {
            return Err(start_timeout(process));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(super) async fn started_async(
    process: &mut Process,
    before: usize,
) -> anyhow::Result<Listening> {
    let end = Instant::now() + START_WITHIN;
    loop {
        if let Some(at) = poll_started(process, before)? {
            return Ok(at);
        }
        if Instant::now() >= end {
            return Err(start_timeout(process));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
