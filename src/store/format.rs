//! The format version of everything consensus stores and ships, and the
//! upgrade of a data dir written in an older one.
//!
//! postcard encodes by position: a field added to a registration, or a
//! variant inserted in a command, silently changes what old bytes mean. So
//! the encoding as a whole has one version number, [`CURRENT`], and it is
//! written down wherever the bytes may outlive the build that wrote them:
//!
//! - the data dir: [`keys::FORMAT`] in `META`, checked on
//!   every open, holds [`DATA_DIR`]: the encodings' version until 5, and
//!   since 6 also where things are kept (format 6 moved the snapshot out of
//!   the database into its own file with the encodings unchanged);
//! - every log entry's batch of commands (on disk and in AppendEntries), as
//!   `(version, postcard bytes of the commands)`;
//! - every snapshot body (stored, and shipped in InstallSnapshot), as
//!   `[version][postcard of the catalog]` ([`prefixed`], [`split`]).
//!
//! Opening a data dir ([`super::open`]): an empty one is stamped with
//! [`CURRENT`]; one without a version but with content was written before
//! versioning and is version 1; one newer than [`CURRENT`] is refused with
//! [`FormatError::Newer`], its contents untouched. [`upgrade`] then rewrites
//! an older one in place, in one write transaction: every log entry and the
//! snapshot re-encoded by functions consensus supplies (it knows the types;
//! the frozen types of version 1 are in [`super::v1`]), the snapshot moved
//! to its file, and the version stamped.
//!
//! Changing any encoded type (the commands, the catalog's tables, the stored
//! snapshot, openraft's entry and metadata) is a new version: bump
//! [`CURRENT`] and [`DATA_DIR`], freeze the old types beside [`super::v1`],
//! and add the step.
//! The golden-bytes tests beside each encoding fail until that is done.

use std::path::Path;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::Serialize;

use super::{LOG, META, StoreError, keys, redb_err};

/// A format version number.
pub type Version = u32;

/// The format this build writes, and the only one it reads without upgrading.
///
/// - 1: before versioning. Log entries carry a bare `Vec<Command>` with
///   `Command::{Register, Deregister}`; the snapshot body is bare postcard of
///   the catalog. No `format` key in `META`.
/// - 2: commands by domain (`Command::Catalog(CatalogOp::..)`); batches and
///   snapshot bodies carry their version; `META` has `format`.
/// - 3: KV, sessions and transactions. New `Command` variants after
///   `Catalog` (format 2's commands read unchanged); a batch's body is
///   `(time, commands)`, the leader's clock when it proposed the entry; the
///   snapshot gains the KV and session tables after the catalog's fields.
/// - 4: ACL tokens and policies. `Command::Acl` after format 3's variants
///   (format 3's batches read unchanged); the snapshot gains the ACL table
///   after the session fields.
/// - 5: prepared queries. `Command::PreparedQuery` after format 4's
///   variants (format 4's batches read unchanged); the snapshot gains the
///   prepared queries after the ACL fields.
pub const CURRENT: Version = 5;

/// The data dir version this build writes and reads without upgrading: the
/// `format` value in `META`. Never below [`CURRENT`]; bumped with it, and
/// alone when the layout changes with the encodings as they were.
///
/// - 1 to 5: as [`CURRENT`]; the stored snapshot is the `snapshot` value in
///   `META`.
/// - 6: format 5's encodings; the stored snapshot in its own file beside
///   the database (`store::snapshot_file::FILE_NAME`, the same bytes `META` held),
///   written outside the log's transactions.
pub const DATA_DIR: Version = 6;

/// The version of a data dir that has content but no `format` key: it was
/// written before formats were versioned.
pub const UNVERSIONED: Version = 1;

