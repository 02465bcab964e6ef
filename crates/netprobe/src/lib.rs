//! netprobe: scheduled health checks with kubelet probe semantics, history, metrics and an API.
//!
//! Data flow: [`config`] → probers (`probe` crate) → [`scheduler`] → outcome → [`conditions`] →
//! [`state`] (thresholds) → store / [`metrics`] / logs; a check that turns unhealthy →
//! [`autodiag`] (snapshot + [`diagnose`] off the async workers, rate-limited) → store / metrics /
//! logs; [`server`] reads the live state and the store.
//! Diagnosis: [`collect::snapshot::take`] (kernel-facing) → [`collect::snapshot::Snapshot`] →
//! [`diagnose::diagnose`] (pure) → [`diagnose::Diagnosis`].
//! Mesh pairs: [`mesh`] → [`autodiag`], which also asks the peer's agent ([`farend::ask`]) to
//! trace the inbound flow on its own host ([`diagnose::diagnose_inbound`]).
//! Isolation: [`isolate`] (impact report, rules, apply in the namespace, record in the store).
#![deny(missing_docs)]

pub mod autodiag;
pub mod check;
pub mod cli;
pub mod collect;
pub mod conditions;
pub mod config;
pub mod diagnose;
pub mod farend;
pub mod firewall;
pub mod isolate;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod oneshot;
pub mod run;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod sweep;
pub mod trace;
