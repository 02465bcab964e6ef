//! Shared helpers of the diagnosis lab tests: running the real binary (bounded in time), reading
//! its JSON, waiting (bounded) for a server to listen, and the snapshot round trip.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lab::{Netns, run_bounded};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_netprobe");
/// Limit for one netprobe run (a probe is 2 s; collection a few seconds).
pub const RUN_LIMIT: Duration = Duration::from_secs(90);

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs netprobe with `args` in the current namespace.
pub fn netprobe(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("NETPROBE_LOG", "warn");
    run_bounded(cmd, RUN_LIMIT).unwrap()
}

/// Runs `argv` inside `ns` (`ip netns exec`), bounded.
pub fn in_ns(ns: &Netns, argv: &[&str]) -> Output {
    run_bounded(ns.command(argv), RUN_LIMIT).unwrap()
}

pub fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            text(&o.stdout),
            text(&o.stderr)
        )
    })
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The finding ids of a diagnosis document, in order.
pub fn ids(d: &Value) -> Vec<String> {
    d["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array: {d:#}"))
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

/// The finding with `id`, panicking with the whole diagnosis when absent.
pub fn finding<'a>(d: &'a Value, id: &str) -> &'a Value {
    d["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == id))
        .unwrap_or_else(|| panic!("no {id} finding in {d:#}"))
}

/// All evidence lines of a finding, joined.
pub fn evidence(f: &Value) -> String {
    f["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `netprobe diagnose ARGS --json`, asserting the exit code; returns the diagnosis.
pub fn diagnose(args: &[&str], want_code: i32) -> Value {
    let mut a = vec!["diagnose"];
    a.extend_from_slice(args);
    a.push("--json");
    let o = netprobe(&a);
    assert_eq!(
        code(&o),
        want_code,
        "netprobe {a:?}: stdout {} stderr {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    json(&o)
}

/// Takes `netprobe snapshot SNAP_ARGS` into a file under `dir` and diagnoses `target` from it
/// alone (plus `extra` arguments); returns the offline diagnosis.
pub fn offline(dir: &Path, snap_args: &[&str], target: &str, extra: &[&str], want: i32) -> Value {
    let mut a = vec!["snapshot"];
    a.extend_from_slice(snap_args);
    let o = netprobe(&a);
    assert_eq!(code(&o), 0, "snapshot: {}", text(&o.stderr));
    let snap: Value = json(&o);
    assert_eq!(snap["version"], 1);
    let file = dir.join(format!("snap-{}.json", snap["taken_at_unix_ms"]));
    std::fs::write(&file, &o.stdout).unwrap();
    let f = file.to_str().unwrap();
    let mut args = vec![target, "--snapshot", f];
    args.extend_from_slice(extra);
    diagnose(&args, want)
}

/// Waits (at most 5 s, 50 ms steps) until a TCP connect to `addr` from inside `ns` succeeds.
pub fn wait_listening(ns: &Netns, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let target = format!("tcp://{addr}");
    loop {
        let o = in_ns(ns, &[BIN, "check", &target, "--timeout", "500ms"]);
        if o.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} not listening in {} after 5 s: {}",
            ns.name(),
            text(&o.stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs one iptables-family command inside `ns` (waiting for the xtables lock).
pub fn rule(ns: &Netns, tool: &str, args: &[&str]) {
    let mut argv = vec![tool, "-w"];
    argv.extend_from_slice(args);
    ns.exec_ok(&argv).unwrap();
}

/// A minimal HTTP/1.0 server (every request gets `200 ok`) listening on `addr` inside `ns`: the
/// socket is bound on a thread that entered the namespace, then served from a plain thread that
/// polls it (bounded: it stops when dropped, or after 120 s).
pub struct HttpServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn serve_http(ns: &Netns, addr: &str) -> HttpServer {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicBool, Ordering};
    let a: std::net::SocketAddr = addr.parse().unwrap();
    let listener = ns
        .run_in(move || std::net::TcpListener::bind(a))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(
                        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    HttpServer { stop }
}
