//! The mesh's history across a restart: rounds are served from memory before the first store
//! write, the shutdown writes every pair's unwritten rounds, and a new agent on the same store
//! serves them with its own. The mesh runs in-process inside a lab network namespace that has only
//! loopback, so no echo leaves it (the fd00::/8 peers are unreachable there: every round is lost,
//! which is a round like any other for the history).
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab::Netns;
use netprobe::config::{MeshConfig, StaticPeer};
use netprobe::mesh::{self, MeshState};
use netprobe::metrics::Metrics;
use probe::icmp::IcmpEngine;
use store::{SqliteStore, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn config() -> MeshConfig {
    MeshConfig {
        node_name: "node-a".to_owned(),
        interval: Duration::from_millis(200),
        packets: 1,
        peers_per_node: 0,
        full_mesh_max: 50,
        icmp: true,
        tcp: false,
        tcp_port: 8080,
        static_peers: ["node-b", "node-c"]
            .iter()
            .enumerate()
            .map(|(i, n)| StaticPeer {
                name: (*n).to_owned(),
                addresses: vec![format!("fd00::{}", i + 2).parse::<IpAddr>().unwrap()],
            })
            .collect(),
        dns: None,
        kubernetes: None,
        firewall_manage: false,
        firewall_interfaces: Vec::new(),
        retention: None,
    }
}

/// The start times (ns) of `peer`'s rounds in its history, all addresses together.
async fn starts(state: &MeshState, peer: &str) -> Vec<i64> {
    let Some(h) = state.history(peer, 10_000).await.unwrap() else {
        return Vec::new();
    };
    h.iter()
        .flat_map(|a| a.rounds.iter().map(|r| r.started_ns))
        .collect()
}

/// Runs an agent until `peer` has at least `rounds` rounds in its history (at most 30 s), checks
/// them against the store, then shuts it down; returns the start times it served.
async fn run_agent(db: &Arc<SqliteStore>, peer: &str, rounds: usize) -> Vec<i64> {
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let state = mesh::start(
        config(),
        Arc::new(IcmpEngine::new()),
        Arc::new(Metrics::new()),
        Some(Arc::clone(db) as Arc<dyn Store>),
        None,
        &tracker,
        cancel.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        let s = starts(&state, peer).await;
        if s.len() >= rounds {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{peer}: {} rounds after 30 s",
            s.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .expect("mesh tasks stop on cancel");
    served
}

/// Strictly increasing: in start order, no round twice.
fn increasing(starts: &[i64]) -> bool {
    starts.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn mesh_history_is_served_before_the_first_write_and_kept_across_a_restart() {
    let ns = Netns::new("npmeshhist").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    ns.run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let db = Arc::new(SqliteStore::open(&path).await.unwrap());
            // Well inside the first 30 s: nothing written yet, the rounds are served from memory.
            let first = run_agent(&db, "node-b", 3).await;
            assert!(increasing(&first), "{first:?}");
            // The shutdown wrote one row per pair holding every round served (and any finished
            // since).
            let stored = db.mesh_chunks("node-b", 10_000).await.unwrap();
            assert_eq!(stored.len(), 1, "{stored:?}");
            let kept: Vec<i64> = mesh::chunk::decode(&stored[0].data)
                .unwrap()
                .iter()
                .map(|r| r.started_ns)
                .collect();
            assert!(
                kept.starts_with(&first),
                "served {first:?}, stored {kept:?}"
            );
            assert_eq!(db.mesh_chunks("node-c", 10).await.unwrap().len(), 1);

            // A new agent on the same store: the old rounds, then its own, none twice.
            let second = run_agent(&db, "node-b", kept.len() + 2).await;
            assert!(second.starts_with(&kept), "{kept:?} then {second:?}");
            assert!(increasing(&second), "{second:?}");
            assert_eq!(db.mesh_chunks("node-b", 10_000).await.unwrap().len(), 2);
            db.close().await;
        });
    })
    .unwrap();
}