/// Why stored or received bytes are in a format this build cannot take.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The data dir was written by a newer trellis. Its contents were left as
    /// they were.
    #[error(
        "{file} is in data format version {found}, newer than this trellis reads \
         (version {ours}); run a trellis that reads version {found}"
    )]
    Newer {
        /// The version the data dir carries.
        found: Version,
        /// [`CURRENT`].
        ours: Version,
        /// The database file.
        file: String,
    },
    /// A value carries a version this build has no decoder for.
    #[error("{what} is in format version {found}; this trellis reads version {ours}")]
    Unreadable {
        /// What was being decoded.
        what: &'static str,
        /// The version it carries.
        found: Version,
        /// [`CURRENT`].
        ours: Version,
    },
    /// The data dir is older than [`CURRENT`] and was read without [`upgrade`].
    #[error("the data dir is in format version {found} and must be upgraded to {ours} first")]
    NotUpgraded {
        /// The version the data dir carries.
        found: Version,
        /// [`CURRENT`].
        ours: Version,
    },
}

impl FormatError {
    /// A value of `what` in version `found`, which this build does not decode.
    pub fn unreadable(what: &'static str, found: Version) -> Self {
        Self::Unreadable {
            what,
            found,
            ours: CURRENT,
        }
    }
}

/// Re-encodes one stored value written in the given older version into the
/// current format.
pub type Reencode = fn(Version, &[u8]) -> Result<Vec<u8>, StoreError>;

/// The data dir's version as `txn` sees it: the `format` key, else
/// [`UNVERSIONED`] if anything is stored, else `None` (a new database).
fn stored_version(txn: &WriteTransaction) -> Result<Option<Version>, StoreError> {
    let meta = txn.open_table(META).map_err(redb_err)?;
    if let Some(bytes) = meta.get(keys::FORMAT).map_err(redb_err)? {
        return Ok(Some(postcard::from_bytes(bytes.value())?));
    }
    let log = txn.open_table(LOG).map_err(redb_err)?;
    let empty = meta.is_empty().map_err(redb_err)? && log.is_empty().map_err(redb_err)?;
    Ok((!empty).then_some(UNVERSIONED))
}

/// On open: stamps a new database with [`CURRENT`] in `txn`, or refuses a
/// newer one. An older one is left for [`upgrade`].
pub(super) fn check_on_open(txn: &WriteTransaction, file: &str) -> Result<(), StoreError> {
    match stored_version(txn)? {
        None => {
            let mut meta = txn.open_table(META).map_err(redb_err)?;
            let bytes = postcard::to_stdvec(&DATA_DIR)?;
            meta.insert(keys::FORMAT, bytes.as_slice())
                .map_err(redb_err)?;
            Ok(())
        }
        Some(found) if found > DATA_DIR => Err(FormatError::Newer {
            found,
            ours: DATA_DIR,
            file: file.to_owned(),
        }
        .into()),
        Some(_) => Ok(()),
    }
}

/// Checks that the stored `format` value is [`DATA_DIR`], for reads.
pub(super) fn check_current(stored: Option<&[u8]>) -> Result<(), StoreError> {
    let found = match stored {
        Some(bytes) => postcard::from_bytes(bytes)?,
        None => UNVERSIONED,
    };
    if found == DATA_DIR {
        Ok(())
    } else {
        Err(FormatError::NotUpgraded {
            found,
            ours: DATA_DIR,
        }
        .into())
    }
}

/// What [`upgrade`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgraded {
    /// The version the data dir was in.
    pub from: Version,
    /// Log entries re-encoded.
    pub log_entries: usize,
    /// Whether a snapshot was re-encoded or moved to its file.
    pub snapshot: bool,
}

