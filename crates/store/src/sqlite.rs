//! The embedded SQLite backend (bundled SQLite through sqlx).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{
    DiagnosisRecord, EventRecord, IsolationRecord, Json, MeshChunkRecord, ResultRecord, Store,
    StoreError,
};

/// Schema migrations, embedded at compile time from `crates/store/migrations/sqlite/`.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's write lock before failing with
/// `SQLITE_BUSY`. Generous: the only other writer is a prune chunk or another process (a CLI
/// verb reading the same file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections. WAL lets readers run next to the single writer without blocking it.
const READERS: u32 = 4;

/// Rows deleted per prune transaction, so the write lock is released between chunks.
const PRUNE_CHUNK: i64 = 5_000;

/// Upper bound on prune chunks per table per call (5 000 × 100 000 = 5 × 10⁸ rows); only a
/// concurrent writer inserting old rows forever could reach it.
const PRUNE_MAX_CHUNKS: u32 = 100_000;

/// SQLite primary result codes (<https://www.sqlite.org/rescode.html>) that mean the file is not
/// a usable database.
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_NOTADB: i32 = 26;

const INSERT_RESULTS_PREFIX: &str = "INSERT INTO results \
    (check_name, started_at_ms, success, reason, message, duration_seconds, details) ";
/// Most records per multi-row INSERT statement.
const ROWS_PER_INSERT: usize = 100;

/// Rows of the next multi-row INSERT when `remaining` records are left: `ROWS_PER_INSERT`, else
/// the largest power of two that fits. sqlx caches one prepared statement per distinct SQL text
/// and a 100-row INSERT compiles to tens of kB, so letting every remainder size (1–99) have its own
/// statement grew the writer connection by megabytes; this keeps it to 8 shapes, at the cost of
/// at most 6 extra statements per batch.
pub(crate) fn insert_rows(remaining: usize) -> usize {
    if remaining >= ROWS_PER_INSERT {
        ROWS_PER_INSERT
    } else {
        // `remaining` ≥ 1 here (callers stop at 0), so the shift is in range.
        1 << remaining.max(1).ilog2()
    }
}
const INSERT_EVENT: &str = "INSERT INTO events \
    (check_name, at_ms, from_state, to_state, message, results) VALUES (?, ?, ?, ?, ?, ?)";
const SELECT_RESULTS: &str = "SELECT id, check_name, started_at_ms, success, reason, message, \
    duration_seconds, details FROM results WHERE check_name = ? AND started_at_ms >= ? \
    ORDER BY started_at_ms DESC, id DESC LIMIT ?";
const SELECT_EVENTS: &str = "SELECT id, check_name, at_ms, from_state, to_state, message, \
    results FROM events WHERE check_name = ? AND at_ms >= ? ORDER BY at_ms DESC, id DESC LIMIT ?";
const PRUNE_RESULTS: &str = "DELETE FROM results WHERE id IN \
    (SELECT id FROM results WHERE started_at_ms < ? LIMIT ?)";
const PRUNE_EVENTS: &str =
    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at_ms < ? LIMIT ?)";
const INSERT_DIAGNOSIS: &str = "INSERT INTO diagnoses \
    (check_name, at_ms, conclusion, finding_ids, diagnosis) VALUES (?, ?, ?, ?, ?)";
const SELECT_DIAGNOSES: &str = "SELECT id, check_name, at_ms, conclusion, finding_ids, \
    diagnosis FROM diagnoses WHERE check_name = ? AND at_ms >= ? ORDER BY at_ms DESC, id DESC \
    LIMIT ?";
const PRUNE_DIAGNOSES: &str =
    "DELETE FROM diagnoses WHERE id IN (SELECT id FROM diagnoses WHERE at_ms < ? LIMIT ?)";

/// The SQLite history store: one file (plus its `-wal` and `-shm` companions).
///
/// Writes go through a pool of exactly one connection, because SQLite allows one writer at a
/// time and a single connection never waits on itself; reads use a separate small pool, which WAL
/// lets run concurrently with the writer. See the crate docs for the schema and durability.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: SqlitePool,
    readers: SqlitePool,
}

#[derive(sqlx::FromRow)]
struct ResultRow {
    id: i64,
    check_name: String,
    started_at_ms: i64,
    success: bool,
    reason: Option<String>,
    message: String,
    duration_seconds: f64,
    details: String,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    check_name: String,
    at_ms: i64,
    from_state: String,
    to_state: String,
    message: String,
    results: String,
}

#[derive(sqlx::FromRow)]
struct IsolationRow {
    id: i64,
    action: String,
    netns: String,
    at_ms: i64,
    who: String,
    reason: String,
    rules: String,
    details: String,
}

