//! Retention: periodically deletes history older than the configured age.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::{Store, now_ms};

/// Starts a task that deletes results, events, diagnoses and mesh chunks older than
/// `now − retention` (wall clock, Unix ms; see [`Store::prune`]) right away and then every
/// `every`, until `cancel` is cancelled. A prune in progress runs to completion (it is a series
/// of short transactions) before the task notices cancellation.
///
/// Failures are logged (`tracing` warn with the error) and retried at the next period; the task
/// never ends on its own. `every` is clamped to 1 ms ..= 365 days. The returned handle resolves
/// once the task has stopped after cancellation.
///
/// Panics if called outside a tokio runtime (as `tokio::spawn` does).
pub fn spawn_pruner(
    store: Arc<dyn Store>,
    retention: Duration,
    every: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(every.clamp(Duration::from_millis(1), crate::MAX_PERIOD));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let cutoff_ms = now_ms().saturating_sub(retention_ms);
            match store.prune(cutoff_ms).await {
                Ok(0) => tracing::trace!(cutoff_ms, "prune: nothing to delete"),
                Ok(deleted) => tracing::info!(deleted, cutoff_ms, "pruned store history"),
                Err(error) => tracing::warn!(%error, cutoff_ms, "pruning store history failed"),
            }
        }
    })
}
