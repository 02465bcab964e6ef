//! Helpers of the mesh lab tests: agents killed on drop, HTTP GET inside a namespace, bounded
//! polling; promtool is re-exported from the shared `promtool` module.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
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

/// A minimal HTTP/1.0 GET from inside `ns`; (status, body), status 0 if nothing answers.
pub fn get(ns: &Netns, addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_owned();
    ns.run_in(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
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

/// A minimal HTTP/1.0 POST of a JSON `body` from inside `ns`; (status, body), status 0 if
/// nothing answers.
pub fn post(ns: &Netns, addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let (path, body) = (path.to_owned(), body.to_owned());
    ns.run_in(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.0\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
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
