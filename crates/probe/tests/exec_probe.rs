//! Exec prober against real commands: exit codes, signals, output capture and cap, environment,
//! working directory, start failures, and the process-group kill at the timeout (checked in /proc).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use probe::exec::{ExecConfig, ExecProber};
use probe::{Details, ExecDetails, Outcome, Phase, Reason};

fn cfg(command: &[&str]) -> ExecConfig {
    ExecConfig {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        working_dir: None,
        output_limit: 10240,
    }
}

async fn run(command: &[&str], timeout: Duration) -> Outcome {
    ExecProber::new(cfg(command)).unwrap().probe(timeout).await
}

fn exec(outcome: &Outcome) -> &ExecDetails {
    match &outcome.details {
        Details::Exec(d) => d,
        other => panic!("expected exec details, got {other:?}"),
    }
}

const T: Duration = Duration::from_secs(10);

/// One process from `/proc/<pid>/stat`: (pid, state, pgrp).
fn processes() -> Vec<(i32, char, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // comm may contain spaces and parentheses; the fields after the last ')' are fixed.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields[0].chars().next().unwrap();
        let pgrp = fields[2].parse().unwrap();
        out.push((pid, state, pgrp));
    }
    out
}

fn group_members(pgid: i32) -> Vec<(i32, char)> {
    processes()
        .into_iter()
        .filter(|p| p.2 == pgid)
        .map(|p| (p.0, p.1))
        .collect()
}

/// Waits (bounded) until no process of group `pgid` is alive; zombies are dead and only wait for
/// their new parent (init here) to collect them.
fn assert_group_dead(pgid: i32) {
    let give_up = Instant::now() + Duration::from_secs(3);
    loop {
        let alive: Vec<_> = group_members(pgid)
            .into_iter()
            .filter(|(_, state)| *state != 'Z')
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "processes of group {pgid} survived: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn true_succeeds() {
    let out = run(&["true"], T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(out.reason, None);
    let d = exec(&out);
    assert_eq!(d.exit_code, Some(0));
    assert_eq!(d.signal, None);
    assert_eq!(d.output, "");
    assert!(d.pid.is_some());
    assert_eq!(out.status(), Some(0));
    assert!(out.phase(Phase::Exec).unwrap() <= out.duration);
}

#[tokio::test]
async fn false_is_exit_code_1() {
    let out = run(&["false"], T).await;
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::ExecExitCode));
    assert_eq!(exec(&out).exit_code, Some(1));
    assert_eq!(out.message, "command exited with code 1");
}

#[tokio::test]
async fn shell_exit_3() {
    let out = run(&["sh", "-c", "exit 3"], T).await;
    assert_eq!(out.reason, Some(Reason::ExecExitCode));
    assert_eq!(exec(&out).exit_code, Some(3));
    assert_eq!(out.status(), Some(3));
}

#[tokio::test]
async fn killed_by_signal_is_exit_code_reason_with_the_signal() {
    let out = run(&["sh", "-c", "kill -TERM $$"], T).await;
    assert_eq!(out.reason, Some(Reason::ExecExitCode), "{out:?}");
    let d = exec(&out);
    assert_eq!(d.exit_code, None);
    assert_eq!(d.signal, Some(15));
    assert_eq!(out.message, "command was killed by signal SIGTERM (15)");
}

