//! Re-running the current test binary as a child process inside a namespace, optionally under other
//! credentials, and reading back what it reports.
//!
//! Pattern (in an integration test file):
//! ```no_run
//! #[test]
//! fn parent() {
//!     let ns = lab::Netns::new("x").unwrap();
//!     let run = lab::Reexec::new("child").run_in(&ns).unwrap();
//!     assert_eq!(run.result().unwrap(), "{\"ok\":true}");
//! }
//!
//! #[test]
//! #[ignore = "child process of `parent`"]
//! fn child() {
//!     lab::child::expect("child");
//!     lab::child::emit("{\"ok\":true}");
//! }
//! ```
//! The child is `#[ignore]`d so a normal test run does not execute it on its own; [`expect`] makes
//! it fail loudly if someone runs it directly.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::run::{describe, run_bounded};
use crate::{LabError, Netns};

/// Environment variable naming the child test a re-executed binary should act as.
pub const CHILD_ENV: &str = "LAB_CHILD";
/// Prefix of the lines a child prints for its parent.
pub const RESULT_PREFIX: &str = "LAB-RESULT ";

static NEXT_COPY: AtomicU32 = AtomicU32::new(0);

/// Panics unless this process was started by [`Reexec`] for the child test `test`.
pub fn expect(test: &str) {
    match std::env::var(CHILD_ENV) {
        Ok(v) if v == test => {}
        _ => panic!(
            "`{test}` is the child half of a lab test; it runs only when its parent test re-executes it"
        ),
    }
}

/// Prints one result line for the parent (`LAB-RESULT <line>`); `line` should be one line of JSON.
pub fn emit(line: &str) {
    // Leading newline: with --nocapture libtest has already printed "test NAME ... " on this line.
    println!("\n{RESULT_PREFIX}{}", line.replace('\n', " "));
}

/// What a child run printed.
#[derive(Debug)]
pub struct ChildRun {
    /// The command line that ran.
    pub cmd: String,
    /// Exit status and captured output.
    pub output: Output,
}

impl ChildRun {
    /// Every line the child emitted with [`emit`], in order, without the prefix.
    pub fn results(&self) -> Vec<&str> {
        std::str::from_utf8(&self.output.stdout)
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.strip_prefix(RESULT_PREFIX))
            .collect()
    }

    /// The one result line. Errors: none or several were emitted (the message includes the output).
    pub fn result(&self) -> Result<&str, LabError> {
        match self.results().as_slice() {
            [one] => Ok(one),
            other => Err(LabError::Child(format!(
                "{} emitted {} result lines, expected 1; stdout:\n{}\nstderr:\n{}",
                self.cmd,
                other.len(),
                String::from_utf8_lossy(&self.output.stdout),
                String::from_utf8_lossy(&self.output.stderr)
            ))),
        }
    }
}

