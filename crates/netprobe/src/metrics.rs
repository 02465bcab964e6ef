//! Prometheus metrics (prometheus-client, OpenMetrics text). Naming rules: `docs/METRICS.md`.
//!
//! blackbox_exporter-compatible names where the meaning is the same (`probe_success`,
//! `probe_duration_seconds`, `probe_http_*`, `probe_icmp_duration_seconds`, `probe_ssl_earliest_cert_expiry`,
//! `probe_dns_lookup_time_seconds`), each with a `check` label; netprobe's own under `netprobe_`.
//! Per-check handles are created once per check ([`Metrics::for_check`]) so the hot path updates atomics.

use std::sync::atomic::AtomicU64;

use probe::{Details, Outcome, Phase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::Health;

type FloatGauge = Gauge<f64, AtomicU64>;

/// `{check}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    /// Check name.
    pub check: String,
}

/// `{check, phase}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Check name.
    pub check: String,
    /// Phase name (`resolve`, `connect`, `tls`, `processing`, `transfer`, `setup`, `rtt`).
    pub phase: String,
}

/// `{check, result, reason}`; `reason` is empty for successes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Check name.
    pub check: String,
    /// `success` or `failure`.
    pub result: String,
    /// The failure reason (kebab-case), empty on success.
    pub reason: String,
}

/// `{kind}`: probe kind, to keep histogram cardinality independent of the number of checks.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Probe kind (`icmp`, `tcp`, `http`, `dns`, `exec`, `grpc`).
    pub kind: String,
}

/// `{family, mode}` of the ICMP engine's sockets.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketModeLabels {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// `datagram` or `raw`.
    pub mode: String,
}

/// Every metric netprobe exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    probe_success: Family<CheckLabel, Gauge>,
    probe_duration: Family<CheckLabel, FloatGauge>,
    http_status: Family<CheckLabel, Gauge>,
    http_phase: Family<PhaseLabels, FloatGauge>,
    icmp_phase: Family<PhaseLabels, FloatGauge>,
    ssl_expiry: Family<CheckLabel, FloatGauge>,
    dns_lookup: Family<CheckLabel, FloatGauge>,
    healthy: Family<CheckLabel, Gauge>,
    results: Family<ResultLabels, Counter>,
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
}

