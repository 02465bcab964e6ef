//! The batching writer against a real SQLite store. Write failures are real SQLite errors,
//! injected with a trigger that aborts inserts while a row in `test_fail` says so.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use store::{SqliteStore, Store, Writer, WriterOptions, WriterStatsSnapshot};

use crate::common::{count, event, exec, open_tmp, raw, result, wait_until};

const LIMIT: Duration = Duration::from_secs(15);

fn opts(max_batch: usize, flush_ms: u64, queue_capacity: usize) -> WriterOptions {
    WriterOptions {
        max_batch,
        flush_interval: Duration::from_millis(flush_ms),
        queue_capacity,
    }
}

/// Makes inserts into `results`/`events` fail while `test_fail` holds the table's name.
async fn install_failure_triggers(path: &Path) {
    let mut c = raw(path).await;
    exec(&mut c, "CREATE TABLE test_fail (what TEXT PRIMARY KEY)").await;
    for table in ["results", "events"] {
        exec(
            &mut c,
            &format!(
                "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} \
                 WHEN EXISTS (SELECT 1 FROM test_fail WHERE what = '{table}') \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            ),
        )
        .await;
    }
}

async fn set_failing(path: &Path, table: &str, on: bool) {
    let mut c = raw(path).await;
    let sql = if on {
        format!("INSERT OR IGNORE INTO test_fail VALUES ('{table}')")
    } else {
        format!("DELETE FROM test_fail WHERE what = '{table}'")
    };
    exec(&mut c, &sql).await;
}

async fn rows(path: &Path, table: &str) -> i64 {
    count(
        &mut raw(path).await,
        &format!("SELECT count(*) FROM {table}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_sent_is_on_disk_after_shutdown() {
    let (dir, store) = open_tmp().await;
    let store = Arc::new(store);
    let w = Writer::spawn(store.clone(), opts(100, 3_600_000, 10_000));
    let n = 2_345u64;
    for i in 0..n {
        let check = ["a", "b", "c"][(i % 3) as usize];
        w.send_result(result(check, i as i64, i));
        if i % 60 == 0 {
            w.send_event(event(check, i as i64, i));
            tokio::task::yield_now().await; // let the writer interleave
        }
    }
    let stats = w.stats();
    w.clone().shutdown().await;

    let s = stats.snapshot();
    assert_eq!(s.results_written, n);
    assert_eq!(s.events_written, 40);
    assert_eq!((s.failures, s.dropped()), (0, 0));
    assert!(s.batches >= 25, "at most 100 results per batch: {s:?}");
    assert_eq!(
        rows(&dir.path().join("history.db"), "results").await,
        n as i64
    );
    let mut total = 0;
    for check in ["a", "b", "c"] {
        let got = store.results(check, None, 10_000).await.unwrap();
        assert!(got.iter().all(|r| r.check == check));
        total += got.len();
    }
    assert_eq!(total as u64, n);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_on_the_interval_without_shutdown() {
    let (dir, store) = open_tmp().await;
    let path = dir.path().join("history.db");
    let w = Writer::spawn(Arc::new(store), opts(500, 50, 1_000));
    for i in 0..7 {
        w.send_result(result("i", i, i as u64));
    }
    w.send_event(event("i", 3, 1));
    w.send_event(event("i", 4, 2));
    // Far below max_batch: only the interval can have written these.
    wait_until(LIMIT, "7 results and 2 events on disk", || {
        let path = path.clone();
        async move { rows(&path, "results").await == 7 && rows(&path, "events").await == 2 }
    })
    .await;
    let s = w.stats().snapshot();
    assert_eq!((s.results_written, s.events_written), (7, 2));
    assert_eq!((w.queued_results(), w.queued_events()), (0, 0));
    w.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn full_queue_drops_oldest_results_but_never_events() {
    let (dir, store) = open_tmp().await;
    let store = Arc::new(store);
    // Capacity 10, no early flush, no interval flush: everything waits for shutdown.
    let w = Writer::spawn(store.clone(), opts(1_000, 3_600_000, 10));
    for i in 0..1_000u64 {
        w.send_result(result("o", i as i64, i));
        if i % 3 == 0 {
            w.send_event(event("o", i as i64, i));
        }
    }
    assert_eq!(w.queued_results(), 10);
    assert_eq!(w.queued_events(), 334);
    let stats = w.stats();
    w.shutdown().await;

    let s = stats.snapshot();
    assert_eq!(s.dropped_queue_full, 990);
    assert_eq!(s.dropped(), 990);
    assert_eq!((s.results_written, s.events_written), (10, 334));
    let kept: Vec<i64> = store
        .results("o", None, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.started_at_ms)
        .collect();
    assert_eq!(
        kept,
        (990..1_000).rev().collect::<Vec<_>>(),
        "the newest 10 survive"
    );
    assert_eq!(store.events("o", None, 1_000).await.unwrap().len(), 334);
    assert_eq!(rows(&dir.path().join("history.db"), "events").await, 334);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batch_is_retried_on_the_next_tick() {
    let (dir, store) = open_tmp().await;
    let path = dir.path().join("history.db");
    install_failure_triggers(&path).await;
    set_failing(&path, "results", true).await;
    // A long interval leaves time to lift the failure between the attempt and the retry.
    let w = Writer::spawn(Arc::new(store), opts(500, 700, 1_000));
    let stats = w.stats();
    for i in 0..5 {
        w.send_result(result("r", i, i as u64));
    }
    wait_until(LIMIT, "first write attempt failed", || {
        let stats = stats.clone();
        async move { stats.snapshot().failures >= 1 }
    })
    .await;
    set_failing(&path, "results", false).await;
    wait_until(LIMIT, "retry wrote the batch", || {
        let stats = stats.clone();
        async move { stats.snapshot().results_written == 5 }
    })
    .await;
    let s = stats.snapshot();
    assert_eq!(s.failures, 1, "{s:?}");
    assert_eq!(s.dropped(), 0, "{s:?}");
    assert_eq!(rows(&path, "results").await, 5);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_failing_twice_are_dropped_events_are_retried_until_written() {
    let (dir, store) = open_tmp().await;
    let path = dir.path().join("history.db");
    install_failure_triggers(&path).await;
    set_failing(&path, "results", true).await;
    set_failing(&path, "events", true).await;
    let w = Writer::spawn(Arc::new(store), opts(500, 30, 1_000));
    let stats = w.stats();
    for i in 0..5 {
        w.send_result(result("f", i, i as u64));
    }
    for i in 0..3 {
        w.send_event(event("f", i, i as u64));
    }
    wait_until(LIMIT, "results given up after the retry", || {
        let stats = stats.clone();
        async move { stats.snapshot().dropped_failed == 5 }
    })
    .await;
    // Events keep failing tick after tick and are still held, not dropped.
    wait_until(LIMIT, "events retried several times", || {
        let stats = stats.clone();
        async move { stats.snapshot().failures >= 6 }
    })
    .await;
    assert_eq!(stats.snapshot().dropped_failed, 5, "no event was dropped");
    set_failing(&path, "events", false).await;
    wait_until(LIMIT, "events written once the store recovers", || {
        let stats = stats.clone();
        async move { stats.snapshot().events_written == 3 }
    })
    .await;
    assert_eq!(rows(&path, "events").await, 3);
    assert_eq!(rows(&path, "results").await, 0);
    let s: WriterStatsSnapshot = stats.snapshot();
    assert_eq!(
        (s.results_written, s.dropped_failed, s.dropped_closed),
        (0, 5, 0)
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_from_clones_and_sends_after_shutdown() {
    let (dir, store) = open_tmp().await;
    let path = dir.path().join("history.db");
    let w = Writer::spawn(Arc::new(store), opts(500, 3_600_000, 100));
    let other = w.clone();
    let third = w.clone();
    w.send_result(result("s", 1, 1));
    let mut bad = result("s", 2, 2);
    bad.duration_seconds = f64::INFINITY;
    w.send_result(bad); // refused at the door, cannot poison the batch
    w.send_event(event("s", 1, 1));
    let stats = w.stats();
    // Two concurrent shutdowns: both return only after the final flush.
    tokio::join!(w.shutdown(), third.shutdown());
    assert_eq!(rows(&path, "results").await, 1);
    assert_eq!(rows(&path, "events").await, 1);

    other.send_result(result("s", 3, 3));
    other.send_event(event("s", 3, 3));
    let s = stats.snapshot();
    assert_eq!((s.dropped_failed, s.dropped_closed), (1, 2), "{s:?}");
    assert_eq!(s.written(), 2);
    other.shutdown().await; // already stopped: returns at once
    assert_eq!(rows(&path, "results").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_still_flushes() {
    let (dir, store) = open_tmp().await;
    let path = dir.path().join("history.db");
    let store: Arc<dyn Store> = Arc::new(store);
    let w = Writer::spawn(store, opts(500, 3_600_000, 100));
    for i in 0..3 {
        w.send_result(result("d", i, i as u64));
    }
    drop(w);
    wait_until(
        LIMIT,
        "results flushed after the last handle dropped",
        || {
            let path = path.clone();
            async move { rows(&path, "results").await == 3 }
        },
    )
    .await;
}

/// The writer works against any `Store`, including a reopened SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_output_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let w = Writer::spawn(store.clone(), WriterOptions::default());
    for i in 0..1_234 {
        w.send_result(result("z", i, i as u64));
    }
    w.shutdown().await;
    store.close().await;
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.results("z", None, 5_000).await.unwrap().len(), 1_234);
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_closed_under_the_writer_drops_and_counts_instead_of_retrying_forever() {
    let (_dir, store) = open_tmp().await;
    let store = Arc::new(store);
    let w = Writer::spawn(store.clone(), opts(500, 20, 100));
    store.close().await;
    w.send_result(result("x", 1, 1));
    w.send_event(event("x", 1, 1));
    let stats = w.stats();
    wait_until(LIMIT, "both records counted as dropped", || {
        let stats = stats.clone();
        async move { stats.snapshot().dropped_failed == 2 }
    })
    .await;
    // Several more ticks: no retries happen, so failures stay at one per batch.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let s = stats.snapshot();
    assert_eq!((s.failures, s.written()), (2, 0), "{s:?}");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degenerate_options_are_clamped_not_panicking() {
    let (dir, store) = open_tmp().await;
    let path = dir.path().join("history.db");
    let store: Arc<dyn Store> = Arc::new(store);
    // Zero batch, zero interval, zero capacity: batch 1, 1 ms, capacity 1.
    let w = Writer::spawn(store.clone(), opts(0, 0, 0));
    w.send_result(result("e", 1, 1));
    wait_until(LIMIT, "written with a 1 ms interval", || {
        let path = path.clone();
        async move { rows(&path, "results").await == 1 }
    })
    .await;
    w.shutdown().await;
    // An interval too long for tokio's clock.
    let w = Writer::spawn(
        store,
        WriterOptions {
            flush_interval: Duration::MAX,
            ..WriterOptions::default()
        },
    );
    w.send_result(result("e", 2, 2));
    w.shutdown().await;
    assert_eq!(rows(&path, "results").await, 2);
}
