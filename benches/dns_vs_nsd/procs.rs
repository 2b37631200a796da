//! Child processes the benchmark starts (through the test kit, which stops
//! them on every exit path): CPU pinning, memory and CPU readings, and the
//! trellis agent under test.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow};
use trellis_testkit::Agent;

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

/// The trellis binary to run: `TRELLIS_BIN` when set (another build, say a
/// copy of main's, measured with this harness), else [`TRELLIS`].
pub(crate) fn trellis_bin() -> String {
    std::env::var("TRELLIS_BIN").unwrap_or_else(|_| TRELLIS.to_string())
}

/// A running `trellis agent --dev` and the addresses it reported.
pub(crate) struct Trellis {
    /// The agent.
    agent: Agent,
    /// DNS, UDP and TCP.
    pub(crate) dns: SocketAddr,
    /// HTTP API.
    pub(crate) http: SocketAddr,
    /// Where its output goes. A file rather than a pipe, so that however
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
        let ip: IpAddr = client
            .parse()
            .with_context(|| format!("address {client:?}"))?;
        let mut b = trellis_testkit::Trellis::new(trellis_bin())
            .dev()
            .ip(ip)
            .log_file(&log)
            .log_filter(None);
        if let Some(cpu) = cpu {
            b = b.run_via(&["taskset", "-c", &cpu.to_string()]);
        }
        let agent = b.start_async().await?;
        let at = agent.addrs();
        Ok(Self {
            agent,
            dns: at.dns,
            http: at.http,
            log,
        })
    }

    /// Its process ID (`taskset` execs the agent, so this is the agent's).
    pub(crate) fn pid(&self) -> u32 {
        self.agent.pid()
    }

    /// The last lines of the agent's log.
    pub(crate) fn log_tail(&self) -> String {
        self.agent.log_handle().tail(30)
    }

    /// How many bytes the agent has logged so far.
    pub(crate) fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Fails, with the end of its log, if the agent has exited.
    pub(crate) fn alive(&self) -> anyhow::Result<()> {
        self.agent
            .check_running()
            .map_err(|e| anyhow!("{e:#}\ntrellis log (last lines):\n{}", self.log_tail()))
    }

    /// Stops the agent now (SIGTERM, and its exit awaited).
    pub(crate) fn stop(self) {
        self.agent.terminate();
    }
}

/// Checks the readers; run by `cargo test --bench dns_vs_nsd`.
pub(crate) fn self_check() {
    let me = Memory::of(std::process::id()).expect("our own status is readable");
    assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
    let spent = cpu_seconds(std::process::id());
    assert!((0.0..1e6).contains(&spent));
}