/// Rewrites a data dir of an older format into [`DATA_DIR`] in one durable
/// write transaction: every log entry through `log_entry` and the snapshot
/// through `snapshot` (from an older [`CURRENT`]), the snapshot out of
/// `META` into its file in `dir` (written before the transaction commits),
/// then the version. The other `META` values (vote, log ids, Raft id) are
/// openraft's and ours, unchanged since version 1. A crash part-way leaves
/// the old data dir whole (and maybe a snapshot file, which the next try
/// writes again). `None` when it was current.
pub fn upgrade(
    db: &Database,
    dir: Option<&Path>,
    log_entry: Reencode,
    snapshot: Reencode,
) -> Result<Option<Upgraded>, StoreError> {
    let mut txn = db.begin_write().map_err(redb_err)?;
    let from = match stored_version(&txn)? {
        Some(v) if v < DATA_DIR => v,
        // New databases were stamped on open and newer ones refused there.
        _ => {
            txn.abort().map_err(redb_err)?;
            return Ok(None);
        }
    };
    txn.set_durability(Durability::Immediate)
        .map_err(redb_err)?;
    let mut done = Upgraded {
        from,
        log_entries: 0,
        snapshot: false,
    };
    {
        let mut log = txn.open_table(LOG).map_err(redb_err)?;
        let mut rewritten = Vec::new();
        for row in log.iter().map_err(redb_err)? {
            let (index, bytes) = row.map_err(redb_err)?;
            if from < CURRENT {
                rewritten.push((index.value(), log_entry(from, bytes.value())?));
            }
        }
        for (index, bytes) in &rewritten {
            log.insert(*index, bytes.as_slice()).map_err(redb_err)?;
        }
        done.log_entries = rewritten.len();

        let mut meta = txn.open_table(META).map_err(redb_err)?;
        let stored = meta
            .get(keys::SNAPSHOT)
            .map_err(redb_err)?
            .map(|v| v.value().to_vec());
        if let Some(stored) = stored {
            let bytes = if from < CURRENT {
                snapshot(from, &stored)?
            } else {
                stored
            };
            let Some(dir) = dir else {
                return Err(StoreError::WriteFailed(
                    "an older data dir's snapshot has no directory to move to".into(),
                ));
            };
            super::snapshot_file::write_file_encoded(dir, &bytes)?;
            meta.remove(keys::SNAPSHOT).map_err(redb_err)?;
            done.snapshot = true;
        }
        let version = postcard::to_stdvec(&DATA_DIR)?;
        meta.insert(keys::FORMAT, version.as_slice())
            .map_err(redb_err)?;
    }
    txn.commit().map_err(redb_err)?;
    tracing::info!(
        from = done.from,
        to = DATA_DIR,
        log_entries = done.log_entries,
        snapshot = done.snapshot,
        "upgraded the raft data to the current format"
    );
    Ok(Some(done))
}

/// `[CURRENT][postcard of value]`: a body that says its version.
pub fn prefixed<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    let out = postcard::to_stdvec(&CURRENT)?;
    Ok(postcard::to_io(value, out)?)
}

/// Splits a body made by [`prefixed`] into its version and the rest.
pub fn split(bytes: &[u8]) -> Result<(Version, &[u8]), StoreError> {
    Ok(postcard::take_from_bytes(bytes)?)
}

