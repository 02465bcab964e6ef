//! Mesh chunks: appended in a batch, read back per address newest first until they hold the rounds
//! asked for, pruned by age; rounds stored by schema 4 (`mesh_rounds`) copied by migration 0005.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::sqlite::SqlitePoolOptions;
use store::{MeshChunkRecord, SqliteStore, Store};

use crate::common::{count, raw};

fn chunk(target: &str, ip: &str, first_ms: i64, last_ms: i64, rounds: u32) -> MeshChunkRecord {
    MeshChunkRecord {
        id: None,
        source_node: "node-a".to_owned(),
        target_node: target.to_owned(),
        target_ip: ip.to_owned(),
        first_ms,
        last_ms,
        rounds,
        data: vec![1, rounds as u8, 0xff],
    }
}

#[tokio::test]
async fn mesh_chunks_round_trip_per_address_newest_first_and_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("h.db")).await.unwrap();
    store
        .append_mesh_chunks(&[
            chunk("node-b", "198.51.100.2", 1_000, 1_900, 10),
            chunk("node-b", "fd00::2", 1_000, 1_900, 10),
            chunk("node-b", "198.51.100.2", 2_000, 2_900, 10),
            chunk("node-c", "198.51.100.3", 1_500, 1_500, 1),
        ])
        .await
        .unwrap();
    store.append_mesh_chunks(&[]).await.unwrap();
    let b = store.mesh_chunks("node-b", 100).await.unwrap();
    let got: Vec<(&str, i64)> = b
        .iter()
        .map(|c| (c.target_ip.as_str(), c.first_ms))
        .collect();
    assert_eq!(
        got,
        [
            ("198.51.100.2", 2_000),
            ("198.51.100.2", 1_000),
            ("fd00::2", 1_000)
        ]
    );
    assert!(b.iter().all(|c| c.id.is_some()));
    assert_eq!(
        b[0],
        MeshChunkRecord {
            id: b[0].id,
            ..chunk("node-b", "198.51.100.2", 2_000, 2_900, 10)
        }
    );
    // 10 rounds per address are one chunk each; 11 need the older chunk of the first address.
    assert_eq!(store.mesh_chunks("node-b", 10).await.unwrap().len(), 2);
    assert_eq!(store.mesh_chunks("node-b", 11).await.unwrap().len(), 3);
    assert!(store.mesh_chunks("node-b", 0).await.unwrap().is_empty());
    assert!(store.mesh_chunks("nobody", 10).await.unwrap().is_empty());
    // A chunk goes when its last round is older than the cutoff.
    assert_eq!(store.prune(2_000).await.unwrap(), 3);
    let left = store.mesh_chunks("node-b", 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].first_ms, 2_000);
    assert!(store.mesh_chunks("node-c", 10).await.unwrap().is_empty());
    store.close().await;
}

/// `prune_mesh` deletes mesh history only.
#[tokio::test]
async fn prune_mesh_leaves_the_checks_history_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("h.db")).await.unwrap();
    store
        .append_results(&[crate::common::result("web", 1_000, 1)])
        .await
        .unwrap();
    store
        .append_mesh_chunks(&[
            chunk("node-b", "fd00::2", 500, 1_500, 2),
            chunk("node-b", "fd00::2", 2_000, 2_500, 2),
        ])
        .await
        .unwrap();
    assert_eq!(store.prune_mesh(2_000).await.unwrap(), 1);
    assert_eq!(store.mesh_chunks("node-b", 100).await.unwrap().len(), 1);
    assert_eq!(store.results("web", None, 10).await.unwrap().len(), 1);
    store.close().await;
}

/// Many small chunks (one round each, as at long intervals) are read in several pages, in order,
/// and exactly as many as the rounds asked for; a batch larger than one multi-row INSERT is kept
/// whole.
#[tokio::test]
async fn many_one_round_chunks_are_paged_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("h.db")).await.unwrap();
    let batch: Vec<_> = (0..1_003)
        .map(|i| chunk("node-b", "fd00::2", i * 10, i * 10, 1))
        .collect();
    store.append_mesh_chunks(&batch).await.unwrap();
    // Two chunks with the same last_ms: the newer id first.
    store
        .append_mesh_chunks(&[chunk("node-b", "fd00::2", 10_020, 10_020, 1)])
        .await
        .unwrap();
    let all = store.mesh_chunks("node-b", 5_000).await.unwrap();
    assert_eq!(all.len(), 1_004);
    assert_eq!(all[0].last_ms, 10_020);
    assert!(all[0].id > all[1].id, "{:?} {:?}", all[0], all[1]);
    assert_eq!(all[1].last_ms, 10_020);
    for (c, i) in all[2..].iter().zip((0..1_002).rev()) {
        assert_eq!(c.last_ms, i * 10);
    }
    let some = store.mesh_chunks("node-b", 250).await.unwrap();
    assert_eq!(some.len(), 250);
    assert_eq!(some[..], all[..250]);
    store.close().await;
}

