//! Helpers of the mesh lab tests: agents killed on drop, HTTP GET inside a namespace, bounded
//! polling; promtool is re-exported from the shared `promtool` module.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lab::Netns;

#[path = "../promtool/mod.rs"]
mod promtool;
#[allow(unused_imports, reason = "each test binary uses a subset")]
pub use promtool::promtool_check;

/// Agents, killed and reaped when dropped (also when an assertion fails).
pub struct Agents(pub Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `netprobe run -c CFG --listen LISTEN` inside `ns` (the real binary), logging errors only, stdin
/// and stdout closed; callers add environment and spawn it.
pub fn agent_command(ns: &Netns, cfg: &Path, listen: &str) -> Command {
    let mut cmd = ns.command(&[env!("CARGO_BIN_EXE_netprobe"), "run", "-c"]);
    cmd.arg(cfg)
        .args(["--listen", listen])
        .env("NETPROBE_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// A minimal HTTP/1.0 GET from inside `ns`; (status, body), status 0 if nothing answers.
pub fn get(ns: &Netns, addr: SocketAddr, path: &str) -> (u16, String) {
    request(
        ns,
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n"),
        5,
    )
}

/// A minimal HTTP/1.0 POST of a JSON `body` from inside `ns`; (status, body), status 0 if
/// nothing answers.
pub fn post(ns: &Netns, addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request(ns, addr, req, 10)
}

/// Sends `req` to `addr` from inside `ns` and reads the answer for at most `read_secs`.
fn request(ns: &Netns, addr: SocketAddr, req: String, read_secs: u64) -> (u16, String) {
    ns.run_in(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(read_secs)))
            .unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
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

/// Appends a rule to `ns`'s INPUT, with `tool` (`iptables`, `iptables-nft`, `ip6tables`), that
/// drops every ICMP (ICMPv6 for `ip6tables`) echo request: the blocked node of the mesh tests.
pub fn drop_echo_requests(ns: &Netns, tool: &str) {
    let (proto, opt) = if tool.starts_with("ip6") {
        ("icmpv6", "--icmpv6-type")
    } else {
        ("icmp", "--icmp-type")
    };
    ns.exec_ok(&[
        tool,
        "-w",
        "-A",
        "INPUT",
        "-p",
        proto,
        opt,
        "echo-request",
        "-j",
        "DROP",
    ])
    .unwrap();
}

pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(why) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {why}"
            ),
        }
        thread::sleep(Duration::from_millis(250));
    }
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Rounds of `from`'s pair to (`peer`, `ip`) that started after `since_ns`: (protocol, sent, received).
/// dnsmasq in its own namespace on the bridge, serving `addn-hosts` from `hosts`; killed on drop.
pub struct Dnsmasq(pub Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
