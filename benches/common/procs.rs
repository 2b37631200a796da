//! The agent processes a benchmark starts: a guard that kills them on every
//! exit path, log files, and loopback ports picked up front. Shared by the
//! benchmark programs that run clusters on loopback (each includes this
//! file with `#[path]`, next to `logs.rs`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::logs::tail;

/// A running server process, SIGKILLed and reaped when the guard is dropped
/// (the benchmark finished, failed, or was interrupted). SIGKILL rather than
/// SIGTERM: the data is thrown away with the temp dir, and an etcd member
/// that has lost its quorum takes seconds to honour SIGTERM.
pub(crate) struct Proc {
    /// Shown in messages.
    name: String,
    /// The process.
    child: Child,
    /// Where its stdout and stderr go, appended across restarts.
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with its output appended to `log`.
    pub(crate) fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = file.try_clone().context("duplicating a log file handle")?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the
        // parent. It makes the kernel SIGKILL the server if the thread that
        // spawned it dies, so a benchmark killed with SIGKILL (which runs no
        // Drop) leaves no server behind. The spawning threads are the
        // runtime's main and worker threads, which live as long as the run.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process ID, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILLs the process now and reaps it.
    pub(crate) fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = self.child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        // Polled rather than awaited: `Drop` cannot await.
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Fails, with the end of its log, if the process has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                tail(&self.log)
            ),
            None => Ok(()),
        }
    }

    /// The end of the process's log.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// The log file.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port on `ip` that was free a moment ago. The socket is closed
/// before the server binds it, so a restarted server can be given the same
/// address; the small race with other programs is acceptable on loopback
/// addresses nothing else uses.
pub(crate) fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    let l = TcpListener::bind(SocketAddr::from((ip, 0)))
        .with_context(|| format!("binding {ip}:0 (is the 127.0.0.0/8 loopback route there?)"))?;
    Ok(l.local_addr()?.port())
}

/// A UDP port on `ip` that was free a moment ago (see `free_port`).
pub(crate) fn free_udp_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind(SocketAddr::from((ip, 0)))
        .with_context(|| format!("binding UDP {ip}:0"))?;
    Ok(s.local_addr()?.port())
}

/// How many lines of the log at `path` contain `needle`.
pub(crate) fn count_lines(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// CPU time, user and system, that the processes `pids` have used so far,
/// in seconds (0 for any that is gone).
pub(crate) fn cpu_seconds(pids: &[u32]) -> f64 {
    // Fields after the `(comm)`: state ppid ... utime (12th) stime (13th).
    let ticks = |pid: u32| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &text[text.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    };
    let total: u64 = pids.iter().filter_map(|&p| ticks(p)).sum();
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    total as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// Holds an exclusive lock on a file in the temp dir for as long as the
/// benchmark runs, so that two runs of the cluster benchmarks on one
/// machine (a run's loopback addresses are fixed, and any two would skew
/// each other's figures) take turns. The kernel releases it when the
/// process exits, however it exits.
pub(crate) struct RunLock {
    /// The locked file; closing it unlocks.
    _file: std::fs::File,
}

impl RunLock {
    /// Takes the lock, waiting (and saying so) while another run holds it.
    pub(crate) fn acquire() -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd as _;
        let path = std::env::temp_dir().join("trellis-loopback-bench.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let fd = file.as_raw_fd();
        // SAFETY: flock(2) on a descriptor we own; no memory is shared.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "another benchmark run holds {}; waiting for it to finish",
                path.display()
            );
            // SAFETY: as above, blocking this time.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("locking {}", path.display()));
            }
        }
        Ok(Self { _file: file })
    }
}

/// Runs a loopback benchmark: takes the run lock, then drives `run` on a
/// two-thread runtime until it ends or Ctrl-C (which drops it, and with it
/// every child process and temp dir). Errors are printed as `Error: …`.
pub(crate) fn run_locked<F>(run: F) -> std::process::ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let result = RunLock::acquire().and_then(|_lock| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the runtime")?;
        rt.block_on(async {
            tokio::select! {
                r = run => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            }
        })
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `program` is on the PATH.
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let f = d.join(program);
            f.is_file()
        })
    })
}