/// A database written by a netprobe with schema 4: its per-round rows are copied into chunks of
/// one round each (rows whose stats are not JSON are left out); `mesh_rounds` stays, unread, until
/// pruning empties it.
#[tokio::test]
async fn schema_4_mesh_rounds_are_copied_into_chunks_and_age_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    migrate_to_schema_4(dir.path(), &path).await;
    let mut conn = raw(&path).await;
    for (ip, started, stats) in [
        (
            "198.51.100.2",
            31_000,
            r#"{"started_ns":31000000000,"loss_ratio":0.2}"#,
        ),
        (
            "198.51.100.2",
            30_000,
            r#"{"started_ns":30000000000,"loss_ratio":0.0}"#,
        ),
        (
            "198.51.100.2",
            61_000,
            r#"{"started_ns":61000000000,"loss_ratio":1.0}"#,
        ),
        (
            "fd00::2",
            30_500,
            r#"{"started_ns":30500000000,"loss_ratio":0.4}"#,
        ),
        ("fd00::2", 31_500, "not json"),
    ] {
        insert_schema_4_round(&mut conn, ip, started, stats).await;
    }
    drop(conn);

    let store = SqliteStore::open(&path).await.unwrap();
    let chunks = store.mesh_chunks("node-b", 100).await.unwrap();
    let got: Vec<(&str, i64, i64, u32, String)> = chunks
        .iter()
        .map(|c| {
            let data = String::from_utf8(c.data.clone()).unwrap();
            (c.target_ip.as_str(), c.first_ms, c.last_ms, c.rounds, data)
        })
        .collect();
    let one = |ip, ms, json: &str| (ip, ms, ms, 1, format!("[{json}]"));
    assert_eq!(
        got,
        [
            one(
                "198.51.100.2",
                61_000,
                r#"{"started_ns":61000000000,"loss_ratio":1.0}"#
            ),
            one(
                "198.51.100.2",
                31_000,
                r#"{"started_ns":31000000000,"loss_ratio":0.2}"#
            ),
            one(
                "198.51.100.2",
                30_000,
                r#"{"started_ns":30000000000,"loss_ratio":0.0}"#
            ),
            one(
                "fd00::2",
                30_500,
                r#"{"started_ns":30500000000,"loss_ratio":0.4}"#
            ),
        ]
    );
    // 4 rounds and 3 chunks older than 40 s.
    assert_eq!(store.prune(40_000).await.unwrap(), 7);
    assert_eq!(store.mesh_chunks("node-b", 100).await.unwrap().len(), 1);
    store.close().await;
    let mut conn = raw(&path).await;
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM mesh_rounds").await,
        1
    );
}

/// The copy is bounded: of 1,000,005 rounds, the newest 1,000,000.
#[tokio::test]
async fn the_schema_4_copy_keeps_the_newest_million_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    migrate_to_schema_4(dir.path(), &path).await;
    let mut conn = raw(&path).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000005) \
         INSERT INTO mesh_rounds (source_node, target_node, target_ip, protocol, started_ms, \
         stats) SELECT 'node-a', 'node-b', 'fd00::2', 'icmp', i, '{}' FROM n",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).await.unwrap();
    store.close().await;
    let mut conn = raw(&path).await;
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM mesh_chunks").await,
        1_000_000
    );
    assert_eq!(
        count(&mut conn, "SELECT min(first_ms) FROM mesh_chunks").await,
        6
    );
}

async fn insert_schema_4_round(
    conn: &mut sqlx::SqliteConnection,
    ip: &str,
    started: i64,
    stats: &str,
) {
    sqlx::query(
        "INSERT INTO mesh_rounds (source_node, target_node, target_ip, protocol, started_ms, \
         stats) VALUES ('node-a', 'node-b', ?, 'icmp', ?, ?)",
    )
    .bind(ip)
    .bind(started)
    .bind(stats)
    .execute(conn)
    .await
    .unwrap();
}

/// Applies migrations 0001–0004 only (copied from the crate's migrations), as netprobe did before
/// schema 5.
async fn migrate_to_schema_4(dir: &Path, db: &Path) {
    let old = dir.join("migrations-4");
    std::fs::create_dir(&old).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.as_str() < "0005" {
            std::fs::copy(e.path(), old.join(&name)).unwrap();
        }
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(db)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool.close().await;
}
