//! Prometheus metrics (prometheus-client, OpenMetrics text). Naming rules: `docs/METRICS.md`.
//!
//! blackbox_exporter-compatible names where the meaning is the same (`probe_success`,
//! `probe_duration_seconds`, `probe_http_*`, `probe_icmp_duration_seconds`, `probe_ssl_earliest_cert_expiry`,
//! `probe_dns_lookup_time_seconds`), each with a `check` label; netprobe's own under `netprobe_`.
//! Per-check handles are created once per check ([`Metrics::for_check`]) so the hot path updates atomics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use probe::{Details, Outcome, Phase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::Health;

mod diagnosis;
mod mesh;
mod per_check;
mod text;

pub use diagnosis::{
    ConclusionLabels, DiagnosisMetrics, FindingLabels, SkipLabels, SkipReason, conclusion_str,
};

pub use mesh::{MeshLabels, MeshMetrics};
use per_check::{CheckCells, HTTP_PHASES, ICMP_PHASES, PHASES_HTTP, PHASES_ICMP, PerCheck};
use text::openmetrics_into_prometheus_text;
pub use text::openmetrics_to_prometheus_text;

// Label values are shared (`Arc<str>`) or static, so encoding a series allocates nothing.

/// `{check}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    /// Check name (one allocation per check, shared by every series of the check).
    pub check: Arc<str>,
}

/// `{check, phase}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Check name.
    pub check: Arc<str>,
    /// Phase name (`resolve`, `connect`, `tls`, `processing`, `transfer`, `setup`, `rtt`).
    pub phase: &'static str,
}

/// `{check, result, reason}`; `reason` is empty for successes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Check name.
    pub check: Arc<str>,
    /// `success` or `failure`.
    pub result: &'static str,
    /// The failure reason (kebab-case), empty on success.
    pub reason: &'static str,
}

/// `{kind}`: probe kind, to keep histogram cardinality independent of the number of checks.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Probe kind (`icmp`, `tcp`, `http`, `dns`, `exec`, `grpc`).
    pub kind: &'static str,
}

/// `{family, mode}` of the ICMP engine's sockets.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketModeLabels {
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// `datagram` or `raw`.
    pub mode: &'static str,
}

/// Every metric netprobe exports, and the registry that encodes them.
///
/// The per-check families (`probe_*`, `netprobe_check_healthy`, `netprobe_check_results`) are not
/// prometheus-client `Family`s: with 10,000 checks those held ~60,000 label sets in hash maps
/// (about 7 MB). Each check instead owns one block of atomics ([`CheckMetrics`]) and a collector
/// walks the checks at scrape time, emitting the same series a `Family` would (a series appears
/// once it has been set, as with `get_or_create`).
pub struct Metrics {
    registry: Registry,
    checks: Arc<PerCheck>,
    probe_histogram: Family<KindLabel, Histogram>,
    lateness: Histogram,
    icmp_mode: Family<SocketModeLabels, Gauge>,
    in_flight: Gauge,
    /// Records written to the store (mirrors the writer's counter at scrape time).
    pub store_written: Counter,
    /// Records dropped because the write queue was full.
    pub store_dropped: Counter,
    /// Failed store writes.
    pub store_failures: Counter,
    /// Automatic diagnosis counters.
    pub diagnosis: DiagnosisMetrics,
    /// Node latency mesh families.
    pub mesh: MeshMetrics,
    /// Length of the last encoding, so the next one is built in one allocation (with 10,000
    /// checks it is ~4 MB; growing by doubling would allocate and copy twice that).
    last_len: AtomicUsize,
}

