//! The batching writer: takes records from the scheduler without ever blocking it, and writes
//! them to the store in transactions of up to `max_batch` records.

use std::collections::VecDeque;
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::{EventRecord, ResultRecord, Store, StoreError};

/// Tuning of a [`Writer`].
#[derive(Clone, Debug, PartialEq)]
pub struct WriterOptions {
    /// Most records per transaction (results and events are batched separately). Also the queue
    /// length of results that triggers a flush before the interval. Default 500; 0 counts as 1.
    pub max_batch: usize,
    /// How often queued records are written. Default 1 s; clamped to 1 ms ..= 365 days.
    pub flush_interval: Duration,
    /// Most results kept in memory waiting for a flush. When full, the **oldest** queued result
    /// is dropped (and counted) to make room: the newest state is the most useful one. Events are
    /// not limited. Default 10 000; 0 counts as 1.
    pub queue_capacity: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            max_batch: 500,
            flush_interval: Duration::from_secs(1),
            queue_capacity: 10_000,
        }
    }
}

/// Counters of a [`Writer`], plain atomics for the binary to export as metrics. All are
/// monotonic counts since [`Writer::spawn`].
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Results committed to the store.
    pub results_written: AtomicU64,
    /// Events committed to the store.
    pub events_written: AtomicU64,
    /// Transactions committed (one per batch).
    pub batches: AtomicU64,
    /// Write attempts that failed (each is logged; a failed batch is retried once).
    pub failures: AtomicU64,
    /// Results dropped because the queue was full (oldest first).
    pub dropped_queue_full: AtomicU64,
    /// Records given up on: results that failed twice or were refused by
    /// [`ResultRecord::validate`]; events only if still unwritable at shutdown (while the writer
    /// runs they are retried on every flush until written); and any record whose write found the
    /// store already closed ([`StoreError::Closed`]).
    pub dropped_failed: AtomicU64,
    /// Records sent after [`WriterHandle::shutdown`] began, which nobody will write.
    pub dropped_closed: AtomicU64,
}

/// A copy of [`WriterStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStatsSnapshot {
    /// See [`WriterStats::results_written`].
    pub results_written: u64,
    /// See [`WriterStats::events_written`].
    pub events_written: u64,
    /// See [`WriterStats::batches`].
    pub batches: u64,
    /// See [`WriterStats::failures`].
    pub failures: u64,
    /// See [`WriterStats::dropped_queue_full`].
    pub dropped_queue_full: u64,
    /// See [`WriterStats::dropped_failed`].
    pub dropped_failed: u64,
    /// See [`WriterStats::dropped_closed`].
    pub dropped_closed: u64,
}

impl WriterStats {
    /// Reads every counter (each atomically; the set is not one consistent cut).
    pub fn snapshot(&self) -> WriterStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WriterStatsSnapshot {
            results_written: get(&self.results_written),
            events_written: get(&self.events_written),
            batches: get(&self.batches),
            failures: get(&self.failures),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_failed: get(&self.dropped_failed),
            dropped_closed: get(&self.dropped_closed),
        }
    }
}

impl WriterStatsSnapshot {
    /// Records written, results and events together.
    pub fn written(&self) -> u64 {
        self.results_written + self.events_written
    }

    /// Records dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_failed + self.dropped_closed
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The batching writer task. See [`Writer::spawn`].
#[derive(Debug)]
pub struct Writer;

#[derive(Default)]
struct Queues {
    results: VecDeque<ResultRecord>,
    events: VecDeque<EventRecord>,
    /// Set once by shutdown (or when the last handle is dropped); nothing is queued after.
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    wake: Notify,
    stats: Arc<WriterStats>,
    opts: WriterOptions,
}

impl Shared {
    fn close(&self) {
        self.queues.lock().closed = true;
        self.wake.notify_one();
    }
}

/// Closes the writer when the last [`WriterHandle`] is dropped, so the task flushes and ends
/// instead of living on unreachable.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A cloneable handle to a running [`Writer`]. Sending never blocks and never fails; what
/// cannot be written is counted in [`WriterStats`].
///
/// When the last handle is dropped without [`shutdown`](Self::shutdown), the task still flushes
/// what is queued and ends, but nobody waits for it: if the runtime stops first, it is lost.
#[derive(Clone)]
pub struct WriterHandle {
    shared: Arc<Shared>,
    task: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
    _close: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("opts", &self.shared.opts)
            .field("stats", &self.shared.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer task on the current tokio runtime and returns a handle to it.
    ///
    /// The task writes queued events, then queued results, every `opts.flush_interval`, and
    /// earlier when `opts.max_batch` results are waiting. A failed batch is logged and retried on
    /// the next flush: a result batch once, then dropped and counted in
    /// [`WriterStats::dropped_failed`]; an event batch until it succeeds, because state changes
    /// are the history users look for.
    ///
    /// Panics if called outside a tokio runtime (as `tokio::spawn` does).
    pub fn spawn(store: Arc<dyn Store>, opts: WriterOptions) -> WriterHandle {
        let opts = WriterOptions {
            max_batch: opts.max_batch.max(1),
            flush_interval: opts
                .flush_interval
                .clamp(Duration::from_millis(1), crate::MAX_PERIOD),
            queue_capacity: opts.queue_capacity.max(1),
        };
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            wake: Notify::new(),
            stats: Arc::new(WriterStats::default()),
            opts,
        });
        let task = tokio::spawn(run(Arc::clone(&shared), store));
        WriterHandle {
            _close: Arc::new(CloseOnDrop(Arc::clone(&shared))),
            shared,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
        }
    }
}

