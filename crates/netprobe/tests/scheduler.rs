//! Probe semantics with paused time: initial delay, thresholds, fixed-rate schedule under slow probes,
//! events. The probers here are scripted (not network probers) because paused time needs them to be.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use netprobe::check::{CheckRuntime, CheckSpec, Recorder, WallClock};
use netprobe::metrics::Metrics;
use netprobe::scheduler::{self, ProbeRunner, SchedulerOptions};
use parking_lot::Mutex;
use probe::{Details, Outcome, Reason};
use store::{EventRecord, ResultRecord};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A scripted prober: each probe takes `delay` and succeeds or fails as scripted (then repeats the last).
struct ScriptedProber {
    origin: Instant,
    script: Mutex<VecDeque<(Duration, bool)>>,
    last: Mutex<(Duration, bool)>,
    starts: Mutex<Vec<Duration>>,
}

impl ScriptedProber {
    fn new(script: &[(u64, bool)]) -> Arc<Self> {
        let script: VecDeque<_> = script
            .iter()
            .map(|&(ms, ok)| (Duration::from_millis(ms), ok))
            .collect();
        let last = *script.back().unwrap();
        Arc::new(ScriptedProber {
            origin: Instant::now(),
            script: Mutex::new(script),
            last: Mutex::new(last),
            starts: Mutex::new(vec![]),
        })
    }

    fn start_ms(&self) -> Vec<u128> {
        self.starts.lock().iter().map(|d| d.as_millis()).collect()
    }
}

#[async_trait]
impl ProbeRunner for ScriptedProber {
    async fn run(&self, timeout: Duration) -> Outcome {
        self.starts.lock().push(Instant::now() - self.origin);
        let (delay, ok) = self.script.lock().pop_front().unwrap_or(*self.last.lock());
        if delay >= timeout {
            tokio::time::sleep(timeout).await;
            return Outcome::fail(
                Reason::Timeout,
                "scripted timeout",
                timeout,
                vec![],
                Details::None,
            );
        }
        tokio::time::sleep(delay).await;
        if ok {
            Outcome::ok("scripted success", delay, vec![], Details::None)
        } else {
            Outcome::fail(
                Reason::ConnectionRefused,
                "scripted failure",
                delay,
                vec![],
                Details::None,
            )
        }
    }
}

#[derive(Default)]
struct Collector {
    results: Mutex<Vec<ResultRecord>>,
    events: Mutex<Vec<EventRecord>>,
}

impl Recorder for Collector {
    fn result(&self, record: ResultRecord) {
        self.results.lock().push(record);
    }
    fn event(&self, record: EventRecord) {
        self.events.lock().push(record);
    }
}

struct Harness {
    prober: Arc<ScriptedProber>,
    collector: Arc<Collector>,
    check: Arc<CheckRuntime>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    clock: WallClock,
}

fn start(
    script: &[(u64, bool)],
    period_ms: u64,
    timeout_ms: u64,
    delay_ms: u64,
    thresholds: (u32, u32),
) -> Harness {
    let prober = ScriptedProber::new(script);
    let metrics = Arc::new(Metrics::new());
    let clock = WallClock::new();
    let spec = CheckSpec {
        name: "scripted".into(),
        kind: probe::Kind::Tcp,
        target: "scripted".into(),
        runner: prober.clone(),
        period: Duration::from_millis(period_ms),
        timeout: Duration::from_millis(timeout_ms),
        initial_delay: Duration::from_millis(delay_ms),
        success_threshold: thresholds.0,
        failure_threshold: thresholds.1,
        conditions: vec![],
    };
    let check = Arc::new(CheckRuntime::new(spec, &metrics, clock));
    let collector = Arc::new(Collector::default());
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let opts = SchedulerOptions {
        max_in_flight: 16,
        spread: false,
    };
    scheduler::start(
        std::slice::from_ref(&check),
        collector.clone(),
        metrics,
        opts,
        cancel.clone(),
        &tracker,
    );
    tracker.close();
    Harness {
        prober,
        collector,
        check,
        cancel,
        tracker,
        clock,
    }
}

impl Harness {
    async fn stop(self) -> Self {
        self.cancel.cancel();
        self.tracker.wait().await;
        self
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_runs_before_the_initial_delay() {
    let h = start(&[(10, true)], 1000, 500, 5000, (1, 3));
    tokio::time::sleep(Duration::from_millis(4999)).await;
    assert_eq!(h.prober.start_ms(), Vec::<u128>::new());
    tokio::time::sleep(Duration::from_millis(2100)).await; // t = 7099 ms
    let h = h.stop().await;
    assert_eq!(h.prober.start_ms(), vec![5000, 6000, 7000]);
}

#[tokio::test(start_paused = true)]
async fn fixed_rate_is_not_pushed_back_by_slow_probes() {
    // Each probe takes 700 ms of a 1 s period: starts stay on the 1 s grid.
    let h = start(&[(700, true)], 1000, 900, 0, (1, 3));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let h = h.stop().await;
    assert_eq!(h.prober.start_ms(), vec![0, 1000, 2000, 3000, 4000]);
}

#[tokio::test(start_paused = true)]
async fn a_probe_longer_than_the_period_skips_ticks_but_keeps_the_grid() {
    // Probe 0 takes 1.5 s (timeout 2 s): the tick at 1 s is skipped, the next start is at 2 s, not 1.5 s.
    let h = start(&[(1500, true), (100, true)], 1000, 2000, 0, (1, 3));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let h = h.stop().await;
    assert_eq!(h.prober.start_ms(), vec![0, 2000, 3000, 4000]);
}

#[tokio::test(start_paused = true)]
async fn thresholds_decide_state_and_events_carry_their_causes() {
    // S F F S F F F S S  with success_threshold 2, failure_threshold 3.
    let script = [
        (10, true),
        (10, false),
        (10, false),
        (10, true),
        (10, false),
        (10, false),
        (10, false),
        (10, true),
        (10, true),
    ];
    let h = start(&script, 1000, 500, 0, (2, 3));
    tokio::time::sleep(Duration::from_millis(8500)).await;
    let h = h.stop().await;
    let events = h.collector.events.lock().clone();
    let t0 = h.clock.unix_ms(h.prober.origin);
    let got: Vec<(i64, &str, &str, usize)> = events
        .iter()
        .map(|e| {
            (
                e.at_ms - t0,
                e.from_state.as_str(),
                e.to_state.as_str(),
                e.results.as_array().unwrap().len(),
            )
        })
        .collect();
    // One success is not enough for threshold 2; the first failure run of 3 ends at probe 6 (t=6 s);
    // the success run of 2 ends at probe 8 (t=8 s).
    assert_eq!(
        got,
        vec![
            (6000, "unknown", "unhealthy", 3),
            (8000, "unhealthy", "healthy", 2)
        ]
    );
    let causes = events[0].results.as_array().unwrap();
    assert!(
        causes
            .iter()
            .all(|r| r["success"] == false && r["reason"] == "connection-refused")
    );
    assert_eq!(h.collector.results.lock().len(), 9);
    let view = h.check.view();
    assert_eq!(view.state, netprobe::state::Health::Healthy);
    assert_eq!(view.probes, 9);
    assert_eq!(view.consecutive, 2);
}

#[tokio::test(start_paused = true)]
async fn timeouts_count_as_failures() {
    let h = start(&[(5000, true)], 1000, 300, 0, (1, 2));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = h.stop().await;
    let results = h.collector.results.lock().clone();
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| r.reason.as_deref() == Some("timeout"))
    );
    let events = h.collector.events.lock().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].to_state, "unhealthy");
}