/// How to re-execute the current test binary as one child test.
#[derive(Debug, Clone)]
pub struct Reexec {
    test: String,
    exe: Option<PathBuf>,
    wrapper: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Reexec {
    /// Re-run the child test named `test` (its full libtest name, matched with `--exact`) of the
    /// current executable, with a 60 s limit.
    pub fn new(test: &str) -> Self {
        Reexec {
            test: test.to_string(),
            exe: None,
            wrapper: Vec::new(),
            env: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// Run this binary instead of the current one (e.g. a [`SharedExe`] copy readable by other users).
    pub fn exe(mut self, path: &Path) -> Self {
        self.exe = Some(path.to_path_buf());
        self
    }

    /// Put `argv` in front of the binary, e.g. `["setpriv", "--reuid", "65534", …]`.
    pub fn wrapper(mut self, argv: &[&str]) -> Self {
        self.wrapper = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Add an environment variable for the child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Change the time limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the child inside `ns` (`ip netns exec`). Errors: it could not start, overran, or exited
    /// unsuccessfully ([`LabError::Failed`] with its stdout and stderr, e.g. the child's panic).
    pub fn run_in(&self, ns: &Netns) -> Result<ChildRun, LabError> {
        self.run_command(ns.command(&[]))
    }

    /// Runs the child in the current namespace. Errors as [`Reexec::run_in`].
    pub fn run(&self) -> Result<ChildRun, LabError> {
        let mut argv = self.wrapper.clone();
        let exe = self.exe_path()?;
        argv.push(exe.to_string_lossy().into_owned());
        let (first, rest) = argv
            .split_first()
            .map(|(f, r)| (f.clone(), r.to_vec()))
            .unwrap_or_default();
        let mut cmd = Command::new(first);
        cmd.args(rest);
        self.finish(cmd)
    }

    fn run_command(&self, mut cmd: Command) -> Result<ChildRun, LabError> {
        cmd.args(&self.wrapper);
        cmd.arg(self.exe_path()?);
        self.finish(cmd)
    }

    fn exe_path(&self) -> Result<PathBuf, LabError> {
        match &self.exe {
            Some(p) => Ok(p.clone()),
            None => std::env::current_exe().map_err(|source| LabError::Io {
                what: "current_exe".into(),
                source,
            }),
        }
    }

    fn finish(&self, mut cmd: Command) -> Result<ChildRun, LabError> {
        cmd.args([
            "--exact",
            &self.test,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ]);
        cmd.env(CHILD_ENV, &self.test);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let line = describe(&cmd);
        let output = run_bounded(cmd, self.timeout)?;
        if !output.status.success() {
            return Err(LabError::Failed {
                cmd: line,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
                stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
            });
        }
        Ok(ChildRun { cmd: line, output })
    }
}

/// A path to the current test binary that other users (e.g. uid 65534 under `setpriv`) can execute:
/// the binary itself when every directory above it is searchable and the file is readable and
/// executable by others, else a copy (mode 0755) in a fresh directory under the system temp dir,
/// removed when this value is dropped.
#[derive(Debug)]
pub struct SharedExe {
    path: PathBuf,
    copy_dir: Option<PathBuf>,
}

impl SharedExe {
    /// Finds or makes the shared path. Errors: the binary cannot be found or copied.
    pub fn current() -> Result<SharedExe, LabError> {
        let exe = std::env::current_exe().map_err(|source| LabError::Io {
            what: "current_exe".into(),
            source,
        })?;
        if others_can_execute(&exe) {
            return Ok(SharedExe {
                path: exe,
                copy_dir: None,
            });
        }
        let dir = std::env::temp_dir().join(format!(
            "lab-exe-{}-{}",
            std::process::id(),
            NEXT_COPY.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |what: String| move |source| LabError::Io { what, source };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let shared = SharedExe {
            path: dir.join(exe.file_name().unwrap_or_default()),
            copy_dir: Some(dir.clone()),
        };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io(format!("chmod {}", dir.display())))?;
        std::fs::copy(&exe, &shared.path).map_err(io(format!(
            "copying {} to {}",
            exe.display(),
            shared.path.display()
        )))?;
        std::fs::set_permissions(&shared.path, std::fs::Permissions::from_mode(0o755))
            .map_err(io(format!("chmod {}", shared.path.display())))?;
        Ok(shared)
    }

    /// The path to execute.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SharedExe {
    fn drop(&mut self) {
        if let Some(dir) = &self.copy_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether a user who is neither owner nor group member can run `exe`.
fn others_can_execute(exe: &Path) -> bool {
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode()).ok();
    if mode(exe).is_none_or(|m| m & 0o005 != 0o005) {
        return false;
    }
    exe.ancestors()
        .skip(1)
        .all(|dir| mode(dir).is_some_and(|m| m & 0o001 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_the_prefixed_lines() {
        let run = ChildRun {
            cmd: "x".into(),
            output: Command::new("sh")
                .args(["-c", "echo noise; echo 'LAB-RESULT {\"a\":1}'"])
                .output()
                .unwrap(),
        };
        assert_eq!(run.results(), vec!["{\"a\":1}"]);
        assert_eq!(run.result().unwrap(), "{\"a\":1}");
        let none = ChildRun {
            cmd: "x".into(),
            output: Command::new("true").output().unwrap(),
        };
        assert!(
            none.result()
                .unwrap_err()
                .to_string()
                .contains("0 result lines")
        );
    }

    #[test]
    fn shared_exe_is_executable_by_others() {
        let shared = SharedExe::current().unwrap();
        assert!(
            others_can_execute(shared.path()),
            "{}",
            shared.path().display()
        );
    }

    #[test]
    fn reexec_runs_the_child_inside_the_namespace_under_other_credentials() {
        let ns = Netns::new("labc").unwrap();
        ns.sysctl("net.ipv4.ping_group_range", "3 4").unwrap();
        let exe = SharedExe::current().unwrap();
        let run = Reexec::new("child::tests::reexec_child")
            .exe(exe.path())
            .wrapper(&[
                "setpriv",
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
            ])
            .env("LAB_TEST_VALUE", "42")
            .run_in(&ns)
            .unwrap();
        assert_eq!(run.result().unwrap(), "uid=65534 range=3 4 value=42");
        // A failing child is an error carrying its panic message.
        let err = Reexec::new("child::tests::reexec_child")
            .run_in(&ns)
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("LAB_TEST_VALUE"), "{err}");
    }

    #[test]
    #[ignore = "child process of reexec_runs_the_child_inside_the_namespace_under_other_credentials"]
    fn reexec_child() {
        expect("child::tests::reexec_child");
        let value = std::env::var("LAB_TEST_VALUE").expect("LAB_TEST_VALUE is set by the parent");
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
        let range = range.split_whitespace().collect::<Vec<_>>().join(" ");
        emit(&format!(
            "uid={} range={range} value={value}",
            nix::unistd::geteuid()
        ));
    }

    #[test]
    #[should_panic(expected = "child half of a lab test")]
    fn expect_refuses_to_run_outside_a_parent() {
        expect("no-such-child-test");
    }
}
