//! Check state after thresholds, with the kubelet's run-length semantics.
//!
//! The kubelet's prober worker (`pkg/kubelet/prober/worker.go`) keeps the last result and how many times
//! in a row it has been seen; the cached state changes only when that run reaches `successThreshold`
//! (for a success) or `failureThreshold` (for a failure). We do the same, starting from `unknown`, so a
//! check that has never run enough probes to decide is neither healthy nor unhealthy.

use serde::{Deserialize, Serialize};

/// The state of a check after thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not enough consecutive equal results yet (the state at start).
    Unknown,
    /// `success_threshold` consecutive successes seen since the last failure run.
    Healthy,
    /// `failure_threshold` consecutive failures seen since the last success run.
    Unhealthy,
}

impl Health {
    /// `unknown`, `healthy` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    /// The value of `netprobe_check_healthy`: 1 healthy, 0 unhealthy, -1 unknown.
    pub fn gauge_value(self) -> i64 {
        match self {
            Health::Healthy => 1,
            Health::Unhealthy => 0,
            Health::Unknown => -1,
        }
    }
}

/// A state change: from, to, and how many equal results in a row caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: Health,
    /// The state after.
    pub to: Health,
    /// Length of the run of equal results that crossed the threshold.
    pub run: u32,
}

/// Run-length threshold tracker for one check.
#[derive(Debug, Clone)]
pub struct ThresholdState {
    success_threshold: u32,
    failure_threshold: u32,
    health: Health,
    last: Option<bool>,
    run: u32,
}

impl ThresholdState {
    /// A tracker in state `unknown`. Thresholds below 1 are treated as 1 (the config rejects them anyway).
    pub fn new(success_threshold: u32, failure_threshold: u32) -> Self {
        ThresholdState {
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
            health: Health::Unknown,
            last: None,
            run: 0,
        }
    }

    /// The current state.
    pub fn health(&self) -> Health {
        self.health
    }

    /// How many equal results in a row ended with the last one, and whether they were successes.
    pub fn run(&self) -> (Option<bool>, u32) {
        (self.last, self.run)
    }

    /// Records one probe result; returns the transition when the state changed.
    pub fn observe(&mut self, success: bool) -> Option<Transition> {
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let (target, threshold) = if success {
            (Health::Healthy, self.success_threshold)
        } else {
            (Health::Unhealthy, self.failure_threshold)
        };
        if self.health != target && self.run >= threshold {
            let from = self.health;
            self.health = target;
            return Some(Transition {
                from,
                to: target,
                run: self.run,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(state: &mut ThresholdState, results: &[bool]) -> Vec<(usize, Health)> {
        results
            .iter()
            .enumerate()
            .filter_map(|(i, &r)| state.observe(r).map(|t| (i, t.to)))
            .collect()
    }

    #[test]
    fn starts_unknown_and_needs_a_full_run() {
        let mut s = ThresholdState::new(1, 3);
        assert_eq!(s.health(), Health::Unknown);
        assert_eq!(feed(&mut s, &[false, false]), vec![]);
        assert_eq!(s.health(), Health::Unknown);
        assert_eq!(feed(&mut s, &[false]), vec![(0, Health::Unhealthy)]);
    }

    #[test]
    fn interrupted_runs_restart_the_count() {
        let mut s = ThresholdState::new(2, 3);
        // F F S F F S S: no failure run of 3, the success run of 2 at the end decides.
        let got = feed(&mut s, &[false, false, true, false, false, true, true]);
        assert_eq!(got, vec![(6, Health::Healthy)]);
    }

    #[test]
    fn each_change_happens_once_per_run() {
        let mut s = ThresholdState::new(1, 2);
        let got = feed(&mut s, &[true, true, false, false, false, true]);
        assert_eq!(
            got,
            vec![
                (0, Health::Healthy),
                (3, Health::Unhealthy),
                (5, Health::Healthy)
            ]
        );
        assert_eq!(s.run(), (Some(true), 1));
    }

    #[test]
    fn transition_reports_the_run_length() {
        let mut s = ThresholdState::new(1, 3);
        s.observe(false);
        s.observe(false);
        let t = s.observe(false).unwrap();
        assert_eq!(
            t,
            Transition {
                from: Health::Unknown,
                to: Health::Unhealthy,
                run: 3
            }
        );
    }
}
