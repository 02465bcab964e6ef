//! Exec prober: runs a local command, as the kubelet's `exec` probe runs one in a container.
//!
//! Semantics (kubelet `pkg/probe/exec/exec.go`): exit code 0 is success, anything else a failure;
//! stdout and stderr are captured together, up to 10 KiB by default; a command still running at the
//! timeout is a failure (the `ExecProbeTimeout` behaviour, on by default since Kubernetes 1.20).
//!
//! How it runs: `argv` directly, no shell; stdin is `/dev/null`; stdout and stderr are the same pipe
//! (so their interleaving is preserved, as `2>&1` would); the command is the leader of its own
//! process group (`process_group(0)`). The pipe is drained continuously and bytes past
//! `output_limit` are discarded, so the command never blocks on a full pipe. When the leader exits,
//! or at the timeout, the whole group is killed with SIGKILL, which stops background jobs it left
//! behind from piling up across probe periods. The kill happens while the leader is still an
//! unreaped zombie, so the group id cannot have been reused; then the leader is reaped, and so are
//! re-parented group members when this process is PID 1 or a subreaper.
//!
//! Phase: `exec`, from spawn until the leader exits (or the timeout).
//!
//! Outcomes: success; `exec-exit-code` (non-zero exit, or killed by a signal); `exec-error` (could
//! not start: missing binary, not executable, bad working directory), naming the path and errno;
//! `timeout`.

mod group;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use crate::{ConfigError, Details, ExecDetails, Outcome, Phase, PhaseTiming, Reason};
use group::GroupGuard;

/// The kubelet's exec probe output cap (`maxReadLength = 10 * 1 << 10` in `pkg/probe/exec/exec.go`).
pub const DEFAULT_OUTPUT_LIMIT: usize = 10 * 1024;

/// The largest `output_limit` accepted: the output is held in memory and stored with each result.
pub const MAX_OUTPUT_LIMIT: usize = 1024 * 1024;

/// How long output written just before the group was killed may take to arrive.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// How long a SIGKILLed leader may take to be reaped before it is left to tokio's orphan queue.
const REAP_LIMIT: Duration = Duration::from_secs(2);

/// Safety net for the exit check in case a SIGCHLD stream cannot be created.
const EXIT_POLL: Duration = Duration::from_millis(100);

/// Configuration of an exec probe (the `exec:` key of a check).
///
/// ```yaml
/// exec:
///   command: ["/usr/local/bin/check-disk", "--min-free", "10%"]
///   env: {LC_ALL: C}
///   working_dir: /var/lib/app
///   output_limit: 10240
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments (argv). Not run through a shell: write
    /// `["sh", "-c", "…"]` for pipes or globs. A program without `/` is looked up in `PATH`.
    pub command: Vec<String>,
    /// Variables added to (or overriding) netprobe's own environment for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory to run in; default netprobe's working directory.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Bytes of combined stdout+stderr kept (default 10240, the kubelet's cap; at most 1 MiB). The
    /// rest is read and discarded and `output_truncated` is set.
    #[serde(default = "default_output_limit")]
    pub output_limit: usize,
}

fn default_output_limit() -> usize {
    DEFAULT_OUTPUT_LIMIT
}

/// A validated exec prober.
#[derive(Debug)]
pub struct ExecProber {
    cfg: ExecConfig,
}

