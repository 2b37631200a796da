//! A full disk under the data dir: refused up front, waited out underneath.
//!
//! openraft treats any error from its log store as fatal: the Raft member
//! stops, and the agent with it (DNS included). Yet a full disk is not
//! fatal: nothing durable was lost, and the writes can go on once space is
//! freed. So a full disk never reaches openraft as an error:
//!
//! - Up front, the leader asks [`Space::check`] before proposing an entry.
//!   Under [`RESERVE`] bytes free (or while the writer waits, below), the
//!   write is refused with [`DiskFull`], naming the directory, before it
//!   enters the log: the client gets a clear error and the write is
//!   certainly not made.
//! - Underneath, a commit that fails anyway for want of space (the disk
//!   filled between the check and the commit, or on a follower) is held by
//!   the writer thread, which reopens the database and tries the same
//!   commit again until it succeeds ([`Space::stall`] meanwhile). Nothing
//!   in it was acknowledged, nothing acknowledged before it is lost (it was
//!   committed), and openraft only sees a flush that takes long.
//!
//! Reads, DNS and everything else that does not write the log go on as
//! before throughout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Below this many free bytes the leader refuses new writes: room for one
/// full entry (1 MiB of commands) with its pages copied on write, and for
/// the small commits (votes, snapshots of a small catalog) that are not
/// refused.
pub const RESERVE: u64 = 8 << 20;

/// The free space of the filesystem holding one data dir, shared by the
/// writer thread (which reports a stall) and the leader's proposer (which
/// refuses writes up front).
#[derive(Debug)]
pub struct Space {
    /// The directory of the database; `None` in memory, which never fills.
    dir: Option<PathBuf>,
    /// Set while the writer holds a commit that failed for want of space.
    stalled: AtomicBool,
}

/// Why a write was refused: the disk holding the data dir is full.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the disk holding the Raft log in {dir} is full (no space left on device, {free} bytes \
     free): writes are refused until space is freed there; reads and DNS go on"
)]
pub struct DiskFull {
    /// The Raft directory in the data dir.
    pub dir: String,
    /// Bytes available to this process, as far as known.
    pub free: u64,
}

impl Space {
    /// The space under `dir`; `None` for an in-memory database.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            stalled: AtomicBool::new(false),
        }
    }

    /// Whether a new write may enter the log: `Err` while the writer waits
    /// for space, or while less than [`RESERVE`] is free.
    pub fn check(&self) -> Result<(), DiskFull> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let free = free_bytes(dir);
        let stalled = self.stalled.load(Ordering::Acquire);
        match free {
            Some(free) if stalled || free < RESERVE => Err(self.full(free)),
            // Space cannot be measured: let the writer find out.
            None if stalled => Err(self.full(0)),
            _ => Ok(()),
        }
    }

    /// Whether the writer is holding a commit until space is freed.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// The error for a full disk with `free` bytes left.
    pub fn full(&self, free: u64) -> DiskFull {
        DiskFull {
            dir: self
                .dir
                .as_deref()
                .map_or_else(|| "(in memory)".into(), |d| d.display().to_string()),
            free,
        }
    }

    /// Set by the writer while it holds a commit for want of space.
    pub(super) fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::Release);
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding
/// `dir` (what `df` shows as available); `None` if it cannot be asked.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string that outlives the call and
    // `stat` is a valid, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ by platform
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Whether a storage error means the disk (or the user's quota) is full.
pub(super) fn is_no_space(e: &redb::Error) -> bool {
    match e {
        redb::Error::Io(io) => matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
        _ => false,
    }
}

/// A small tmpfs, unmounted on drop: a disk that tests can fill. Tests run
/// as root (as the partition tests' network namespaces need).
#[cfg(test)]
pub(crate) struct Tmpfs(tempfile::TempDir);

#[cfg(test)]
impl Tmpfs {
    /// Mounts one of `size` (`mount -o size=…`) on a new directory.
    pub(crate) fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root: {status}");
        Self(dir)
    }

    /// Where it is mounted.
    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes a file until the disk is full; returns it.
    pub(crate) fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![1u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        path
    }
}

#[cfg(test)]
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_never_fills_and_a_roomy_disk_takes_writes() {
        assert!(Space::new(None).check().is_ok());
        let dir = tempfile::tempdir().expect("tempdir");
        let free = free_bytes(dir.path()).expect("statvfs");
        let space = Space::new(Some(dir.path().into()));
        assert_eq!(space.check().is_ok(), free >= RESERVE);
    }

    #[test]
    fn a_stalled_writer_refuses_writes_naming_the_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = Space::new(Some(dir.path().into()));
        space.stall(true);
        let text = space.check().expect_err("refused").to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("no space left on device"), "{text}");
        space.stall(false);
        assert!(!space.stalled());
    }

    #[test]
    fn only_enospc_and_edquot_count_as_a_full_disk() {
        let io = |code| redb::Error::Io(std::io::Error::from_raw_os_error(code));
        assert!(is_no_space(&io(libc::ENOSPC)));
        assert!(is_no_space(&io(libc::EDQUOT)));
        assert!(!is_no_space(&io(libc::EIO)));
        assert!(!is_no_space(&redb::Error::PreviousIo));
    }
}
