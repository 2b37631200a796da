//! The on-disk layout of a server's Raft state: redb table definitions, their
//! encoding, and the single writer thread that commits to them.
//!
//! Everything durable that consensus keeps lives in one redb database
//! (`<data-dir>/raft.redb`, or an in-memory backend for `--dev`, so both modes
//! run the same code):
//!
//! - [`LOG`]: Raft log entries by index, postcard-encoded.
//! - [`META`]: small named values (see [`keys`]): the data dir's format
//!   version, the vote, the last purged and committed log ids and this
//!   server's Raft id (and, in data dirs before format 6, the latest
//!   snapshot).
//!
//! The latest snapshot lives beside the database in its own file
//! ([`snapshot_file::FILE_NAME`]), written whole and renamed into place by the
//! task that builds it, so that a snapshot's megabytes never sit in a log
//! commit.
//!
//! The encodings are versioned as a whole ([`format`](mod@format)): opening
//! checks the data dir's version, and [`format::upgrade`] rewrites an older
//! one in place. [`snapshot`] encodes and decodes the snapshot body.
//!
//! Reads happen once, at start-up, before the [`Writer`] takes the database;
//! afterwards consensus serves reads from memory and sends every change
//! through the writer, which batches them into group commits.

mod file;
pub mod format;
pub mod snapshot;
pub mod snapshot_file;
pub mod space;
pub mod v1;
mod writer;

use std::path::Path;

use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use space::{DiskFull, Space};
pub use writer::{Done, OnDisk, Op, StoredEntries, Writer, WriterStats};

/// Raft log entries, keyed by log index.
pub const LOG: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("raft_log");

/// Named single values; the names are in [`keys`].
pub const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("raft_meta");

/// The keys of [`META`], each with the type stored under it.
pub mod keys {
    /// `openraft::Vote`: the last vote this server cast or accepted.
    pub const VOTE: &str = "vote";
    /// `openraft::LogId`: the last log id removed from the head of the log.
    pub const PURGED: &str = "purged";
    /// `openraft::LogId`: the last log id known committed (an optimisation for restarts).
    pub const COMMITTED: &str = "committed";
    /// `u64` ([`RaftId`](crate::rpc::types::RaftId)): this server's Raft id,
    /// chosen at random on first start. The key keeps its version 1 name.
    pub const RAFT_ID: &str = "node_id";
    /// The latest snapshot: its metadata and the snapshot body (the format
    /// version, then the encoded catalog).
    pub const SNAPSHOT: &str = "snapshot";
    /// [`super::format::Version`]: the format everything here is encoded in.
    /// Absent in data dirs written before versioning (version 1).
    pub const FORMAT: &str = "format";
}

/// The file name of the database inside the data directory.
pub const FILE_NAME: &str = "raft.redb";

