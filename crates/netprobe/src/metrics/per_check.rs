//! Per-check metric cells and the collector that encodes them at scrape time.
//!
//! One block of atomics per check instead of prometheus-client `Family` maps: 10,000 checks would
//! otherwise hold ~60,000 label sets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use probe::{Outcome, Phase};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::*;
use crate::state::Health;

/// Bits of an f64 cell that was never set (a NaN payload no measurement produces).
pub(super) const UNSET: u64 = u64::MAX;
/// `probe_http_status_code` before an HTTP probe reported a status.
pub(super) const NO_STATUS: i64 = i64::MIN;

/// Which phase family a check's phase cells belong to (set by its first outcome with details).
pub(super) const PHASES_NONE: u8 = 0;
pub(super) const PHASES_HTTP: u8 = 1;
pub(super) const PHASES_ICMP: u8 = 2;

/// Phases exported by `probe_http_duration_seconds`.
pub(super) const HTTP_PHASES: [Phase; 5] = [
    Phase::Resolve,
    Phase::Connect,
    Phase::Tls,
    Phase::Processing,
    Phase::Transfer,
];

/// Phases exported by `probe_icmp_duration_seconds`.
pub(super) const ICMP_PHASES: [Phase; 3] = [Phase::Resolve, Phase::Setup, Phase::Rtt];

