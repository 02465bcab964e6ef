//! Bad input at scale: a static peer list of 100,000 nodes. The mesh runs in-process inside a lab
//! network namespace that has only loopback, so no echo can leave it (every fd00::/8 peer is
//! unreachable there). The agent must keep running, consider at most 10,000 nodes (reporting the
//! rest as dropped), probe only its rendezvous-selected peers, report them unreachable, and keep its
//! memory bounded.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab::Netns;
use netprobe::config::{MeshConfig, StaticPeer};
use netprobe::mesh;
use netprobe::metrics::Metrics;
use probe::icmp::IcmpEngine;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_peer_list_of_100000_is_bounded_and_reported() {
    let ns = Netns::new("npmeshscale").unwrap();
    let peers: Vec<StaticPeer> = (0..100_000u32)
        .map(|i| StaticPeer {
            name: format!("node-{i:06}"),
            addresses: vec![IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                (i >> 16) as u16,
                i as u16,
            ))],
        })
        .collect();
    let cfg = MeshConfig {
        node_name: "node-000007".to_owned(),
        interval: Duration::from_millis(500),
        packets: 2,
        peers_per_node: 3,
        full_mesh_max: 50,
        icmp: true,
        tcp: false,
        tcp_port: 8080,
        static_peers: peers,
        dns: None,
        kubernetes: None,
        firewall_manage: false,
        firewall_interfaces: Vec::new(),
        retention: None,
    };
    let before = rss_kib();
    let (view, metrics_text, after) = ns
        .run_in(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let metrics = Arc::new(Metrics::new());
                let tracker = TaskTracker::new();
                let cancel = CancellationToken::new();
                let state = mesh::start(
                    cfg,
                    Arc::new(IcmpEngine::new()),
                    Arc::clone(&metrics),
                    None,
                    None,
                    &tracker,
                    cancel.clone(),
                );
                let deadline = Instant::now() + Duration::from_secs(60);
                let view = loop {
                    let v = state.view();
                    if v.status.nodes > 0 && v.pairs.iter().all(|p| p.latest.is_some()) {
                        break v;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no rounds within 60 s: {:?}",
                        v.status
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let after = rss_kib();
                cancel.cancel();
                tracker.close();
                tokio::time::timeout(Duration::from_secs(10), tracker.wait())
                    .await
                    .expect("mesh tasks stop on cancel");
                (view, metrics.encode(), after)
            })
        })
        .unwrap();
    assert_eq!(view.status.nodes, 10_000, "{:?}", view.status);
    assert_eq!(view.status.dropped_nodes, 90_000);
    assert_eq!(view.status.observers, 3);
    assert!(!view.status.full_mesh);
    assert!(
        !view.pairs.is_empty() && view.pairs.len() < 50,
        "{} pairs",
        view.pairs.len()
    );
    for p in &view.pairs {
        let l = p.latest.as_ref().unwrap();
        assert_eq!(l.loss_ratio, 1.0, "{p:?}");
        assert!(l.reason.is_some(), "unreachable peers say why: {p:?}");
    }
    assert!(
        metrics_text.contains("netprobe_mesh_nodes 10000"),
        "{metrics_text}"
    );
    assert!(metrics_text.contains("netprobe_mesh_observers 3"));
    // The 100,000-entry config itself is ~10 MB; the running mesh adds little on top.
    let grew_mib = after.saturating_sub(before) / 1024;
    assert!(grew_mib < 64, "RSS grew by {grew_mib} MiB");
}
