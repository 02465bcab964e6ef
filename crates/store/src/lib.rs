//! netprobe's history store: probe results, check state-change events, diagnoses and isolations.
//!
//! The [`Store`] trait is what the rest of netprobe talks to; [`SqliteStore`] is the embedded
//! default backend (PostgreSQL comes later behind the same trait). [`Writer`] batches records from
//! the scheduler into the store off the hot path, and [`spawn_pruner`] enforces retention.
//!
//! # Schema
//!
//! Four append-only tables, created by versioned migrations embedded from
//! `crates/store/migrations/sqlite/` (applied on [`SqliteStore::open`]; sqlx records them in
//! `_sqlx_migrations`):
//!
//! - `results`: `id`, `check_name`, `started_at_ms`, `success` (0/1), `reason` (nullable),
//!   `message`, `duration_seconds` (REAL), `details` (JSON text); indexed on
//!   `(check_name, started_at_ms)` for history reads and on `(started_at_ms)` for pruning.
//! - `events`: `id`, `check_name`, `at_ms`, `from_state`, `to_state`, `message`, `results`
//!   (JSON text); indexed on `(check_name, at_ms)` and `(at_ms)`.
//! - `diagnoses` (migration 2): `id`, `check_name`, `at_ms`, `conclusion`, `finding_ids` (JSON
//!   array text), `diagnosis` (JSON text); indexed on `(check_name, at_ms)` and `(at_ms)`.
//!   Written directly (one row per diagnosis, a few per check per hour at most), not through the
//!   [`Writer`].
//! - `isolations` (migration 3): `id`, `action` (`isolate`/`release`), `netns`, `at_ms`, `who`,
//!   `reason`, `rules` (JSON text), `details` (JSON text); indexed on `(at_ms)`. An audit trail:
//!   [`Store::prune`] leaves it alone.
//!
//! The schema is portable on purpose: timestamps are Unix epoch **milliseconds** in an integer
//! column, JSON is stored as text and is opaque to the store, and the column holding the check
//! name is `check_name` because `CHECK` is a reserved word in SQL. Ids are assigned by the store,
//! increase monotonically and are never reused (SQLite `AUTOINCREMENT`), even after pruning.
//! Reads return newest first, ordered by timestamp then id.
//!
//! # Durability
//!
//! The SQLite database runs in WAL journal mode with `synchronous = NORMAL`
//! (<https://www.sqlite.org/pragma.html#pragma_synchronous>, <https://www.sqlite.org/wal.html>):
//!
//! - A call that returned `Ok` has committed its transaction to the WAL file. It survives a crash
//!   of the process (panic, OOM kill, `kill -9`): the next open replays the WAL. The test suite
//!   checks exactly this by SIGKILLing a writer in the middle of its batches.
//! - A batch is one transaction: after a crash it is either entirely present or entirely absent.
//! - **Power loss or a kernel crash may lose the last transactions committed** before the WAL was
//!   synced to disk at a checkpoint; the database itself stays consistent. This is the trade
//!   `synchronous = NORMAL` makes for not calling `fsync` on every commit; history of a health
//!   monitor can afford it.
//! - Records still queued in a [`Writer`] are in memory only until its next flush (every
//!   [`WriterOptions::flush_interval`], default 1 s); [`WriterHandle::shutdown`] flushes them.
//!
//! # Concurrency
//!
//! A [`SqliteStore`] writes through one connection (SQLite admits one writer at a time) and reads
//! through up to four more, which WAL lets run beside the writer. Other processes (a CLI verb)
//! may open the same file; a writer waits up to 5 s (busy timeout) for another's write lock.
//! Back up the `-wal` file with the database, or copy only after [`Store::close`].

#![deny(missing_docs)]

mod error;
mod pruner;
mod record;
mod sqlite;
mod sqlite_mesh;
mod writer;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

pub use error::StoreError;
pub use pruner::spawn_pruner;
pub use record::{
    DiagnosisRecord, EventRecord, IsolationRecord, Json, MeshChunkRecord, ResultRecord,
};
pub use sqlite::SqliteStore;
pub use writer::{Writer, WriterHandle, WriterOptions, WriterStats, WriterStatsSnapshot};