impl ExecProber {
    /// Validates `cfg`.
    ///
    /// Errors: `command` is empty or its program is empty; an argument, variable or the directory
    /// contains a NUL byte; a variable name is empty or contains `=`; `output_limit` is above
    /// [`MAX_OUTPUT_LIMIT`]. Whether the program exists is checked at each run (it may be installed
    /// later), and reported as `exec-error`.
    pub fn new(cfg: ExecConfig) -> Result<Self, ConfigError> {
        let Some(program) = cfg.command.first() else {
            return Err(ConfigError(
                "exec command is empty; expected a list like [\"/bin/true\"]".to_owned(),
            ));
        };
        if program.is_empty() {
            return Err(ConfigError(
                "exec command's program (first element) is empty".to_owned(),
            ));
        }
        if let Some(arg) = cfg.command.iter().find(|a| a.contains('\0')) {
            return Err(ConfigError(format!(
                "exec command argument {arg:?} contains a NUL byte"
            )));
        }
        for (name, value) in &cfg.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0')
            {
                return Err(ConfigError(format!(
                    "exec env {name:?}: names must be non-empty without '=' and neither may contain NUL"
                )));
            }
        }
        if let Some(dir) = &cfg.working_dir
            && dir.as_os_str().as_encoded_bytes().contains(&0)
        {
            return Err(ConfigError(format!(
                "exec working_dir {dir:?} contains a NUL byte"
            )));
        }
        if cfg.output_limit > MAX_OUTPUT_LIMIT {
            return Err(ConfigError(format!(
                "exec output_limit {} is above the maximum of {MAX_OUTPUT_LIMIT} bytes",
                cfg.output_limit
            )));
        }
        Ok(ExecProber { cfg })
    }

    /// `exec:` followed by the argv, arguments with spaces or quotes shown quoted, e.g.
    /// `exec:sh -c "exit 3"`.
    pub fn target(&self) -> String {
        let words: Vec<String> = self
            .cfg
            .command
            .iter()
            .map(|w| {
                if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                {
                    format!("{w:?}")
                } else {
                    w.clone()
                }
            })
            .collect();
        format!("exec:{}", words.join(" "))
    }

    /// Runs the command once, bounded by `timeout`. See the module documentation for the outcomes.
    pub async fn probe(&self, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let deadline = start + timeout;
        let fail = |reason, message: String| {
            Outcome::fail(
                reason,
                message,
                start.elapsed(),
                vec![],
                Details::Exec(ExecDetails::default()),
            )
        };
        let (reader, mut child) = match self.spawn() {
            Ok(spawned) => spawned,
            Err(SpawnError::Pipe(e)) => {
                return fail(Reason::Error, format!("cannot create the output pipe: {e}"));
            }
            Err(SpawnError::Spawn(e)) => return fail(Reason::ExecError, self.spawn_error_text(&e)),
        };
        let Some(mut guard) = child.id().and_then(GroupGuard::new) else {
            // Unreachable in practice: a child not yet waited for always has a pid.
            let _ = child.start_kill();
            return fail(
                Reason::Error,
                "the started command has no process id".to_owned(),
            );
        };
        let pid = guard.pgid().as_raw();
        // Created before the first exit check, so an exit between the check and the first `recv`
        // still wakes the loop.
        let mut sigchld = signal(SignalKind::child()).ok();
        let mut output = Capture::new(self.cfg.output_limit);
        let mut reader = Some(reader);
        let mut buf = vec![0u8; 64 * 1024];

        let exited = loop {
            if guard.leader_exited() {
                break true;
            }
            tokio::select! {
                read = read_some(&mut reader, &mut buf) => match read {
                    Some(n) => output.push(&buf[..n]),
                    None => reader = None,
                },
                _ = next_sigchld(&mut sigchld) => {}
                _ = sleep(EXIT_POLL) => {}
                _ = sleep_until(deadline) => break false,
            }
        };
        let ran = start.elapsed();
        let kill_error = guard.kill().err();
        let status = reap_leader(&mut child).await;
        group::reap_orphans(guard.pgid()).await;
        drain(
            &mut reader,
            &mut buf,
            &mut output,
            Instant::now() + DRAIN_GRACE,
        )
        .await;

        let mut details = ExecDetails {
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            output_truncated: output.truncated,
            output: String::from_utf8_lossy(&output.bytes).into_owned(),
            pid: Some(pid.unsigned_abs()),
        };
        let phases = vec![PhaseTiming {
            phase: Phase::Exec,
            duration: ran,
        }];
        let elapsed = start.elapsed();
        if !exited {
            // The kubelet reports no exit code for a timed-out command; the SIGKILL status is ours.
            details.exit_code = None;
            let mut message = format!(
                "command did not finish within {}; its process group {pid} was killed",
                humantime::format_duration(timeout)
            );
            if let Some(e) = kill_error {
                message.push_str(&format!(" (kill failed: {e})"));
            }
            return Outcome::fail(
                Reason::Timeout,
                message,
                elapsed,
                phases,
                Details::Exec(details),
            );
        }
        match (status, details.exit_code, details.signal) {
            (_, Some(0), _) => Outcome::ok("exit code 0", elapsed, phases, Details::Exec(details)),
            (_, Some(code), _) => {
                let message = format!("command exited with code {code}");
                Outcome::fail(
                    Reason::ExecExitCode,
                    message,
                    elapsed,
                    phases,
                    Details::Exec(details),
                )
            }
            (_, None, Some(sig)) => {
                let message = format!("command was killed by signal {}", group::signal_text(sig));
                Outcome::fail(
                    Reason::ExecExitCode,
                    message,
                    elapsed,
                    phases,
                    Details::Exec(details),
                )
            }
            (status, None, None) => {
                let message = match status {
                    Some(s) => format!("command ended with an unrecognised status {s}"),
                    None => "command exited but its status could not be collected".to_owned(),
                };
                Outcome::fail(
                    Reason::Error,
                    message,
                    elapsed,
                    phases,
                    Details::Exec(details),
                )
            }
        }
    }

    /// Starts the command with stdout and stderr on one pipe; returns the pipe's read end.
    fn spawn(&self) -> Result<(pipe::Receiver, Child), SpawnError> {
        let (read_end, write_end) = std::io::pipe().map_err(SpawnError::Pipe)?;
        let reader =
            pipe::Receiver::from_owned_fd(OwnedFd::from(read_end)).map_err(SpawnError::Pipe)?;
        let stderr = write_end.try_clone().map_err(SpawnError::Pipe)?;
        let mut cmd = Command::new(&self.cfg.command[0]);
        cmd.args(&self.cfg.command[1..])
            .envs(&self.cfg.env)
            .stdin(Stdio::null())
            .stdout(write_end)
            .stderr(stderr)
            .process_group(0)
            // Only reaches the leader; the group guard kills the rest.
            .kill_on_drop(true);
        if let Some(dir) = &self.cfg.working_dir {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().map_err(SpawnError::Spawn)?;
        // `cmd` owns the parent's copies of the pipe's write end; dropping it here means end-of-file
        // arrives as soon as the command's processes have all closed theirs.
        drop(cmd);
        Ok((reader, child))
    }

    fn spawn_error_text(&self, err: &std::io::Error) -> String {
        let program = &self.cfg.command[0];
        if let Some(dir) = &self.cfg.working_dir
            && !dir.is_dir()
        {
            return format!(
                "cannot run {program:?} in working_dir {dir:?}: {} (the directory is missing or not a directory)",
                group::errno_text(err)
            );
        }
        format!("cannot execute {program:?}: {}", group::errno_text(err))
    }
}

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
enum SpawnError {
    /// The output pipe could not be created (fd exhaustion): netprobe's problem, not the command's.
    #[error("pipe: {0}")]
    Pipe(std::io::Error),
    /// `fork`/`exec` failed: the program is missing, not executable, or the directory is bad.
    #[error("spawn: {0}")]
    Spawn(std::io::Error),
}

