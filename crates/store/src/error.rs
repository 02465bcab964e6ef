//! What can go wrong in the store, one variant per thing a user or operator would act on.

use std::path::PathBuf;

/// Errors of the history store. No store operation panics; everything ends up here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory that should hold the database file could not be created.
    #[error("cannot create the store directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error from `create_dir_all`.
        #[source]
        source: std::io::Error,
    },

    /// The database could not be opened or connected to (permissions, a directory in place of
    /// the file, a read-only filesystem, …).
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// The file is not a database of this backend, or the database is damaged (SQLite
    /// `SQLITE_NOTADB`/`SQLITE_CORRUPT`, or a failed `PRAGMA integrity_check`). Move the file
    /// away (keep it for analysis) and netprobe starts a fresh history.
    #[error("the store at {path} is not a valid database or is corrupt: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What the database engine said.
        detail: String,
    },

    /// Applying the schema migrations failed. A common cause is a database written by a newer
    /// netprobe (an applied migration this build does not know).
    #[error("migrating the store schema at {location} failed: {source}")]
    Migrate {
        /// Where the database is (file path, or connection target without credentials).
        location: String,
        /// sqlx's migration error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// A statement failed (disk full, I/O error, `SQLITE_BUSY` after the busy timeout, …).
    #[error("store query failed ({op}): {source}")]
    Query {
        /// The operation, e.g. `"append results"`.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// A stored row could not be decoded into a record (e.g. its JSON column is not JSON). Rows
    /// are only written by this crate, so this means outside tampering or damage.
    #[error("malformed row in {table} (id {id}): {detail}")]
    BadRow {
        /// The table.
        table: &'static str,
        /// The row id.
        id: i64,
        /// What was wrong.
        detail: String,
    },

    /// A record was refused before anything was written (see [`ResultRecord::validate`]).
    ///
    /// [`ResultRecord::validate`]: crate::ResultRecord::validate
    #[error("cannot store a record of check {check:?}: {detail}")]
    InvalidRecord {
        /// The record's check.
        check: String,
        /// What was wrong.
        detail: String,
    },

    /// The store was closed with [`Store::close`](crate::Store::close).
    #[error("the store is closed")]
    Closed,
}
