//! Diagnoses: round trip through a real SQLite file, history order, retention, and reopening an
//! existing file (migration 2 applied on top of 1).

use serde_json::json;
use sqlx::Connection as _;
use store::{DiagnosisRecord, SqliteStore, Store};

use crate::common::{event, open_tmp, raw, result};

fn diagnosis(check: &str, t: i64, ids: &[&str]) -> DiagnosisRecord {
    DiagnosisRecord {
        id: None,
        check: check.to_owned(),
        at_ms: t,
        conclusion: if ids.is_empty() {
            "unexplained"
        } else {
            "explained"
        }
        .to_owned(),
        finding_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        diagnosis: json!({
            "target": format!("tcp://127.0.0.1:{t}"),
            "findings": ids.iter().map(|id| json!({"id": id, "evidence": ["rule 1: -j DROP ✓"]})).collect::<Vec<_>>(),
        })
        .into(),
    }
}

#[tokio::test]
async fn diagnoses_round_trip_newest_first_and_per_check() {
    let (dir, store) = open_tmp().await;
    assert_eq!(store.latest_diagnosis("web").await.unwrap(), None);
    let a = diagnosis("web", 1_000, &["port-closed"]);
    let b = diagnosis("web", 2_000, &["firewall-drop", "dual-iptables-backend"]);
    let c = diagnosis("db", 1_500, &[]);
    let id_a = store.append_diagnosis(&a).await.unwrap();
    let id_b = store.append_diagnosis(&b).await.unwrap();
    let id_c = store.append_diagnosis(&c).await.unwrap();
    assert!(id_a < id_b && id_b < id_c, "{id_a} {id_b} {id_c}");

    let latest = store.latest_diagnosis("web").await.unwrap().unwrap();
    assert_eq!(latest.id, Some(id_b));
    assert_eq!(DiagnosisRecord { id: None, ..latest }, b);
    let all = store.diagnoses("web", None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.at_ms).collect::<Vec<_>>(),
        [2_000, 1_000]
    );
    assert_eq!(
        store.diagnoses("web", Some(1_001), 10).await.unwrap().len(),
        1
    );
    assert_eq!(store.diagnoses("web", None, 1).await.unwrap().len(), 1);
    assert!(store.diagnoses("web", None, 0).await.unwrap().is_empty());
    let db = store.latest_diagnosis("db").await.unwrap().unwrap();
    assert_eq!(db.finding_ids, Vec::<String>::new());
    assert_eq!(
        db.diagnosis.to_value().unwrap(),
        c.diagnosis.to_value().unwrap()
    );
    store.close().await;

    // Reopened: the rows are still there and migrations do not run twice.
    let store = SqliteStore::open(&dir.path().join("history.db"))
        .await
        .unwrap();
    let again = store.latest_diagnosis("web").await.unwrap().unwrap();
    assert_eq!(
        again.finding_ids,
        ["firewall-drop", "dual-iptables-backend"]
    );
    store.close().await;
}

#[tokio::test]
async fn prune_removes_old_diagnoses_and_leaves_results_and_events_alone() {
    let (_dir, store) = open_tmp().await;
    store
        .append_results(&[result("web", 5_000, 1)])
        .await
        .unwrap();
    store
        .append_events(&[event("web", 5_000, 1)])
        .await
        .unwrap();
    for t in [1_000, 2_000, 9_000] {
        store
            .append_diagnosis(&diagnosis("web", t, &["port-closed"]))
            .await
            .unwrap();
    }
    assert_eq!(store.prune(3_000).await.unwrap(), 2);
    let left = store.diagnoses("web", None, 10).await.unwrap();
    assert_eq!(left.iter().map(|d| d.at_ms).collect::<Vec<_>>(), [9_000]);
    assert_eq!(store.results("web", None, 10).await.unwrap().len(), 1);
    assert_eq!(store.events("web", None, 10).await.unwrap().len(), 1);
    store.close().await;
}

/// A database written by a netprobe that knew only migration 1 keeps its history and gains the
/// diagnoses table when a newer netprobe opens it.
#[tokio::test]
async fn a_version_1_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let v1 = dir.path().join("migrations-v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite/0001_history.sql"
        ),
        v1.join("0001_history.sql"),
    )
    .unwrap();
    {
        let mut conn = sqlx::sqlite::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::migrate::Migrator::new(v1.as_path())
            .await
            .unwrap()
            .run(&mut conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO results (check_name, started_at_ms, success, reason, message, \
             duration_seconds, details) VALUES ('web', 1000, 0, 'timeout', 'old', 0.5, '{}')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
    }

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.results("web", None, 10).await.unwrap().len(), 1);
    store
        .append_diagnosis(&diagnosis("web", 2_000, &["port-closed"]))
        .await
        .unwrap();
    assert_eq!(store.diagnoses("web", None, 10).await.unwrap().len(), 1);
    store.close().await;
    let mut conn = raw(&path).await;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
}