/// Combined output kept up to a byte limit.
#[derive(Debug)]
struct Capture {
    bytes: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capture {
    fn new(limit: usize) -> Self {
        Capture {
            bytes: Vec::new(),
            limit,
            truncated: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// Reads what is available from the pipe; `None` at end of file or on an error (after which the
/// pipe is not read again). Pending forever once the pipe is closed.
async fn read_some(reader: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> Option<usize> {
    match reader {
        Some(r) => match r.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// The next SIGCHLD delivered to this process (any child's); pending forever without a stream.
async fn next_sigchld(sigchld: &mut Option<Signal>) {
    match sigchld {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Reaps the leader; `None` if it could not be collected within [`REAP_LIMIT`] (then tokio reaps
/// it later, as the `Child` is dropped with `kill_on_drop`).
async fn reap_leader(child: &mut Child) -> Option<ExitStatus> {
    match tokio::time::timeout(REAP_LIMIT, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => None,
    }
}

/// Reads the rest of the output until end of file or `until`.
async fn drain(
    reader: &mut Option<pipe::Receiver>,
    buf: &mut [u8],
    output: &mut Capture,
    until: Instant,
) {
    while reader.is_some() {
        match timeout_at(until, read_some(reader, buf)).await {
            Ok(Some(n)) => output.push(&buf[..n]),
            Ok(None) => *reader = None,
            Err(_) => break,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(command: &[&str]) -> ExecConfig {
        ExecConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            working_dir: None,
            output_limit: DEFAULT_OUTPUT_LIMIT,
        }
    }

    #[test]
    fn validation() {
        assert!(ExecProber::new(cfg(&[])).unwrap_err().0.contains("empty"));
        assert!(ExecProber::new(cfg(&[""])).is_err());
        assert!(ExecProber::new(cfg(&["a", "b\0c"])).is_err());
        let mut bad_env = cfg(&["true"]);
        bad_env.env.insert("A=B".to_owned(), "x".to_owned());
        assert!(ExecProber::new(bad_env).is_err());
        let mut big = cfg(&["true"]);
        big.output_limit = MAX_OUTPUT_LIMIT + 1;
        assert!(ExecProber::new(big).is_err());
        assert_eq!(
            ExecProber::new(cfg(&["sh", "-c", "exit 3"]))
                .unwrap()
                .target(),
            "exec:sh -c \"exit 3\""
        );
    }

    #[test]
    fn serde_defaults_and_unknown_fields() {
        let parsed: ExecConfig = serde_json::from_str(r#"{"command": ["true"]}"#).unwrap();
        assert_eq!(parsed, cfg(&["true"]));
        assert!(
            serde_json::from_str::<ExecConfig>(r#"{"command": ["true"], "shell": true}"#).is_err()
        );
    }

    #[test]
    fn capture_keeps_the_first_bytes() {
        let mut c = Capture::new(5);
        c.push(b"abc");
        assert!(!c.truncated);
        c.push(b"defg");
        c.push(b"h");
        assert_eq!(c.bytes, b"abcde");
        assert!(c.truncated);
        let mut exact = Capture::new(3);
        exact.push(b"abc");
        assert!(!exact.truncated);
    }
}
