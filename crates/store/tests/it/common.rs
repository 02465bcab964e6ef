//! Record builders and raw-SQLite helpers shared by the tests.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, Connection};
use store::{EventRecord, ResultRecord, SqliteStore};
use tempfile::TempDir;

/// A result of `check` started at `t` ms; `n` makes records distinguishable.
pub fn result(check: &str, t: i64, n: u64) -> ResultRecord {
    let success = !n.is_multiple_of(3);
    ResultRecord {
        id: None,
        check: check.to_owned(),
        started_at_ms: t,
        success,
        reason: (!success).then(|| "connection-refused".to_owned()),
        message: format!("result {n} of {check}"),
        duration_seconds: 0.001 * n as f64,
        details: json!({"n": n, "phases": {"connect": 0.0005}, "text": "héllo ✓"}).into(),
    }
}

/// An event of `check` at `t` ms.
pub fn event(check: &str, t: i64, n: u64) -> EventRecord {
    EventRecord {
        id: None,
        check: check.to_owned(),
        at_ms: t,
        from_state: "healthy".to_owned(),
        to_state: "unhealthy".to_owned(),
        message: format!("event {n} of {check}"),
        results: json!([{"n": n, "success": false}]),
    }
}

/// The record as it was sent, with the store-assigned id removed.
pub fn strip_result(mut r: ResultRecord) -> ResultRecord {
    assert!(r.id.is_some(), "a record read back must carry its id");
    r.id = None;
    r
}

/// The event as it was sent, with the store-assigned id removed.
pub fn strip_event(mut e: EventRecord) -> EventRecord {
    assert!(e.id.is_some(), "an event read back must carry its id");
    e.id = None;
    e
}

/// A fresh store in a new temporary directory (kept alive by the returned guard).
pub async fn open_tmp() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("history.db"))
        .await
        .expect("open a fresh store");
    (dir, store)
}

/// A plain connection to the file, independent of the store's own setup.
pub async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("raw connection")
}

/// Runs one statement on a raw connection.
pub async fn exec(conn: &mut SqliteConnection, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `SELECT count(*)` of a query on a raw connection.
pub async fn count(conn: &mut SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Polls `cond` every 20 ms for at most `limit`; panics with `what` if it never holds.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let step = Duration::from_millis(20);
    let tries = limit.as_millis() / step.as_millis() + 1;
    for _ in 0..tries {
        if cond().await {
            return;
        }
        tokio::time::sleep(step).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}
