//! The database file in a data dir: a new one is made whole before it takes
//! its name, and an existing one that is not trellis's is refused.
//!
//! A server that opened an empty or foreign `raft.redb` as if it were new
//! would start a fresh, empty cluster in place of the one it belonged to
//! (or, alone, lose its catalog) without a word. So only a file this build
//! recognises opens: a redb database whose tables are [`LOG`](super::LOG)
//! and [`META`](super::META). Anything else is left exactly as found and
//! reported naming the file, with what the operator can do.
//!
//! For that rule to never refuse trellis's own file, a new database is
//! created under a temporary name ([`NEW_SUFFIX`]), given its tables and
//! its format version, and only then renamed to `raft.redb`: a crash while
//! creating leaves the temporary file, which the next start replaces, and
//! never an empty `raft.redb`.

use std::io::Read;
use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, TableHandle};

use super::{LOG, META, StoreError, redb_err};

/// The first bytes of every redb file (redb's `MAGICNUMBER`, part of its
/// stable file format since 1.0): what tells a redb database from any other
/// file before redb is let near it.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Appended to the file name while a new database is being created.
pub(super) const NEW_SUFFIX: &str = ".new";

/// An opened database file.
pub(super) struct Opened {
    /// The database.
    pub(super) db: Database,
    /// For a new database, the temporary file to rename to its real name
    /// once its tables and version are committed ([`finish_new`]).
    pub(super) new: Option<PathBuf>,
}

/// Opens the database at `path`, or creates one under a temporary name if
/// there is none. An existing file that is not a trellis database is
/// refused with [`StoreError::NotOurs`], untouched.
pub(super) fn open_or_create(path: &Path) -> Result<Opened, StoreError> {
    let file = path.display().to_string();
    let not_ours = |why: String| StoreError::NotOurs {
        file: file.clone(),
        why,
    };
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return create_new(path),
        Err(source) => return Err(StoreError::File { file, source }),
    };
    if len == 0 {
        return Err(not_ours("is empty (0 bytes)".into()));
    }
    let mut head = [0u8; REDB_MAGIC.len()];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    match read {
        Ok(()) if head == REDB_MAGIC => {}
        Ok(()) => return Err(not_ours("is not a redb database".into())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(not_ours(format!(
                "is not a redb database (only {len} bytes long)"
            )));
        }
        Err(source) => return Err(StoreError::File { file, source }),
    }
    // Look without writing first: redb's read-write open stamps the file
    // even when nothing changes. A database that was not closed cleanly
    // (a killed server's) cannot be read so; it is recovered by the
    // read-write open and looked at after.
    let (tables, db) = match ReadOnlyDatabase::open(path) {
        Ok(ro) => {
            let tables = table_names(&ro)?;
            ro.close().map_err(redb_err)?;
            (tables, None)
        }
        Err(DatabaseError::RepairAborted) => {
            let db = open_rw(path, &not_ours)?;
            (table_names(&db)?, Some(db))
        }
        // Another process holds it: not a question of whose file it is.
        Err(e @ DatabaseError::DatabaseAlreadyOpen) => return Err(redb_err(e)),
        Err(e) => return Err(not_ours(does_not_open(&e))),
    };
    let ours = [LOG.name(), META.name()];
    let foreign: Vec<&str> = tables
        .iter()
        .map(String::as_str)
        .filter(|t| !ours.contains(t))
        .collect();
    if !tables.iter().any(|t| t == META.name()) || !foreign.is_empty() {
        let held = if tables.is_empty() {
            "no tables".to_owned()
        } else {
            format!("tables {}", tables.join(", "))
        };
        return Err(not_ours(format!(
            "is a redb database but not a trellis one (it holds {held}; trellis keeps {} and {})",
            LOG.name(),
            META.name()
        )));
    }
    let db = match db {
        Some(db) => db,
        None => open_rw(path, &not_ours)?,
    };
    Ok(Opened { db, new: None })
}

