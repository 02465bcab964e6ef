//! The impact report: what the kubelet will do once a pod's network is cut, predicted from its
//! probes (pure). Printed by `isolate --dry-run` and before `isolate` acts.
//!
//! Kubelet semantics used (pkg/kubelet/prober/worker.go, core/v1 `Probe`):
//! - one worker per probe probes right away and then on a ticker of `periodSeconds`; a tick while
//!   the container is younger than `initialDelaySeconds` probes nothing;
//! - a probe through a dropped network times out (a dropped SYN is not refused), so each failing
//!   probe is recorded `timeoutSeconds` after it started, and the next starts no earlier than the
//!   next tick: consecutive failures are `max(periodSeconds, timeoutSeconds)` apart (Go's ticker
//!   drops the ticks that fall while a probe runs);
//! - `failureThreshold` consecutive failures flip the result: liveness → the container is killed
//!   and restarted (its writable layer, every file not on a volume, is discarded); readiness → the
//!   pod is marked not ready and its address leaves the Services' EndpointSlices; startup → runs
//!   only until its first success, so a running container's startup probe no longer matters;
//! - `exec` probes run through the container runtime, not the network: isolation does not touch them.
//!
//! The network namespace belongs to the pod sandbox and outlives the container, so a restarted
//! container is still isolated: its liveness probe fails again (a crash loop with back-off).

use serde::Serialize;

use super::podspec::{Handler, PodSpec, Probe, ProbeKind};

/// Seconds after the isolation, as a window: the kubelet's ticker phase relative to the moment
/// of isolation is not known unless the container's age is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Earliest, seconds after isolation.
    pub earliest_seconds: u32,
    /// Latest, seconds after isolation.
    pub latest_seconds: u32,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.earliest_seconds == self.latest_seconds {
            write!(f, "{} s", self.earliest_seconds)
        } else {
            write!(f, "{}–{} s", self.earliest_seconds, self.latest_seconds)
        }
    }
}

/// What happens to one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeImpact {
    /// The probe as read from the pod spec.
    pub probe: Probe,
    /// Whether the isolation makes it fail.
    pub fails: bool,
    /// When it reaches `failureThreshold` failures, seconds after isolation (`None` if it does not fail).
    pub fails_after: Option<Window>,
    /// What the kubelet then does, or why nothing happens (one sentence).
    pub consequence: String,
}

/// The whole prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImpactReport {
    /// Whether the kubelet's probe traffic is kept (`--keep-probes`).
    pub keep_probes: bool,
    /// One entry per probe, in pod-spec order.
    pub probes: Vec<ProbeImpact>,
    /// When the kubelet restarts a container (the earliest failing liveness probe), if it does.
    pub restart_after: Option<Window>,
    /// When the pod leaves its Services' endpoints (the earliest failing readiness probe), if it does.
    pub not_ready_after: Option<Window>,
    /// Whether files written in a container's writable layer since it started will be lost.
    pub files_lost: bool,
    /// Paths that survive a restart (`container:mountPath` of volume mounts).
    pub surviving_paths: Vec<String>,
}

/// When a probe with this timing reaches its failure threshold after the network is cut.
/// `age_seconds`: the container's age at isolation, if known (then the window is exact, on the
/// kubelet's ticker grid counted from container start); unknown means the container is assumed
/// older than `initialDelaySeconds`, and the first failing tick falls within one period.
pub fn fail_window(p: &Probe, age_seconds: Option<u32>) -> Window {
    let period = p.period_seconds.max(1);
    let timeout = p.timeout_seconds.max(1);
    let spacing = period.max(timeout);
    let rest = p
        .failure_threshold
        .max(1)
        .saturating_sub(1)
        .saturating_mul(spacing)
        .saturating_add(timeout);
    match age_seconds {
        None => Window {
            earliest_seconds: rest,
            latest_seconds: rest.saturating_add(period),
        },
        Some(age) => {
            // First tick strictly after the isolation and not before the initial delay.
            let from = age.saturating_add(1).max(p.initial_delay_seconds);
            let first_tick = from.div_ceil(period).saturating_mul(period);
            let at = first_tick.saturating_sub(age).saturating_add(rest);
            Window {
                earliest_seconds: at,
                latest_seconds: at,
            }
        }
    }
}