impl WriterHandle {
    /// Queues a result. Never blocks: if the queue holds `queue_capacity` results, the oldest is
    /// dropped and counted in [`WriterStats::dropped_queue_full`]. A record that fails
    /// [`ResultRecord::validate`] is dropped at once (logged, counted in `dropped_failed`) so it
    /// cannot fail the batch it would join.
    pub fn send_result(&self, r: ResultRecord) {
        let stats = &self.shared.stats;
        if let Err(error) = r.validate() {
            tracing::warn!(check = %r.check, %error, "dropping a result the store cannot hold");
            add(&stats.dropped_failed, 1);
            return;
        }
        let full = {
            let mut q = self.shared.queues.lock();
            if q.closed {
                drop(q);
                add(&stats.dropped_closed, 1);
                tracing::warn!(check = %r.check, "result sent after the store writer shut down");
                return;
            }
            if q.results.len() >= self.shared.opts.queue_capacity {
                q.results.pop_front();
                add(&stats.dropped_queue_full, 1);
            }
            q.results.push_back(r);
            q.results.len() >= self.shared.opts.max_batch
        };
        if full {
            self.shared.wake.notify_one();
        }
    }

    /// Queues an event. Never blocks and never drops it while the writer runs (the event queue
    /// is unbounded; events are rare). Only an event sent after shutdown began is lost (logged,
    /// counted in [`WriterStats::dropped_closed`]).
    pub fn send_event(&self, e: EventRecord) {
        let mut q = self.shared.queues.lock();
        if q.closed {
            drop(q);
            add(&self.shared.stats.dropped_closed, 1);
            tracing::error!(check = %e.check, to_state = %e.to_state,
                "state-change event sent after the store writer shut down; it is lost");
            return;
        }
        q.events.push_back(e);
    }

    /// The writer's counters, shared (keep the `Arc` to read them after shutdown).
    pub fn stats(&self) -> Arc<WriterStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Results waiting in memory for the next flush (a gauge).
    pub fn queued_results(&self) -> usize {
        self.shared.queues.lock().results.len()
    }

    /// Events waiting in memory for the next flush (a gauge).
    pub fn queued_events(&self) -> usize {
        self.shared.queues.lock().events.len()
    }

    /// Stops accepting records, writes everything queued and returns once it is committed (or,
    /// for a batch the store refuses twice, logged and counted as dropped). Later sends through
    /// any clone are counted in [`WriterStats::dropped_closed`]. Safe to call from several
    /// clones: every call returns after the final flush. Does not close the store.
    pub async fn shutdown(self) {
        self.shared.close();
        let mut task = self.task.lock().await;
        if let Some(handle) = task.take()
            && let Err(error) = handle.await
        {
            tracing::error!(%error, "store writer task failed; queued records may be lost");
        }
    }
}

/// State of the task between flushes.
struct Task {
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    /// A result batch that failed once; retried on the next flush, then dropped.
    retry_results: Vec<ResultRecord>,
    /// An event batch that failed; retried on every flush until written.
    retry_events: Vec<EventRecord>,
    /// `dropped_queue_full` at the last flush, to log overflow once per flush, not per record.
    seen_dropped: u64,
}

async fn run(shared: Arc<Shared>, store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(shared.opts.flush_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; nothing is queued yet
    let mut task = Task {
        shared,
        store,
        retry_results: Vec::new(),
        retry_events: Vec::new(),
        seen_dropped: 0,
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = task.shared.wake.notified() => {}
        }
        let closed = task.shared.queues.lock().closed;
        if closed {
            task.final_flush().await;
            return;
        }
        task.flush().await;
    }
}

impl Task {
    /// One flush while running: retries, then what was queued when it started, in batches.
    async fn flush(&mut self) {
        self.report_overflow();
        let max = self.shared.opts.max_batch;

        let mut events_ok = true;
        if !self.retry_events.is_empty() {
            let batch = mem::take(&mut self.retry_events);
            if let Err(batch) = self.write_events(batch, true).await {
                self.retry_events = batch; // never dropped; new events wait behind it
                events_ok = false;
            }
        }
        let pending = if events_ok {
            self.shared.queues.lock().events.len()
        } else {
            0
        };
        for _ in 0..pending.div_ceil(max) {
            let batch = self.take_events(max);
            if let Err(batch) = self.write_events(batch, false).await {
                self.retry_events = batch;
                break;
            }
        }

        if !self.retry_results.is_empty() {
            let batch = mem::take(&mut self.retry_results);
            if let Err(batch) = self.write_results(batch, true).await {
                add(&self.shared.stats.dropped_failed, batch.len());
                tracing::error!(
                    records = batch.len(),
                    "store write failed twice; results dropped"
                );
            }
        }
        let pending = self.shared.queues.lock().results.len();
        for _ in 0..pending.div_ceil(max) {
            let batch = self.take_results(max);
            if let Err(batch) = self.write_results(batch, false).await {
                self.retry_results = batch;
                break;
            }
        }
    }