/// The handles of one check: its cells and its kind's duration histogram.
pub struct CheckMetrics {
    cells: Arc<CheckCells>,
    histogram: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let checks = Arc::new(PerCheck::default());
        registry.register_collector(Box::new(Arc::clone(&checks)));
        let probe_histogram = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        registry.register(
            "netprobe_probe_duration_seconds",
            "Probe duration by probe kind in seconds",
            probe_histogram.clone(),
        );
        let lateness = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        ]);
        registry.register(
            "netprobe_probe_start_lateness_seconds",
            "How late each probe started relative to its fixed-rate schedule, in seconds",
            lateness.clone(),
        );
        let icmp_mode = Family::<SocketModeLabels, Gauge>::default();
        registry.register(
            "netprobe_icmp_socket_mode",
            "ICMP socket in use per address family (1 for the mode in use)",
            icmp_mode.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "netprobe_probes_in_flight",
            "Probes running right now",
            in_flight.clone(),
        );
        let store_written = Counter::default();
        registry.register(
            "netprobe_store_records_written",
            "Results and events written to the store",
            store_written.clone(),
        );
        let store_dropped = Counter::default();
        registry.register(
            "netprobe_store_records_dropped",
            "Results dropped before reaching the store (queue full, repeated write failure, or shutdown)",
            store_dropped.clone(),
        );
        let store_failures = Counter::default();
        registry.register(
            "netprobe_store_write_failures",
            "Failed batch writes to the store",
            store_failures.clone(),
        );
        let diagnosis = DiagnosisMetrics::register(&mut registry);
        let mesh = MeshMetrics::register(&mut registry);
        Metrics {
            registry,
            checks,
            probe_histogram,
            lateness,
            icmp_mode,
            in_flight,
            store_written,
            store_dropped,
            store_failures,
            diagnosis,
            mesh,
            last_len: AtomicUsize::new(0),
        }
    }

    /// The handles of check `name` of `kind`; its state starts at unknown (-1). A second call
    /// with the same name returns handles to the same series.
    pub fn for_check(&self, name: &str, kind: probe::Kind) -> CheckMetrics {
        let cells = {
            let mut checks = self.checks.checks.write();
            match checks.get(name) {
                Some(c) => Arc::clone(c),
                None => {
                    let c = Arc::new(CheckCells::new(name));
                    checks.insert(Arc::clone(&c.label.check), Arc::clone(&c));
                    c
                }
            }
        };
        CheckMetrics {
            cells,
            histogram: self.probe_histogram.get_or_create_owned(&KindLabel {
                kind: kind.as_str(),
            }),
        }
    }

    /// Records one outcome (after conditions) of a check.
    pub fn observe(&self, m: &CheckMetrics, outcome: &Outcome) {
        let c = &*m.cells;
        c.success
            .store(i64::from(outcome.success), Ordering::Relaxed);
        let secs = outcome.duration.as_secs_f64();
        c.duration.store(secs.to_bits(), Ordering::Relaxed);
        m.histogram.observe(secs);
        if outcome.success {
            c.successes.fetch_add(1, Ordering::Relaxed);
        } else {
            let reason = outcome.reason.map_or("error", |r| r.as_str());
            let mut failures = c.failures.lock();
            match failures.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => failures.push((reason, 1)),
            }
        }
        match &outcome.details {
            Details::Http(h) => {
                if let Some(code) = h.status {
                    c.http_status.store(i64::from(code), Ordering::Relaxed);
                }
                c.set_phases(PHASES_HTTP, &HTTP_PHASES, outcome);
                if let Some(tls) = &h.tls {
                    let expiry = tls.earliest_not_after as f64;
                    c.ssl_expiry.store(expiry.to_bits(), Ordering::Relaxed);
                }
            }
            Details::Icmp(_) => c.set_phases(PHASES_ICMP, &ICMP_PHASES, outcome),
            Details::Dns(_) => {
                if let Some(d) = outcome.phase(Phase::Query) {
                    let secs = d.as_secs_f64();
                    c.dns_lookup.store(secs.to_bits(), Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    /// Sets `netprobe_check_healthy` for a check.
    pub fn set_health(&self, m: &CheckMetrics, health: Health) {
        m.cells
            .healthy
            .store(health.gauge_value(), Ordering::Relaxed);
    }

    /// Records how late a probe started (seconds past its scheduled tick).
    pub fn observe_lateness(&self, seconds: f64) {
        self.lateness.observe(seconds);
    }

    /// The in-flight gauge.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Marks the ICMP socket mode in use for `family` (`ipv4`/`ipv6`).
    pub fn set_icmp_mode(&self, family: &'static str, mode: probe::IcmpSocketMode) {
        for m in [probe::IcmpSocketMode::Datagram, probe::IcmpSocketMode::Raw] {
            let labels = SocketModeLabels {
                family,
                mode: m.as_str(),
            };
            self.icmp_mode
                .get_or_create(&labels)
                .set(i64::from(m == mode));
        }
    }

    /// Encodes every metric in the Prometheus text format 0.0.4 (what `promtool check metrics` and
    /// older scrapers read); see [`Metrics::encode_openmetrics`] for OpenMetrics.
    pub fn encode(&self) -> String {
        openmetrics_into_prometheus_text(self.encode_openmetrics())
    }

    /// Encodes every metric in the OpenMetrics 1.0 text format (ends with `# EOF`).
    pub fn encode_openmetrics(&self) -> String {
        let last = self.last_len.load(Ordering::Relaxed);
        let mut out = String::with_capacity(last + last / 16 + 16 * 1024);
        // Writing into a String cannot fail; an error here would mean a bug in the encoder.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "Metrics encoding failed.");
        }
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn encodes_blackbox_names_with_check_label() {
        let metrics = Metrics::new();
        let m = metrics.for_check("web", probe::Kind::Http);
        let outcome = Outcome::ok(
            "ok",
            Duration::from_millis(12),
            vec![probe::PhaseTiming {
                phase: Phase::Connect,
                duration: Duration::from_millis(1),
            }],
            Details::Http(probe::HttpDetails {
                status: Some(204),
                ..Default::default()
            }),
        );
        metrics.observe(&m, &outcome);
        metrics.set_health(&m, Health::Healthy);
        let text = metrics.encode();
        assert!(text.contains("probe_success{check=\"web\"} 1"), "{text}");
        assert!(
            text.contains("probe_http_status_code{check=\"web\"} 204"),
            "{text}"
        );
        assert!(
            text.contains("probe_http_duration_seconds{check=\"web\",phase=\"connect\"} 0.001"),
            "{text}"
        );
        assert!(
            text.contains("netprobe_check_healthy{check=\"web\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "netprobe_check_results_total{check=\"web\",result=\"success\",reason=\"\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE netprobe_check_results_total counter"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(metrics.encode_openmetrics().ends_with("# EOF\n"));
    }

    #[test]
    fn in_place_conversion_matches_the_general_one() {
        let metrics = Metrics::new();
        for (i, kind) in [probe::Kind::Icmp, probe::Kind::Http, probe::Kind::Dns]
            .into_iter()
            .enumerate()
        {
            let m = metrics.for_check(&format!("c{i}"), kind);
            let details = match kind {
                probe::Kind::Icmp => Details::Icmp(Default::default()),
                probe::Kind::Http => Details::Http(Default::default()),
                _ => Details::Dns(Default::default()),
            };
            let ok = Outcome::ok("ok", Duration::from_millis(3), vec![], details.clone());
            let bad = Outcome::fail(
                probe::Reason::Timeout,
                "slow",
                Duration::from_millis(9),
                vec![],
                details,
            );
            metrics.observe(&m, &ok);
            metrics.observe(&m, &bad);
            metrics.observe(&m, &bad);
        }
        metrics.store_written.inc();
        let open = metrics.encode_openmetrics();
        let text = metrics.encode();
        assert_eq!(text, openmetrics_to_prometheus_text(&open));
        assert!(
            text.contains("# TYPE netprobe_store_records_written_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "netprobe_check_results_total{check=\"c0\",result=\"failure\",reason=\"timeout\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("probe_icmp_duration_seconds{check=\"c0\",phase=\"rtt\"} 0.0\n"),
            "{text}"
        );
        for input in [
            "",
            "# EOF\n",
            "a 1\n# EOF\nb 2\n",
            "x 1",
            "# TYPE c counter\r\n",
        ] {
            assert_eq!(
                openmetrics_into_prometheus_text(input.to_owned()),
                openmetrics_to_prometheus_text(input),
                "{input:?}"
            );
        }
    }
}
