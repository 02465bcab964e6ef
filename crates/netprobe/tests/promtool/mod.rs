//! `promtool check metrics` on a scraped `/metrics` text (shared by the e2e, autodiag and mesh
//! tests). Fails loudly when promtool (Debian package prometheus) is missing.
#![allow(
    clippy::unwrap_used,
    reason = "test helper: a panic is the failure report"
)]

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Asserts that promtool accepts `metrics` (Prometheus text format).
pub fn promtool_check(metrics: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package prometheus); .ci/run installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