    /// After close: nothing new arrives, so drain everything; each batch gets one retry after
    /// a pause of one flush interval (at most 1 s) before it is given up.
    async fn final_flush(&mut self) {
        self.report_overflow();
        let max = self.shared.opts.max_batch;
        let pause = self.shared.opts.flush_interval.min(Duration::from_secs(1));
        let mut events = mem::take(&mut self.retry_events);
        events.extend(self.take_events(usize::MAX));
        let mut results = mem::take(&mut self.retry_results);
        results.extend(self.take_results(usize::MAX));

        let mut lost = 0;
        for chunk in events.chunks(max) {
            if let Err(batch) = self.write_events(chunk.to_vec(), false).await {
                tokio::time::sleep(pause).await;
                if let Err(batch) = self.write_events(batch, true).await {
                    lost += batch.len();
                }
            }
        }
        if lost > 0 {
            add(&self.shared.stats.dropped_failed, lost);
            tracing::error!(records = lost, "store unwritable at shutdown; events lost");
        }
        let mut lost = 0;
        for chunk in results.chunks(max) {
            if let Err(batch) = self.write_results(chunk.to_vec(), false).await {
                tokio::time::sleep(pause).await;
                if let Err(batch) = self.write_results(batch, true).await {
                    lost += batch.len();
                }
            }
        }
        if lost > 0 {
            add(&self.shared.stats.dropped_failed, lost);
            tracing::error!(records = lost, "store unwritable at shutdown; results lost");
        }
    }

    fn take_results(&self, n: usize) -> Vec<ResultRecord> {
        let mut q = self.shared.queues.lock();
        let n = n.min(q.results.len());
        q.results.drain(..n).collect()
    }

    fn take_events(&self, n: usize) -> Vec<EventRecord> {
        let mut q = self.shared.queues.lock();
        let n = n.min(q.events.len());
        q.events.drain(..n).collect()
    }

    /// Writes one batch; on failure logs, counts and hands the batch back for a retry. A closed
    /// store is final: the batch is counted as dropped instead.
    async fn write_results(
        &self,
        batch: Vec<ResultRecord>,
        retry: bool,
    ) -> Result<(), Vec<ResultRecord>> {
        if batch.is_empty() {
            return Ok(());
        }
        let stats = &self.shared.stats;
        match self.store.append_results(&batch).await {
            Ok(()) => {
                add(&stats.results_written, batch.len());
                add(&stats.batches, 1);
                Ok(())
            }
            Err(StoreError::Closed) => {
                // Nothing will ever succeed again: retrying would only repeat this log.
                add(&stats.failures, 1);
                add(&stats.dropped_failed, batch.len());
                tracing::error!(
                    records = batch.len(),
                    kind = "results",
                    "store closed before its writer; records lost"
                );
                Ok(())
            }
            Err(error) => {
                add(&stats.failures, 1);
                tracing::warn!(%error, records = batch.len(), kind = "results", retry,
                    "store write failed");
                Err(batch)
            }
        }
    }

    async fn write_events(
        &self,
        batch: Vec<EventRecord>,
        retry: bool,
    ) -> Result<(), Vec<EventRecord>> {
        if batch.is_empty() {
            return Ok(());
        }
        let stats = &self.shared.stats;
        match self.store.append_events(&batch).await {
            Ok(()) => {
                add(&stats.events_written, batch.len());
                add(&stats.batches, 1);
                Ok(())
            }
            Err(StoreError::Closed) => {
                // Nothing will ever succeed again: retrying would only repeat this log.
                add(&stats.failures, 1);
                add(&stats.dropped_failed, batch.len());
                tracing::error!(
                    records = batch.len(),
                    kind = "events",
                    "store closed before its writer; records lost"
                );
                Ok(())
            }
            Err(error) => {
                add(&stats.failures, 1);
                tracing::warn!(%error, records = batch.len(), kind = "events", retry,
                    "store write failed");
                Err(batch)
            }
        }
    }

    fn report_overflow(&mut self) {
        let dropped = self.shared.stats.dropped_queue_full.load(Ordering::Relaxed);
        if dropped > self.seen_dropped {
            tracing::warn!(
                dropped = dropped - self.seen_dropped,
                capacity = self.shared.opts.queue_capacity,
                "store writer queue full; oldest results dropped"
            );
            self.seen_dropped = dropped;
        }
    }
}
