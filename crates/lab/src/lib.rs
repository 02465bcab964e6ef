//! Test support (dev-only): network namespaces, veth pairs and commands run inside them.
//!
//! Tests that cross a network build their own hosts: each [`Netns`] is a fresh network namespace
//! with a unique name (`PREFIX-PID-N`), its loopback up, deleted (and any process left in it killed)
//! when dropped — also when the test panics. [`Veth::connect`] joins two namespaces with a veth pair
//! and addresses; a [`Bridge`] is a switch several namespaces plug into. Everything goes through
//! iproute2's `ip` and `std::process::Command`; every command is bounded in time
//! ([`COMMAND_TIMEOUT`] unless stated).
//!
//! Running code *inside* a namespace, two ways:
//! * [`Netns::run_in`] runs a closure on a new thread that first enters the namespace (`setns(2)`).
//!   Sockets created there belong to the namespace for their whole life, even when used from other
//!   threads afterwards — so a test can build a tokio runtime inside the closure and probe from the
//!   namespace, or bind a listener there and accept on it from the test thread.
//! * [`Reexec`] re-runs the current test binary (one `#[ignore]`d child test, selected with
//!   `--exact`) under `ip netns exec`, optionally wrapped (e.g. `setpriv` to drop to uid 65534), for
//!   what a thread cannot do (changing credentials). The child prints results with [`child::emit`];
//!   the parent reads them from [`ChildRun::results`].
//!
//! Only the documentation ranges 198.51.100.0/24, 203.0.113.0/24, 192.0.2.0/24 and fd00::/8 belong in
//! a lab, and no lab namespace is ever routed out through the host.
//!
//! The lab needs root and `ip`; [`require_lab`] (called by [`Netns::new`]) panics with a clear message
//! otherwise, so a test that needs it fails instead of silently skipping.
#![deny(missing_docs)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        reason = "in a test a panic is the failure report"
    )
)]

mod bridge;
pub mod child;
mod netns;
mod run;
mod veth;

use std::process::Output;

pub use bridge::Bridge;
pub use child::{ChildRun, Reexec, SharedExe};
pub use netns::Netns;
pub use run::{COMMAND_TIMEOUT, run_bounded};
pub use veth::Veth;

/// Why a lab operation failed. Every variant carries the command line it concerns.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The program could not be started (not installed, not executable).
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The command ran and exited unsuccessfully.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status as text (`exit status: 1`, `signal: 9`).
        status: String,
        /// Its standard error (lossy UTF-8, trimmed).
        stderr: String,
        /// Its standard output (lossy UTF-8, trimmed).
        stdout: String,
    },
    /// The command did not finish in time and was killed.
    #[error("{cmd} did not finish within {secs:.1}s and was killed")]
    Timeout {
        /// The command line.
        cmd: String,
        /// The limit, seconds.
        secs: f64,
    },
    /// Another I/O error (reading a pipe, opening `/run/netns/NAME`, copying a file…).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A child run printed something unexpected (no result line, a malformed one…).
    #[error("{0}")]
    Child(String),
    /// The lab did not reach the expected state in time (e.g. a link that stays down).
    #[error("{0}")]
    NotReady(String),
}

/// Panics (failing the test) unless the lab can run here: the effective uid must be 0 and `ip`
/// (iproute2) must be installed. Tests that need namespaces must fail, not skip, where they cannot
/// run; this gives them one clear message.
pub fn require_lab() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid:" lists real, effective, saved and filesystem uids.
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        panic!(
            "lab tests need root (network namespaces, veth pairs, iptables); effective uid is {}. Run the \
             test suite as root (the CI container does).",
            euid.unwrap_or("unknown")
        );
    }
    match std::process::Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "lab tests need iproute2's `ip`, but `ip -V` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("lab tests need iproute2's `ip` (apt-get install iproute2): {e}"),
    }
}

/// Standard output of a successful command, or [`LabError::Failed`] with its stderr.
pub(crate) fn check(cmd: String, out: Output) -> Result<String, LabError> {
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(LabError::Failed {
            cmd,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            stdout,
        })
    }
}
