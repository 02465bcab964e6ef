//! Reading back what was written: ordering, filters, isolation, restarts, migrations.

use std::f64;

use store::{SqliteStore, Store, StoreError};

use crate::common::{count, event, open_tmp, raw, result, strip_event, strip_result};

#[tokio::test]
async fn results_round_trip_newest_first_with_filters() {
    let (_dir, store) = open_tmp().await;
    // Out of order on purpose, plus two rows with the same timestamp (ordered by id).
    let a: Vec<_> = [
        (1_000, 1),
        (5_000, 2),
        (3_000, 3),
        (4_000, 4),
        (4_000, 5),
        (2_000, 6),
    ]
    .into_iter()
    .map(|(t, n)| result("a", t, n))
    .collect();
    let b = vec![result("b", 4_500, 7), result("b", 900, 8)];
    store.append_results(&a).await.unwrap();
    store.append_results(&b).await.unwrap();
    store.append_results(&[]).await.unwrap();

    let got = store.results("a", None, 100).await.unwrap();
    let order: Vec<(i64, String)> = got
        .iter()
        .map(|r| (r.started_at_ms, r.message.clone()))
        .collect();
    assert_eq!(
        order,
        [
            (5_000, "result 2 of a".to_owned()),
            (4_000, "result 5 of a".to_owned()), // same time: higher id first
            (4_000, "result 4 of a".to_owned()),
            (3_000, "result 3 of a".to_owned()),
            (2_000, "result 6 of a".to_owned()),
            (1_000, "result 1 of a".to_owned()),
        ]
    );
    // Every field survives, JSON included; ids are distinct.
    let mut expected = a.clone();
    expected.sort_by_key(|r| std::cmp::Reverse((r.started_at_ms, r.message.clone())));
    let ids: std::collections::BTreeSet<_> = got.iter().map(|r| r.id.unwrap()).collect();
    assert_eq!(ids.len(), 6);
    let stripped: Vec<_> = got.into_iter().map(strip_result).collect();
    assert_eq!(stripped, expected);

    let limited = store.results("a", None, 2).await.unwrap();
    assert_eq!(
        limited.iter().map(|r| r.started_at_ms).collect::<Vec<_>>(),
        [5_000, 4_000]
    );
    let since = store.results("a", Some(3_000), 100).await.unwrap();
    assert_eq!(
        since.iter().map(|r| r.started_at_ms).collect::<Vec<_>>(),
        [5_000, 4_000, 4_000, 3_000],
        "since is inclusive"
    );
    let both = store.results("a", Some(2_500), 2).await.unwrap();
    assert_eq!(
        both.iter().map(|r| r.started_at_ms).collect::<Vec<_>>(),
        [5_000, 4_000]
    );
    assert!(store.results("a", None, 0).await.unwrap().is_empty());
    assert!(
        store
            .results("a", Some(5_001), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Per-check isolation, including names that differ only by case or a prefix.
    let gb: Vec<_> = store
        .results("b", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(strip_result)
        .collect();
    assert_eq!(gb, b);
    assert!(store.results("A", None, 100).await.unwrap().is_empty());
    assert!(store.results("", None, 100).await.unwrap().is_empty());
    assert!(store.results("a%", None, 100).await.unwrap().is_empty());

    let latest = store.latest_result("a").await.unwrap().unwrap();
    assert_eq!(latest.message, "result 2 of a");
    assert_eq!(
        store
            .latest_result("b")
            .await
            .unwrap()
            .unwrap()
            .started_at_ms,
        4_500
    );
    assert_eq!(store.latest_result("nope").await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn events_round_trip_newest_first_with_filters() {
    let (_dir, store) = open_tmp().await;
    let x: Vec<_> = (0..10)
        .map(|n| event("x", 100 * (n as i64 % 5), n))
        .collect();
    let y = vec![event("y", 250, 99)];
    store.append_events(&x).await.unwrap();
    store.append_events(&y).await.unwrap();

    let got = store.events("x", None, 100).await.unwrap();
    assert_eq!(got.len(), 10);
    let times: Vec<_> = got.iter().map(|e| e.at_ms).collect();
    assert_eq!(times, [400, 400, 300, 300, 200, 200, 100, 100, 0, 0]);
    // Same timestamp: later insert (higher id) first.
    assert_eq!(got[0].message, "event 9 of x");
    assert_eq!(got[1].message, "event 4 of x");
    assert!(got[0].id > got[1].id);
    let mut expected = x.clone();
    expected.sort_by_key(|e| std::cmp::Reverse((e.at_ms, e.message.clone())));
    assert_eq!(
        got.into_iter().map(strip_event).collect::<Vec<_>>(),
        expected
    );

    let since = store.events("x", Some(300), 3).await.unwrap();
    assert_eq!(
        since.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        [400, 400, 300]
    );
    let gy: Vec<_> = store
        .events("y", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(strip_event)
        .collect();
    assert_eq!(gy, y);
    assert!(store.events("z", None, 10).await.unwrap().is_empty());
    assert!(store.events("x", None, 0).await.unwrap().is_empty());
    // Results and events are separate histories.
    assert!(store.results("x", None, 10).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn restart_keeps_history_and_ids_keep_growing() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directories do not exist yet: open creates them.
    let path = dir.path().join("var/lib/netprobe/history.db");
    let results: Vec<_> = (0..50)
        .map(|n| result("web", 1_000 + n as i64, n))
        .collect();
    let events: Vec<_> = (0..5).map(|n| event("web", 1_000 + n as i64, n)).collect();
    let max_id = {
        let store = SqliteStore::open(&path).await.unwrap();
        store.append_results(&results).await.unwrap();
        store.append_events(&events).await.unwrap();
        let max_id = store
            .latest_result("web")
            .await
            .unwrap()
            .unwrap()
            .id
            .unwrap();
        store.close().await;
        max_id
    };
    assert!(path.is_file());

    let store = SqliteStore::open(&path).await.unwrap();
    let mut back: Vec<_> = store
        .results("web", None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(strip_result)
        .collect();
    back.reverse();
    assert_eq!(back, results);
    let mut back_events: Vec<_> = store
        .events("web", None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(strip_event)
        .collect();
    back_events.reverse();
    assert_eq!(back_events, events);

    // Ids are never reused, even after everything was pruned.
    assert_eq!(store.prune(i64::MAX).await.unwrap(), 55);
    store.append_results(&[result("web", 5, 1)]).await.unwrap();
    let id = store
        .latest_result("web")
        .await
        .unwrap()
        .unwrap()
        .id
        .unwrap();
    assert!(
        id > max_id,
        "new id {id} must exceed the old maximum {max_id}"
    );
    store.close().await;
}

#[tokio::test]
async fn dropping_without_close_keeps_committed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.append_results(&[result("c", 1, 1)]).await.unwrap();
        // No close(): the pools are dropped with the store.
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.results("c", None, 10).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn migrations_are_idempotent_and_settings_stick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let first = SqliteStore::open(&path).await.unwrap();
    first.append_results(&[result("m", 1, 1)]).await.unwrap();
    // A second store on the same file while the first is open, then a third after both close.
    let second = SqliteStore::open(&path).await.unwrap();
    assert_eq!(second.results("m", None, 10).await.unwrap().len(), 1);
    second.close().await;
    first.close().await;
    let third = SqliteStore::open(&path).await.unwrap();
    third.append_results(&[result("m", 2, 2)]).await.unwrap();
    assert_eq!(third.results("m", None, 10).await.unwrap().len(), 2);
    third.integrity_check().await.unwrap();

    let mut conn = raw(&path).await;
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM _sqlx_migrations").await,
        5,
        "0001_history, 0002_diagnoses, 0003_isolations, 0004_mesh_rounds and 0005_mesh_chunks, \
         each applied once"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM _sqlx_migrations WHERE success"
        )
        .await,
        5
    );
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal", "WAL mode is persistent in the file");
    for index in [
        "results_check_time",
        "results_time",
        "events_check_time",
        "events_time",
    ] {
        let n = count(
            &mut conn,
            &format!(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '{index}'"
            ),
        )
        .await;
        assert_eq!(n, 1, "index {index}");
    }
    third.close().await;
}

#[tokio::test]
async fn invalid_record_rejects_the_whole_batch() {
    let (_dir, store) = open_tmp().await;
    let mut bad = result("v", 2, 2);
    bad.duration_seconds = f64::NAN;
    let err = store
        .append_results(&[result("v", 1, 1), bad])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidRecord { check, .. } if check == "v"),
        "{err:?}"
    );
    assert!(err.to_string().contains("duration_seconds"), "{err}");
    assert!(store.results("v", None, 10).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn closed_store_says_closed() {
    let (_dir, store) = open_tmp().await;
    store.close().await;
    store.close().await; // idempotent
    let err = store
        .append_results(&[result("c", 1, 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    let err = store.results("c", None, 1).await.unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    let err = store.prune(0).await.unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
}
