//! Running one collection tool with a time limit and keeping what it printed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Limit for one collection command (`iptables-save` of kube-proxy's 170,000 rules takes ~1 s).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// How a collection command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CaptureStatus {
    /// Exit status 0; `stdout` is the tool's answer.
    Ok,
    /// The program is not installed (not found in `PATH`): recorded, not an error.
    Missing,
    /// It ran and exited non-zero (or was killed by a signal: `code` null).
    Failed {
        /// The exit code.
        code: Option<i32>,
    },
    /// It overran its limit and was killed.
    TimedOut {
        /// The limit, milliseconds.
        after_ms: u64,
    },
    /// It could not be started for another reason, or waiting for it failed.
    Error {
        /// The OS error.
        message: String,
    },
}

/// One command run during collection: what ran, how it ended, and its output (lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// The command line as run (`["iptables-legacy-save"]`).
    pub argv: Vec<String>,
    /// How it ended.
    #[serde(flatten)]
    pub status: CaptureStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error, trimmed.
    pub stderr: String,
}

impl Capture {
    /// The output when the command succeeded.
    pub fn ok_stdout(&self) -> Option<&str> {
        (self.status == CaptureStatus::Ok).then_some(self.stdout.as_str())
    }

    /// One line for a report: `ok`, `missing (not installed)`, `failed (exit 1): STDERR`, ….
    pub fn summary(&self) -> String {
        let first_err = self.stderr.lines().next().unwrap_or("");
        match &self.status {
            CaptureStatus::Ok => "ok".to_string(),
            CaptureStatus::Missing => "missing (not installed)".to_string(),
            CaptureStatus::Failed { code: Some(c) } => format!("failed (exit {c}): {first_err}"),
            CaptureStatus::Failed { code: None } => format!("failed (signal): {first_err}"),
            CaptureStatus::TimedOut { after_ms } => format!("timed out after {after_ms} ms"),
            CaptureStatus::Error { message } => format!("error: {message}"),
        }
    }
}

/// Runs `argv` (looked up in `PATH`) with stdin closed, `LC_ALL=C`, stdout and stderr captured;
/// kills it after `timeout`. Never fails: the outcome is in [`Capture::status`].
pub fn capture(argv: &[&str], timeout: Duration) -> Capture {
    let mut cap = Capture {
        argv: argv.iter().map(|s| (*s).to_string()).collect(),
        status: CaptureStatus::Ok,
        stdout: String::new(),
        stderr: String::new(),
    };
    let Some((program, args)) = argv.split_first() else {
        cap.status = CaptureStatus::Error {
            message: "empty command".into(),
        };
        return cap;
    };
    let spawned = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            cap.status = CaptureStatus::Missing;
            return cap;
        }
        Err(e) => {
            cap.status = CaptureStatus::Error {
                message: e.to_string(),
            };
            return cap;
        }
    };
    // Drain both pipes at once so a chatty tool never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() < timeout => thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                cap.status = CaptureStatus::Error {
                    message: format!("waiting: {e}"),
                };
                return cap;
            }
        }
    };
    // The pipes close when the tool exits, unless it left a background child holding them.
    let grace = Duration::from_secs(2);
    cap.stdout = String::from_utf8_lossy(&out.recv_timeout(grace).unwrap_or_default()).into_owned();
    cap.stderr = String::from_utf8_lossy(&err.recv_timeout(grace).unwrap_or_default())
        .trim()
        .to_string();
    cap.status = match status {
        Some(s) if s.success() => CaptureStatus::Ok,
        Some(s) => CaptureStatus::Failed { code: s.code() },
        None => CaptureStatus::TimedOut {
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        },
    };
    cap
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn ok_failed_missing_and_timeout() {
        let c = capture(&["sh", "-c", "echo out; echo err >&2"], TOOL_TIMEOUT);
        assert_eq!(c.status, CaptureStatus::Ok);
        assert_eq!(c.stdout, "out\n");
        assert_eq!(c.stderr, "err");
        let c = capture(&["sh", "-c", "echo nope >&2; exit 3"], TOOL_TIMEOUT);
        assert_eq!(c.status, CaptureStatus::Failed { code: Some(3) });
        assert_eq!(c.summary(), "failed (exit 3): nope");
        assert_eq!(c.ok_stdout(), None);
        let c = capture(&["netprobe-no-such-tool-here"], TOOL_TIMEOUT);
        assert_eq!(c.status, CaptureStatus::Missing);
        let start = Instant::now();
        let c = capture(&["sleep", "10"], Duration::from_millis(100));
        assert_eq!(c.status, CaptureStatus::TimedOut { after_ms: 100 });
        assert!(start.elapsed() < Duration::from_secs(5));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["status"], "timed_out");
        let back: Capture = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }
}
