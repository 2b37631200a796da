//! What the KV benchmarks read of a process and its files beyond CPU time:
//! resident memory from `/proc`, the size of a directory on disk, and the
//! open-file limit they raise for themselves and the servers they start
//! (children inherit it). Each program includes this file with `#[path]`.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};

/// Resident memory of one process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    /// `VmRSS`: every resident page, the binary's own code included.
    pub(crate) rss: u64,
    /// `RssAnon`: resident anonymous pages, i.e. the heap and stacks; what
    /// the process's data costs, without the mapped binary and libraries.
    pub(crate) anon: u64,
}

impl Memory {
    /// Reads `/proc/PID/status`.
    pub(crate) fn of(pid: u32) -> anyhow::Result<Self> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Self::parse(&text).with_context(|| format!("in {path}"))
    }

    fn parse(status: &str) -> anyhow::Result<Self> {
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .ok_or_else(|| anyhow!("no {name}"))?;
            let kb: u64 = line
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("{name}: {line:?}"))?;
            Ok(kb * 1024)
        };
        Ok(Self {
            rss: field("VmRSS")?,
            anon: field("RssAnon")?,
        })
    }
}

/// Bytes as MiB, for the tables.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The disk space the files under `dir` take, as `du` counts it (allocated
/// blocks, so a sparse or preallocated file counts what it really holds).
pub(crate) fn disk_usage(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// Raises this process's soft limit on open files to at least `want`
/// (up to the hard limit), so that it and the servers it starts can hold
/// that many connections; returns the new soft limit.
pub(crate) fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < want {
        bail!(
            "the hard limit on open files is {}, below the {want} this run needs \
             (raise it, e.g. `ulimit -Hn {want}` as root, or ask for fewer)",
            lim.rlim_max
        );
    }
    lim.rlim_cur = want;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(want)
}

/// Checks the `/proc` parser; run without `--bench`.
pub(crate) fn self_check() {
    let m = Memory::parse("Name:\ttrellis\nVmRSS:\t   9876 kB\nRssAnon:\t    1700 kB\n")
        .expect("a status parses");
    assert_eq!(
        m,
        Memory {
            rss: 9876 * 1024,
            anon: 1700 * 1024
        }
    );
    assert!(Memory::parse("VmRSS:\t1 kB\n").is_err());
    assert!(Memory::of(std::process::id()).expect("own status").rss > 0);
    assert_eq!(mib(3 << 20), 3.0);
}