/// The metric handles of one check.
#[derive(Clone)]
pub struct CheckMetrics {
    name: String,
    success: Gauge,
    duration: FloatGauge,
    healthy: Gauge,
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
        let probe_success = Family::<CheckLabel, Gauge>::default();
        registry.register(
            "probe_success",
            "Whether the last probe succeeded (1) or failed (0)",
            probe_success.clone(),
        );
        let probe_duration = Family::<CheckLabel, FloatGauge>::default();
        registry.register(
            "probe_duration_seconds",
            "How long the last probe took to complete in seconds",
            probe_duration.clone(),
        );
        let http_status = Family::<CheckLabel, Gauge>::default();
        registry.register(
            "probe_http_status_code",
            "Response HTTP status code of the last probe",
            http_status.clone(),
        );
        let http_phase = Family::<PhaseLabels, FloatGauge>::default();
        registry.register(
            "probe_http_duration_seconds",
            "Duration of the last HTTP probe by phase, summed over all redirects",
            http_phase.clone(),
        );
        let icmp_phase = Family::<PhaseLabels, FloatGauge>::default();
        registry.register(
            "probe_icmp_duration_seconds",
            "Duration of the last ICMP probe by phase (rtt is the mean over replies)",
            icmp_phase.clone(),
        );
        let ssl_expiry = Family::<CheckLabel, FloatGauge>::default();
        registry.register(
            "probe_ssl_earliest_cert_expiry",
            "Earliest notAfter of the peer certificate chain, Unix seconds",
            ssl_expiry.clone(),
        );
        let dns_lookup = Family::<CheckLabel, FloatGauge>::default();
        registry.register(
            "probe_dns_lookup_time_seconds",
            "Round-trip time of the last DNS probe's query in seconds",
            dns_lookup.clone(),
        );
        let healthy = Family::<CheckLabel, Gauge>::default();
        registry.register(
            "netprobe_check_healthy",
            "State after thresholds: 1 healthy, 0 unhealthy, -1 unknown",
            healthy.clone(),
        );
        let results = Family::<ResultLabels, Counter>::default();
        registry.register(
            "netprobe_check_results",
            "Probe results by outcome and reason",
            results.clone(),
        );
        let probe_histogram = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        registry.register(
            "netprobe_probe_duration_seconds",
            "Probe duration by probe kind in seconds",
            probe_histogram.clone(),
        );
        let lateness = Histogram::new(
            [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]
            .into_iter(),
        );
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
        Metrics {
            registry,
            probe_success,
            probe_duration,
            http_status,
            http_phase,
            icmp_phase,
            ssl_expiry,
            dns_lookup,
            healthy,
            results,
            probe_histogram,
            lateness,
            icmp_mode,
            in_flight,
            store_written,
            store_dropped,
            store_failures,
        }
    }

    /// Creates (once) the handles of check `name` of `kind`; its state starts at unknown (-1).
    pub fn for_check(&self, name: &str, kind: probe::Kind) -> CheckMetrics {
        let label = CheckLabel {
            check: name.to_owned(),
        };
        let healthy = self.healthy.get_or_create_owned(&label);
        healthy.set(Health::Unknown.gauge_value());
        CheckMetrics {
            name: name.to_owned(),
            success: self.probe_success.get_or_create_owned(&label),
            duration: self.probe_duration.get_or_create_owned(&label),
            healthy,
            histogram: self.probe_histogram.get_or_create_owned(&KindLabel {
                kind: kind.as_str().to_owned(),
            }),
        }
    }

    /// Records one outcome (after conditions) of a check.
    pub fn observe(&self, m: &CheckMetrics, outcome: &Outcome) {
        m.success.set(i64::from(outcome.success));
        let secs = outcome.duration.as_secs_f64();
        m.duration.set(secs);
        m.histogram.observe(secs);
        let (result, reason) = match outcome.reason {
            _ if outcome.success => ("success", ""),
            Some(r) => ("failure", r.as_str()),
            None => ("failure", "error"),
        };
        self.results
            .get_or_create(&ResultLabels {
                check: m.name.clone(),
                result: result.into(),
                reason: reason.into(),
            })
            .inc();
        let label = || CheckLabel {
            check: m.name.clone(),
        };
        let phase = |p: Phase| PhaseLabels {
            check: m.name.clone(),
            phase: p.as_str().to_owned(),
        };
        match &outcome.details {
            Details::Http(h) => {
                if let Some(code) = h.status {
                    self.http_status
                        .get_or_create(&label())
                        .set(i64::from(code));
                }
                for p in [
                    Phase::Resolve,
                    Phase::Connect,
                    Phase::Tls,
                    Phase::Processing,
                    Phase::Transfer,
                ] {
                    let d = outcome.phase(p).map_or(0.0, |d| d.as_secs_f64());
                    self.http_phase.get_or_create(&phase(p)).set(d);
                }
                if let Some(tls) = &h.tls {
                    self.ssl_expiry
                        .get_or_create(&label())
                        .set(tls.earliest_not_after as f64);
                }
            }
            Details::Icmp(_) => {
                for p in [Phase::Resolve, Phase::Setup, Phase::Rtt] {
                    let d = outcome.phase(p).map_or(0.0, |d| d.as_secs_f64());
                    self.icmp_phase.get_or_create(&phase(p)).set(d);
                }
            }
            Details::Dns(_) => {
                if let Some(d) = outcome.phase(Phase::Query) {
                    self.dns_lookup.get_or_create(&label()).set(d.as_secs_f64());
                }
            }
            _ => {}
        }
    }

    /// Sets `netprobe_check_healthy` for a check.
    pub fn set_health(&self, m: &CheckMetrics, health: Health) {
        m.healthy.set(health.gauge_value());
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
    pub fn set_icmp_mode(&self, family: &str, mode: probe::IcmpSocketMode) {
        for m in [probe::IcmpSocketMode::Datagram, probe::IcmpSocketMode::Raw] {
            let labels = SocketModeLabels {
                family: family.to_owned(),
                mode: m.as_str().to_owned(),
            };
            self.icmp_mode
                .get_or_create(&labels)
                .set(i64::from(m == mode));
        }
    }

    /// Encodes every metric in the Prometheus text format 0.0.4 (what `promtool check metrics` and
    /// older scrapers read); see [`Metrics::encode_openmetrics`] for OpenMetrics.
    pub fn encode(&self) -> String {
        openmetrics_to_prometheus_text(&self.encode_openmetrics())
    }

    /// Encodes every metric in the OpenMetrics 1.0 text format (ends with `# EOF`).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an error here would mean a bug in the encoder.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "Metrics encoding failed.");
        }
        out
    }
}

/// Rewrites OpenMetrics text into the Prometheus 0.0.4 text format.
///
/// The two differ, for what prometheus-client emits, only in counters (OpenMetrics names the family
/// `x` and its sample `x_total`; the Prometheus format names both `x_total`) and the `# EOF` trailer.
pub fn openmetrics_to_prometheus_text(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + counters.len() * 24);
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
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
}