/// The live metric values of one check.
#[derive(Debug)]
pub(super) struct CheckCells {
    pub(super) label: CheckLabel,
    pub(super) success: AtomicI64,
    /// f64 bits.
    pub(super) duration: AtomicU64,
    pub(super) healthy: AtomicI64,
    pub(super) http_status: AtomicI64,
    /// f64 bits, [`UNSET`] until set.
    pub(super) ssl_expiry: AtomicU64,
    /// f64 bits, [`UNSET`] until set.
    pub(super) dns_lookup: AtomicU64,
    /// `PHASES_*`.
    pub(super) phase_kind: AtomicU8,
    /// f64 bits, in the order of [`HTTP_PHASES`] or [`ICMP_PHASES`].
    pub(super) phases: [AtomicU64; 5],
    pub(super) successes: AtomicU64,
    /// Failures by reason; empty (no allocation) until the first failure.
    pub(super) failures: Mutex<Vec<(&'static str, u64)>>,
}

impl CheckCells {
    pub(super) fn new(name: &str) -> Self {
        CheckCells {
            label: CheckLabel {
                check: Arc::from(name),
            },
            success: AtomicI64::new(0),
            duration: AtomicU64::new(0f64.to_bits()),
            healthy: AtomicI64::new(Health::Unknown.gauge_value()),
            http_status: AtomicI64::new(NO_STATUS),
            ssl_expiry: AtomicU64::new(UNSET),
            dns_lookup: AtomicU64::new(UNSET),
            phase_kind: AtomicU8::new(PHASES_NONE),
            phases: Default::default(),
            successes: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn set_phases(&self, kind: u8, phases: &[Phase], outcome: &Outcome) {
        for (cell, p) in self.phases.iter().zip(phases) {
            let d = outcome.phase(*p).map_or(0.0, |d| d.as_secs_f64());
            cell.store(d.to_bits(), Ordering::Relaxed);
        }
        self.phase_kind.store(kind, Ordering::Release);
    }
}

/// Every check's cells, by name (sorted output), encoded by [`Collector::encode`].
#[derive(Debug, Default)]
pub(super) struct PerCheck {
    pub(super) checks: RwLock<BTreeMap<Arc<str>, Arc<CheckCells>>>,
}

pub(super) fn f64_cell(cell: &AtomicU64) -> Option<f64> {
    let bits = cell.load(Ordering::Relaxed);
    (bits != UNSET).then(|| f64::from_bits(bits))
}

/// One family of per-check series: name, help (with the final period the registry adds to
/// registered metrics), type.
pub(super) struct Desc(&'static str, &'static str, MetricType);

pub(super) const PROBE_SUCCESS: Desc = Desc(
    "probe_success",
    "Whether the last probe succeeded (1) or failed (0).",
    MetricType::Gauge,
);
pub(super) const PROBE_DURATION: Desc = Desc(
    "probe_duration_seconds",
    "How long the last probe took to complete in seconds.",
    MetricType::Gauge,
);
pub(super) const HTTP_STATUS: Desc = Desc(
    "probe_http_status_code",
    "Response HTTP status code of the last probe.",
    MetricType::Gauge,
);
pub(super) const HTTP_PHASE: Desc = Desc(
    "probe_http_duration_seconds",
    "Duration of the last HTTP probe by phase, summed over all redirects.",
    MetricType::Gauge,
);
pub(super) const ICMP_PHASE: Desc = Desc(
    "probe_icmp_duration_seconds",
    "Duration of the last ICMP probe by phase (rtt is the mean over replies).",
    MetricType::Gauge,
);
pub(super) const SSL_EXPIRY: Desc = Desc(
    "probe_ssl_earliest_cert_expiry",
    "Earliest notAfter of the peer certificate chain, Unix seconds.",
    MetricType::Gauge,
);
pub(super) const DNS_LOOKUP: Desc = Desc(
    "probe_dns_lookup_time_seconds",
    "Round-trip time of the last DNS probe's query in seconds.",
    MetricType::Gauge,
);
pub(super) const HEALTHY: Desc = Desc(
    "netprobe_check_healthy",
    "State after thresholds: 1 healthy, 0 unhealthy, -1 unknown.",
    MetricType::Gauge,
);
pub(super) const RESULTS: Desc = Desc(
    "netprobe_check_results",
    "Probe results by outcome and reason.",
    MetricType::Counter,
);

impl PerCheck {
    /// Writes one gauge family with at most one series per check (`value` returns `None` for a
    /// check that has not set it).
    pub(super) fn gauges<V: prometheus_client::encoding::EncodeGaugeValue>(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        desc: &Desc,
        value: impl Fn(&CheckCells) -> Option<V>,
    ) -> fmt::Result {
        let mut family = encoder.encode_descriptor(desc.0, desc.1, None, desc.2)?;
        for c in self.checks.read().values() {
            if let Some(v) = value(c) {
                family.encode_family(&c.label)?.encode_gauge(&v)?;
            }
        }
        Ok(())
    }

    pub(super) fn phases(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        desc: &Desc,
        kind: u8,
    ) -> fmt::Result {
        let names: &[Phase] = if kind == PHASES_HTTP {
            &HTTP_PHASES
        } else {
            &ICMP_PHASES
        };
        let mut family = encoder.encode_descriptor(desc.0, desc.1, None, desc.2)?;
        for c in self.checks.read().values() {
            if c.phase_kind.load(Ordering::Acquire) != kind {
                continue;
            }
            for (cell, p) in c.phases.iter().zip(names) {
                let labels = PhaseLabels {
                    check: Arc::clone(&c.label.check),
                    phase: p.as_str(),
                };
                let v = f64::from_bits(cell.load(Ordering::Relaxed));
                family.encode_family(&labels)?.encode_gauge(&v)?;
            }
        }
        Ok(())
    }

    pub(super) fn results(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut family = encoder.encode_descriptor(RESULTS.0, RESULTS.1, None, RESULTS.2)?;
        let mut count = |labels: ResultLabels, n: u64| -> fmt::Result {
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, u64, u64>(&n, None)
        };
        for c in self.checks.read().values() {
            let successes = c.successes.load(Ordering::Relaxed);
            if successes > 0 {
                let labels = ResultLabels {
                    check: Arc::clone(&c.label.check),
                    result: "success",
                    reason: "",
                };
                count(labels, successes)?;
            }
            let failures = c.failures.lock().clone();
            for (reason, n) in failures {
                let labels = ResultLabels {
                    check: Arc::clone(&c.label.check),
                    result: "failure",
                    reason,
                };
                count(labels, n)?;
            }
        }
        Ok(())
    }
}

impl Collector for PerCheck {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let e = &mut encoder;
        self.gauges(e, &PROBE_SUCCESS, |c| {
            Some(c.success.load(Ordering::Relaxed))
        })?;
        self.gauges(e, &PROBE_DURATION, |c| f64_cell(&c.duration))?;
        self.gauges(e, &HTTP_STATUS, |c| {
            Some(c.http_status.load(Ordering::Relaxed)).filter(|&v| v != NO_STATUS)
        })?;
        self.phases(e, &HTTP_PHASE, PHASES_HTTP)?;
        self.phases(e, &ICMP_PHASE, PHASES_ICMP)?;
        self.gauges(e, &SSL_EXPIRY, |c| f64_cell(&c.ssl_expiry))?;
        self.gauges(e, &DNS_LOOKUP, |c| f64_cell(&c.dns_lookup))?;
        self.gauges(e, &HEALTHY, |c| Some(c.healthy.load(Ordering::Relaxed)))?;
        self.results(e)
    }
}