/// A history backend: append-only tables of probe results and check state-change events.
///
/// Implementations are shared between tasks (`Arc<dyn Store>`); every method takes `&self`.
/// Timestamps are Unix epoch milliseconds. Reads filter on one check name exactly (no patterns)
/// and return rows newest first (by timestamp, then by id for rows with the same timestamp).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends `batch` in one transaction: after `Ok` every record is durable (see the crate docs
    /// for what that means per backend); after `Err` none is. The `id` field of the records is
    /// ignored: the store assigns ids. An empty batch is a no-op.
    ///
    /// Errors: [`StoreError::InvalidRecord`] if a record cannot be stored (checked before
    /// anything is written), [`StoreError::Query`]/[`StoreError::Corrupt`]/[`StoreError::Closed`]
    /// from the database.
    async fn append_results(&self, batch: &[ResultRecord]) -> Result<(), StoreError>;

    /// Appends `batch` of events in one transaction; same contract as
    /// [`append_results`](Store::append_results).
    async fn append_events(&self, batch: &[EventRecord]) -> Result<(), StoreError>;

    /// Results of `check` with `started_at_ms >= since_ms` (all if `None`), newest first, at most
    /// `limit` rows (`0` returns none).
    async fn results(
        &self,
        check: &str,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ResultRecord>, StoreError>;

    /// Events of `check` with `at_ms >= since_ms` (all if `None`), newest first, at most `limit`
    /// rows (`0` returns none).
    async fn events(
        &self,
        check: &str,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// The newest result of `check` (greatest `started_at_ms`, then greatest id), if any.
    async fn latest_result(&self, check: &str) -> Result<Option<ResultRecord>, StoreError>;

    /// Appends one diagnosis and returns the id the store gave it.
    ///
    /// Errors: [`StoreError::InvalidRecord`] if `finding_ids` cannot be encoded, or a database
    /// error as for [`append_results`](Store::append_results).
    async fn append_diagnosis(&self, record: &DiagnosisRecord) -> Result<i64, StoreError>;

    /// Diagnoses of `check` with `at_ms >= since_ms` (all if `None`), newest first, at most
    /// `limit` rows (`0` returns none).
    async fn diagnoses(
        &self,
        check: &str,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DiagnosisRecord>, StoreError>;

    /// The newest diagnosis of `check` (greatest `at_ms`, then greatest id), if any.
    async fn latest_diagnosis(&self, check: &str) -> Result<Option<DiagnosisRecord>, StoreError>;

    /// Appends one isolation or release record and returns the id the store gave it. Errors: a
    /// database error as for [`append_results`](Store::append_results).
    async fn append_isolation(&self, record: &IsolationRecord) -> Result<i64, StoreError>;

    /// Isolation and release records, newest first, at most `limit` (`0` returns none).
    async fn isolations(&self, limit: u32) -> Result<Vec<IsolationRecord>, StoreError>;

    /// Appends mesh chunks in one transaction.
    ///
    /// Errors: a database error as for [`append_results`](Store::append_results).
    async fn append_mesh_chunks(&self, batch: &[MeshChunkRecord]) -> Result<(), StoreError>;

    /// The newest mesh chunks of each address of `target_node`: for every `target_ip` stored,
    /// newest first (by `last_ms`, then id), as many chunks as it takes to hold at least `rounds`
    /// rounds (all of them if it has fewer). Addresses come in text order.
    ///
    /// Errors: a database error as for [`append_results`](Store::append_results).
    async fn mesh_chunks(
        &self,
        target_node: &str,
        rounds: u32,
    ) -> Result<Vec<MeshChunkRecord>, StoreError>;

    /// Deletes results with `started_at_ms < older_than_ms`, mesh chunks with
    /// `last_ms < older_than_ms` (and schema 4's mesh rounds with `started_ms < older_than_ms`),
    /// and events and diagnoses with
    /// `at_ms < older_than_ms`, returning how many rows were deleted in total.
    ///
    /// Deletion happens in bounded chunks, each its own transaction, so that a large prune does
    /// not hold the write lock for long; an error part-way leaves the rows deleted so far deleted.
    async fn prune(&self, older_than_ms: i64) -> Result<u64, StoreError>;

    /// Deletes only mesh history: chunks with `last_ms < older_than_ms` (and schema 4's mesh
    /// rounds with `started_ms < older_than_ms`), for a mesh retention shorter than the store's;
    /// returns how many rows were deleted. Chunked like [`prune`](Store::prune).
    async fn prune_mesh(&self, older_than_ms: i64) -> Result<u64, StoreError>;

    /// Closes the backend: waits for in-flight operations, then releases connections (SQLite
    /// checkpoints its WAL into the main file when the last connection closes). Later calls fail
    /// with [`StoreError::Closed`]. Idempotent.
    async fn close(&self);
}

/// Longest timer period the writer and pruner accept: tokio's interval panics when adding a
/// period overflows its clock, and nothing useful waits longer than a year.
const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);

/// The current wall-clock time as Unix epoch milliseconds, the unit of every timestamp in the
/// store. A clock before 1970 gives a negative value; one past year 292 million saturates.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}
