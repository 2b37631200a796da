//! What a child process writes, kept for failure messages: captured in
//! memory from a pipe (tests: the log is shown when a test fails), or
//! appended to a file (benchmarks: no reader spends CPU on it, and the
//! process never waits on a full pipe, as when logging to a file in
//! production).

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Where a process's output goes. Cloning shares it: a restarted process
/// appends to the log of the one before.
#[derive(Debug, Clone)]
pub struct Log {
    sink: Sink,
}

#[derive(Debug, Clone)]
enum Sink {
    /// stderr through a pipe into memory; stdout discarded.
    Captured(Arc<Mutex<String>>),
    /// stdout and stderr appended to this file.
    File(PathBuf),
}

impl Log {
    /// A log kept in memory.
    pub fn captured() -> Self {
        Self {
            sink: Sink::Captured(Arc::default()),
        }
    }

    /// A log appended to the file at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            sink: Sink::File(path.into()),
        }
    }

    /// The file it is written to, for a file log.
    pub fn path(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Captured(_) => None,
            Sink::File(p) => Some(p),
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        match &self.sink {
            Sink::Captured(buf) => lock(buf).clone(),
            Sink::File(p) => std::fs::read_to_string(p).unwrap_or_default(),
        }
    }

    /// How many lines logged so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }

    /// The last `n` lines. A file log reads only its end: a server's log
    /// can be large.
    pub fn tail(&self, n: usize) -> String {
        let text = match &self.sink {
            Sink::Captured(buf) => lock(buf).clone(),
            Sink::File(p) => match read_end(p, 256 * n as u64) {
                Ok(t) => t,
                Err(e) => return format!("(cannot read {}: {e})", p.display()),
            },
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The first panic logged, with its message line.
    pub fn first_panic(&self) -> Option<String> {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        let k = lines.iter().position(|l| l.contains("panicked at"))?;
        Some(format!(
            "{}\n  {}",
            lines[k],
            lines.get(k + 1).copied().unwrap_or_default()
        ))
    }

    /// A failure report under a header naming `label`: every panic logged
    /// first (a panic scrolls out of the tail under the errors it causes),
    /// then the last 150 lines.
    pub fn report(&self, label: &str) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(150)..];
        let mut out = format!("==== {label} last {} log lines ====\n", tail.len());
        for (k, l) in lines.iter().enumerate() {
            if l.contains("panicked at") {
                let msg = lines.get(k + 1).copied().unwrap_or_default();
                let _ = writeln!(out, "PANIC in {label}: {l}\n  {msg}");
            }
        }
        for l in tail {
            let _ = writeln!(out, "{l}");
        }
        out
    }

    /// Appends a line of the kit's own, such as a restart marker.
    pub fn note(&self, line: &str) {
        match &self.sink {
            Sink::Captured(buf) => {
                let mut b = lock(buf);
                b.push_str(line);
                b.push('\n');
            }
            Sink::File(p) => {
                use std::io::Write as _;
                if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(p) {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
    }

    /// Points `cmd`'s output at this log.
    pub(crate) fn attach(&self, cmd: &mut Command) -> std::io::Result<()> {
        match &self.sink {
            Sink::Captured(_) => {
                cmd.stdout(Stdio::null()).stderr(Stdio::piped());
            }
            Sink::File(p) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?;
                cmd.stdout(file.try_clone()?).stderr(file);
            }
        }
        Ok(())
    }

    /// Starts copying a captured process's stderr into memory, line by line,
    /// until the process closes it.
    pub(crate) fn collect(&self, stderr: Option<ChildStderr>) {
        let (Sink::Captured(buf), Some(stderr)) = (&self.sink, stderr) else {
            return;
        };
        let buf = buf.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut b = lock(&buf);
                b.push_str(&line);
                b.push('\n');
            }
        });
    }
}

/// The buffer, even if a thread panicked holding it: it is only text.
fn lock(buf: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    buf.lock().unwrap_or_else(|e| e.into_inner())
}

/// The last `bytes` of the file at `path`, as text.
fn read_end(path: &Path, bytes: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_show_panics_before_the_tail() {
        let log = Log::captured();
        log.note("thread 'x' panicked at src/a.rs:1:1:");
        log.note("boom");
        for k in 0..200 {
            log.note(&format!("line {k}"));
        }
        assert_eq!(
            log.first_panic().as_deref(),
            Some("thread 'x' panicked at src/a.rs:1:1:\n  boom")
        );
        let r = log.report("s1");
        assert!(
            r.starts_with("==== s1 last 150 log lines ====\nPANIC in s1"),
            "{r}"
        );
        assert!(r.ends_with("line 199\n"));
        assert_eq!(log.tail(2), "line 198\nline 199");
        assert_eq!(log.count("line 1"), 111);
    }

    #[test]
    fn a_file_log_is_read_from_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::file(dir.path().join("a.log"));
        let mut cmd = Command::new("true");
        log.attach(&mut cmd).expect("opens the file");
        for k in 0..100 {
            log.note(&format!("line {k}"));
        }
        assert_eq!(log.tail(1), "line 99");
        assert_eq!(log.count("line"), 100);
    }
}
