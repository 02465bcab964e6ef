//! The probe scheduler: one task per check on a fixed-rate schedule, with the kubelet's probe semantics.
//!
//! - Nothing runs before `initial_delay` (plus the check's spread offset).
//! - One probe per `period` on a fixed-rate schedule: ticks are multiples of the period from the first
//!   one, so a slow probe never pushes later probes back; a tick that passes while the previous probe of
//!   the same check is still running is skipped (the kubelet's `time.Ticker` drops ticks the same way and
//!   never overlaps two probes of one container).
//! - Each probe is bounded by `timeout` (the prober enforces it; a safety net here adds a grace second).
//! - Start offsets are spread uniformly over the period so 10,000 checks do not fire at once (the kubelet
//!   sleeps a random fraction of `periodSeconds` before a worker's first probe for the same reason).
//! - A semaphore bounds the probes in flight; there is no global lock: each check's live state has its
//!   own mutex and metric handles are per-check atomics.
//!
//! Timers use tokio's clock, so tests run with paused time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use probe::{Details, Outcome, Reason};
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::check::{CheckRuntime, Recorder};
use crate::metrics::Metrics;

/// Something that runs one probe. [`probe::Prober`] in production; scripted probers in scheduler tests.
#[async_trait]
pub trait ProbeRunner: Send + Sync + 'static {
    /// Runs one probe bounded by `timeout`.
    async fn run(&self, timeout: Duration) -> Outcome;
}

#[async_trait]
impl ProbeRunner for probe::Prober {
    async fn run(&self, timeout: Duration) -> Outcome {
        self.probe(timeout).await
    }
}

/// Scheduler tuning (process-level knobs, not per check).
#[derive(Debug, Clone, Copy)]
pub struct SchedulerOptions {
    /// Upper bound on probes running at once across all checks.
    pub max_in_flight: usize,
    /// Spread first probes uniformly over each check's period (on by default; tests turn it off).
    pub spread: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            max_in_flight: 4096,
            spread: true,
        }
    }
}

/// Extra time past a probe's timeout before the scheduler abandons it (probers enforce the timeout
/// themselves; this only catches a prober that fails to).
const SAFETY_GRACE: Duration = Duration::from_secs(1);

/// Starts one task per check on `tracker`; they stop when `cancel` fires (in-flight probes are abandoned).
pub fn start(
    checks: &[Arc<CheckRuntime>],
    recorder: Arc<dyn Recorder>,
    metrics: Arc<Metrics>,
    opts: SchedulerOptions,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
    let origin = Instant::now();
    for check in checks {
        let offset = if opts.spread {
            spread_offset(check.spec.period)
        } else {
            Duration::ZERO
        };
        let first = origin + check.spec.initial_delay + offset;
        tracker.spawn(run_check(
            Arc::clone(check),
            Arc::clone(&recorder),
            Arc::clone(&metrics),
            Arc::clone(&permits),
            first,
            cancel.clone(),
        ));
    }
}

fn spread_offset(period: Duration) -> Duration {
    let nanos = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::random_range(0..nanos))
}

async fn run_check(
    check: Arc<CheckRuntime>,
    recorder: Arc<dyn Recorder>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    first: Instant,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(first, check.spec.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut previous_end: Option<Instant> = None;
    loop {
        let tick = tokio::select! {
            _ = cancel.cancelled() => return,
            tick = ticker.tick() => tick,
        };
        // tokio's Skip still hands out one missed tick late; a tick that fell while this check's previous
        // probe was running is dropped instead, so probes stay on the period grid.
        if previous_end.is_some_and(|end| tick < end) {
            tracing::debug!(check = %check.spec.name, "Tick skipped: previous probe still running.");
            continue;
        }
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // semaphore closed: shutting down
            },
        };
        let started = Instant::now();
        metrics.observe_lateness(started.saturating_duration_since(tick).as_secs_f64());
        metrics.in_flight().inc();
        let timeout = check.spec.timeout;
        let bounded = tokio::time::timeout(timeout + SAFETY_GRACE, check.spec.runner.run(timeout));
        let outcome = tokio::select! {
            _ = cancel.cancelled() => {
                metrics.in_flight().dec();
                return;
            }
            res = bounded => res.unwrap_or_else(|_| abandoned(timeout)),
        };
        metrics.in_flight().dec();
        drop(permit);
        previous_end = Some(Instant::now());
        check.record(outcome, started, recorder.as_ref(), &metrics);
    }
}

fn abandoned(timeout: Duration) -> Outcome {
    Outcome::fail(
        Reason::Timeout,
        format!(
            "probe did not finish within its timeout of {}",
            humantime::format_duration(timeout)
        ),
        timeout + SAFETY_GRACE,
        vec![],
        Details::None,
    )
}
