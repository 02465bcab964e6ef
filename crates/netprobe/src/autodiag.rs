//! Automatic diagnosis in `netprobe run`: when a check turns unhealthy, snapshot the host's state
//! and diagnose the check's flow ([`crate::diagnose`]) in the background, store the diagnosis,
//! count its findings and log them.
//!
//! Probing is never delayed: [`AutoDiagnoser::turned_unhealthy`] only decides and spawns. The
//! snapshot runs `iptables-save`, `nft`, … and may `setns`, so it runs on tokio's blocking pool
//! (`spawn_blocking`), never on an async worker. Three bounds keep a mass outage cheap:
//!
//! - at most one diagnosis in flight per check;
//! - at most one started per check per `diagnosis.min_interval` (default 5 minutes): a check that
//!   flaps is diagnosed once per interval ([`Limiter`]);
//! - at most `diagnosis.max_concurrent` (default 2) running at once across all checks; the rest
//!   wait their turn (each already holds its check's in-flight slot, so the queue is at most one
//!   per check).
//!
//! `exec` checks have no network flow and are not diagnosed.
//!
//! A mesh pair that lost every echo ([`UnhealthyHook::mesh_pair_lost`]) is diagnosed from both
//! ends: while this host is read, the peer's agent is asked to trace the inbound flow on its own
//! host ([`crate::farend::ask`]); its answer is attached as the diagnosis's `far_end`
//! ([`crate::diagnose::attach_far_end`]) and its findings are counted with `end="far"`. The
//! observer does not search its own host for the peer's namespace (a peer is another node).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use probe::Outcome;
use store::{DiagnosisRecord, Store};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::check::{CheckSpec, UnhealthyHook};
use crate::collect::snapshot::{self, SnapshotRequest};
use crate::collect::{NetnsTarget, RouteQuery};
use crate::config::DiagnosisConfig;
use crate::diagnose::{self, Diagnosis, Extra, FarEnd, FarEndStatus, Protocol, Question};
use crate::farend::FarEndTarget;
use crate::metrics::{Metrics, SkipReason, conclusion_str};

/// Why [`Limiter::try_start`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A diagnosis of this check is still running.
    InFlight,
    /// The last one started less than the interval ago; the next may start in this long.
    TooSoon(Duration),
}

