//! Running a command with a time limit and capturing its output.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::LabError;

/// Default limit for one lab command (`ip`, `iptables`, `sysctl`…).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured, killing it (by its pid)
/// if it runs longer than `timeout`.
///
/// Errors: [`LabError::Spawn`] when it cannot start, [`LabError::Timeout`] when it was killed,
/// [`LabError::Io`] when waiting failed. A non-zero exit is *not* an error here; see
/// [`Netns::exec_ok`](crate::Netns::exec_ok) for that.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<Output, LabError> {
    let line = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            cmd: line.clone(),
            source,
        })?;
    // Drain both pipes concurrently so a chatty child cannot block on a full pipe.
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
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < timeout => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Timeout {
                    cmd: line,
                    secs: timeout.as_secs_f64(),
                });
            }
            Err(source) => {
                return Err(LabError::Io {
                    what: format!("waiting for {line}"),
                    source,
                });
            }
        }
    };
    // The child has exited; its pipes close unless it left a background grandchild holding them,
    // in which case we take what arrived within a grace period rather than wait for it.
    let grace = Duration::from_secs(2);
    let stdout = out.recv_timeout(grace).unwrap_or_default();
    let stderr = err.recv_timeout(grace).unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// The command line as text, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let o = run_bounded(c, COMMAND_TIMEOUT).unwrap();
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(o.stdout, b"out\n");
        assert_eq!(o.stderr, b"err\n");
    }

    #[test]
    fn kills_commands_that_overrun() {
        let mut c = Command::new("sleep");
        c.arg("10");
        let start = Instant::now();
        match run_bounded(c, Duration::from_millis(200)) {
            Err(LabError::Timeout { cmd, .. }) => assert_eq!(cmd, "sleep 10"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn reports_missing_programs() {
        let c = Command::new("/nonexistent/program");
        assert!(matches!(
            run_bounded(c, COMMAND_TIMEOUT),
            Err(LabError::Spawn { .. })
        ));
    }
}
