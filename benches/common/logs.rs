//! Log files of the processes a benchmark starts, shared by the benchmark
//! programs (each includes this file with `#[path]`).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

/// The last 30 lines of the log file at `path`, reading at most its last
/// 8 KiB (a server's log can be large); for error messages.
pub(crate) fn tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(8192)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