/// Predicts the kubelet's reaction to isolating `pod` at `now_unix_seconds` (see the module docs
/// for the semantics). A container whose start time the manifest gives
/// ([`PodSpec::started_at`]) gets an exact time on the kubelet's ticker grid, `initialDelaySeconds`
/// included; the others a window one period wide.
pub fn predict(pod: &PodSpec, keep_probes: bool, now_unix_seconds: Option<u64>) -> ImpactReport {
    let mut probes = Vec::new();
    for p in &pod.probes {
        let age_seconds = now_unix_seconds.and_then(|now| {
            let (_, start) = pod.started_at.iter().find(|(c, _)| *c == p.container)?;
            u32::try_from(now.checked_sub(*start)?).ok()
        });
        let network = p.handler.port().is_some();
        let (fails, consequence) = match (p.kind, network, keep_probes) {
            (_, false, _) => (
                false,
                "exec probe: runs through the container runtime, not the network; unaffected".to_string(),
            ),
            (ProbeKind::Startup, true, _) => (
                false,
                "startup probe: already succeeded for a running container and not run again".to_string(),
            ),
            (_, true, true) => (
                false,
                format!(
                    "kept: the node's probe connections to port {} and their replies pass",
                    p.handler.port().unwrap_or(0)
                ),
            ),
            (ProbeKind::Liveness, true, false) => (
                true,
                "the kubelet kills and restarts the container; files outside volumes are lost; the \
                 restarted container is still isolated and fails again (crash loop)"
                    .to_string(),
            ),
            (ProbeKind::Readiness, true, false) => (
                true,
                "the pod turns not ready and leaves its Services' endpoints (no restart)".to_string(),
            ),
        };
        probes.push(ProbeImpact {
            probe: p.clone(),
            fails,
            fails_after: fails.then(|| fail_window(p, age_seconds)),
            consequence,
        });
    }
    let earliest = |kind: ProbeKind| {
        probes
            .iter()
            .filter(|i| i.probe.kind == kind)
            .filter_map(|i| i.fails_after)
            .min_by_key(|w| (w.earliest_seconds, w.latest_seconds))
    };
    let restart_after = earliest(ProbeKind::Liveness);
    let not_ready_after = earliest(ProbeKind::Readiness);
    ImpactReport {
        keep_probes,
        restart_after,
        not_ready_after,
        files_lost: restart_after.is_some(),
        surviving_paths: pod
            .volume_mounts
            .iter()
            .map(|(c, m)| format!("{c}:{m}"))
            .collect(),
        probes,
    }
}