/// Why storage failed. Any of these is fatal for the Raft member that hit it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("creating data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file in the data directory could not be read, created or renamed.
    #[error("{file}: {source}")]
    File {
        /// The file.
        file: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The database file exists but is not a trellis database: empty, not
    /// redb, or another program's. It was left as it was.
    #[error(
        "{file} {why}, so it is not a trellis Raft database. Starting on it would \
         begin a new, empty cluster in place of the data this server held, so \
         trellis refuses to. If that data is lost, move the file away (for example \
         `mv {file} {file}.bad`) and start again: the server starts empty and, in a \
         cluster, catches up from the leader; otherwise restore the file from a backup"
    )]
    NotOurs {
        /// The database file.
        file: String,
        /// What is wrong with it.
        why: String,
    },
    /// redb refused an operation (I/O error, corruption, lock held by another process).
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    /// A stored value did not decode, or a value did not encode.
    #[error("encoding: {0}")]
    Codec(#[from] postcard::Error),
    /// A snapshot of the state could not be encoded from its capture.
    #[error("encoding a snapshot: {0}")]
    Capture(#[from] crate::catalog::CaptureError),
    /// The data dir or a value is in a format version this build cannot take.
    #[error(transparent)]
    Format(#[from] format::FormatError),
    /// The writer thread has stopped (shut down, or an earlier commit failed).
    #[error("storage writer has stopped")]
    Closed,
    /// An earlier commit failed; the batch this operation belonged to was not written.
    #[error("storage write failed: {0}")]
    WriteFailed(String),
}

/// Converts any of redb's narrow errors into [`StoreError::Redb`].
pub(crate) fn redb_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb(e.into())
}

/// The most memory redb keeps for its page cache. Its default is 1 GiB, and
/// a server reads its whole database at start (log and snapshot), so the
/// cache held a copy of the file: about 350 bytes per instance of a
/// 100,000-instance catalog (`benches/scale`), and for the in-memory
/// database of a dev agent a second copy of what the backend already holds.
/// Nothing reads redb on the hot path (the log is mirrored in memory, the
/// state is in the replica), so a small cache costs no speed. redb fills it
/// with the pages each commit writes and keeps them, so whatever its size
/// it ends up full: 16 MiB was 168 bytes per rich instance at 100,000
/// (heaptrack). A commit's pages, the log's rightmost path, fit in 4 MiB
/// many times over; a commit larger than half of it (a follower catching
/// up by the megabyte) writes its pages out before the commit's fsync
/// rather than holding them, which changes nothing of its durability.
pub(crate) const CACHE_BYTES: usize = 4 << 20;

/// Opens (creating if needed) the database: in memory when `dir` is `None`,
/// else `dir/raft.redb`, creating `dir`. A new database is stamped with the
/// current format version; one in a newer version is refused, its contents
/// untouched, and so is a file that is not a trellis database
/// ([`StoreError::NotOurs`], see `file.rs`). One in an older version opens,
/// for [`format::upgrade`].
pub fn open(dir: Option<&Path>) -> Result<Database, StoreError> {
    let (opened, path) = match dir {
        None => {
            let db = Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(InMemoryBackend::new())
                .map_err(redb_err)?;
            (file::Opened { db, new: None }, None)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
            let path = dir.join(FILE_NAME);
            (file::open_or_create(&path)?, Some(path))
        }
    };
    let file = path.as_ref().map_or_else(
        || "the in-memory database".to_owned(),
        |p| p.display().to_string(),
    );
    let db = opened.db;
    // Create the tables up front so that read transactions never meet a
    // missing table.
    let txn = db.begin_write().map_err(redb_err)?;
    txn.open_table(LOG).map_err(redb_err)?;
    txn.open_table(META).map_err(redb_err)?;
    if let Err(e) = format::check_on_open(&txn, &file) {
        // Leave the contents of a newer data dir as they were.
        txn.abort().map_err(redb_err)?;
        return Err(e);
    }
    txn.commit().map_err(redb_err)?;
    if let (Some(tmp), Some(path)) = (&opened.new, &path) {
        file::finish_new(tmp, path)?;
    }
    Ok(db)
}

/// Everything stored, read in one transaction at start-up.
#[derive(Debug, Default)]
pub struct Contents {
    /// Log entries in index order, still encoded.
    pub log: Vec<(u64, Vec<u8>)>,
    /// The [`META`] values by key, still encoded.
    pub meta: std::collections::BTreeMap<String, Vec<u8>>,
    /// The snapshot file's bytes ([`snapshot_file::FILE_NAME`]), once
    /// [`Contents::with_snapshot_file`] read them.
    pub snapshot: Option<Vec<u8>>,
}

impl Contents {
    /// Decodes the value stored under `key`, if any.
    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.meta.get(key).map(|v| decode(v)).transpose()
    }

    /// Adds the data dir's snapshot file, if `dir` has one (`None`: an
    /// in-memory server, which has none).
    pub fn with_snapshot_file(mut self, dir: Option<&Path>) -> Result<Self, StoreError> {
        self.snapshot = match dir {
            Some(dir) => snapshot_file::read_file(dir)?,
            None => None,
        };
        Ok(self)
    }
}

/// Reads the whole database, which must be in the current format (see
/// [`format::upgrade`]). The log is bounded by snapshot compaction, so this
/// is at most a few thousand entries.
pub fn load(db: &Database) -> Result<Contents, StoreError> {
    let txn = db.begin_read().map_err(redb_err)?;
    let mut contents = Contents::default();
    let log = txn.open_table(LOG).map_err(redb_err)?;
    for row in log.iter().map_err(redb_err)? {
        let (k, v) = row.map_err(redb_err)?;
        contents.log.push((k.value(), v.value().to_vec()));
    }
    let meta = txn.open_table(META).map_err(redb_err)?;
    for row in meta.iter().map_err(redb_err)? {
        let (k, v) = row.map_err(redb_err)?;
        contents
            .meta
            .insert(k.value().to_owned(), v.value().to_vec());
    }
    format::check_current(contents.meta.get(keys::FORMAT).map(Vec::as_slice))?;
    Ok(contents)
}

/// Encodes a value for storage.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes a stored value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}
