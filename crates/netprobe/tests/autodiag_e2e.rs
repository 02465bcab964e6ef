//! End to end, automatic diagnosis: the real `netprobe run` daemon runs inside a lab network
//! namespace with two failing TCP checks — one to a closed port, one to a port whose SYNs an
//! iptables rule in that namespace drops — an exec check, and a TCP check that flaps. Each TCP check turns unhealthy on its
//! first failure; the daemon diagnoses it in the background, and the test reads the diagnosis over
//! HTTP (`port-closed`, `firewall-drop` naming the rule), the `last_diagnosis` summary, the
//! findings counters on `/metrics` (checked by `promtool`), the 404s, and the per-check rate limit.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod promtool;

use promtool::promtool_check;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use lab::Netns;
use serde_json::Value;

const DROPPED_PORT: u16 = 7777;
const CLOSED_PORT: u16 = 7778;
const FLAPPING_PORT: u16 = 7779;

/// The daemon inside the namespace; killed and reaped when dropped (also on a failed assertion).
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// SIGTERM, then wait (bounded) for exit; returns the exit code.
    fn terminate(mut self) -> i32 {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "netprobe did not exit after SIGTERM"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A minimal HTTP/1.0 GET from inside `ns`; returns (status, body), status 0 if nothing answers.
fn get(ns: &Netns, addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_owned();
    ns.run_in(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, body.to_owned())
    })
    .unwrap()
}

fn get_json(ns: &Netns, addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = get(ns, addr, path);
    let v = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {body}"));
    (status, v)
}

/// Polls `f` every 200 ms until it returns Some, for at most `secs` seconds.
fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// The latest diagnosis of `check`, once there is one.
fn diagnosis_of(ns: &Netns, addr: SocketAddr, check: &str) -> Value {
    eventually(40, &format!("a diagnosis of {check}"), || {
        let (status, v) = get_json(ns, addr, &format!("/api/v1/checks/{check}/diagnosis"));
        match status {
            200 => Some(v),
            404 => None,
            other => panic!("diagnosis of {check}: status {other}: {v}"),
        }
    })
}

fn wait_state(ns: &Netns, addr: SocketAddr, check: &str, want: &str) {
    eventually(10, &format!("{check} {want}"), || {
        let (_, v) = get_json(ns, addr, &format!("/api/v1/checks/{check}"));
        (v["state"] == want).then_some(())
    });
}

