//! A scheduled check at run time: its spec, its live state, and what happens with each outcome.
//!
//! Each outcome goes through conditions, then the threshold state machine ([`crate::state`]); the result
//! is counted in metrics, logged, and queued for the store; a state change becomes an event that carries
//! the results that caused it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use probe::Outcome;
use serde::Serialize;
use store::{EventRecord, ResultRecord};
use tokio::time::Instant;

use crate::conditions::{self, Condition, ConditionResult};
use crate::metrics::{CheckMetrics, Metrics};
use crate::scheduler::ProbeRunner;
use crate::state::{Health, ThresholdState};

/// Where results and events go (the store's batching writer in production).
pub trait Recorder: Send + Sync + 'static {
    /// Queues one result; must not block.
    fn result(&self, record: ResultRecord);
    /// Queues one state-change event; must not be dropped.
    fn event(&self, record: EventRecord);
}

impl Recorder for store::WriterHandle {
    fn result(&self, record: ResultRecord) {
        self.send_result(record);
    }

    fn event(&self, record: EventRecord) {
        self.send_event(record);
    }
}

/// Told when a check turns unhealthy (the automatic diagnosis in production, see
/// [`crate::autodiag`]). Called on the scheduler's task right after the transition, with no lock
/// held: it must return at once (spawn, never wait).
pub trait UnhealthyHook: Send + Sync + 'static {
    /// `spec` just turned unhealthy; `outcome` is the failing result that crossed the threshold,
    /// after conditions.
    fn turned_unhealthy(&self, spec: &CheckSpec, outcome: &Outcome);

    /// A mesh pair (`spec`, named `mesh.NODE.ADDRESS`) lost every echo: as
    /// [`UnhealthyHook::turned_unhealthy`], and the diagnosis may also ask the pair's far end
    /// (`far`: the peer's agent) to trace the inbound flow on its own host. The default ignores
    /// `far`.
    fn mesh_pair_lost(
        &self,
        spec: &CheckSpec,
        outcome: &Outcome,
        far: &crate::farend::FarEndTarget,
    ) {
        let _ = far;
        self.turned_unhealthy(spec, outcome);
    }
}

/// What the scheduler needs to run one check.
pub struct CheckSpec {
    /// Unique name (`[A-Za-z0-9_.-]+`).
    pub name: String,
    /// Probe kind.
    pub kind: probe::Kind,
    /// Display form of the target (`http://…`, `icmp://…`).
    pub target: String,
    /// Runs one probe.
    pub runner: Arc<dyn ProbeRunner>,
    /// Time between probe starts.
    pub period: Duration,
    /// Bound on one probe.
    pub timeout: Duration,
    /// Nothing runs before this much time after start.
    pub initial_delay: Duration,
    /// Consecutive successes to become healthy.
    pub success_threshold: u32,
    /// Consecutive failures to become unhealthy.
    pub failure_threshold: u32,
    /// Conditions that decide success (Gatus semantics); empty = the prober's default rule.
    pub conditions: Vec<Condition>,
}

/// One result as shown in the API and carried by events.
#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    /// Unix ms when the probe started.
    pub started_at_ms: i64,
    /// Success after conditions.
    pub success: bool,
    /// Failure reason (kebab-case).
    pub reason: Option<&'static str>,
    /// One line of explanation.
    pub message: String,
    /// Probe duration, seconds.
    pub duration_seconds: f64,
}

struct Live {
    thresholds: ThresholdState,
    state_since_ms: Option<i64>,
    /// The last `max(thresholds)` results, oldest first; the back is the last result. Capacity is
    /// fixed at creation (it is the window kept).
    recent: VecDeque<ResultView>,
    probes: u64,
}

/// A check at run time, shared by the scheduler (writer) and the API (reader).
pub struct CheckRuntime {
    /// The static part.
    pub spec: CheckSpec,
    metrics: CheckMetrics,
    live: Mutex<Live>,
    clock: WallClock,
    on_unhealthy: Option<Arc<dyn UnhealthyHook>>,
}

/// The live state of a check, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckView {
    /// Check name.
    pub name: String,
    /// Probe kind.
    pub kind: probe::Kind,
    /// Target.
    pub target: String,
    /// State after thresholds.
    pub state: Health,
    /// Unix ms of the last state change (`None` while unknown).
    pub state_since_ms: Option<i64>,
    /// Consecutive equal results ending with the last one.
    pub consecutive: u32,
    /// Probes run since start.
    pub probes: u64,
    /// Seconds between probes.
    pub period_seconds: f64,
    /// Probe timeout, seconds.
    pub timeout_seconds: f64,
    /// Initial delay, seconds.
    pub initial_delay_seconds: f64,
    /// Successes in a row to become healthy.
    pub success_threshold: u32,
    /// Failures in a row to become unhealthy.
    pub failure_threshold: u32,
    /// Condition texts.
    pub conditions: Vec<String>,
    /// The last result, if any.
    pub last_result: Option<ResultView>,
}

/// Maps tokio instants to wall-clock Unix milliseconds from one fixed origin, so timestamps stay
/// consistent with the scheduler's (possibly paused) clock.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    origin: Instant,
    origin_ms: i64,
}

impl WallClock {
    /// Anchors the clock now.
    pub fn new() -> Self {
        let origin_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        WallClock {
            origin: Instant::now(),
            origin_ms,
        }
    }

