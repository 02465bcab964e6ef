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

// Each kind's prober is its own runner, so a check holds an allocation of its kind's size rather
// than of the whole `Prober` enum (its largest variant): 88 instead of 248 bytes for ICMP, ×10,000.
macro_rules! kind_runner {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl ProbeRunner for $ty {
            async fn run(&self, timeout: Duration) -> Outcome {
                self.probe(timeout).await
            }
        }
    )*};
}

kind_runner!(
    probe::icmp::IcmpProber,
    probe::tcp::TcpProber,
    probe::http::HttpProber,
    probe::dns::DnsProber,
    probe::exec::ExecProber,
    probe::grpc::GrpcProber
);

/// The runner of `prober`, unwrapped from the `Prober` enum (see above).
pub fn runner(prober: probe::Prober) -> Arc<dyn ProbeRunner> {
    match prober {
        probe::Prober::Icmp(p) => Arc::new(p),
        probe::Prober::Tcp(p) => Arc::new(p),
        probe::Prober::Http(p) => Arc::new(p),
        probe::Prober::Dns(p) => Arc::new(p),
        probe::Prober::Exec(p) => Arc::new(p),
        probe::Prober::Grpc(p) => Arc::new(p),
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
    let shared = Arc::new(Shared {
        recorder,
        metrics,
        permits: Semaphore::new(opts.max_in_flight.max(1)),
        cancel,
    });
    let origin = Instant::now();
    for check in checks {
        let offset = if opts.spread {
            spread_offset(check.spec.period)
        } else {
            Duration::ZERO
        };
        let first = origin + check.spec.initial_delay + offset;
        tracker.spawn(run_check(Arc::clone(check), Arc::clone(&shared), first));
    }
}

/// What every check task shares; one pointer in each task instead of four.
struct Shared {
    recorder: Arc<dyn Recorder>,
    metrics: Arc<Metrics>,
    /// Bounds the probes in flight across all checks.
    permits: Semaphore,
    cancel: CancellationToken,
}

fn spread_offset(period: Duration) -> Duration {
    let nanos = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::random_range(0..nanos))
}

// One task per check lives for the whole run, so its future's size is paid 10,000 times: the
// state held across awaits is kept small (shared handles behind one `Arc`, the safety-net timer
// boxed with the probe future only while a probe runs).
async fn run_check(check: Arc<CheckRuntime>, shared: Arc<Shared>, first: Instant) {
    let mut ticker = tokio::time::interval_at(first, check.spec.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut previous_end: Option<Instant> = None;
    let cancel = &shared.cancel;
    let metrics = &*shared.metrics;
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
            p = shared.permits.acquire() => match p {
                Ok(p) => p,
                Err(_) => return, // semaphore closed: shutting down
            },
        };
        let started = Instant::now();
        metrics.observe_lateness(started.saturating_duration_since(tick).as_secs_f64());
        metrics.in_flight().inc();
        let timeout = check.spec.timeout;
        let bounded = Box::pin(tokio::time::timeout(
            timeout + SAFETY_GRACE,
            check.spec.runner.run(timeout),
        ));
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
        check.record(outcome, started, shared.recorder.as_ref(), metrics);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CheckSpec, WallClock};
    use store::{EventRecord, ResultRecord};

    struct Never;

    #[async_trait]
    impl ProbeRunner for Never {
        async fn run(&self, _timeout: Duration) -> Outcome {
            std::future::pending().await
        }
    }

    struct Discard;

    impl Recorder for Discard {
        fn result(&self, _: ResultRecord) {}
        fn event(&self, _: EventRecord) {}
    }

    /// Every check's task lives for the whole run: with 10,000 checks each byte of its future is
    /// 10 kB of resident memory (tokio rounds a task up to a multiple of 128 bytes).
    #[test]
    fn a_check_task_stays_small() {
        let metrics = Arc::new(Metrics::new());
        let spec = CheckSpec {
            name: "c".to_owned(),
            kind: probe::Kind::Icmp,
            target: "icmp://127.0.0.1".to_owned(),
            runner: Arc::new(Never),
            period: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            initial_delay: Duration::ZERO,
            success_threshold: 1,
            failure_threshold: 3,
            conditions: vec![],
        };
        let check = Arc::new(CheckRuntime::new(spec, &metrics, WallClock::new()));
        let shared = Arc::new(Shared {
            recorder: Arc::new(Discard),
            metrics,
            permits: Semaphore::new(1),
            cancel: CancellationToken::new(),
        });
        let task = run_check(check, shared, Instant::now());
        let size = std::mem::size_of_val(&task);
        eprintln!("run_check future: {size} bytes");
        assert!(size <= 400, "run_check future is {size} bytes");
    }
}
