//! Where a server keeps its latest snapshot: in its own file beside the
//! Raft database ([`FILE_NAME`], data dir format 6 on), not in the
//! database. redb commits one write transaction at a time, so a snapshot of
//! megabytes written through the log's writer held every log append behind
//! its commit; written here, by the task that built it, it never stands in
//! the log's way. The file is written whole under a temporary name, flushed,
//! and renamed over the previous one, so a crash leaves the old snapshot or
//! the new, never part of one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::StoreError;

/// The stored snapshot's file in the Raft data dir: postcard of consensus's
/// stored snapshot (openraft's metadata, then the body).
pub const FILE_NAME: &str = "snapshot.bin";

/// Where the next snapshot is written before it takes [`FILE_NAME`].
const NEW_NAME: &str = "snapshot.bin.new";

/// Makes postcard of `value` the data dir's snapshot file, durably: written
/// to a new file, flushed, renamed over the old one, and the directory
/// flushed. Blocks on the disk; call it off the runtime's worker threads.
pub fn write_file<T: Serialize + ?Sized>(dir: &Path, value: &T) -> Result<(), StoreError> {
    write_with(dir, |out| {
        // postcard reports a failed write as a full buffer; keep the I/O
        // error itself, which says whether the disk is full.
        let mut kept = KeepError {
            inner: out,
            error: None,
        };
        match postcard::to_io(value, &mut kept) {
            Ok(_) => Ok(()),
            Err(e) => Err(match kept.error {
                Some(source) => StoreError::File {
                    file: dir.join(NEW_NAME).display().to_string(),
                    source,
                },
                None => e.into(),
            }),
        }
    })
}

/// A writer that remembers the first error its inner writer returned.
struct KeepError<W> {
    inner: W,
    error: Option<std::io::Error>,
}

impl<W: Write> Write for KeepError<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| {
            // A copy for us, the original for postcard.
            let copy = match e.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(e.kind(), e.to_string()),
            };
            self.error.get_or_insert(copy);
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// [`write_file`] of bytes that are already postcard of the stored snapshot
/// (what format 5 kept in the database), as they are.
pub fn write_file_encoded(dir: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_with(dir, |out| {
        out.write_all(bytes).map_err(|source| StoreError::File {
            file: dir.join(NEW_NAME).display().to_string(),
            source,
        })
    })
}

fn write_with(
    dir: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let new = dir.join(NEW_NAME);
    let io = |path: &PathBuf| {
        let file = path.display().to_string();
        move |source| StoreError::File { file, source }
    };
    let file = File::create(&new).map_err(io(&new))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let written = body(&mut out).and_then(|()| {
        let file = out.into_inner().map_err(|e| io(&new)(e.into_error()))?;
        file.sync_data().map_err(io(&new))
    });
    if let Err(e) = written {
        // Half a snapshot is worth nothing; the old one stays in force.
        let _ = std::fs::remove_file(&new);
        return Err(e);
    }
    super::file::finish_new(&new, &dir.join(FILE_NAME))
}

/// The snapshot file's bytes, if the data dir has one.
pub fn read_file(dir: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let path = dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::File {
            file: path.display().to_string(),
            source,
        }),
    }
}

/// Whether `e` says the disk (or the quota) is full: a snapshot write that
/// waits for space rather than failing Raft.
pub fn is_no_space(e: &StoreError) -> bool {
    match e {
        StoreError::File { source, .. } => {
            matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::decode;

    #[test]
    fn a_written_file_reads_back_whole_and_replaces_the_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_file(dir.path()).expect("read"), None);
        write_file(dir.path(), &(1u64, vec![7u8; 100])).expect("write");
        write_file(dir.path(), &(2u64, vec![9u8; 3])).expect("write again");
        let bytes = read_file(dir.path()).expect("read").expect("a file");
        let back: (u64, Vec<u8>) = decode(&bytes).expect("decode");
        assert_eq!(back, (2, vec![9, 9, 9]));
        assert!(!dir.path().join(NEW_NAME).exists(), "temporary file left");
        write_file_encoded(dir.path(), &bytes[..2]).expect("raw");
        assert_eq!(
            read_file(dir.path()).expect("read"),
            Some(bytes[..2].to_vec())
        );
    }
}
