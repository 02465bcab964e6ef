//! The CLI contract: `check` and `validate` output and exit codes (0 ok, 1 check failed, 2 bad input),
//! run through the real binary against real loopback targets.
#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn netprobe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(args)
        .env("NETPROBE_LOG", "warn")
        .output()
        .unwrap()
}

fn fixture(name: &str) -> String {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "config",
        name,
    ]
    .iter()
    .collect();
    p.display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_tcp_success_prints_phases_and_exits_0() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp://{}", l.local_addr().unwrap());
    let o = netprobe(&["check", &target]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains(": OK in "), "{out}");
    assert!(out.contains("connect"), "{out}");
}

#[test]
fn check_refused_exits_1_with_reason_in_json() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed on drop
    let o = netprobe(&["check", &format!("tcp://127.0.0.1:{port}"), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(v["kind"], "tcp");
    assert_eq!(v["outcome"]["reason"], "connection-refused");
    assert!(v["outcome"]["duration"].as_f64().unwrap() >= 0.0);
}

#[test]
fn check_icmp_loopback_reports_echo_statistics() {
    let o = netprobe(&["check", "icmp://127.0.0.1", "--count", "2", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &v["outcome"]["details"];
    assert_eq!(d["kind"], "icmp");
    assert_eq!(d["sent"], 2);
    assert_eq!(d["received"], 2);
    // The engine tries the datagram socket first: it is allowed when one of our groups is inside
    // net.ipv4.ping_group_range, otherwise raw is used (we run as root in CI, so raw is permitted).
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let bounds: Vec<u64> = range
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let mut gids: Vec<u64> = nix::unistd::getgroups()
        .unwrap()
        .iter()
        .map(|g| u64::from(g.as_raw()))
        .collect();
    gids.push(u64::from(nix::unistd::getgid().as_raw()));
    let expected = if gids.iter().any(|g| (bounds[0]..=bounds[1]).contains(g)) {
        "datagram"
    } else {
        "raw"
    };
    assert_eq!(d["mode"], expected, "{d}");
}

#[test]
fn check_exec_like_targets_and_conditions() {
    // A condition that cannot hold turns a successful probe into exit 1 with condition-failed.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp://{}", l.local_addr().unwrap());
    let o = netprobe(&[
        "check",
        &target,
        "--condition",
        "[RESPONSE_TIME] < 0",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"]["reason"], "condition-failed");
    assert_eq!(v["conditions"][0]["success"], false);
}

#[test]
fn bad_input_exits_2() {
    for args in [
        vec!["check", "127.0.0.1"],
        vec!["check", "ftp://127.0.0.1"],
        vec!["check", "tcp://127.0.0.1:1", "--timeout", "soon"],
        vec!["check", "tcp://127.0.0.1:1", "--condition", "[NOPE] == 1"],
        vec!["frobnicate"],
    ] {
        let o = netprobe(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn validate_reports_ok_and_located_errors() {
    let o = netprobe(&["validate", "-c", &fixture("full.yaml")]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout(&o).contains("ok, 6 checks"), "{}", stdout(&o));

    let o = netprobe(&["validate", "-c", &fixture("typo_key.yaml")]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    let location = format!("{}:", fixture("typo_key.yaml"));
    assert!(err.starts_with(&location), "{err}");
    assert!(err.contains("perod"), "{err}");

    let o = netprobe(&["validate", "-c", &fixture("bad_duration.yaml"), "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert!(v["error"]["line"].as_u64().unwrap() > 0);
    assert!(v["error"]["column"].as_u64().unwrap() > 0);

    let o = netprobe(&["run", "-c", &fixture("bad_duration.yaml")]);
    assert_eq!(o.status.code(), Some(2), "run must refuse a bad config");
}
