//! Child processes the benchmark starts: a guard that stops them on every
//! exit path, CPU pinning, memory readings, and starting a trellis agent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::process::{Child, Command};

use crate::logs::tail;

/// A running child that is stopped when the guard is dropped, whether the
/// benchmark finished, failed or was interrupted: SIGTERM, a grace period,
/// then SIGKILL, and always reaped.
pub(crate) struct Proc {
    /// Shown in messages.
    name: String,
    /// The process; `taskset` execs the program, so this is its PID too.
    child: Child,
}

impl Proc {
    /// Spawns `cmd`, naming it `name` in messages.
    pub(crate) fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// The process ID, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails if the process has already exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited early: {status}", self.name),
            None => Ok(()),
        }
    }

    /// Stops the process now (what `Drop` does, but at a chosen point).
    pub(crate) fn stop(self) {
        self.stop_within(Duration::from_secs(3));
    }

    /// Stops the process, giving it `grace` to exit after SIGTERM.
    pub(crate) fn stop_within(mut self, grace: Duration) {
        self.terminate(grace);
    }

    fn terminate(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) has no memory effects; the PID is our own
            // unreaped child, so it cannot have been recycled.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if self.reaped_within(grace) {
            return;
        }
        eprintln!("{} ignored SIGTERM; killing it", self.name);
        let _ = self.child.start_kill();
        let _ = self.reaped_within(Duration::from_secs(3));
    }

    /// Polls for exit until `limit`: `Drop` cannot await.
    fn reaped_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return false,
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(3));
    }
}

/// A command that runs `program` on one CPU, via `taskset`, when the machine
/// has that CPU; otherwise unpinned (the figures then mean less).
pub(crate) fn pinned(cpu: Option<usize>, program: &str) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Memory of a running process, from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// Resident set now.
    pub(crate) rss_kib: u64,
    /// Peak resident set.
    pub(crate) hwm_kib: u64,
}

impl Memory {
    /// Reads the memory of process `pid`.
    pub(crate) fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))?;
            let kib = line.trim().trim_end_matches("kB").trim();
            kib.parse().with_context(|| format!("{name} {kib:?}"))
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

/// CPU time, user and system, that process `pid` and all its descendants
/// have used so far, in seconds. NSD answers from a grandchild (its first
/// process becomes xfrd and forks the server parent, which forks the
/// server), so descendants count.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    // Fields after the `(comm)`: state ppid ... utime(12th) stime(13th).
    let stat = |path: &Path| -> Option<(u32, u64)> {
        let text = std::fs::read_to_string(path).ok()?;
        let rest = &text[text.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some((ppid, ticks))
    };
    // (pid, ppid, ticks) of every process.
    let mut procs = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some((ppid, t)) = stat(&e.path().join("stat")) {
                procs.push((p, ppid, t));
            }
        }
    }
    let mut tree = vec![pid];
    let mut ticks = 0;
    let mut i = 0;
    while let Some(&p) = tree.get(i) {
        for &(child, ppid, t) in &procs {
            if child == p {
                ticks += t;
            }
            if ppid == p && !tree.contains(&child) {
                tree.push(child);
            }
        }
        i += 1;
    }
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// The trellis binary cargo built for this benchmark (release profile).
pub(crate) const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

/// A running `trellis agent --dev` and the addresses it reported.
pub(crate) struct Trellis {
    /// The process.
    pub(crate) proc: Proc,
    /// DNS, UDP and TCP.
    pub(crate) dns: SocketAddr,
    /// HTTP API.
    pub(crate) http: SocketAddr,
    /// Where its stderr goes. A file rather than a pipe, so that however
    /// much the agent logs, the benchmark spends no CPU reading it and the
    /// agent never waits on a full pipe: like logging to a file in
    /// production.
    log: PathBuf,
}

impl Trellis {
    /// Starts a dev agent whose client interfaces listen on `client`, with
    /// every port picked by the kernel, logging to `log`, and waits for its
    /// `listening` line. The log level is the agent's default unless
    /// `RUST_LOG` is set.
    pub(crate) async fn start(
        cpu: Option<usize>,
        client: &str,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = pinned(cpu, TRELLIS);
        cmd.args(["agent", "--dev", "--client", client, "--bind", client])
            .args(["--dns-port", "0", "--http-port", "0", "--server-port", "0"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let mut proc = Proc::spawn("trellis", &mut cmd)?;

        let deadline = Instant::now() + Duration::from_secs(20);
        let line = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text
                .lines()
                .map(strip_ansi)
                .find(|l| l.contains("listening dns="))
            {
                break line;
            }
            if let Some(status) = proc.child.try_wait()? {
                bail!(
                    "trellis exited ({status}) before listening:\n{}",
                    tail(&log)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "trellis did not report `listening` within 20 s:\n{}",
                    tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (dns, http) = parse_listening(&line)?;
        Ok(Self {
            proc,
            dns,
            http,
            log,
        })
    }

    /// The last lines of the agent's log.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// How many bytes the agent has logged so far.
    pub(crate) fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Fails, with the end of its log, if the agent has exited.
    pub(crate) fn alive(&mut self) -> anyhow::Result<()> {
        self.proc
            .check_running()
            .map_err(|e| anyhow!("{e:#}\ntrellis log (last lines):\n{}", self.log_tail()))
    }
}

/// Reads `dns=` and `http=` from the agent's `listening dns=IP:PORT http=…` line.
pub(crate) fn parse_listening(line: &str) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let rest = line
        .split_once("listening ")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("not a listening line: {line:?}"))?;
    let field = |key: &str| -> anyhow::Result<SocketAddr> {
        let v = rest
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .ok_or_else(|| anyhow!("no {key} in {line:?}"))?;
        v.parse().with_context(|| format!("{key}{v:?}"))
    };
    Ok((field("dns=")?, field("http=")?))
}

/// Drops terminal colour sequences, in case the logger colours anyway.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte(@..~)
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks the parsers; run by `cargo test --bench dns_vs_nsd`.
pub(crate) fn self_check() {
    let line = "2026-11-26T15:00:00Z  INFO trellis::agent: listening dns=127.0.0.2:40000 \
                http=127.0.0.2:40001 server=127.0.0.2:40002 node=n dc=dc1 ready_in_ms=12";
    let (dns, http) = parse_listening(line).expect("a well-formed line parses");
    assert_eq!(dns.to_string(), "127.0.0.2:40000");
    assert_eq!(http.to_string(), "127.0.0.2:40001");
    assert!(parse_listening("listening http=1.2.3.4:5").is_err());
    assert_eq!(
        strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m listening dns=1"),
        "2026  INFO listening dns=1"
    );
    let me = Memory::of(std::process::id()).expect("our own status is readable");
    assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
    let spent = cpu_seconds(std::process::id());
    assert!((0.0..1e6).contains(&spent));
}