/// Opens the database for writing.
fn open_rw(path: &Path, not_ours: &dyn Fn(String) -> StoreError) -> Result<Database, StoreError> {
    match Database::builder()
        .set_cache_size(super::CACHE_BYTES)
        .open(path)
    {
        Ok(db) => Ok(db),
        Err(e @ DatabaseError::DatabaseAlreadyOpen) => Err(redb_err(e)),
        Err(e) => Err(not_ours(does_not_open(&e))),
    }
}

fn does_not_open(e: &DatabaseError) -> String {
    format!("starts like a redb database but does not open as one ({e})")
}

/// The names of the tables in `db`.
fn table_names(db: &impl ReadableDatabase) -> Result<Vec<String>, StoreError> {
    let txn = db.begin_read().map_err(redb_err)?;
    let names = txn
        .list_tables()
        .map_err(redb_err)?
        .map(|t| t.name().to_owned())
        .collect();
    Ok(names)
}

/// Creates a database beside `path`, under [`NEW_SUFFIX`], replacing one
/// left by a start that crashed while creating it.
fn create_new(path: &Path) -> Result<Opened, StoreError> {
    let tmp = temporary(path);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StoreError::File {
                file: tmp.display().to_string(),
                source,
            });
        }
    }
    let db = Database::builder()
        .set_cache_size(super::CACHE_BYTES)
        .create(&tmp)
        .map_err(redb_err)?;
    Ok(Opened { db, new: Some(tmp) })
}

/// Gives a new database, now committed with its tables and version, its
/// real name, durably (the directory is synced, so the rename survives a
/// crash). The open handle stays valid across the rename.
pub(super) fn finish_new(tmp: &Path, path: &Path) -> Result<(), StoreError> {
    let file = path.display().to_string();
    std::fs::rename(tmp, path).map_err(|source| StoreError::File {
        file: file.clone(),
        source,
    })?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::File {
                file: dir.display().to_string(),
                source,
            })?;
    }
    Ok(())
}

/// Where a new database is created before it takes the name `path`.
pub(super) fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(NEW_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FILE_NAME, open};
    use redb::TableDefinition;

    fn refused(dir: &Path) -> String {
        let err = open(Some(dir)).expect_err("opened");
        assert!(matches!(err, StoreError::NotOurs { .. }), "{err:?}");
        let text = err.to_string();
        let file = dir.join(FILE_NAME).display().to_string();
        assert!(text.contains(&file), "{text:?} does not name {file}");
        assert!(text.contains("move"), "{text:?} says nothing to do");
        text
    }

    #[test]
    fn a_zero_length_database_is_refused_and_left_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"").expect("write");
        let text = refused(dir.path());
        assert!(text.contains("empty (0 bytes)"), "{text}");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
    }

    #[test]
    fn a_file_that_is_not_redb_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let bytes = b"SQLite format 3\0 and then some more bytes".repeat(100);
        std::fs::write(&path, &bytes).expect("write");
        assert!(refused(dir.path()).contains("not a redb database"));
        assert!(
            std::fs::read(&path).expect("read") == bytes,
            "the file changed"
        );
        // Shorter than redb's header.
        std::fs::write(&path, b"redb").expect("write");
        assert!(refused(dir.path()).contains("only 4 bytes"));
    }

    #[test]
    fn a_redb_database_of_another_program_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            let other: TableDefinition<'_, u64, u64> = TableDefinition::new("accounts");
            txn.open_table(other)
                .expect("table")
                .insert(1, 2)
                .expect("insert");
            txn.commit().expect("commit");
        }
        let before = std::fs::read(&path).expect("read");
        let text = refused(dir.path());
        assert!(text.contains("tables accounts"), "{text}");
        assert!(
            std::fs::read(&path).expect("read") == before,
            "the file changed"
        );

        // Nor one with no tables at all.
        std::fs::remove_file(&path).expect("rm");
        drop(Database::create(&path).expect("create"));
        assert!(refused(dir.path()).contains("no tables"));
    }

    #[test]
    fn a_new_database_takes_its_name_only_once_created_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        // A start that crashed while creating left a temporary file behind.
        std::fs::write(temporary(&path), b"half").expect("write");
        drop(open(Some(dir.path())).expect("create"));
        assert!(!temporary(&path).exists());
        // It opens again as trellis's own.
        drop(open(Some(dir.path())).expect("reopen"));
    }
}
