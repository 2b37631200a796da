//! What the loopback cluster benchmarks share beyond the test kit (which
//! starts and guards their processes): CPU time of processes, the run lock,
//! the machine's load average, and whether a tool is installed. Each program includes this file with
//! `#[path]`.

use anyhow::Context as _;

/// The machine's 1, 5 and 15 minute load averages, as `/proc/loadavg`
/// gives them (empty where it cannot be read).
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU time, user and system, that the processes `pids` have used so far,
/// in seconds (0 for any that is gone): from each process's CPU-time clock,
/// to the nanosecond, where the kernel lets us read it (`/proc/PID/stat`
/// counts in ticks of 10 ms, a tenth of the figures it is read for).
pub(crate) fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|&pid| process_clock(pid).or_else(|| ticks(pid)).unwrap_or(0.0))
        .sum()
}

/// The CPU time of process `pid` from its CPU-time clock, in seconds.
fn process_clock(pid: u32) -> Option<f64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid, writable clockid_t for the call.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut at = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `at` is a valid, writable timespec for the call.
    if unsafe { libc::clock_gettime(clock, &mut at) } != 0 {
        return None;
    }
    Some(at.tv_sec as f64 + at.tv_nsec as f64 / 1e9)
}

/// The CPU time of process `pid` from `/proc/PID/stat`, in seconds.
fn ticks(pid: u32) -> Option<f64> {
    // Fields after the `(comm)`: state ppid ... utime (12th) stime (13th).
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
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

/// The `main` of a loopback benchmark that takes its settings from the
/// command line: without `--bench` (as `cargo test --benches` runs it) only
/// its `self_check`; else `parse` reads the arguments and [`run_locked`]
/// drives `run` with the settings.
pub(crate) fn bench_main<S, F>(
    name: &str,
    self_check: fn(),
    parse: fn(&[String]) -> anyhow::Result<S>,
    run: impl FnOnce(S) -> F,
) -> std::process::ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        self_check();
        eprintln!("{name}: self-checks passed (run `cargo bench --bench {name}` to benchmark)");
        return std::process::ExitCode::SUCCESS;
    }
    match parse(&args) {
        Ok(settings) => run_locked(run(settings)),
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