    /// Unix ms at `at`.
    pub fn unix_ms(&self, at: Instant) -> i64 {
        let delta = at.saturating_duration_since(self.origin).as_millis() as i64;
        self.origin_ms + delta
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl CheckRuntime {
    /// Creates the runtime of `spec` with its metric handles.
    pub fn new(spec: CheckSpec, metrics: &Metrics, clock: WallClock) -> Self {
        let handles = metrics.for_check(&spec.name, spec.kind);
        let keep = spec.success_threshold.max(spec.failure_threshold).max(1) as usize;
        CheckRuntime {
            live: Mutex::new(Live {
                thresholds: ThresholdState::new(spec.success_threshold, spec.failure_threshold),
                state_since_ms: None,
                recent: VecDeque::with_capacity(keep),
                probes: 0,
            }),
            metrics: handles,
            spec,
            clock,
            on_unhealthy: None,
        }
    }

    /// Calls `hook` each time this check turns unhealthy.
    pub fn with_unhealthy_hook(mut self, hook: Arc<dyn UnhealthyHook>) -> Self {
        self.on_unhealthy = Some(hook);
        self
    }

    /// The live state.
    pub fn view(&self) -> CheckView {
        let live = self.live.lock();
        CheckView {
            name: self.spec.name.clone(),
            kind: self.spec.kind,
            target: self.spec.target.clone(),
            state: live.thresholds.health(),
            state_since_ms: live.state_since_ms,
            consecutive: live.thresholds.run().1,
            probes: live.probes,
            period_seconds: self.spec.period.as_secs_f64(),
            timeout_seconds: self.spec.timeout.as_secs_f64(),
            initial_delay_seconds: self.spec.initial_delay.as_secs_f64(),
            success_threshold: self.spec.success_threshold,
            failure_threshold: self.spec.failure_threshold,
            conditions: self
                .spec
                .conditions
                .iter()
                .map(|c| c.text().to_owned())
                .collect(),
            last_result: live.recent.back().cloned(),
        }
    }

    /// Handles one outcome of a probe that started at `started`: conditions, thresholds, metrics, logs,
    /// and records for the store. Returns the state after it.
    pub fn record(
        &self,
        outcome: Outcome,
        started: Instant,
        recorder: &dyn Recorder,
        metrics: &Metrics,
    ) -> Health {
        let started_ms = self.clock.unix_ms(started);
        let (outcome, conds) = conditions::apply(outcome, &self.spec.conditions, started_ms / 1000);
        metrics.observe(&self.metrics, &outcome);
        log_outcome(&self.spec.name, &outcome);
        let view = ResultView {
            started_at_ms: started_ms,
            success: outcome.success,
            reason: outcome.reason.map(|r| r.as_str()),
            message: outcome.message.clone(),
            duration_seconds: outcome.duration.as_secs_f64(),
        };
        recorder.result(self.result_record(&view, &outcome, &conds));

        let mut live = self.live.lock();
        live.probes += 1;
        let keep = live.recent.capacity().max(1);
        if live.recent.len() == keep {
            live.recent.pop_front();
        }
        live.recent.push_back(view);
        let transition = live.thresholds.observe(outcome.success);
        let health = live.thresholds.health();
        if let Some(t) = transition {
            live.state_since_ms = Some(started_ms);
            let run = t.run as usize;
            let causes: Vec<&ResultView> = live.recent.iter().rev().take(run).rev().collect();
            let message = format!(
                "{} after {} consecutive {}: {}",
                t.to.as_str(),
                t.run,
                if outcome.success {
                    "successes"
                } else {
                    "failures"
                },
                outcome.message
            );
            tracing::info!(check = %self.spec.name, from = t.from.as_str(), to = t.to.as_str(), run = t.run, "Check changed state.");
            recorder.event(EventRecord {
                id: None,
                check: self.spec.name.clone(),
                at_ms: started_ms,
                from_state: t.from.as_str().to_owned(),
                to_state: t.to.as_str().to_owned(),
                message,
                results: serde_json::to_value(&causes).unwrap_or_default(),
            });
            metrics.set_health(&self.metrics, health);
        }
        drop(live);
        if transition.is_some_and(|t| t.to == Health::Unhealthy)
            && let Some(hook) = &self.on_unhealthy
        {
            hook.turned_unhealthy(&self.spec, &outcome);
        }
        health
    }

    fn result_record(
        &self,
        view: &ResultView,
        outcome: &Outcome,
        conds: &[ConditionResult],
    ) -> ResultRecord {
        let doc = DetailsDoc {
            kind: self.spec.kind,
            target: &self.spec.target,
            phases: &outcome.phases,
            details: &outcome.details,
            conditions: conds,
        };
        // Straight to JSON text: no `Value` tree per probe (tens of small allocations, queued
        // until the writer's next flush).
        let details = store::Json::encode(&doc).unwrap_or_else(|e| {
            tracing::warn!(check = %self.spec.name, error = %e, "Result details cannot be encoded; storing {{}}.");
            store::Json::from(serde_json::Value::Object(serde_json::Map::new()))
        });
        ResultRecord {
            id: None,
            check: self.spec.name.clone(),
            started_at_ms: view.started_at_ms,
            success: view.success,
            reason: view.reason.map(str::to_owned),
            message: view.message.clone(),
            duration_seconds: view.duration_seconds,
            details,
        }
    }
}

/// The `details` column of a result: what the probe saw beyond success and message.
#[derive(Serialize)]
struct DetailsDoc<'a> {
    kind: probe::Kind,
    target: &'a str,
    phases: &'a [probe::PhaseTiming],
    details: &'a probe::Details,
    conditions: &'a [ConditionResult],
}

fn log_outcome(check: &str, outcome: &Outcome) {
    let secs = outcome.duration.as_secs_f64();
    match outcome.reason {
        _ if outcome.success => tracing::debug!(check, duration_seconds = secs, "Probe succeeded."),
        Some(reason) => {
            tracing::debug!(check, reason = reason.as_str(), message = %outcome.message, duration_seconds = secs, "Probe failed.")
        }
        None => tracing::debug!(check, message = %outcome.message, "Probe failed."),
    }
}
