//! Crash safety: a child process writes batches and is SIGKILLed mid-stream; every batch it
//! reported committed must be in the database afterwards, whole, and the file must be intact.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use store::{SqliteStore, Store};

use crate::common::{count, raw, result};

/// Environment variable carrying the database path to the child.
const CHILD_ENV: &str = "NETPROBE_STORE_CRASH_CHILD_DB";
/// Rows per batch; a batch present after the crash must have exactly this many.
const BATCH: usize = 200;
/// Committed batches the parent waits to see before it kills the child.
const KILL_AFTER: usize = 30;
/// Bounds of the child's loop, in case the parent never kills it.
const CHILD_MAX_BATCHES: u64 = 50_000;
const CHILD_MAX_TIME: Duration = Duration::from_secs(60);

/// Child half of `sigkill_mid_write_loses_no_committed_batch`; run by that test in a child
/// process (`--ignored --exact`), never on its own.
#[tokio::test]
#[ignore = "child process of crash::sigkill_mid_write_loses_no_committed_batch"]
async fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        eprintln!(
            "crash_child only runs as the child of sigkill_mid_write_loses_no_committed_batch"
        );
        return;
    };
    let store = SqliteStore::open(&PathBuf::from(path))
        .await
        .expect("child: open");
    // Later rounds continue after the newest batch an earlier child left behind.
    let first = match store.latest_result("crash").await.expect("child: read") {
        Some(r) => r.started_at_ms as u64 + 1,
        None => 0,
    };
    let started = Instant::now();
    for batch in first..first + CHILD_MAX_BATCHES {
        if started.elapsed() > CHILD_MAX_TIME {
            break;
        }
        let records: Vec<_> = (0..BATCH as u64)
            .map(|i| {
                let mut r = result("crash", batch as i64, i);
                r.message = format!("batch {batch}");
                r
            })
            .collect();
        store.append_results(&records).await.expect("child: append");
        // Printed only after the commit returned: the parent may rely on every printed id.
        println!("committed {batch}");
    }
    store.close().await;
}

/// Runs one child until it has reported `KILL_AFTER` commits, SIGKILLs it `delay` later, and
/// returns every batch id it reported.
fn run_and_kill_child(path: &std::path::Path, delay: Duration) -> Vec<i64> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "crash::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();

    // Blocking reads are fine: the child's own loop is bounded in time.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut reported = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.expect("child stdout");
        if let Some(id) = line.strip_prefix("committed ") {
            reported.push(id.parse::<i64>().expect("batch id"));
        }
        if reported.len() >= KILL_AFTER {
            // The parent wakes when a commit is printed, i.e. at a batch boundary; waiting a
            // little moves the kill into the middle of the next batch's transaction.
            std::thread::sleep(delay);
            child.kill().expect("SIGKILL the child"); // std sends SIGKILL on Unix
            killed = true;
            break;
        }
        assert!(Instant::now() < deadline, "child too slow");
    }
    if !killed {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child ended before committing {KILL_AFTER} batches: {reported:?}");
    }
    // Lines already in the pipe were printed after their commits, so they count too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("committed ") {
            reported.push(id.parse::<i64>().expect("batch id"));
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "child must die by SIGKILL, not exit: {status:?}"
    );
    reported
}

#[tokio::test]
async fn sigkill_mid_write_loses_no_committed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut reported = Vec::new();
    // Three crashes on the same file: each child also proves the previous crash recovered.
    for round in 0..3 {
        reported.extend(run_and_kill_child(
            &path,
            Duration::from_micros(700 + 2_300 * round),
        ));

        // The raw file first: the WAL left behind must replay into an intact database.
        let mut conn = raw(&path).await;
        let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(check, ["ok"], "round {round}");
        drop(conn);

        let store = SqliteStore::open(&path).await.unwrap();
        store.integrity_check().await.unwrap();
        let rows = store.results("crash", None, u32::MAX).await.unwrap();
        let mut per_batch: BTreeMap<i64, usize> = BTreeMap::new();
        for r in &rows {
            assert_eq!(r.message, format!("batch {}", r.started_at_ms));
            *per_batch.entry(r.started_at_ms).or_default() += 1;
        }
        // Atomic: every batch in the file is whole.
        for (batch, n) in &per_batch {
            assert_eq!(*n, BATCH, "round {round}: batch {batch} is partial");
        }
        // Durable: every batch a child reported is there.
        for id in &reported {
            assert!(
                per_batch.contains_key(id),
                "round {round}: reported batch {id} is missing"
            );
        }
        // Contiguous, and at most one batch beyond the last reported (committed, not printed).
        let last = *reported.iter().max().unwrap();
        let present: Vec<i64> = per_batch.keys().copied().collect();
        assert!(
            present == (0..=last).collect::<Vec<_>>()
                || present == (0..=last + 1).collect::<Vec<_>>(),
            "round {round}: batches in the file are {:?}..={:?}, reported up to {last}",
            present.first(),
            present.last()
        );
        assert_eq!(
            count(&mut raw(&path).await, "SELECT count(*) FROM results").await,
            rows.len() as i64
        );
        store.close().await;
    }
    assert!(reported.len() >= 3 * KILL_AFTER);
}