/// One line per probe and a summary, for the terminal.
pub fn render(r: &ImpactReport) -> String {
    let mut out = String::from("impact on the kubelet's probes:\n");
    if r.probes.is_empty() {
        out.push_str("  no probes in the pod spec: the kubelet restarts nothing\n");
    }
    for i in &r.probes {
        let p = &i.probe;
        let handler = match &p.handler {
            Handler::HttpGet { port, path } => format!("httpGet :{port}{path}"),
            Handler::TcpSocket { port } => format!("tcpSocket :{port}"),
            Handler::Grpc { port } => format!("grpc :{port}"),
            Handler::Exec => "exec".to_string(),
        };
        let when = i
            .fails_after
            .map_or("passes".to_string(), |w| format!("fails after {w}"));
        out.push_str(&format!(
            "  {} {} {handler} (period {} s, timeout {} s, failureThreshold {}, initialDelay {} s): {when}: {}\n",
            p.container,
            p.kind,
            p.period_seconds,
            p.timeout_seconds,
            p.failure_threshold,
            p.initial_delay_seconds,
            i.consequence
        ));
    }
    match r.restart_after {
        Some(w) => out.push_str(&format!(
            "  restart: the kubelet restarts the container {w} after isolation; files written since it \
             started are lost{}\n",
            if r.surviving_paths.is_empty() {
                String::new()
            } else {
                format!(" (except on volumes: {})", r.surviving_paths.join(", "))
            }
        )),
        None => out.push_str("  restart: none; files written since the container started are kept\n"),
    }
    match r.not_ready_after {
        Some(w) => out.push_str(&format!(
            "  readiness: the pod leaves its Services' endpoints {w} after isolation\n"
        )),
        None => out.push_str("  readiness: unchanged (the pod stays in its Services' endpoints)\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn probe(kind: ProbeKind, handler: Handler, t: (u32, u32, u32, u32)) -> Probe {
        Probe {
            container: "app".into(),
            kind,
            handler,
            initial_delay_seconds: t.0,
            period_seconds: t.1,
            timeout_seconds: t.2,
            failure_threshold: t.3,
        }
    }

    /// (initialDelay, period, timeout, failureThreshold) in seconds.
    type Timing = (u32, u32, u32, u32);

    /// Timing, container age, expected window.
    #[test]
    fn restart_time_follows_the_kubelet() {
        let cases: &[(Timing, Option<u32>, (u32, u32))] = &[
            // Defaults: failures at tick+1, +11, +21 → 21 s after a tick right after isolation,
            // up to one period later.
            ((0, 10, 1, 3), None, (21, 31)),
            // failureThreshold 1: the first probe's timeout.
            ((0, 10, 5, 1), None, (5, 15)),
            // Timeout longer than the period: probes are spaced by the timeout.
            ((0, 5, 8, 3), None, (24, 29)),
            // Known age 25 s, period 10: next tick at 30 → 5 + 2×10 + 1.
            ((0, 10, 1, 3), Some(25), (26, 26)),
            // Age exactly on a tick: that tick is the isolation's moment, the next one fails.
            ((0, 10, 1, 3), Some(20), (31, 31)),
            // Young container, initialDelay 60: first probe at 60 s of age (ticks at 0,10,…).
            ((60, 10, 1, 3), Some(5), (76, 76)),
            // initialDelay not on the tick grid: first tick at 70.
            ((65, 10, 2, 2), Some(0), (82, 82)),
            ((0, 1, 1, 30), None, (30, 31)),
        ];
        for (timing, age, (lo, hi)) in cases {
            let p = probe(
                ProbeKind::Liveness,
                Handler::TcpSocket { port: 80 },
                *timing,
            );
            let w = fail_window(&p, *age);
            assert_eq!(
                (w.earliest_seconds, w.latest_seconds),
                (*lo, *hi),
                "{timing:?} age {age:?}"
            );
        }
    }

    fn pod(probes: Vec<Probe>) -> PodSpec {
        PodSpec {
            name: Some("web".into()),
            probes,
            volume_mounts: vec![("app".into(), "/data".into())],
            started_at: vec![],
        }
    }

    #[test]
    fn report_restart_readiness_and_keep_probes() {
        let spec = pod(vec![
            probe(
                ProbeKind::Liveness,
                Handler::HttpGet {
                    port: 8080,
                    path: "/healthz".into(),
                },
                (0, 10, 1, 3),
            ),
            probe(
                ProbeKind::Liveness,
                Handler::Grpc { port: 9090 },
                (0, 5, 1, 2),
            ),
            probe(
                ProbeKind::Readiness,
                Handler::TcpSocket { port: 8080 },
                (0, 5, 1, 1),
            ),
            probe(
                ProbeKind::Startup,
                Handler::TcpSocket { port: 8080 },
                (0, 5, 1, 1),
            ),
            probe(ProbeKind::Liveness, Handler::Exec, (0, 1, 1, 1)),
        ]);
        let r = predict(&spec, false, None);
        // The gRPC liveness probe trips first: 1×5 + 1 = 6 s, up to 11 s.
        let w = r.restart_after.unwrap();
        assert_eq!((w.earliest_seconds, w.latest_seconds), (6, 11));
        let w = r.not_ready_after.unwrap();
        assert_eq!((w.earliest_seconds, w.latest_seconds), (1, 6));
        assert!(r.files_lost);
        assert_eq!(
            r.probes.iter().map(|i| i.fails).collect::<Vec<_>>(),
            [true, true, true, false, false]
        );
        let text = render(&r);
        assert!(
            text.contains("restarts the container 6–11 s after isolation"),
            "{text}"
        );
        assert!(text.contains("except on volumes: app:/data"), "{text}");

        let kept = predict(&spec, true, None);
        assert_eq!(kept.restart_after, None);
        assert_eq!(kept.not_ready_after, None);
        assert!(!kept.files_lost);
        assert!(kept.probes.iter().all(|i| !i.fails));
        let text = render(&kept);
        assert!(text.contains("restart: none"), "{text}");
        assert!(!text.contains("fails after"), "{text}");

        // A known start time: exact, with the initial delay. Started at 1000, isolated at 1005,
        // initialDelay 60, period 10 → first probe at age 60 → 55 + 2×10 + 1.
        let young = PodSpec {
            started_at: vec![("app".into(), 1_000)],
            ..pod(vec![probe(
                ProbeKind::Liveness,
                Handler::TcpSocket { port: 80 },
                (60, 10, 1, 3),
            )])
        };
        let w = predict(&young, false, Some(1_005)).restart_after.unwrap();
        assert_eq!((w.earliest_seconds, w.latest_seconds), (76, 76));
        assert!(render(&predict(&young, false, Some(1_005))).contains("container 76 s after"));

        let none = render(&predict(&pod(vec![]), false, None));
        assert!(none.contains("no probes"), "{none}");
    }
}
