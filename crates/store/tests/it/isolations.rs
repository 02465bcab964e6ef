//! Isolations: round trip through a real SQLite file, newest first, never pruned.

use serde_json::json;
use store::{IsolationRecord, Store};

use crate::common::open_tmp;

fn record(action: &str, t: i64) -> IsolationRecord {
    IsolationRecord {
        id: None,
        action: action.to_owned(),
        netns: "netns pod1".to_owned(),
        at_ms: t,
        who: "root (uid 0)".to_owned(),
        reason: "incident 42".to_owned(),
        rules: json!({"iptables-nft-restore": "*filter\n-A NETPROBE-ISOLATE-IN -j DROP\nCOMMIT\n"})
            .into(),
        details: json!({"keep_probes": true}).into(),
    }
}

#[tokio::test]
async fn isolations_round_trip_newest_first_and_survive_pruning() {
    let (_dir, store) = open_tmp().await;
    assert!(store.isolations(10).await.unwrap().is_empty());
    let a = store
        .append_isolation(&record("isolate", 1_000))
        .await
        .unwrap();
    let b = store
        .append_isolation(&record("release", 2_000))
        .await
        .unwrap();
    assert!(a < b);
    store.prune(10_000).await.unwrap();
    let got = store.isolations(10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].action, "release");
    assert_eq!(got[0].id, Some(b));
    let mut want = record("isolate", 1_000);
    want.id = Some(a);
    assert_eq!(got[1], want);
    assert_eq!(store.isolations(1).await.unwrap().len(), 1);
    assert!(store.isolations(0).await.unwrap().is_empty());
}
