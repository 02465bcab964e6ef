//! Mesh rounds: appended in a batch, read back newest first per target, pruned by age.

use store::{Json, MeshRoundRecord, SqliteStore, Store};

fn round(target: &str, ip: &str, started_ms: i64, loss: f64) -> MeshRoundRecord {
    MeshRoundRecord {
        id: None,
        source_node: "node-a".to_owned(),
        target_node: target.to_owned(),
        target_ip: ip.to_owned(),
        protocol: "icmp".to_owned(),
        started_ms,
        stats: Json::encode(&serde_json::json!({ "loss_ratio": loss })).unwrap(),
    }
}

#[tokio::test]
async fn mesh_rounds_round_trip_newest_first_and_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("h.db")).await.unwrap();
    store
        .append_mesh_rounds(&[
            round("node-b", "198.51.100.2", 1_000, 0.0),
            round("node-b", "fd00::2", 1_000, 0.2),
            round("node-b", "198.51.100.2", 2_000, 0.4),
            round("node-c", "198.51.100.3", 1_500, 1.0),
        ])
        .await
        .unwrap();
    store.append_mesh_rounds(&[]).await.unwrap();
    let b = store.mesh_rounds("node-b", 10).await.unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].started_ms, 2_000);
    assert!(b[0].id.is_some());
    assert_eq!(b[0].stats.to_value().unwrap()["loss_ratio"], 0.4);
    assert_eq!(store.mesh_rounds("node-b", 1).await.unwrap().len(), 1);
    assert!(store.mesh_rounds("nobody", 10).await.unwrap().is_empty());
    assert_eq!(store.prune(1_600).await.unwrap(), 3);
    assert_eq!(store.mesh_rounds("node-b", 10).await.unwrap().len(), 1);
    assert!(store.mesh_rounds("node-c", 10).await.unwrap().is_empty());
    store.close().await;
}

/// A batch larger than one multi-row INSERT (and with an odd remainder) keeps every round, in order.
#[tokio::test]
async fn a_large_mesh_batch_is_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("h.db")).await.unwrap();
    let batch: Vec<_> = (0..1_003)
        .map(|i| round("node-b", "fd00::2", i, f64::from(i as u32 % 7) / 10.0))
        .collect();
    store.append_mesh_rounds(&batch).await.unwrap();
    let got = store.mesh_rounds("node-b", 2_000).await.unwrap();
    assert_eq!(got.len(), 1_003);
    for (g, i) in got.iter().zip((0..1_003).rev()) {
        assert_eq!(g.started_ms, i);
        assert_eq!(
            g.stats.to_value().unwrap()["loss_ratio"],
            f64::from(i as u32 % 7) / 10.0
        );
    }
    store.close().await;
}