/// Compares an encoding with the committed hex of what it was when
/// [`CURRENT`] was set; for the golden-bytes tests beside each encoding.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_golden(what: &str, bytes: &[u8], committed_hex: &str) {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        hex == committed_hex,
        "format changed: bump the version and add an upgrade (store/format.rs).\n\
         {what} encodes as\n  {hex}\nwhile format version {CURRENT} is\n  {committed_hex}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{encode, load, open};

    fn meta_value(dir: &Path, key: &str) -> Option<Vec<u8>> {
        let db = open(Some(dir)).expect("open");
        load(&db).expect("load").meta.get(key).cloned()
    }

    #[test]
    fn a_new_data_dir_is_stamped_with_the_current_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stamped = meta_value(dir.path(), keys::FORMAT).expect("format key");
        assert_golden("the format value", &stamped, "06");
    }

    #[test]
    fn a_data_dir_with_a_newer_format_is_refused_naming_both_versions_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(Some(dir.path())).expect("create"));
        {
            let db = Database::create(dir.path().join(super::super::FILE_NAME)).expect("db");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert(
                    keys::FORMAT,
                    encode(&(DATA_DIR + 1)).expect("encode").as_slice(),
                )
                .expect("insert");
            txn.commit().expect("commit");
        }
        let err = open(Some(dir.path())).expect_err("a newer format opens");
        let text = err.to_string();
        let file = dir.path().join("raft.redb").display().to_string();
        assert!(
            matches!(err, StoreError::Format(FormatError::Newer { found, ours, .. })
                if found == DATA_DIR + 1 && ours == DATA_DIR),
            "{err:?}"
        );
        for needle in [
            format!("version {}", DATA_DIR + 1),
            format!("version {DATA_DIR}"),
            file,
        ] {
            assert!(text.contains(&needle), "{text:?} lacks {needle:?}");
        }
    }

    /// The `META` values other than the snapshot (whose golden bytes are
    /// beside its type in consensus): openraft's vote and log id, our Raft
    /// id, unchanged since format 1; the format itself.
    #[test]
    fn meta_values_encode_as_format_5() {
        let leader = openraft::CommittedLeaderId::new(3, 7);
        let vote = openraft::Vote::<u64>::new_committed(3, 7);
        assert_golden("the vote", &encode(&vote).expect("encode"), "030701");
        let log_id = openraft::LogId::<u64>::new(leader, 10);
        assert_golden("a log id", &encode(&log_id).expect("encode"), "03070a");
        assert_golden("a node id", &encode(&7u64).expect("encode"), "07");
        assert_golden("the format", &encode(&CURRENT).expect("encode"), "05");
    }

    fn never_called(_: Version, _: &[u8]) -> Result<Vec<u8>, StoreError> {
        panic!("format 5's encodings are current: nothing is re-encoded")
    }

    /// Format 5 kept the snapshot in `META`: the upgrade to 6 moves the same
    /// bytes into the snapshot file, leaves the log as it was, and a crash
    /// before the upgrade committed leaves the data dir as format 5 (whose
    /// upgrade simply runs again).
    #[test]
    fn a_format_5_data_dir_upgrades_by_moving_its_snapshot_into_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshot = b"\x01\x02stored snapshot".to_vec();
        {
            let db = open(Some(dir.path())).expect("create");
            let txn = db.begin_write().expect("txn");
            {
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert(keys::FORMAT, encode(&5u32).expect("encode").as_slice())
                    .expect("format");
                meta.insert(keys::SNAPSHOT, snapshot.as_slice())
                    .expect("snapshot");
                let mut log = txn.open_table(LOG).expect("log");
                log.insert(7, b"entry".as_slice()).expect("entry");
            }
            txn.commit().expect("commit");
        }
        let db = open(Some(dir.path())).expect("open format 5");
        assert!(matches!(
            load(&db),
            Err(StoreError::Format(FormatError::NotUpgraded {
                found: 5,
                ..
            }))
        ));
        let done = upgrade(&db, Some(dir.path()), never_called, never_called).expect("upgrade");
        assert_eq!(
            done,
            Some(Upgraded {
                from: 5,
                log_entries: 0,
                snapshot: true
            })
        );
        let contents = load(&db)
            .and_then(|c| c.with_snapshot_file(Some(dir.path())))
            .expect("load format 6");
        assert_eq!(contents.snapshot, Some(snapshot));
        assert!(!contents.meta.contains_key(keys::SNAPSHOT));
        assert_eq!(contents.log, vec![(7, b"entry".to_vec())]);
        assert_eq!(
            upgrade(&db, Some(dir.path()), never_called, never_called).expect("again"),
            None
        );
    }

    #[test]
    fn prefixed_bodies_split_into_version_and_body() {
        let bytes = prefixed(&(7u64, "x")).expect("encode");
        let (version, body) = split(&bytes).expect("split");
        assert_eq!(version, CURRENT);
        let back: (u64, String) = postcard::from_bytes(body).expect("body");
        assert_eq!(back, (7, "x".into()));
    }
}