const INSERT_ISOLATION: &str = "INSERT INTO isolations \
    (action, netns, at_ms, who, reason, rules, details) VALUES (?, ?, ?, ?, ?, ?, ?)";
const SELECT_ISOLATIONS: &str = "SELECT id, action, netns, at_ms, who, reason, rules, details \
    FROM isolations ORDER BY at_ms DESC, id DESC LIMIT ?";

impl TryFrom<IsolationRow> for IsolationRecord {
    type Error = StoreError;
    fn try_from(r: IsolationRow) -> Result<Self, StoreError> {
        Ok(Self {
            rules: Json::from_text(r.rules).map_err(|e| bad_json("isolations", r.id, &e))?,
            details: Json::from_text(r.details).map_err(|e| bad_json("isolations", r.id, &e))?,
            id: Some(r.id),
            action: r.action,
            netns: r.netns,
            at_ms: r.at_ms,
            who: r.who,
            reason: r.reason,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DiagnosisRow {
    id: i64,
    check_name: String,
    at_ms: i64,
    conclusion: String,
    finding_ids: String,
    diagnosis: String,
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directory) the database at `path`, applies
    /// pending migrations and returns the store.
    ///
    /// Connections use WAL journal mode, `synchronous = NORMAL`, foreign keys on, a 5 s busy
    /// timeout and `temp_store = MEMORY`. If the filesystem refuses WAL (some network filesystems), SQLite keeps its
    /// rollback journal; that is logged as a warning and the store still works.
    ///
    /// Errors: [`StoreError::CreateDir`], [`StoreError::Open`] (e.g. permissions, `path` is a
    /// directory), [`StoreError::Corrupt`] (not an SQLite file, damaged header or schema),
    /// [`StoreError::Migrate`] (e.g. written by a newer netprobe).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| StoreError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Statement journals (a multi-row INSERT inside a transaction keeps one, to undo just
            // that statement) and temporary tables live in memory instead of temporary files: a
            // mesh agent's writer otherwise spent a fifth of its SQLite time in ext4 writes to them.
            .pragma("temp_store", "memory");

        let open_err = |source: sqlx::Error| match corrupt_detail(&source) {
            Some(detail) => StoreError::Corrupt {
                path: path.to_path_buf(),
                detail,
            },
            None => StoreError::Open {
                path: path.to_path_buf(),
                source,
            },
        };
        // min_connections(1): the writer connection is opened here, so a bad path or a
        // non-database file fails `open` instead of the first write.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;

        let store = Self {
            path: path.to_path_buf(),
            readers: SqlitePoolOptions::new()
                .max_connections(READERS)
                .min_connections(0)
                .connect_lazy_with(options),
            writer,
        };
        if let Err(e) = store.migrate().await {
            store.close_pools().await;
            return Err(e);
        }

        let mode: Result<String, _> = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.writer)
            .await;
        match mode {
            Ok(m) if m.eq_ignore_ascii_case("wal") => {}
            Ok(m) => tracing::warn!(
                path = %path.display(),
                journal_mode = %m,
                "SQLite refused WAL mode; writes block readers and commits are slower"
            ),
            Err(e) => {
                store.close_pools().await;
                return Err(store.query_err("read journal mode", e));
            }
        }
        tracing::debug!(path = %path.display(), "store opened");
        Ok(store)
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `PRAGMA integrity_check` (<https://www.sqlite.org/pragma.html#pragma_integrity_check>)
    /// over the whole file. It reads every page, so it takes time proportional to the size of the
    /// database; meant for a startup or CLI check, not for every request.
    ///
    /// Errors: [`StoreError::Corrupt`] with the first problems SQLite reports, or a query error.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        let lines: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check(20)")
            .fetch_all(&self.readers)
            .await
            .map_err(|e| self.query_err("integrity check", e))?;
        if lines.len() == 1 && lines[0] == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: lines.join("; "),
            })
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await.map_err(|source| {
            let inner = match &source {
                MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
                    corrupt_detail(e)
                }
                _ => None,
            };
            match inner {
                Some(detail) => StoreError::Corrupt {
                    path: self.path.clone(),
                    detail,
                },
                None => StoreError::Migrate {
                    location: self.path.display().to_string(),
                    source,
                },
            }
        })
    }

    async fn close_pools(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    pub(crate) fn writer_pool(&self) -> &SqlitePool {
        &self.writer
    }

    pub(crate) fn reader_pool(&self) -> &SqlitePool {
        &self.readers
    }

    pub(crate) fn query_err(&self, op: &'static str, source: sqlx::Error) -> StoreError {
        if matches!(source, sqlx::Error::PoolClosed) {
            return StoreError::Closed;
        }
        match corrupt_detail(&source) {
            Some(detail) => StoreError::Corrupt {
                path: self.path.clone(),
                detail,
            },
            None => StoreError::Query { op, source },
        }
    }

    async fn prune_table(&self, sql: &'static str, older_than_ms: i64) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for _ in 0..PRUNE_MAX_CHUNKS {
            let done = sqlx::query(sql)
                .bind(older_than_ms)
                .bind(PRUNE_CHUNK)
                .execute(&self.writer)
                .await
                .map_err(|e| self.query_err("prune", e))?
                .rows_affected();
            total += done;
            if done < PRUNE_CHUNK.unsigned_abs() {
                break;
            }
        }
        Ok(total)
    }
}