impl Refused {
    fn reason(self) -> SkipReason {
        match self {
            Refused::InFlight => SkipReason::InFlight,
            Refused::TooSoon(_) => SkipReason::RateLimited,
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    in_flight: bool,
    last_start: Option<Instant>,
}

/// Per-check rate limit: one in flight, and starts at least `min_interval` apart. Uses tokio's
/// clock, so tests run with paused time.
#[derive(Debug)]
pub struct Limiter {
    min_interval: Duration,
    slots: Mutex<HashMap<Arc<str>, Slot>>,
}

/// A started diagnosis; dropping it (also on panic or cancellation) frees its check's slot.
#[derive(Debug)]
pub struct Started {
    limiter: Arc<Limiter>,
    check: Arc<str>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(slot) = self.limiter.slots.lock().get_mut(&self.check) {
            slot.in_flight = false;
        }
    }
}

impl Limiter {
    /// A limiter with starts at least `min_interval` apart per check.
    pub fn new(min_interval: Duration) -> Arc<Limiter> {
        Arc::new(Limiter {
            min_interval,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a diagnosis of `check` at `now` if allowed.
    pub fn try_start(self: &Arc<Self>, check: &Arc<str>, now: Instant) -> Result<Started, Refused> {
        let mut slots = self.slots.lock();
        let slot = slots.entry(Arc::clone(check)).or_default();
        if slot.in_flight {
            return Err(Refused::InFlight);
        }
        if let Some(last) = slot.last_start {
            let since = now.saturating_duration_since(last);
            if since < self.min_interval {
                return Err(Refused::TooSoon(self.min_interval - since));
            }
        }
        slot.in_flight = true;
        slot.last_start = Some(now);
        Ok(Started {
            limiter: Arc::clone(self),
            check: Arc::clone(check),
        })
    }
}

/// The flow of a check's target as a diagnosis question; `Ok(None)` for a kind without a
/// network flow (`exec`). Resolves a host name (blocking): call it off the async workers.
///
/// Mapping: the target strings the probers display (`icmp://`, `tcp://`, `http(s)://`,
/// `dns://…?type=A[;transport=tcp]`, `grpc(s)://HOST:PORT/SERVICE`) as [`Question::from_target`]
/// reads them; `grpcs` is a TCP flow like `grpc`, and DNS over TCP a TCP flow to the same port.
pub fn question_for(kind: probe::Kind, target: &str) -> Result<Option<Question>, String> {
    if kind == probe::Kind::Exec {
        return Ok(None);
    }
    let text = match target.strip_prefix("grpcs://") {
        Some(rest) => format!("grpc://{rest}"),
        None => target.to_owned(),
    };
    let mut q = Question::from_target(&text, None).map_err(|e| e.to_string())?;
    q.target = target.to_owned();
    if kind == probe::Kind::Dns && target.contains("transport=tcp") {
        q.protocol = Protocol::Tcp;
    }
    Ok(Some(q))
}

/// Snapshot of the current network namespace for `q`, then the diagnosis. Blocking. With
/// `locate_target`, a destination on another namespace of this host is looked for.
fn collect_and_diagnose(
    q: &Question,
    outcome: &Outcome,
    locate_target: bool,
) -> Result<Diagnosis, String> {
    let req = SnapshotRequest {
        netns: NetnsTarget::Current,
        as_pid: None,
        dst: Some(RouteQuery {
            to: q.dst,
            from: q.source,
        }),
        target_netns: None,
        locate_target,
    };
    let snap = snapshot::take(&req).map_err(|e| format!("snapshot: {e}"))?;
    Ok(diagnose::diagnose(
        &snap,
        q,
        Some(outcome),
        &Extra::default(),
    ))
}

/// Starts diagnoses when checks turn unhealthy ([`UnhealthyHook`]); see the module docs.
pub struct AutoDiagnoser {
    limiter: Arc<Limiter>,
    permits: Arc<Semaphore>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    handle: tokio::runtime::Handle,
}

impl AutoDiagnoser {
    /// A diagnoser storing into `store` and counting in `metrics`. Its tasks run on the current
    /// tokio runtime (so this must be called inside one) and on `tracker`; they stop waiting when
    /// `cancel` fires (a collector already running finishes on its own thread, its result is
    /// dropped).
    ///
    /// Errors: called outside a tokio runtime.
    pub fn new(
        cfg: &DiagnosisConfig,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Arc<AutoDiagnoser>, tokio::runtime::TryCurrentError> {
        Ok(Arc::new(AutoDiagnoser {
            limiter: Limiter::new(cfg.min_interval),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent.max(1) as usize)),
            store,
            metrics,
            tracker,
            cancel,
            handle: tokio::runtime::Handle::try_current()?,
        }))
    }
}

impl UnhealthyHook for AutoDiagnoser {
    fn turned_unhealthy(&self, spec: &CheckSpec, outcome: &Outcome) {
        self.start(spec, outcome, None);
    }

    fn mesh_pair_lost(&self, spec: &CheckSpec, outcome: &Outcome, far: &FarEndTarget) {
        self.start(spec, outcome, Some(far.clone()));
    }
}

impl AutoDiagnoser {
    fn start(&self, spec: &CheckSpec, outcome: &Outcome, far: Option<FarEndTarget>) {
        if spec.kind == probe::Kind::Exec {
            tracing::debug!(check = %spec.name, "Not diagnosed: an exec check has no network flow.");
            return;
        }
        let check: Arc<str> = Arc::from(spec.name.as_str());
        let started = match self.limiter.try_start(&check, Instant::now()) {
            Ok(s) => s,
            Err(refused) => {
                tracing::debug!(check = %check, refused = ?refused, "Diagnosis skipped.");
                self.metrics.diagnosis.skipped(&check, refused.reason());
                return;
            }
        };
        let job = Job {
            check,
            kind: spec.kind,
            target: spec.target.clone(),
            outcome: outcome.clone(),
            far,
            permits: Arc::clone(&self.permits),
            store: Arc::clone(&self.store),
            metrics: Arc::clone(&self.metrics),
            cancel: self.cancel.clone(),
        };
        self.tracker.spawn_on(job.run(started), &self.handle);
    }
}

/// One diagnosis to take.
struct Job {
    check: Arc<str>,
    kind: probe::Kind,
    target: String,
    outcome: Outcome,
    /// A mesh pair's far end, asked too.
    far: Option<FarEndTarget>,
    permits: Arc<Semaphore>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

impl Job {
    async fn run(self, started: Started) {
        let _started = started;
        let permit = tokio::select! {
            _ = self.cancel.cancelled() => return,
            p = Arc::clone(&self.permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // closed: shutting down
            },
        };
        let begun = Instant::now();
        let (kind, target, outcome) = (self.kind, self.target.clone(), self.outcome.clone());
        let locate = self.far.is_none();
        let blocking = tokio::task::spawn_blocking(move || {
            let _permit = permit; // held until the collectors are done
            match question_for(kind, &target)? {
                Some(q) => collect_and_diagnose(&q, &outcome, locate).map(Some),
                None => Ok(None),
            }
        });
        // Both ends at once: the far end's answer does not depend on this host's.
        let far = async {
            match &self.far {
                Some(t) => Some(crate::farend::ask(t).await),
                None => None,
            }
        };
        let (result, far) = tokio::select! {
            _ = self.cancel.cancelled() => return,
            r = async { tokio::join!(blocking, far) } => r,
        };
        let seconds = begun.elapsed().as_secs_f64();
        let mut diagnosis = match result {
            Ok(Ok(Some(d))) => d,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::warn!(check = %self.check, target = %self.target, %error, "Diagnosis failed.");
                self.metrics
                    .diagnosis
                    .skipped(&self.check, SkipReason::Failed);
                return;
            }
            Err(e) => {
                tracing::error!(check = %self.check, error = %e, "Diagnosis task failed.");
                self.metrics
                    .diagnosis
                    .skipped(&self.check, SkipReason::Failed);
                return;
            }
        };
        if let Some(far) = far {
            if far.status != FarEndStatus::Answered {
                tracing::warn!(
                    check = %self.check, agent = %far.agent,
                    error = far.error.as_deref().unwrap_or(""),
                    "Far-end agent gave no diagnosis."
                );
            }
            diagnose::attach_far_end(&mut diagnosis, far);
        }
        self.record(&diagnosis, seconds).await;
    }

    async fn record(&self, d: &Diagnosis, seconds: f64) {
        let ids = d.ids();
        let far_ids = d.far_end.as_ref().map_or_else(Vec::new, FarEnd::ids);
        let id_text: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
        let far_text: Vec<&str> = far_ids.iter().map(|i| i.as_str()).collect();
        let conclusion = conclusion_str(d.conclusion);
        self.metrics
            .diagnosis
            .observe(&self.check, d.conclusion, &ids, &far_ids);
        tracing::info!(
            check = %self.check,
            conclusion,
            ids = %id_text.join(","),
            far_ids = %far_text.join(","),
            duration_seconds = seconds,
            summary = d.findings.first().map_or("", |f| f.summary.as_str()),
            "Check diagnosed."
        );
        let doc = match store::Json::encode(d) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(check = %self.check, error = %e, "Diagnosis cannot be encoded; not stored.");
                return;
            }
        };
        let record = DiagnosisRecord {
            id: None,
            check: self.check.to_string(),
            at_ms: store::now_ms(),
            conclusion: conclusion.to_owned(),
            finding_ids: id_text.iter().map(|s| (*s).to_owned()).collect(),
            diagnosis: doc,
        };
        if let Err(e) = self.store.append_diagnosis(&record).await {
            tracing::warn!(check = %self.check, error = %e, "Diagnosis cannot be stored.");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_in_flight_and_one_start_per_interval_per_check() {
        let limiter = Limiter::new(Duration::from_secs(300));
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let first = limiter.try_start(&a, Instant::now()).unwrap();
        assert_eq!(
            limiter.try_start(&a, Instant::now()).unwrap_err(),
            Refused::InFlight
        );
        // Another check is independent.
        let other = limiter.try_start(&b, Instant::now()).unwrap();
        drop(first);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            limiter.try_start(&a, Instant::now()).unwrap_err(),
            Refused::TooSoon(Duration::from_secs(240))
        );
        tokio::time::advance(Duration::from_secs(239)).await;
        assert!(matches!(
            limiter.try_start(&a, Instant::now()),
            Err(Refused::TooSoon(_))
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        let again = limiter.try_start(&a, Instant::now()).unwrap();
        // Still in flight after the interval: refused until it finishes.
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(
            limiter.try_start(&a, Instant::now()).unwrap_err(),
            Refused::InFlight
        );
        drop(again);
        drop(other);
        assert!(limiter.try_start(&a, Instant::now()).is_ok());
        assert!(limiter.try_start(&b, Instant::now()).is_ok());
    }

    struct Never;

    #[async_trait::async_trait]
    impl crate::scheduler::ProbeRunner for Never {
        async fn run(&self, _timeout: Duration) -> Outcome {
            std::future::pending().await
        }
    }

    fn spec(name: &str, kind: probe::Kind, target: &str) -> CheckSpec {
        CheckSpec {
            name: name.to_owned(),
            kind,
            target: target.to_owned(),
            runner: Arc::new(Never),
            period: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            initial_delay: Duration::ZERO,
            success_threshold: 1,
            failure_threshold: 1,
            conditions: vec![],
        }
    }

    /// The hook never waits: with the only permit taken, a second turn of the same check is
    /// refused as in flight, other checks queue, and all of them run once the permit is free.
    /// The snapshot reads this test's own network namespace (nothing is sent).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_behind_the_global_bound_and_one_in_flight_per_check() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            store::SqliteStore::open(&dir.path().join("h.db"))
                .await
                .unwrap(),
        );
        let metrics = Arc::new(Metrics::new());
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let cfg = DiagnosisConfig {
            enabled: true,
            min_interval: Duration::from_secs(3600),
            max_concurrent: 1,
        };
        let d = AutoDiagnoser::new(
            &cfg,
            Arc::clone(&store),
            Arc::clone(&metrics),
            tracker.clone(),
            cancel.clone(),
        )
        .unwrap();
        let held = Arc::clone(&d.permits).acquire_owned().await.unwrap();
        let refused = Outcome::fail(
            probe::Reason::ConnectionRefused,
            "connect: refused",
            Duration::from_millis(1),
            vec![],
            probe::Details::None,
        );
        let a = spec("a", probe::Kind::Tcp, "tcp://127.0.0.1:1");
        let b = spec("b", probe::Kind::Tcp, "tcp://127.0.0.1:2");
        let e = spec("e", probe::Kind::Exec, "false");
        d.turned_unhealthy(&a, &refused);
        d.turned_unhealthy(&a, &refused);
        d.turned_unhealthy(&b, &refused);
        d.turned_unhealthy(&e, &refused);
        let text = metrics.encode();
        assert!(
            text.contains("netprobe_diagnoses_skipped_total{check=\"a\",reason=\"in-flight\"} 1\n"),
            "{text}"
        );
        assert!(store.latest_diagnosis("a").await.unwrap().is_none());
        drop(held);
        for name in ["a", "b"] {
            let mut found = None;
            for _ in 0..200 {
                found = store.latest_diagnosis(name).await.unwrap();
                if found.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let found = found.unwrap_or_else(|| panic!("no diagnosis of {name} within 10 s"));
            assert_eq!(found.check, name);
            let doc = found.diagnosis.to_value().unwrap();
            assert_eq!(doc["observed"]["reason"], "connection-refused", "{doc}");
        }
        assert!(store.latest_diagnosis("e").await.unwrap().is_none());
        let text = metrics.encode();
        assert!(!text.contains("check=\"e\""), "{text}");
        assert_eq!(store.diagnoses("a", None, 10).await.unwrap().len(), 1);

        // Shutdown: tasks still waiting for a permit stop at once.
        let held = Arc::clone(&d.permits).acquire_owned().await.unwrap();
        let c = spec("c", probe::Kind::Tcp, "tcp://127.0.0.1:3");
        d.turned_unhealthy(&c, &refused);
        tracker.close();
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .unwrap();
        drop(held);
        assert!(store.latest_diagnosis("c").await.unwrap().is_none());
        store.close().await;
    }

    #[test]
    fn questions_for_every_kind() {
        let q = question_for(probe::Kind::Tcp, "tcp://127.0.0.1:9")
            .unwrap()
            .unwrap();
        assert_eq!((q.protocol, q.dport), (Protocol::Tcp, Some(9)));
        let q = question_for(probe::Kind::Grpc, "grpcs://192.0.2.1:50051/svc")
            .unwrap()
            .unwrap();
        assert_eq!((q.protocol, q.dport), (Protocol::Tcp, Some(50051)));
        assert_eq!(q.target, "grpcs://192.0.2.1:50051/svc");
        let q = question_for(
            probe::Kind::Dns,
            "dns://192.0.2.53:53/example.test?type=A;transport=tcp",
        )
        .unwrap()
        .unwrap();
        assert_eq!((q.protocol, q.dport), (Protocol::Tcp, Some(53)));
        let q = question_for(probe::Kind::Dns, "dns://192.0.2.53:53/example.test?type=A")
            .unwrap()
            .unwrap();
        assert_eq!(q.protocol, Protocol::Udp);
        let q = question_for(probe::Kind::Icmp, "icmp://[fd00::1]")
            .unwrap()
            .unwrap();
        assert_eq!(q.protocol, Protocol::Icmp);
        let q = question_for(probe::Kind::Http, "http://198.51.100.7/healthz")
            .unwrap()
            .unwrap();
        assert_eq!(q.dport, Some(80));
        assert!(question_for(probe::Kind::Exec, "true").unwrap().is_none());
    }
}