fn ids(d: &Value) -> Vec<String> {
    d["finding_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no finding_ids in {d}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn run_diagnoses_a_check_that_turns_unhealthy_and_serves_stores_and_counts_it() {
    let ns = Netns::new("npautodiag").unwrap();
    // SYNs to DROPPED_PORT vanish in INPUT: the check times out, the cause is this rule.
    ns.exec_ok(&[
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &DROPPED_PORT.to_string(),
        "-m",
        "comment",
        "--comment",
        "e2e-autodiag-drop",
        "-j",
        "DROP",
    ])
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let config = dir.path().join("netprobe.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
storage: {{ path: "{db}", retention: "1d" }}
defaults: {{ period: "1s", timeout: "500ms", failure_threshold: 1 }}
diagnosis: {{ min_interval: "1h", max_concurrent: 1 }}
checks:
  - name: closed
    tcp: {{ address: "127.0.0.1:{CLOSED_PORT}" }}
  - name: dropped
    tcp: {{ address: "127.0.0.1:{DROPPED_PORT}" }}
  - name: exec-false
    exec: {{ command: ["false"] }}
  - name: flapping
    tcp: {{ address: "127.0.0.1:{FLAPPING_PORT}" }}
"#,
            db = db.display()
        ),
    )
    .unwrap();

    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let mut cmd = ns.command(&[env!("CARGO_BIN_EXE_netprobe"), "run", "-c"]);
    cmd.arg(&config)
        .args(["--listen", &addr.to_string()])
        .env("NETPROBE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let daemon = Daemon {
        child: cmd.spawn().expect("spawn netprobe in the namespace"),
    };
    eventually(20, "netprobe ready", || {
        (get(&ns, addr, "/readyz").0 == 200).then_some(())
    });

    // Closed port: the host answers with a reset.
    let closed = diagnosis_of(&ns, addr, "closed");
    assert_eq!(closed["check"], "closed", "{closed}");
    assert_eq!(closed["conclusion"], "explained", "{closed}");
    assert!(ids(&closed).contains(&"port-closed".to_owned()), "{closed}");
    assert!(
        !ids(&closed).contains(&"firewall-drop".to_owned()),
        "{closed}"
    );
    let doc = &closed["diagnosis"];
    assert_eq!(doc["target"], format!("tcp://127.0.0.1:{CLOSED_PORT}"));
    assert_eq!(doc["observed"]["reason"], "connection-refused", "{doc}");

    // Dropped port: the finding names the rule.
    let dropped = diagnosis_of(&ns, addr, "dropped");
    assert_eq!(dropped["conclusion"], "explained", "{dropped}");
    assert!(
        ids(&dropped).contains(&"firewall-drop".to_owned()),
        "{dropped}"
    );
    let finding = dropped["diagnosis"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "firewall-drop")
        .unwrap()
        .clone();
    let evidence = finding["evidence"].to_string();
    assert!(
        evidence.contains(&format!("--dport {DROPPED_PORT}")) && evidence.contains("DROP"),
        "firewall-drop does not name the rule: {finding}"
    );
    assert_eq!(dropped["diagnosis"]["observed"]["reason"], "timeout");

    // The summary on the check, and the history (one diagnosis: the check stayed unhealthy).
    let (status, view) = get_json(&ns, addr, "/api/v1/checks/closed");
    assert_eq!(status, 200);
    assert_eq!(view["state"], "unhealthy");
    assert_eq!(view["last_diagnosis"]["conclusion"], "explained", "{view}");
    assert_eq!(view["last_diagnosis"]["finding_ids"], closed["finding_ids"]);
    let (status, history) = get_json(&ns, addr, "/api/v1/checks/closed/diagnoses?limit=10");
    assert_eq!(status, 200);
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["id"], closed["id"]);

    // 404s: an unknown check, an exec check (no network flow), and a check with none yet.
    let (status, err) = get_json(&ns, addr, "/api/v1/checks/nope/diagnosis");
    assert_eq!(status, 404);
    assert!(err["error"].as_str().unwrap().contains("nope"), "{err}");
    let (status, err) = get_json(&ns, addr, "/api/v1/checks/exec-false/diagnosis");
    assert_eq!(status, 404);
    assert!(err["error"].as_str().unwrap().contains("exec"), "{err}");
    let (_, exec_view) = get_json(&ns, addr, "/api/v1/checks/exec-false");
    assert_eq!(exec_view["last_diagnosis"], Value::Null);
    let (status, _) = get_json(&ns, addr, "/api/v1/checks/closed/diagnoses?limit=0");
    assert_eq!(status, 400);

    // Rate limit (min_interval 1h): a check that flaps is diagnosed on its first turn to unhealthy
    // only; the later turns are counted as skipped. A listener bound inside the namespace makes
    // the check healthy (the kernel completes the handshake from the backlog), dropping it makes
    // the port closed again.
    diagnosis_of(&ns, addr, "flapping");
    for _ in 0..2 {
        let listener = ns
            .run_in(|| std::net::TcpListener::bind(("127.0.0.1", FLAPPING_PORT)).unwrap())
            .unwrap();
        wait_state(&ns, addr, "flapping", "healthy");
        drop(listener);
        wait_state(&ns, addr, "flapping", "unhealthy");
    }
    let (_, history) = get_json(&ns, addr, "/api/v1/checks/flapping/diagnoses");
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    // The writer flushes events within a second: three turns to unhealthy, one diagnosis.
    eventually(5, "three stored turns to unhealthy", || {
        let (_, events) = get_json(&ns, addr, "/api/v1/checks/flapping/events?limit=100");
        let turned_unhealthy = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["to_state"] == "unhealthy")
            .count();
        (turned_unhealthy == 3).then_some(())
    });

    // Metrics: one diagnosis each, findings counted by id; promtool accepts the exposition.
    let (status, metrics) = get(&ns, addr, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "netprobe_diagnosis_findings_total{check=\"closed\",id=\"port-closed\",end=\"local\"} 1\n",
        "netprobe_diagnosis_findings_total{check=\"dropped\",id=\"firewall-drop\",end=\"local\"} 1\n",
        "netprobe_diagnoses_total{check=\"closed\",conclusion=\"explained\"} 1\n",
        "netprobe_diagnoses_total{check=\"dropped\",conclusion=\"explained\"} 1\n",
        "netprobe_diagnoses_total{check=\"flapping\",conclusion=\"explained\"} 1\n",
        "netprobe_diagnoses_skipped_total{check=\"flapping\",reason=\"rate-limited\"} 2\n",
    ] {
        assert!(
            metrics.contains(needle),
            "missing {needle:?} in:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("netprobe_diagnoses_total{check=\"exec-false\""),
        "{metrics}"
    );
    promtool_check(&metrics);

    assert_eq!(daemon.terminate(), 0, "SIGTERM must exit 0");
}