/// `Some(message)` if `e` says the file is not a database or is damaged.
fn corrupt_detail(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    // sqlx reports SQLite's extended result code; the primary code is its low byte.
    let code = db.code()?.parse::<i32>().ok()? & 0xff;
    (code == SQLITE_CORRUPT || code == SQLITE_NOTADB).then(|| db.message().to_owned())
}

fn to_json(check: &str, value: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::InvalidRecord {
        check: check.to_owned(),
        detail: format!("JSON column cannot be serialized: {e}"),
    })
}

fn from_json(table: &'static str, id: i64, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| bad_json(table, id, &e))
}

fn bad_json(table: &'static str, id: i64, e: &serde_json::Error) -> StoreError {
    StoreError::BadRow {
        table,
        id,
        detail: format!("JSON column is not JSON: {e}"),
    }
}

impl TryFrom<ResultRow> for ResultRecord {
    type Error = StoreError;
    fn try_from(r: ResultRow) -> Result<Self, StoreError> {
        Ok(Self {
            details: Json::from_text(r.details).map_err(|e| bad_json("results", r.id, &e))?,
            id: Some(r.id),
            check: r.check_name,
            started_at_ms: r.started_at_ms,
            success: r.success,
            reason: r.reason,
            message: r.message,
            duration_seconds: r.duration_seconds,
        })
    }
}

impl TryFrom<EventRow> for EventRecord {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        Ok(Self {
            results: from_json("events", r.id, &r.results)?,
            id: Some(r.id),
            check: r.check_name,
            at_ms: r.at_ms,
            from_state: r.from_state,
            to_state: r.to_state,
            message: r.message,
        })
    }
}

