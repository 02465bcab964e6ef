//! The node latency mesh's metrics (see `docs/METRICS.md`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{source_node, target_node, target_ip, family, protocol}` of one mesh pair.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeshLabels {
    /// This agent's node name.
    pub source_node: Arc<str>,
    /// The peer's node name.
    pub target_node: Arc<str>,
    /// The peer address probed.
    pub target_ip: Arc<str>,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// `icmp` or `tcp` (the fallback).
    pub protocol: &'static str,
}

/// The mesh families, registered once in [`super::Metrics::new`].
pub struct MeshMetrics {
    /// `netprobe_mesh_rtt_seconds`: every answered echo (or TCP connect) of every pair.
    pub rtt: Family<MeshLabels, Histogram>,
    /// `netprobe_mesh_loss_ratio`: the loss of the pair's latest round, 0–1.
    pub loss: Family<MeshLabels, Gauge<f64, AtomicU64>>,
    /// `netprobe_mesh_peers`: peer addresses this agent probes.
    pub peers: Gauge,
    /// `netprobe_mesh_nodes`: nodes discovered (including this one when listed).
    pub nodes: Gauge,
    /// `netprobe_mesh_observers`: how many nodes probe this one under the current selection.
    pub observers: Gauge,
    /// `netprobe_mesh_discovery_errors`: discovery passes that reported an error (a counter).
    pub discovery_errors: prometheus_client::metrics::counter::Counter,
}

impl MeshMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        // 50 µs … ~3.3 s: a LAN hop to a congested cross-region path.
        let rtt = Family::<MeshLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 17))
        });
        registry.register(
            "netprobe_mesh_rtt_seconds",
            "Round-trip time of mesh echoes (or TCP connects) per pair, in seconds",
            rtt.clone(),
        );
        let loss = Family::<MeshLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "netprobe_mesh_loss_ratio",
            "Share of the latest round's probes to a mesh peer that got no answer (0 to 1)",
            loss.clone(),
        );
        let peers = Gauge::default();
        registry.register(
            "netprobe_mesh_peers",
            "Peer addresses this agent probes",
            peers.clone(),
        );
        let nodes = Gauge::default();
        registry.register(
            "netprobe_mesh_nodes",
            "Nodes known from mesh discovery",
            nodes.clone(),
        );
        let observers = Gauge::default();
        registry.register(
            "netprobe_mesh_observers",
            "Nodes that probe this node under the current peer selection",
            observers.clone(),
        );
        let discovery_errors = prometheus_client::metrics::counter::Counter::default();
        registry.register(
            "netprobe_mesh_discovery_errors",
            "Mesh discovery passes that reported an error",
            discovery_errors.clone(),
        );
        MeshMetrics {
            rtt,
            loss,
            peers,
            nodes,
            observers,
            discovery_errors,
        }
    }
}
