//! End to end: the real `netprobe` binary runs a config of real loopback targets; state, results, events
//! and metrics are observed over HTTP; `/metrics` passes `promtool check metrics`; SIGTERM flushes and
//! exits 0; a restart keeps history.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod promtool;

use promtool::promtool_check;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A minimal HTTP/1.0 GET; returns (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to netprobe");
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
}

fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = get(addr, path);
    let v = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {body}"));
    (status, v)
}

/// Serves `HTTP/1.1 200` with a JSON body to every connection until the process ends.
fn start_target_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for stream in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = stream;
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = r#"{"status":"ok","items":[1,2,3]}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes());
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Daemon {
    fn start(config: &Path, port: u16) -> Daemon {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_netprobe"))
            .args(["run", "-c"])
            .arg(config)
            .args(["--listen", &addr.to_string()])
            .env("NETPROBE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn netprobe");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && get(addr, "/readyz").0 == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "netprobe did not become ready on {addr}"
            );
            thread::sleep(Duration::from_millis(100));
        }
        Daemon { child, addr }
    }

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

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms until it returns Some, for at most `secs` seconds.
fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn check_state(addr: SocketAddr, name: &str) -> String {
    let (status, v) = get_json(addr, &format!("/api/v1/checks/{name}"));
    assert_eq!(status, 200, "{v}");
    v["state"].as_str().unwrap().to_owned()
}

#[test]
fn run_serves_state_history_and_metrics_and_keeps_history_across_restarts() {
    let target = start_target_server();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let config = dir.path().join("netprobe.yaml");
    let closed = free_port();
    std::fs::write(
        &config,
        format!(
            r#"
server: {{ listen: "127.0.0.1:1" }}
storage: {{ path: "{db}", retention: "1d" }}
defaults: {{ period: "1s", timeout: "500ms", failure_threshold: 2 }}
checks:
  - name: web
    http: {{ url: "http://{target}/health" }}
    conditions: ["[STATUS] == 200", "[BODY].status == ok", "len([BODY].items) == 3", "[RESPONSE_TIME] < 1s"]
  - name: web-wrong-body
    http: {{ url: "http://{target}/health" }}
    conditions: ["[BODY].status == degraded"]
  - name: web-tcp
    tcp: {{ address: "{target}" }}
  - name: closed-port
    tcp: {{ address: "127.0.0.1:{closed}" }}
  - name: exec-true
    exec: {{ command: ["true"] }}
  - name: loopback
    icmp: {{ host: "127.0.0.1", count: 2 }}
"#,
            db = db.display()
        ),
    )
    .unwrap();

    let port = free_port();
    let daemon = Daemon::start(&config, port);
    let addr = daemon.addr;

    // States converge: successes need 1 result, failures 2 (period 1 s, spread over the first second).
    for name in ["web", "web-tcp", "exec-true", "loopback"] {
        eventually(8, &format!("{name} healthy"), || {
            (check_state(addr, name) == "healthy").then_some(())
        });
    }
    for name in ["closed-port", "web-wrong-body"] {
        eventually(8, &format!("{name} unhealthy"), || {
            (check_state(addr, name) == "unhealthy").then_some(())
        });
    }

    let (status, list) = get_json(addr, "/api/v1/checks");
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 6);
    let (_, closed_view) = get_json(addr, "/api/v1/checks/closed-port");
    assert_eq!(closed_view["last_result"]["reason"], "connection-refused");
    assert_eq!(closed_view["kind"], "tcp");
    let (_, wrong) = get_json(addr, "/api/v1/checks/web-wrong-body");
    assert_eq!(wrong["last_result"]["reason"], "condition-failed");

    // History reaches the store within the writer's flush interval.
    let results = eventually(5, "stored results", || {
        let (_, v) = get_json(addr, "/api/v1/checks/closed-port/results?limit=10");
        let arr = v.as_array().cloned().unwrap_or_default();
        (arr.len() >= 2).then_some(arr)
    });
    assert!(
        results
            .iter()
            .all(|r| r["success"] == false && r["reason"] == "connection-refused")
    );
    let events = eventually(5, "stored events", || {
        let (_, v) = get_json(addr, "/api/v1/checks/closed-port/events");
        let arr = v.as_array().cloned().unwrap_or_default();
        (!arr.is_empty()).then_some(arr)
    });
    assert_eq!(events[0]["from_state"], "unknown");
    assert_eq!(events[0]["to_state"], "unhealthy");
    assert_eq!(events[0]["results"].as_array().unwrap().len(), 2);

    // Bad input gets a JSON error.
    let (status, err) = get_json(addr, "/api/v1/checks/web/results?limit=abc");
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("limit"));
    let (status, err) = get_json(addr, "/api/v1/checks/nope");
    assert_eq!(status, 404);
    assert!(err["error"].as_str().unwrap().contains("nope"));

    // Metrics: the values we expect, and promtool accepts the exposition.
    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "probe_success{check=\"web\"} 1",
        "probe_success{check=\"closed-port\"} 0",
        "probe_http_status_code{check=\"web\"} 200",
        "netprobe_check_healthy{check=\"closed-port\"} 0",
        "netprobe_check_healthy{check=\"web\"} 1",
        "netprobe_check_results_total{check=\"closed-port\",result=\"failure\",reason=\"connection-refused\"}",
        "probe_icmp_duration_seconds{check=\"loopback\",phase=\"rtt\"}",
        "netprobe_icmp_socket_mode{",
        "netprobe_probe_start_lateness_seconds_bucket",
    ] {
        assert!(
            metrics.contains(needle),
            "missing {needle:?} in:\n{metrics}"
        );
    }
    promtool_check(&metrics);

    assert_eq!(daemon.terminate(), 0, "SIGTERM must exit 0");

    // Restart on the same store: the history written before is still served.
    let before = results.len();
    let daemon = Daemon::start(&config, free_port());
    let (_, v) = get_json(daemon.addr, "/api/v1/checks/closed-port/results?limit=1000");
    assert!(
        v.as_array().unwrap().len() >= before,
        "history lost across restart: {v}"
    );
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn sigkill_loses_no_committed_history_and_leaves_a_sound_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let config = dir.path().join("netprobe.yaml");
    let closed = free_port();
    let mut checks = String::new();
    for i in 0..50 {
        checks.push_str(&format!(
            "  - {{ name: \"c{i}\", tcp: {{ address: \"127.0.0.1:{closed}\" }} }}\n"
        ));
    }
    std::fs::write(
        &config,
        format!(
            "storage: {{ path: \"{}\", retention: \"1d\" }}\ndefaults: {{ period: \"200ms\", timeout: \"100ms\" }}\nchecks:\n{checks}",
            db.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, free_port());
    let addr = daemon.addr;
    // Wait until the writer has committed a few batches, then kill without warning mid-stream.
    let seen = eventually(10, "committed results", || {
        let (_, v) = get_json(addr, "/api/v1/checks/c7/results?limit=1000");
        let n = v.as_array().map_or(0, Vec::len);
        (n >= 5).then_some(n)
    });
    daemon.child.kill().unwrap(); // SIGKILL
    daemon.child.wait().unwrap();
    drop(daemon);

    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("sqlite3 must be installed (Debian package sqlite3); .ci/run installs it");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let daemon = Daemon::start(&config, free_port());
    let (_, v) = get_json(daemon.addr, "/api/v1/checks/c7/results?limit=1000");
    let after = v.as_array().unwrap().len();
    assert!(
        after >= seen,
        "committed rows lost: saw {seen} before SIGKILL, {after} after restart"
    );
    assert_eq!(daemon.terminate(), 0);
}