#[tokio::test]
async fn stdout_and_stderr_are_combined_in_order() {
    let out = run(&["sh", "-c", "echo out; echo err >&2; echo out2"], T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(exec(&out).output, "out\nerr\nout2\n");
    assert!(!exec(&out).output_truncated);
}

#[tokio::test]
async fn stdin_is_null() {
    // `cat` would block forever on an inherited terminal or an open pipe.
    let out = run(&["cat"], Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    assert_eq!(exec(&out).output, "");
}

#[tokio::test]
async fn one_megabyte_of_output_is_capped_and_drained() {
    let started = Instant::now();
    let out = run(
        &[
            "sh",
            "-c",
            "head -c 1048576 /dev/zero | tr '\\0' x; echo done >&2",
        ],
        T,
    )
    .await;
    assert!(
        out.success,
        "the writer must not block on a full pipe: {out:?}"
    );
    let d = exec(&out);
    assert_eq!(d.output.len(), 10240);
    assert!(d.output.bytes().all(|b| b == b'x'));
    assert!(d.output_truncated);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn custom_output_limit() {
    let mut c = cfg(&["sh", "-c", "printf 0123456789"]);
    c.output_limit = 4;
    let out = ExecProber::new(c).unwrap().probe(T).await;
    assert_eq!(exec(&out).output, "0123");
    assert!(exec(&out).output_truncated);
}

#[tokio::test]
async fn env_is_passed() {
    let mut c = cfg(&["sh", "-c", "printf '%s|%s' \"$NETPROBE_A\" \"$NETPROBE_B\""]);
    c.env
        .insert("NETPROBE_A".to_owned(), "hello world".to_owned());
    c.env.insert("NETPROBE_B".to_owned(), "=x=".to_owned());
    let out = ExecProber::new(c).unwrap().probe(T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(exec(&out).output, "hello world|=x=");
}

#[tokio::test]
async fn working_dir_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(&["pwd"]);
    c.working_dir = Some(dir.path().to_owned());
    let out = ExecProber::new(c).unwrap().probe(T).await;
    assert!(out.success, "{out:?}");
    let expected = dir.path().canonicalize().unwrap();
    assert_eq!(exec(&out).output.trim_end(), expected.to_str().unwrap());
}

#[tokio::test]
async fn missing_working_dir_is_exec_error() {
    let mut c = cfg(&["true"]);
    c.working_dir = Some("/nonexistent/netprobe-test-dir".into());
    let out = ExecProber::new(c).unwrap().probe(T).await;
    assert_eq!(out.reason, Some(Reason::ExecError), "{out:?}");
    assert!(
        out.message.contains("working_dir")
            && out.message.contains("/nonexistent/netprobe-test-dir")
    );
    assert!(out.message.contains("ENOENT"), "{}", out.message);
}

#[tokio::test]
async fn missing_binary_is_exec_error() {
    let out = run(&["/nonexistent/netprobe-no-such-binary", "arg"], T).await;
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::ExecError));
    assert_eq!(
        out.message,
        "cannot execute \"/nonexistent/netprobe-no-such-binary\": ENOENT (No such file or directory)"
    );
    assert!(out.phases.is_empty());
    assert_eq!(exec(&out).exit_code, None);
    assert!(!out.connected());
}

#[tokio::test]
async fn missing_binary_in_path_is_exec_error() {
    let out = run(&["netprobe-no-such-binary-in-path"], T).await;
    assert_eq!(out.reason, Some(Reason::ExecError));
    assert!(out.message.contains("ENOENT"), "{}", out.message);
}

#[tokio::test]
async fn non_executable_file_is_exec_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.sh");
    std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&[path.to_str().unwrap()], T).await;
    assert_eq!(out.reason, Some(Reason::ExecError), "{out:?}");
    assert!(
        out.message.contains("EACCES (Permission denied)"),
        "{}",
        out.message
    );
    assert!(out.message.contains(path.to_str().unwrap()));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let timeout = Duration::from_millis(500);
    let out = run(&["sh", "-c", "sleep 30 & echo $!; sleep 30"], timeout).await;
    assert!(!out.success);
    assert_eq!(out.reason, Some(Reason::Timeout), "{out:?}");
    assert!(
        out.duration >= timeout && out.duration < Duration::from_secs(5),
        "{:?}",
        out.duration
    );
    assert!(
        out.message.contains("did not finish within 500ms"),
        "{}",
        out.message
    );
    let d = exec(&out);
    assert_eq!(d.exit_code, None);
    let background: i32 = d
        .output
        .trim()
        .parse()
        .expect("the background job's pid was printed");
    let pgid = d.pid.unwrap() as i32;
    assert_ne!(background, pgid);
    assert_group_dead(pgid);
    // The background `sleep` itself, whatever its group: gone or a zombie awaiting init.
    let state = processes()
        .into_iter()
        .find(|p| p.0 == background)
        .map(|p| p.1);
    assert!(
        matches!(state, None | Some('Z')),
        "background sleep {background} is {state:?}"
    );
}

/// With netprobe as a child subreaper (as when it is PID 1 in a container), the killed command's
/// children are re-parented to it; the prober must reap them, or they stay zombies forever.
#[tokio::test]
async fn timeout_leaves_no_zombie_when_this_process_is_the_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let out = run(
        &["sh", "-c", "sleep 30 & sleep 30 & echo started; sleep 30"],
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(out.reason, Some(Reason::Timeout), "{out:?}");
    assert_eq!(exec(&out).output, "started\n");
    let pgid = exec(&out).pid.unwrap() as i32;
    assert_eq!(
        group_members(pgid),
        vec![],
        "no process of group {pgid}, not even a zombie"
    );
}

#[tokio::test]
async fn background_job_left_behind_is_killed_and_does_not_hold_the_probe() {
    let started = Instant::now();
    let out = run(&["sh", "-c", "sleep 30 & echo done"], T).await;
    assert!(out.success, "{out:?}");
    assert_eq!(exec(&out).output, "done\n");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited for the background job: {:?}",
        started.elapsed()
    );
    assert_group_dead(exec(&out).pid.unwrap() as i32);
}
