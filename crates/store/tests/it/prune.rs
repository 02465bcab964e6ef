//! Retention: `Store::prune` and the pruner task.

use std::sync::Arc;
use std::time::Duration;

use store::{SqliteStore, Store, now_ms, spawn_pruner};
use tokio_util::sync::CancellationToken;

use crate::common::{event, open_tmp, result, wait_until};

#[tokio::test]
async fn prune_removes_only_old_rows() {
    let (_dir, store) = open_tmp().await;
    // 12 000 old-ish rows: more than one internal delete chunk.
    let p: Vec<_> = (0..12_000).map(|n| result("p", n as i64, n)).collect();
    store.append_results(&p).await.unwrap();
    store
        .append_results(&[result("q", 20_000, 1), result("q", 11_000, 2)])
        .await
        .unwrap();
    let ev: Vec<_> = (0..10).map(|n| event("p", n as i64, n)).collect();
    store.append_events(&ev).await.unwrap();
    store
        .append_events(&[event("p", 20_000, 10), event("q", 11_000, 11)])
        .await
        .unwrap();

    let deleted = store.prune(11_000).await.unwrap();
    assert_eq!(
        deleted,
        11_000 + 10,
        "results t < 11000 and the 10 old events"
    );

    let left = store.results("p", None, 100_000).await.unwrap();
    assert_eq!(left.len(), 1_000);
    assert!(left.iter().all(|r| r.started_at_ms >= 11_000));
    assert_eq!(
        left.last().unwrap().started_at_ms,
        11_000,
        "the cutoff itself is kept"
    );
    assert_eq!(store.results("q", None, 10).await.unwrap().len(), 2);
    let ev_left = store.events("p", None, 100).await.unwrap();
    assert_eq!(
        ev_left.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        [20_000]
    );
    assert_eq!(store.events("q", None, 10).await.unwrap().len(), 1);

    assert_eq!(
        store.prune(11_000).await.unwrap(),
        0,
        "a second prune finds nothing"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruner_task_deletes_old_history_periodically_until_cancelled() {
    let (_dir, store) = open_tmp().await;
    let store = Arc::new(store);
    let now = now_ms();
    let hour = 3_600_000;
    store
        .append_results(&[
            result("t", now - 2 * hour, 1),
            result("t", now - 2 * hour + 5, 2),
            result("t", now - hour - 60_000, 3),
            result("t", now - 60_000, 4),
            result("t", now, 5),
        ])
        .await
        .unwrap();
    store
        .append_events(&[event("t", now - 3 * hour, 1), event("t", now, 2)])
        .await
        .unwrap();

    let cancel = CancellationToken::new();
    let dyn_store: Arc<dyn Store> = Arc::clone(&store) as Arc<dyn Store>;
    let task = spawn_pruner(
        dyn_store,
        Duration::from_secs(3_600),
        Duration::from_millis(50),
        cancel.clone(),
    );

    let results_left =
        |s: Arc<SqliteStore>| async move { s.results("t", None, 100).await.unwrap().len() };
    wait_until(Duration::from_secs(10), "old results pruned", || {
        let s = Arc::clone(&store);
        async move { results_left(s).await == 2 }
    })
    .await;
    let kept: Vec<_> = store
        .results("t", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message)
        .collect();
    assert_eq!(kept, ["result 5 of t", "result 4 of t"]);
    wait_until(Duration::from_secs(10), "old events pruned", || {
        let s = Arc::clone(&store);
        async move { s.events("t", None, 100).await.unwrap().len() == 1 }
    })
    .await;

    // It keeps running: an old row written later goes too.
    store
        .append_results(&[result("t", now - 5 * hour, 6)])
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "late old result pruned", || {
        let s = Arc::clone(&store);
        async move { results_left(s).await == 2 }
    })
    .await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("pruner stops after cancel")
        .expect("pruner task did not panic");
    store.close().await;
}

#[tokio::test]
async fn pruner_accepts_extreme_durations() {
    let (_dir, store) = open_tmp().await;
    let store = Arc::new(store);
    store
        .append_results(&[result("x", i64::MIN + 1, 1), result("x", 0, 2)])
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    // Neither may panic: the cutoff saturates, the period is clamped to what tokio's clock can
    // add. Zero retention deletes everything older than now.
    let task = spawn_pruner(store.clone(), Duration::MAX, Duration::MAX, cancel.clone());
    let zero = spawn_pruner(
        store.clone(),
        Duration::ZERO,
        Duration::ZERO,
        cancel.clone(),
    );
    wait_until(
        Duration::from_secs(10),
        "zero retention prunes everything",
        || {
            let s = Arc::clone(&store);
            async move { s.results("x", None, 10).await.unwrap().is_empty() }
        },
    )
    .await;
    cancel.cancel();
    for t in [task, zero] {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("pruner stops after cancel")
            .expect("pruner task did not panic");
    }
    store.close().await;
}
