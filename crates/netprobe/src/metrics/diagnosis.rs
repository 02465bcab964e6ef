//! Metrics of the automatic diagnosis `netprobe run` takes when a check turns unhealthy
//! ([`crate::autodiag`]). Series appear on first use: a check that never turned unhealthy has
//! none, so 10,000 healthy checks cost nothing here.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::diagnose::{Conclusion, FindingId};

/// `{check, id, end}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    /// Check name.
    pub check: Arc<str>,
    /// Finding id ([`FindingId::as_str`]).
    pub id: &'static str,
    /// Where the finding was made: `local` (this host) or `far` (a mesh pair's far end, asked
    /// over its API).
    pub end: &'static str,
}

/// `{check, conclusion}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConclusionLabels {
    /// Check name.
    pub check: Arc<str>,
    /// `healthy`, `explained` or `unexplained` ([`conclusion_str`]).
    pub conclusion: &'static str,
}

/// `{check, reason}` of a diagnosis that was not taken or did not finish.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    /// Check name.
    pub check: Arc<str>,
    /// [`SkipReason::as_str`].
    pub reason: &'static str,
}

/// Why a diagnosis was not taken, or did not produce one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// One of this check is still running.
    InFlight,
    /// The last one of this check started less than `diagnosis.min_interval` ago.
    RateLimited,
    /// The snapshot or the question failed (the log says why: an unresolvable host, a collector
    /// thread that could not start).
    Failed,
}

impl SkipReason {
    /// `in-flight`, `rate-limited` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InFlight => "in-flight",
            SkipReason::RateLimited => "rate-limited",
            SkipReason::Failed => "failed",
        }
    }
}

/// The label value of a [`Conclusion`] (the same string as its JSON form).
pub fn conclusion_str(c: Conclusion) -> &'static str {
    match c {
        Conclusion::Healthy => "healthy",
        Conclusion::Explained => "explained",
        Conclusion::Unexplained => "unexplained",
    }
}

/// The diagnosis counters.
#[derive(Debug, Clone, Default)]
pub struct DiagnosisMetrics {
    findings: Family<FindingLabels, Counter>,
    diagnoses: Family<ConclusionLabels, Counter>,
    skipped: Family<SkipLabels, Counter>,
}

impl DiagnosisMetrics {
    /// Registers the families in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = DiagnosisMetrics::default();
        registry.register(
            "netprobe_diagnosis_findings",
            "Diagnoses of a check in which a finding id was present",
            m.findings.clone(),
        );
        registry.register(
            "netprobe_diagnoses",
            "Diagnoses taken when a check turned unhealthy, by conclusion",
            m.diagnoses.clone(),
        );
        registry.register(
            "netprobe_diagnoses_skipped",
            "Diagnoses not taken (in-flight, rate-limited) or that failed",
            m.skipped.clone(),
        );
        m
    }

    /// Counts one finished diagnosis of `check`: its conclusion, and each distinct finding id
    /// once per end — `ids` of this host (`end="local"`), `far_ids` of a mesh pair's far end
    /// (`end="far"`, empty for a check).
    pub fn observe(
        &self,
        check: &Arc<str>,
        conclusion: Conclusion,
        ids: &[FindingId],
        far_ids: &[FindingId],
    ) {
        self.diagnoses
            .get_or_create(&ConclusionLabels {
                check: Arc::clone(check),
                conclusion: conclusion_str(conclusion),
            })
            .inc();
        for (end, ids) in [("local", ids), ("far", far_ids)] {
            let mut seen: Vec<FindingId> = Vec::with_capacity(ids.len());
            for &id in ids {
                if seen.contains(&id) {
                    continue;
                }
                seen.push(id);
                self.findings
                    .get_or_create(&FindingLabels {
                        check: Arc::clone(check),
                        id: id.as_str(),
                        end,
                    })
                    .inc();
            }
        }
    }

    /// Counts a diagnosis of `check` that was skipped or failed.
    pub fn skipped(&self, check: &Arc<str>, reason: SkipReason) {
        self.skipped
            .get_or_create(&SkipLabels {
                check: Arc::clone(check),
                reason: reason.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn counts_each_finding_id_once_per_diagnosis_with_enum_labels() {
        let metrics = Metrics::new();
        let check: Arc<str> = Arc::from("web");
        let ids = [
            FindingId::FirewallDrop,
            FindingId::DualIptablesBackend,
            FindingId::FirewallDrop,
        ];
        metrics
            .diagnosis
            .observe(&check, Conclusion::Explained, &ids, &[]);
        metrics.diagnosis.observe(
            &check,
            Conclusion::Explained,
            &[FindingId::FirewallDrop],
            &[FindingId::FirewallDrop, FindingId::FirewallDrop],
        );
        metrics.diagnosis.skipped(&check, SkipReason::RateLimited);
        let text = metrics.encode();
        for needle in [
            "# TYPE netprobe_diagnosis_findings_total counter\n",
            "netprobe_diagnosis_findings_total{check=\"web\",id=\"firewall-drop\",end=\"local\"} 2\n",
            "netprobe_diagnosis_findings_total{check=\"web\",id=\"dual-iptables-backend\",end=\"local\"} 1\n",
            "netprobe_diagnosis_findings_total{check=\"web\",id=\"firewall-drop\",end=\"far\"} 1\n",
            "netprobe_diagnoses_total{check=\"web\",conclusion=\"explained\"} 2\n",
            "netprobe_diagnoses_skipped_total{check=\"web\",reason=\"rate-limited\"} 1\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        // The label value is the conclusion's JSON form.
        for c in [
            Conclusion::Healthy,
            Conclusion::Explained,
            Conclusion::Unexplained,
        ] {
            assert_eq!(
                serde_json::to_value(c).ok(),
                Some(serde_json::Value::from(conclusion_str(c)))
            );
        }
    }
}