impl TryFrom<DiagnosisRow> for DiagnosisRecord {
    type Error = StoreError;
    fn try_from(r: DiagnosisRow) -> Result<Self, StoreError> {
        let finding_ids = serde_json::from_str(&r.finding_ids).map_err(|e| StoreError::BadRow {
            table: "diagnoses",
            id: r.id,
            detail: format!("finding_ids is not a JSON array of strings: {e}"),
        })?;
        Ok(Self {
            diagnosis: Json::from_text(r.diagnosis).map_err(|e| bad_json("diagnoses", r.id, &e))?,
            finding_ids,
            id: Some(r.id),
            check: r.check_name,
            at_ms: r.at_ms,
            conclusion: r.conclusion,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn append_results(&self, batch: &[ResultRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Validate everything first, so a bad record never opens a transaction. Details are
        // already JSON text.
        for r in batch {
            r.validate()?;
        }
        let err = |e| self.query_err("append results", e);
        let mut tx = self.writer.begin().await.map_err(err)?;
        // Multi-row INSERTs: one statement per ROWS_PER_INSERT records instead of one per record cuts
        // the per-row round trip through sqlx's SQLite worker thread, which limits a 10,000-checks/s
        // daemon otherwise. 7 parameters per row stays far below SQLite's variable limit.
        let mut rest = batch;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(insert_rows(rest.len()));
            rest = tail;
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(INSERT_RESULTS_PREFIX);
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.check.as_str())
                    .push_bind(r.started_at_ms)
                    .push_bind(r.success)
                    .push_bind(r.reason.as_deref())
                    .push_bind(r.message.as_str())
                    .push_bind(r.duration_seconds)
                    .push_bind(r.details.as_str());
            });
            qb.build().execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    async fn append_events(&self, batch: &[EventRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let encoded = batch
            .iter()
            .map(|e| to_json(&e.check, &e.results))
            .collect::<Result<Vec<_>, _>>()?;
        let err = |e| self.query_err("append events", e);
        let mut tx = self.writer.begin().await.map_err(err)?;
        for (e, results) in batch.iter().zip(encoded) {
            sqlx::query(INSERT_EVENT)
                .bind(e.check.as_str())
                .bind(e.at_ms)
                .bind(e.from_state.as_str())
                .bind(e.to_state.as_str())
                .bind(e.message.as_str())
                .bind(results)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    async fn results(
        &self,
        check: &str,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ResultRecord>, StoreError> {
        sqlx::query_as::<_, ResultRow>(SELECT_RESULTS)
            .bind(check)
            .bind(since_ms.unwrap_or(i64::MIN))
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| self.query_err("read results", e))?
            .into_iter()
            .map(ResultRecord::try_from)
            .collect()
    }

    async fn events(
        &self,
        check: &str,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        sqlx::query_as::<_, EventRow>(SELECT_EVENTS)
            .bind(check)
            .bind(since_ms.unwrap_or(i64::MIN))
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| self.query_err("read events", e))?
            .into_iter()
            .map(EventRecord::try_from)
            .collect()
    }

    async fn latest_result(&self, check: &str) -> Result<Option<ResultRecord>, StoreError> {
        Ok(self.results(check, None, 1).await?.into_iter().next())
    }

    async fn append_diagnosis(&self, record: &DiagnosisRecord) -> Result<i64, StoreError> {
        let ids =
            serde_json::to_string(&record.finding_ids).map_err(|e| StoreError::InvalidRecord {
                check: record.check.clone(),
                detail: format!("finding_ids cannot be serialized: {e}"),
            })?;
        let done = sqlx::query(INSERT_DIAGNOSIS)
            .bind(record.check.as_str())
            .bind(record.at_ms)
            .bind(record.conclusion.as_str())
            .bind(ids)
            .bind(record.diagnosis.as_str())
            .execute(&self.writer)
            .await
            .map_err(|e| self.query_err("append diagnosis", e))?;
        Ok(done.last_insert_rowid())
    }

    async fn diagnoses(
        &self,
        check: &str,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DiagnosisRecord>, StoreError> {
        sqlx::query_as::<_, DiagnosisRow>(SELECT_DIAGNOSES)
            .bind(check)
            .bind(since_ms.unwrap_or(i64::MIN))
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| self.query_err("read diagnoses", e))?
            .into_iter()
            .map(DiagnosisRecord::try_from)
            .collect()
    }

    async fn latest_diagnosis(&self, check: &str) -> Result<Option<DiagnosisRecord>, StoreError> {
        Ok(self.diagnoses(check, None, 1).await?.into_iter().next())
    }

    async fn append_isolation(&self, record: &IsolationRecord) -> Result<i64, StoreError> {
        let done = sqlx::query(INSERT_ISOLATION)
            .bind(record.action.as_str())
            .bind(record.netns.as_str())
            .bind(record.at_ms)
            .bind(record.who.as_str())
            .bind(record.reason.as_str())
            .bind(record.rules.as_str())
            .bind(record.details.as_str())
            .execute(&self.writer)
            .await
            .map_err(|e| self.query_err("append isolation", e))?;
        Ok(done.last_insert_rowid())
    }

    async fn isolations(&self, limit: u32) -> Result<Vec<IsolationRecord>, StoreError> {
        sqlx::query_as::<_, IsolationRow>(SELECT_ISOLATIONS)
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| self.query_err("read isolations", e))?
            .into_iter()
            .map(IsolationRecord::try_from)
            .collect()
    }

    async fn prune(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let results = self.prune_table(PRUNE_RESULTS, older_than_ms).await?;
        let events = self.prune_table(PRUNE_EVENTS, older_than_ms).await?;
        let diagnoses = self.prune_table(PRUNE_DIAGNOSES, older_than_ms).await?;
        let mesh = self.prune_mesh(older_than_ms).await?;
        Ok(results + events + diagnoses + mesh)
    }

    async fn prune_mesh(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let chunks = self
            .prune_table(crate::sqlite_mesh::PRUNE_MESH_CHUNKS, older_than_ms)
            .await?;
        let legacy = self
            .prune_table(crate::sqlite_mesh::PRUNE_LEGACY_MESH_ROUNDS, older_than_ms)
            .await?;
        Ok(chunks + legacy)
    }

    async fn append_mesh_chunks(&self, batch: &[MeshChunkRecord]) -> Result<(), StoreError> {
        self.insert_mesh_chunks(batch).await
    }

    async fn mesh_chunks(
        &self,
        target_node: &str,
        rounds: u32,
    ) -> Result<Vec<MeshChunkRecord>, StoreError> {
        self.select_mesh_chunks(target_node, rounds).await
    }

    async fn close(&self) {
        self.close_pools().await;
        tracing::debug!(path = %self.path.display(), "store closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_chunks_cover_every_batch_with_few_statement_shapes() {
        let mut shapes = std::collections::BTreeSet::new();
        for len in 0..=1_000 {
            let (mut rest, mut covered) = (len, 0);
            while rest > 0 {
                let n = insert_rows(rest);
                assert!((1..=rest.min(ROWS_PER_INSERT)).contains(&n), "{len}: {n}");
                shapes.insert(n);
                covered += n;
                rest -= n;
            }
            assert_eq!(covered, len);
        }
        assert_eq!(
            shapes.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64, 100]
        );
    }
}
